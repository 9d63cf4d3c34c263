"""C2SP tlog-proof (c2sp.org/tlog-proof@v1): an offline-verifiable receipt.

::

    c2sp.org/tlog-proof@v1
    extra <base64 entry bytes>
    index <decimal>
    <base64 hash>        (zero or more: the RFC 6962 audit path, leaf's sibling first)

    <signed checkpoint, verbatim>

The extra data is not authenticated by the format itself; medledger's verifier hashes it as
the leaf, so it is bound by the inclusion proof.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from .merkle import HASH_SIZE
from .untrusted import InputRejected, read_uint64

HEADER = "c2sp.org/tlog-proof@v1"

MAX_RECEIPT_BYTES = 1 << 20
"""Readers refuse larger receipts: one is an entry, at most 64 hashes and a checkpoint with
its signatures, a few KiB."""


class ReceiptError(ValueError):
    """The receipt text is malformed."""


@dataclass(frozen=True)
class Receipt:
    index: int
    proof: tuple[bytes, ...]
    checkpoint: str  # the signed note, verbatim
    extra: bytes | None = None


def format_receipt(r: Receipt) -> str:
    lines = [HEADER]
    if r.extra is not None:
        lines.append("extra " + base64.b64encode(r.extra).decode())
    lines.append(f"index {r.index}")
    lines.extend(binascii.b2a_base64(h, newline=False).decode() for h in r.proof)
    return "\n".join(lines) + "\n\n" + r.checkpoint


def parse_receipt(text: str) -> Receipt:
    head, sep, checkpoint = text.partition("\n\n")
    if not sep or not checkpoint:
        raise ReceiptError("receipt has no blank line before its checkpoint")
    lines = head.split("\n")
    if lines[0] != HEADER:
        raise ReceiptError(f"receipt does not start with {HEADER}")
    pos = 1
    extra = None
    if pos < len(lines) and lines[pos].startswith("extra "):
        try:
            extra = base64.b64decode(lines[pos][6:], validate=True)
        except ValueError as e:  # binascii.Error, or a plain ValueError for non-ASCII text
            raise ReceiptError("receipt extra is not base64") from e
        pos += 1
    if pos >= len(lines) or not lines[pos].startswith("index "):
        raise ReceiptError("receipt has no index line")
    try:
        index = read_uint64(lines[pos][6:])
    except InputRejected as e:
        raise ReceiptError(f"receipt index: {e}") from None
    proof = []
    for line in lines[pos + 1 :]:
        try:
            h = base64.b64decode(line, validate=True)
        except ValueError as e:
            raise ReceiptError("receipt proof line is not base64") from e
        if len(h) != HASH_SIZE:
            raise ReceiptError("receipt proof line is not a SHA-256 hash")
        proof.append(h)
    return Receipt(index, tuple(proof), checkpoint, extra)
