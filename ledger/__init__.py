"""medledger's log: an RFC 6962 Merkle tree over hash-chained entries, with C2SP checkpoints.

The verifier path (merkle, note, checkpoint, receipt, entry, keyset, jcs, encoding, untrusted,
verify, and the audit package) needs only the standard library and ``cryptography``. The writer
path (store and log, with keys, hash_cache, last_checkpoint and faults) adds SQLAlchemy.
"""
