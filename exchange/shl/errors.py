"""The one error of the SHL library: bad input, naming the field at fault."""

from __future__ import annotations

__all__ = ["ShlError"]


class ShlError(ValueError):
    """Input the SHL library refuses: a link's payload, a creation request, a manifest request.

    ``field`` names the member at fault as the request or payload spells it (``exp``,
    ``passcode``, ``embeddedLengthMax``, ...); ``reason`` says what is wrong with it in a
    sentence a caller can show. A route answers it as a 4xx naming both.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
