"""Searchset Bundles as FHIR R4 search.html#return shapes them: a `self` link naming the
search the server ran, and a `fullUrl` on every entry.

Unknown parameters are refused before a search runs, or ignored when the client asked for
lenient handling (exchange.http.query): the `self` link is the request with the parameters
that were used, on the public base (exchange.http.public), never on the request's Host.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlencode

from fastapi import Request

from exchange.http.deps import public_url
from exchange.http.query import used_params

# The namespace of the urn:uuid fullUrls of resources no read of this server serves.
_NAMESPACE = uuid.UUID("6c0e7c1a-5f0b-4d0e-9a43-7f1b3c9e2d10")


def self_url(request: Request) -> str:
    """The absolute URL of the search `request` asked for, with the parameters used, in order."""
    query = urlencode(used_params(request))
    return public_url(request) + request.url.path + (f"?{query}" if query else "")


def minted_full_url(*names: str) -> str:
    """A `urn:uuid:` fullUrl for a resource this server computes or serves only inside a
    search (a MeasureReport, a VerificationResult): the same names give the same URL, so
    entries stay distinct within a Bundle and stable from one search to the next."""
    return f"urn:uuid:{uuid.uuid5(_NAMESPACE, chr(0).join(names))}"


def searchset(request: Request, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """A searchset Bundle of `entries` (each with its fullUrl and resource), all of them
    matches, with its `self` link."""
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(entries),
        "link": [{"relation": "self", "url": self_url(request)}],
        "entry": [{**e, "search": {"mode": "match"}} for e in entries],
    }
