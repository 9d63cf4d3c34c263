"""The recall question -- which ledger entries used this pack or lot? -- answered in memory.

The matching rules live in :func:`matches` and nowhere else: the in-memory
:class:`RecallIndex`, a brute-force scan and the SQL the service runs against its table must
agree with it. A query names a product in one or more of three ways, all of which must hold:

- a GTIN (any of GTIN-8/12/13/14; compared in the 14-digit form, GS1 General Specifications
  3.3.2), the manufacturer's key;
- the pilot zone's special-import approval number, compared in the form
  :func:`adapters.trace_fhir.normalise_approval` gives (brackets and full-width forms folded),
  the key the Chinese regulator knows the product by;
- a Chinese 20-digit drug trace code (one pack), compared as its 20 digits.

Optionally a lot (AI 10) and a serial (AI 21), compared exactly: GS1 character set 82 is
case-sensitive and a recall notice quotes the lot as labelled. An identity without a lot
never matches a query that names one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from adapters.rwd_identity import PackIdentity
from adapters.trace_fhir import normalise_approval
from adapters.tracecode import normalise_cn_code, normalise_gtin

__all__ = ["RecallIndex", "RecallQuery", "RecallQueryError", "matches", "recall_query"]


class RecallQueryError(ValueError):
    """A recall query parameter that cannot be used; ``parameter`` names it (the caller's 400)."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter


@dataclass(frozen=True)
class RecallQuery:
    """A validated query: GTIN-14, approval number and Chinese code in their compared forms,
    the lot and serial as given (None = any). At least one of the product keys is set."""

    gtin: str | None = None
    lot: str | None = None
    serial: str | None = None
    approval: str | None = None
    cn_code: str | None = None

    def __post_init__(self) -> None:
        if self.gtin is None and self.approval is None and self.cn_code is None:
            raise RecallQueryError(
                "gtin", "name the product: gtin, approval (import approval number) or cn_code"
            )


def recall_query(
    gtin: str | None = None,
    lot: str | None = None,
    serial: str | None = None,
    *,
    approval: str | None = None,
    cn_code: str | None = None,
) -> RecallQuery:
    """Validate and normalise query parameters; :class:`RecallQueryError` names the bad one.

    Empty strings count as absent, so ``?gtin=...&lot=`` asks for every lot.
    """
    g = _param(gtin, "gtin")
    a = _param(approval, "approval")
    c = _param(cn_code, "cn_code")
    try:
        g = normalise_gtin(g) if g is not None else None
    except ValueError as e:
        raise RecallQueryError("gtin", str(e)) from None
    try:
        a = normalise_approval(a) if a is not None else None
    except ValueError as e:
        raise RecallQueryError("approval", str(e)) from None
    try:
        c = normalise_cn_code(c) if c is not None else None
    except ValueError as e:
        raise RecallQueryError("cn_code", str(e)) from None
    return RecallQuery(g, _param(lot, "lot"), _param(serial, "serial"), a, c)


def matches(identity: PackIdentity, query: RecallQuery) -> bool:
    """Whether one stored pack identity answers the query. The only matching rule there is."""
    if query.gtin is not None and identity.gtin != query.gtin:
        return False
    if query.approval is not None and identity.import_approval != query.approval:
        return False
    if query.cn_code is not None and identity.cn_code != query.cn_code:
        return False
    if query.lot is not None and identity.lot != query.lot:
        return False
    return query.serial is None or identity.serial == query.serial


class RecallIndex:
    """Pack identities of ledger entries, by GTIN, lot, serial, approval and Chinese code;
    append-only like the log.

    ``query`` narrows candidates with a dictionary lookup and then applies :func:`matches`,
    so the index can only be faster than a scan, never different from one.
    """

    def __init__(self) -> None:
        self._rows: list[tuple[int, str, PackIdentity]] = []
        self._by_gtin: dict[str, list[int]] = {}
        self._by_lot: dict[tuple[str, str], list[int]] = {}
        self._by_serial: dict[tuple[str, str], list[int]] = {}
        self._by_approval: dict[str, list[int]] = {}
        self._by_cn_code: dict[str, list[int]] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, entry_index: int, sender: str, identities: Iterable[PackIdentity]) -> None:
        """Record the packs one ledger entry (of ``sender``) used."""
        for identity in identities:
            if (
                identity.gtin is None
                and identity.import_approval is None
                and identity.cn_code is None
            ):
                continue
            row = len(self._rows)
            self._rows.append((entry_index, sender, identity))
            if identity.gtin is not None:
                self._by_gtin.setdefault(identity.gtin, []).append(row)
                if identity.lot is not None:
                    self._by_lot.setdefault((identity.gtin, identity.lot), []).append(row)
                if identity.serial is not None:
                    self._by_serial.setdefault((identity.gtin, identity.serial), []).append(row)
            if identity.import_approval is not None:
                self._by_approval.setdefault(identity.import_approval, []).append(row)
            if identity.cn_code is not None:
                self._by_cn_code.setdefault(identity.cn_code, []).append(row)

    def query(
        self,
        gtin: str | None = None,
        lot: str | None = None,
        serial: str | None = None,
        sender: str | None = None,
        *,
        approval: str | None = None,
        cn_code: str | None = None,
    ) -> list[int]:
        """Sorted entry indexes whose packs match; only ``sender``'s entries when given."""
        q = recall_query(gtin, lot, serial, approval=approval, cn_code=cn_code)
        if q.cn_code is not None:
            candidates = self._by_cn_code.get(q.cn_code, [])
        elif q.gtin is not None and q.serial is not None:
            candidates = self._by_serial.get((q.gtin, q.serial), [])
        elif q.gtin is not None and q.lot is not None:
            candidates = self._by_lot.get((q.gtin, q.lot), [])
        elif q.gtin is not None:
            candidates = self._by_gtin.get(q.gtin, [])
        else:
            candidates = self._by_approval.get(str(q.approval), [])
        found: set[int] = set()
        for row in candidates:
            entry_index, owner, identity = self._rows[row]
            if (sender is None or owner == sender) and matches(identity, q):
                found.add(entry_index)
        return sorted(found)

    def answer(
        self,
        gtin: str | None = None,
        lot: str | None = None,
        serial: str | None = None,
        sender: str | None = None,
        *,
        approval: str | None = None,
        cn_code: str | None = None,
    ) -> dict[str, object]:
        """The JSON body of ``GET /v1/trace``: the normalised query and the entry indexes.

        :class:`RecallQueryError` (a ValueError naming the parameter) is the caller's 400.
        """
        q = recall_query(gtin, lot, serial, approval=approval, cn_code=cn_code)
        return {
            "gtin": q.gtin,
            "approval": q.approval,
            "cn_code": q.cn_code,
            "lot": q.lot,
            "serial": q.serial,
            "entries": self.query(
                q.gtin, q.lot, q.serial, sender, approval=q.approval, cn_code=q.cn_code
            ),
        }

    def rows(self) -> list[tuple[int, str, PackIdentity]]:
        """Every (entry index, sender, identity) stored, in insertion order."""
        return list(self._rows)


def _param(value: str | None, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise RecallQueryError(name, f"{name} must be text")
    value = value.strip()
    return value or None
