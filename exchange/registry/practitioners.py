"""Practitioner licences: signed attestations appended to the ledger (`kind=practitioner`).

A licence is what lets a doctor perform procedures at an institution: a Chinese physician's
practice licence (`physician`), or a foreign doctor's short-term practice registration
(`foreign-short-term`, the Interim Measures for the Administration of Short-term Medical
Practice by Foreign Physicians in China, 外国医师来华短期行医暂行管理办法: a registration is
valid for at most one year and is renewed by registering again, a new attestation here).

Each attestation is signed as an institution's record is (exchange.registry.institutions): the
RFC 8785 canonical JSON `{admin, key, licence, signature}`, Ed25519 by a registered admin. The
entry's sender is the institution the licence is registered at, and it commits to the
attestation bytes by SHA-256(salt || bytes); the bytes are kept in `practitioner_licences`.
A licence names a practitioner by an id and a licence number, never a patient. The latest
attestation of a (practitioner, licence number) is the licence's current state, so a
correction or a revocation is a new attestation.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import date

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine

from exchange.intake import IntakeError, Issue
from exchange.intake.performers import Performance
from exchange.registry.institutions import (
    RegistryError,
    open_record,
    require_registered,
    sign_record,
)
from exchange.store.tables import practitioner_licences_table
from ledger.entry import SALT_SIZE, Entry, commitment, parse_entry
from ledger.log import Log, Submission

KIND = "practitioner"
MEDIA = "application/json"
CATEGORIES = ("physician", "foreign-short-term")
# The longest a foreign doctor's short-term practice registration runs (one year).
SHORT_TERM_YEARS = 1
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


@dataclass(frozen=True)
class Licence:
    practitioner: str  # the Practitioner's id, as Procedure.performer.actor references it
    org: str  # the institution the licence is registered at
    category: str  # one of CATEGORIES
    licence_number: str
    valid_from: date
    valid_to: date
    revoked: bool = False

    def __post_init__(self) -> None:
        for name in ("practitioner", "org", "licence_number"):
            if not _ID.fullmatch(getattr(self, name)):
                raise RegistryError(f"{name} must be 1-64 of A-Z a-z 0-9 - .")
        if self.category not in CATEGORIES:
            raise RegistryError(f"category must be one of {', '.join(CATEGORIES)}")
        if self.valid_to < self.valid_from:
            raise RegistryError("valid_to is before valid_from")
        if self.category == "foreign-short-term":
            limit = _years_after(self.valid_from, SHORT_TERM_YEARS)
            if self.valid_to >= limit:
                raise RegistryError(
                    "a foreign doctor's short-term practice registration is valid for at most "
                    f"one year: it must end before {limit.isoformat()} (renew it by recording "
                    "a new registration)"
                )

    def valid_on(self, day: date) -> bool:
        return not self.revoked and self.valid_from <= day <= self.valid_to

    def to_json(self) -> dict[str, object]:
        return {k: v.isoformat() if isinstance(v, date) else v for k, v in asdict(self).items()}

    @staticmethod
    def from_json(obj: dict[str, object]) -> Licence:
        return Licence(
            practitioner=str(obj["practitioner"]),
            org=str(obj["org"]),
            category=str(obj["category"]),
            licence_number=str(obj["licence_number"]),
            valid_from=date.fromisoformat(str(obj["valid_from"])),
            valid_to=date.fromisoformat(str(obj["valid_to"])),
            revoked=bool(obj.get("revoked", False)),
        )


def _years_after(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February
        return day.replace(year=day.year + years, day=28)


@dataclass(frozen=True)
class Attestation:
    admin: str
    key: bytes
    licence: Licence
    signature: bytes


def sign_licence(licence: Licence, admin: str, key: Ed25519PrivateKey) -> bytes:
    """The attestation bytes; the signature covers the RFC 8785 bytes without `signature`."""
    return sign_record("licence", licence.to_json(), admin, key)


def verify_licence(data: bytes) -> Attestation:
    """Parse and verify one licence attestation (RFC 8032 Ed25519 over RFC 8785 bytes)."""
    return Attestation(*open_record(data, "licence", "licence attestation", Licence.from_json))


def append_licence(log: Log, data: bytes) -> int:
    """Verify a signed licence attestation and append it; returns the ledger index.

    Refused (nothing appended) when the signature fails or the key is not the registered key
    of the admin it names.
    """
    att = verify_licence(data)
    require_registered(log.engine, att.admin, att.key)
    salt = os.urandom(SALT_SIZE)
    lic = att.licence

    def write(conn: Connection, entry: Entry) -> None:
        conn.execute(
            practitioner_licences_table.insert().values(
                idx=entry.index,
                org=lic.org,
                practitioner=lic.practitioner,
                licence_number=lic.licence_number,
                salt=salt,
                data=data,
            )
        )

    appended = log.append(
        Submission(
            kind=KIND, sender=lic.org, commit=commitment(salt, data), media=MEDIA, write=write
        )
    )
    return appended.entry.index


@dataclass(frozen=True)
class Attested:
    """A licence's current state with the attestation and ledger entry that set it."""

    index: int
    time: str  # the ledger entry's time (RFC 3339 UTC)
    attestation: Attestation


