"""The formats a client may ask for: this server speaks FHIR in JSON only.

FHIR R4 http.html#mime: the client names the format with `Accept` or with `_format` (which
wins, for clients that cannot set headers), and a server answers 406 Not Acceptable when it
cannot give what was asked. A request that asks only for XML (or Turtle), by either, is
refused before anything runs; any request that admits JSON, or names no format, is served.
"""

from __future__ import annotations

from fastapi import Request

from exchange.errors import NotAcceptable

# `_format` values (FHIR R4 http.html#mime: the short forms and the MIME types) of formats
# this server does not produce.
_OTHER_FORMATS = frozenset(
    {"xml", "text/xml", "application/xml", "application/fhir+xml", "ttl", "text/turtle",
     "application/x-turtle", "application/fhir+turtle"}
)  # fmt: skip


def _other(media: str) -> bool:
    """A media type or short form that is XML or Turtle, never JSON."""
    media = media.split(";", 1)[0].strip().lower()
    return media in _OTHER_FORMATS or media.endswith("+xml") or media.endswith("+turtle")


def _accepted(accept: str) -> list[str]:
    """The media ranges of an Accept header a client would take (q > 0)."""
    ranges = []
    for part in accept.split(","):
        media, *params = part.split(";")
        q = next((p.split("=", 1)[1] for p in params if p.strip().lower().startswith("q=")), "1")
        try:
            acceptable = float(q) > 0
        except ValueError:
            acceptable = True  # a malformed weight is read as the default
        if media.strip() and acceptable:
            ranges.append(media.strip())
    return ranges


async def refuse_other_formats(request: Request) -> None:
    """App-wide dependency: 406 when `_format`, or else `Accept`, admits only XML or Turtle."""
    path = request.url.path
    if not (path == "/fhir" or path.startswith("/fhir/")):
        return
    named = request.query_params.get("_format")
    if named is not None:
        if _other(named):
            raise NotAcceptable(
                f"_format={named} asks for a format this server does not produce: it serves "
                "FHIR as JSON only (_format=json or application/fhir+json)",
                "_format",
            )
        return
    accept = request.headers.get("accept")
    ranges = _accepted(accept) if accept else []
    if ranges and all(_other(r) for r in ranges):
        raise NotAcceptable(
            f"Accept: {accept} admits only formats this server does not produce: it serves "
            "FHIR as JSON only (application/fhir+json)",
        )
