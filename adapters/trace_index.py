"""The recall question -- which ledger entries used this pack or lot? -- answered in memory.

The matching rules live in :func:`matches` and nowhere else: the in-memory
:class:`RecallIndex`, a brute-force scan and the SQL the service will run against its table
must agree with it. A query names a GTIN (any of GTIN-8/12/13/14; compared in the 14-digit
form, GS1 General Specifications 3.3.2) and optionally a lot (AI 10) and a serial (AI 21),
compared exactly: GS1 character set 82 is case-sensitive and a recall notice quotes the lot
as labelled. An identity without a lot never matches a query that names one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from adapters.rwd_identity import PackIdentity
from adapters.tracecode import normalise_gtin

__all__ = ["RecallIndex", "RecallQuery", "matches", "recall_query"]


@dataclass(frozen=True)
class RecallQuery:
    """A validated query: GTIN-14, and the lot and serial as given (None = any)."""

    gtin: str
    lot: str | None = None
    serial: str | None = None


def recall_query(gtin: str, lot: str | None = None, serial: str | None = None) -> RecallQuery:
    """Validate and normalise query parameters; ValueError names the bad one.

    Empty strings count as absent, so ``?gtin=...&lot=`` asks for every lot.
    """
    normalised = normalise_gtin(gtin.strip() if isinstance(gtin, str) else gtin)
    return RecallQuery(normalised, _param(lot, "lot"), _param(serial, "serial"))


def matches(identity: PackIdentity, query: RecallQuery) -> bool:
    """Whether one stored pack identity answers the query. The only matching rule there is."""
    if identity.gtin != query.gtin:
        return False
    if query.lot is not None and identity.lot != query.lot:
        return False
    return query.serial is None or identity.serial == query.serial


class RecallIndex:
    """Pack identities of ledger entries, by GTIN, lot and serial; append-only like the log.

    ``query`` narrows candidates with a dictionary lookup and then applies :func:`matches`,
    so the index can only be faster than a scan, never different from one.
    """

    def __init__(self) -> None:
        self._rows: list[tuple[int, str, PackIdentity]] = []
        self._by_gtin: dict[str, list[int]] = {}
        self._by_lot: dict[tuple[str, str], list[int]] = {}
        self._by_serial: dict[tuple[str, str], list[int]] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, entry_index: int, sender: str, identities: Iterable[PackIdentity]) -> None:
        """Record the packs one ledger entry (of ``sender``) used."""
        for identity in identities:
            if identity.gtin is None:
                continue
            row = len(self._rows)
            self._rows.append((entry_index, sender, identity))
            self._by_gtin.setdefault(identity.gtin, []).append(row)
            if identity.lot is not None:
                self._by_lot.setdefault((identity.gtin, identity.lot), []).append(row)
            if identity.serial is not None:
                self._by_serial.setdefault((identity.gtin, identity.serial), []).append(row)

    def query(
        self,
        gtin: str,
        lot: str | None = None,
        serial: str | None = None,
        sender: str | None = None,
    ) -> list[int]:
        """Sorted entry indexes whose packs match; only ``sender``'s entries when given."""
        q = recall_query(gtin, lot, serial)
        if q.serial is not None:
            candidates = self._by_serial.get((q.gtin, q.serial), [])
        elif q.lot is not None:
            candidates = self._by_lot.get((q.gtin, q.lot), [])
        else:
            candidates = self._by_gtin.get(q.gtin, [])
        found: set[int] = set()
        for row in candidates:
            entry_index, owner, identity = self._rows[row]
            if (sender is None or owner == sender) and matches(identity, q):
                found.add(entry_index)
        return sorted(found)

    def answer(
        self,
        gtin: str,
        lot: str | None = None,
        serial: str | None = None,
        sender: str | None = None,
    ) -> dict[str, object]:
        """The JSON body of ``GET /v1/trace``: the normalised query and the entry indexes.

        ValueError (a bad GTIN) is the caller's 400.
        """
        q = recall_query(gtin, lot, serial)
        return {
            "gtin": q.gtin,
            "lot": q.lot,
            "serial": q.serial,
            "entries": self.query(q.gtin, q.lot, q.serial, sender),
        }

    def rows(self) -> list[tuple[int, str, PackIdentity]]:
        """Every (entry index, sender, identity) stored, in insertion order."""
        return list(self._rows)


def _param(value: str | None, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name} must be text")
    value = value.strip()
    return value or None
