"""Insurer settlement: the settlement index and search, Bulk Data export jobs, the regulator's
RWD export."""
