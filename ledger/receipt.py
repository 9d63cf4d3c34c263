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

from dataclasses import dataclass

from .encoding import b64
from .merkle import HASH_SIZE
from .untrusted import InputRejected, read_base64, read_uint64

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
        lines.append("extra " + b64(r.extra))
    lines.append(f"index {r.index}")
    lines.extend(b64(h) for h in r.proof)
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
            extra = read_base64(lines[pos][6:], "extra")
        except InputRejected as e:
            raise ReceiptError(f"receipt {e}") from None
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
            proof.append(read_base64(line, "proof line", size=HASH_SIZE))
        except InputRejected as e:
            raise ReceiptError(f"receipt {e}") from None
    return Receipt(index, tuple(proof), checkpoint, extra)
