"""Derived indexes computed from the stored Bundles in ledger order: the framework (derived.py),
patients, recall (trace)."""