def _current(rows: Iterable[tuple[int, bytes]]) -> list[tuple[int, Licence]]:
    latest: dict[tuple[str, str], tuple[int, Licence]] = {}
    for idx, data in sorted(rows):
        lic = verify_licence(data).licence
        latest[(lic.practitioner, lic.licence_number)] = (idx, lic)
    return sorted(latest.values(), key=lambda x: x[0])


def attested_licences(log: Log, practitioner: str) -> list[Attested]:
    """The current licences of `practitioner`, each checked against its ledger entry."""
    t = practitioner_licences_table
    with log.engine.connect() as conn:
        rows = {
            int(r.idx): r for r in conn.execute(select(t).where(t.c.practitioner == practitioner))
        }
    out: list[Attested] = []
    for index, _ in _current((i, bytes(r.data)) for i, r in rows.items()):
        row = rows[index]
        entry = parse_entry(log.entries(index, index + 1)[0])
        if entry.kind != KIND or commitment(bytes(row.salt), bytes(row.data)) != entry.commit:
            raise RegistryError(f"entry {index}: licence attestation does not match its entry")
        out.append(Attested(index, entry.time, verify_licence(bytes(row.data))))
    return out


def org_licences(engine: Engine, org: str) -> list[Licence]:
    """The current licences registered at `org`, and of every practitioner registered there
    (a physician may hold licences at several institutions)."""
    t = practitioner_licences_table
    with engine.connect() as conn:
        names = select(t.c.practitioner).where(t.c.org == org).distinct()
        rows = conn.execute(select(t.c.idx, t.c.data).where(t.c.practitioner.in_(names)))
        return [lic for _, lic in _current((int(r.idx), bytes(r.data)) for r in rows)]


# --- performers at intake --------------------------------------------------------------------


def unlicensed(
    performances: Sequence[Performance], licences: Sequence[Licence], org: str
) -> list[Issue]:
    """A warning per Procedure performer without a licence valid on the Procedure's date.

    Only for an institution whose practitioners the registry knows (`licences` not empty):
    elsewhere nothing is known to check against, and submissions stay as they were. A
    foreign doctor's short-term registration counts only at the institution it names.
    """
    if not licences:
        return []
    issues: list[Issue] = []
    for p in performances:
        day = date.fromisoformat(p.day)
        mine = [
            lic
            for lic in licences
            if ("id", lic.practitioner) in p.keys or ("licence", lic.licence_number) in p.keys
        ]
        if any(
            lic.valid_on(day) and (lic.category != "foreign-short-term" or lic.org == org)
            for lic in mine
        ):
            continue
        why = "has no licence in the registry" if not mine else "had no valid licence"
        issues.append(
            Issue(
                "warning",
                "business-rule",
                f"performer {p.display} {why} on {p.day}, the Procedure's date",
                p.expression,
            )
        )
    return issues


def check_performers(
    engine: Engine, org: str | None, performances: Sequence[Performance], *, strict: bool
) -> list[Issue]:
    """The warnings for unlicensed performers; in strict mode a 422 refusal instead."""
    if org is None or not performances:
        return []
    issues = unlicensed(performances, org_licences(engine, org), org)
    if issues and strict:
        raise IntakeError(
            422, [Issue("error", i.code, i.diagnostics, i.expression) for i in issues]
        )
    return issues
