"""Bytes as text in the log's formats: standard base64 with padding (RFC 4648 section 4).

Entries, checkpoints, receipts, audit states and evidence files write hashes and other bytes
this way. `b64` writes it; untrusted.read_base64 reads a value back strictly (the alphabet and
its padding only), so one text stands for one byte string.
"""

from __future__ import annotations

import binascii


def b64(data: bytes) -> str:
    """`data` as standard base64 with padding, no line breaks."""
    return binascii.b2a_base64(data, newline=False).decode("ascii")
