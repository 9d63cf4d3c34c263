"""The log's signing keys on disk and their key entries (keyring.py)."""
