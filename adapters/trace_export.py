"""The regulator's RWD export: the RWD Bundles of one product as NDJSON.

Each line is one stored Bundle with the whitespace between JSON tokens removed and nothing
else changed: strings keep their escapes and numbers their lexemes (``1200.00`` stays
``1200.00``): a line differs from the committed bytes only in insignificant whitespace
(RFC 8259 section 2), so it parses to exactly the stored Bundle. Choosing the Bundles,
checking the consent and logging the access are the service's; the product filter re-applies
:func:`adapters.trace_index.matches`, the one matching rule, to the identities the recall index
stores (:func:`adapters.rwd_identity.recall_identities`, whatever kind the Bundle is filed as).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from adapters.base import AdaptError
from adapters.ips_json import loads_bundle
from adapters.rwd_identity import recall_identities
from adapters.trace_index import RecallQuery, matches

__all__ = ["ndjson_line", "rwd_export"]

# A JSON string token, or a run of the four JSON whitespace characters.
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[ \t\n\r]+', re.DOTALL)


def ndjson_line(bundle: bytes, where: str = "bundle") -> bytes:
    """One Bundle as one NDJSON line (ending in ``\\n``); AdaptError if it is not JSON."""
    try:
        json.loads(bundle)
    except (ValueError, RecursionError) as e:
        raise AdaptError(f"{where}: not JSON ({e})") from None
    compact = _TOKEN.sub(lambda m: m.group(0) if m.group(0).startswith(b'"') else b"", bundle)
    return compact + b"\n"


def rwd_export(bundles: Iterable[tuple[int, bytes]], query: RecallQuery) -> bytes:
    """NDJSON of the Bundles (ledger index, bytes) that used the queried product, in order."""
    out: list[bytes] = []
    for index, data in bundles:
        doc = loads_bundle(data, f"entry {index}")
        if any(matches(identity, query) for identity in recall_identities(doc)):
            out.append(ndjson_line(data, f"entry {index}"))
    return b"".join(out)
