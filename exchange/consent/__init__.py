"""Consent: whether an insurer may see a patient's data now (rules.py), and the cross-border
transfer gate (crossborder.py)."""
