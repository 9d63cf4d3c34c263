"""Admission of submissions: a cap on those in flight, shared fairly among clients, so a burst
is told to retry (Throttled) instead of queueing unbounded request bodies in memory."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from exchange.errors import Throttled


class Admission:
    """A cap on submissions in flight, shared fairly, so a burst is told to retry (429) instead
    of queueing unbounded request bodies in memory, and no one client can take every slot.

    A client may hold at most `limit // (holders + 1)` slots, `holders` being the clients that
    hold one, itself included: alone it gets half, and a newcomer always finds a slot until
    the cap itself is reached. Used from the event loop only.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.busy = 0
        self._held: dict[str, int] = {}

    def share(self, client: str) -> int:
        """The slots `client` may hold while the current holders hold theirs."""
        holders = len(self._held) + (client not in self._held)
        return max(1, self.limit // (holders + 1))

    @contextmanager
    def enter(self, client: str) -> Iterator[None]:
        mine = self._held.get(client, 0)
        if self.busy >= self.limit:
            raise Throttled(
                f"{self.limit} submissions are in flight: retry after a second",
                retry_after=1,
            )
        if mine >= self.share(client):
            raise Throttled(
                f"this client already has {mine} submissions in flight, its fair share of the "
                f"{self.limit} slots: retry after a second",
                retry_after=1,
            )
        self.busy += 1
        self._held[client] = mine + 1
        try:
            yield
        finally:
            self.busy -= 1
            left = self._held[client] - 1
            if left:
                self._held[client] = left
            else:
                del self._held[client]
