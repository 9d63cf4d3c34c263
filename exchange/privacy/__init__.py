"""Privacy promises: the access entry of every disclosure (access.py), erasure by crypto-
shredding (erasure.py), the vault's in-place format upgrade (upgrade.py)."""
