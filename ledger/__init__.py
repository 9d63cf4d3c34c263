"""medledger's log: an RFC 6962 Merkle tree over hash-chained entries, with C2SP checkpoints.

The verifier path (merkle, note, checkpoint, receipt, entry, jcs, verify) needs only the
standard library and ``cryptography``. The writer path (store, log, keys) adds SQLAlchemy.
"""
