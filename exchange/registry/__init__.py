"""Institutions: the signed registry on the ledger (institutions.py) and whether a sender may
submit today (admission.py)."""
