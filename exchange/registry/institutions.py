"""Institution registry: signed attestations appended to the ledger (`kind=institution`).

Every change to an institution's record is one attestation: the complete new record, the
admin who made the change, the admin's Ed25519 public key and a signature (RFC 8032) over the
RFC 8785 canonical bytes of everything else. The attestation bytes are stored beside the entry
(table `institution_attestations`) and the entry commits to them by SHA-256(salt || bytes), so
"what did the registry say about ORG on date D" is answered by `registry_as_of`, which replays
the log alone: it checks each commitment and signature and keeps the last record per org
appended on or before D. The table `institutions` is the current state, written in the same
transaction as the entry; `replay_registry` must equal it.

Admin keys are registered in `institution_admin_keys`; an attestation whose key is not the
registered key of its admin is refused before anything is appended.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import Any, TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine

from adapters.tracecode import gtin_check_digit
from exchange.store.tables import admin_keys_table, attestations_table, institutions_table
from ledger.encoding import b64
from ledger.entry import SALT_SIZE, Entry, commitment, parse_entry
from ledger.jcs import canonicalize
from ledger.log import Log, Submission

_R = TypeVar("_R")

KIND = "institution"
MEDIA = "application/json"


class RegistryError(ValueError):
    """An attestation that cannot be appended or replayed; the message says why."""


@dataclass(frozen=True)
class Accreditation:
    body: str  # e.g. "JCI"
    scope: str
    valid_from: date
    valid_to: date
    last_reassessment: date | None = None
    international: bool = True


@dataclass(frozen=True)
class Institution:
    org: str  # the sender id used in ledger entries
    name_zh: str
    name_en: str
    licence_number: str
    licence_valid_from: date
    licence_valid_to: date
    region: str | None = None  # e.g. "Boao Lecheng International Medical Tourism Pilot Zone"
    accreditations: tuple[Accreditation, ...] = ()
    blacklisted: bool = False
    blacklist_reason: str | None = None
    # The GS1 global location number of the site (13 digits, mod-10 check digit): where its
    # dispensing events happen when a Bundle names no GLN of its own (GET /epcis/events).
    gln: str | None = None

    def __post_init__(self) -> None:
        if self.gln is not None and not is_gln(self.gln):
            raise RegistryError(f"gln {self.gln!r} is not a GLN (13 digits, mod-10 check digit)")

    def to_json(self) -> dict[str, object]:
        # A record without a GLN keeps the bytes records had before the field existed.
        return {k: _jsonable(v) for k, v in asdict(self).items() if not (k == "gln" and v is None)}

    @staticmethod
    def from_json(obj: dict[str, object]) -> Institution:
        listed = obj.get("accreditations")
        accs = tuple(
            Accreditation(
                body=str(a["body"]),
                scope=str(a["scope"]),
                valid_from=date.fromisoformat(str(a["valid_from"])),
                valid_to=date.fromisoformat(str(a["valid_to"])),
                last_reassessment=(
                    None
                    if a.get("last_reassessment") is None
                    else date.fromisoformat(str(a["last_reassessment"]))
                ),
                international=bool(a.get("international", True)),
            )
            for a in (listed if isinstance(listed, list) else [])
        )
        reason = obj.get("blacklist_reason")
        region = obj.get("region")
        gln = obj.get("gln")
        return Institution(
            org=str(obj["org"]),
            name_zh=str(obj["name_zh"]),
            name_en=str(obj["name_en"]),
            licence_number=str(obj["licence_number"]),
            licence_valid_from=date.fromisoformat(str(obj["licence_valid_from"])),
            licence_valid_to=date.fromisoformat(str(obj["licence_valid_to"])),
            region=None if region is None else str(region),
            accreditations=accs,
            blacklisted=bool(obj.get("blacklisted", False)),
            blacklist_reason=None if reason is None else str(reason),
            gln=None if gln is None else str(gln),
        )


def is_gln(value: str) -> bool:
    """A GS1 GLN: 13 digits whose last is the mod-10 check digit (GS1 General Specifications
    7.9.1), the same check as a GTIN-13's."""
    return re.fullmatch(r"[0-9]{13}", value) is not None and gtin_check_digit(value[:12]) == int(
        value[12]
    )


def _jsonable(value: object) -> object:
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


# --- attestations -------------------------------------------------------------------------


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def sign_attestation(record: Institution, admin: str, key: Ed25519PrivateKey) -> bytes:
    """The attestation bytes: canonical JSON of the record, admin, key and signature.

    The signature covers the RFC 8785 bytes of the object without `signature`, so anyone
    holding the attestation can re-verify it without this service.
    """
    return sign_record("record", record.to_json(), admin, key)


def sign_record(field: str, value: object, admin: str, key: Ed25519PrivateKey) -> bytes:
    """A signed registry record: canonical JSON of `field`: value, the admin, the admin's
    public key and an Ed25519 signature over the RFC 8785 bytes of the rest."""
    unsigned = {"admin": admin, "key": b64(raw_public_key(key.public_key())), field: value}
    return canonicalize({**unsigned, "signature": b64(key.sign(canonicalize(unsigned)))})


def open_record(
    data: bytes, field: str, what: str, parse: Callable[[Any], _R]
) -> tuple[str, bytes, _R, bytes]:
    """(admin, key, parse(field's value), signature) of a record sign_record made, verified:
    RFC 8785 form and the Ed25519 signature (RFC 8032). RegistryError names `what` failed."""
    try:
        obj = json.loads(data)
        unsigned = {k: obj[k] for k in ("admin", "key", field)}
        key = base64.b64decode(obj["key"], validate=True)
        sig = base64.b64decode(obj["signature"], validate=True)
        value = parse(obj[field])
    except (ValueError, KeyError, TypeError) as err:
        raise RegistryError(f"malformed {what}: {err}") from err
    if canonicalize(obj) != data:
        raise RegistryError(f"{what} is not in canonical (RFC 8785) form")
    try:
        Ed25519PublicKey.from_public_bytes(key).verify(sig, canonicalize(unsigned))
    except (InvalidSignature, ValueError) as err:
        raise RegistryError(f"bad signature on {what} by {unsigned['admin']}") from err
    return str(unsigned["admin"]), key, value, sig


@dataclass(frozen=True)
class Attestation:
    admin: str
    key: bytes
    record: Institution
    signature: bytes


def verify_attestation(data: bytes) -> Attestation:
    """Parse and verify one attestation (RFC 8032 Ed25519 over RFC 8785 bytes)."""
    return Attestation(*open_record(data, "record", "attestation", Institution.from_json))


def register_admin_key(engine: Engine, admin: str, public_key: Ed25519PublicKey) -> None:
    """Register (or replace) the Ed25519 key an admin signs registry changes with."""
    raw = raw_public_key(public_key)
    with engine.begin() as conn:
        conn.execute(admin_keys_table.delete().where(admin_keys_table.c.admin == admin))
        conn.execute(admin_keys_table.insert().values(admin=admin, public_key=raw))


def registered_key(conn: Connection, admin: str) -> bytes | None:
    row = conn.execute(
        select(admin_keys_table.c.public_key).where(admin_keys_table.c.admin == admin)
    ).first()
    return None if row is None else bytes(row[0])


def require_registered(engine: Engine, admin: str, key: bytes) -> None:
    """RegistryError unless `key` is the registered key of `admin`."""
    with engine.connect() as conn:
        registered = registered_key(conn, admin)
    if registered is None:
        raise RegistryError(f"admin {admin!r} has no registered key")
    if registered != key:
        raise RegistryError(f"attestation key is not the registered key of {admin!r}")


def append_attestation(log: Log, data: bytes) -> int:
    """Verify a signed attestation and append it; returns the ledger index.

    Refused (nothing appended) when the signature fails or the key is not the registered
    key of the admin it names.
    """
    att = verify_attestation(data)
    require_registered(log.engine, att.admin, att.key)
    salt = os.urandom(SALT_SIZE)
    record_bytes = canonicalize(att.record.to_json())

    def write(conn: Connection, entry: Entry) -> None:
        conn.execute(
            attestations_table.insert().values(
                idx=entry.index, org=att.record.org, salt=salt, data=data
            )
        )
        conn.execute(institutions_table.delete().where(institutions_table.c.org == att.record.org))
        conn.execute(
            institutions_table.insert().values(
                org=att.record.org, idx=entry.index, record=record_bytes
            )
        )

    appended = log.append(
        Submission(
            kind=KIND,
            sender=att.record.org,
            commit=commitment(salt, data),
            media=MEDIA,
            write=write,
        )
    )
    global _changes
    _changes += 1
    return appended.entry.index


def current_registry(engine: Engine) -> dict[str, Institution]:
    """The registry as stored now (the table written beside each entry)."""
    with engine.connect() as conn:
        rows = conn.execute(select(institutions_table.c.org, institutions_table.c.record))
        return {r.org: Institution.from_json(json.loads(r.record)) for r in rows}


def lookup(engine: Engine, org: str) -> Institution | None:
    with engine.connect() as conn:
        row = conn.execute(
            select(institutions_table.c.record).where(institutions_table.c.org == org)
        ).first()
    return None if row is None else Institution.from_json(json.loads(row[0]))


@dataclass
class _Replay:
    state: dict[str, Institution] = field(default_factory=dict)


def registry_as_of(log: Log, day: date | None = None) -> dict[str, Institution]:
    """Replay `kind=institution` entries up to the end of `day` (UTC) from the log alone.

    Each entry's commitment and each attestation's signature are re-checked; a mismatch
    raises RegistryError naming the entry index.
    """
    size = log.size()
    entries = [parse_entry(b) for b in log.entries(0, size)] if size else []
    wanted = {e.index: e for e in entries if e.kind == KIND}
    if not wanted:
        return {}
    with log.engine.connect() as conn:
        rows = {
            r.idx: r
            for r in conn.execute(
                select(attestations_table).where(attestations_table.c.idx.in_(list(wanted)))
            )
        }
    replay = _Replay()
    for index in sorted(wanted):
        entry = wanted[index]
        if day is not None and date.fromisoformat(entry.time[:10]) > day:
            break
        row = rows.get(index)
        if row is None:
            raise RegistryError(f"entry {index}: no stored attestation")
        if commitment(bytes(row.salt), bytes(row.data)) != entry.commit:
            raise RegistryError(f"entry {index}: attestation does not match its commitment")
        att = verify_attestation(bytes(row.data))
        if att.record.org != entry.sender:
            raise RegistryError(f"entry {index}: attestation org differs from entry sender")
        replay.state[att.record.org] = att.record
    return replay.state


def replay_registry(log: Log) -> dict[str, Institution]:
    return registry_as_of(log, None)


# --- accreditation lapses ----------------------------------------------------------------

# JCI accredits for three years: a hospital whose last (re)assessment is older than that has
# not been resurveyed, whatever end date its record states.
REASSESSMENT_CYCLE_YEARS = {"JCI": 3}


@dataclass(frozen=True)
class Lapse:
    """When an accreditation stops counting, and why (`expired` or `reassessment-overdue`)."""

    on: date  # the first day it no longer counts
    reason: str


def _years_after(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February
        return day.replace(year=day.year + years, day=28)


def lapse_of(acc: Accreditation) -> Lapse:
    """The day `acc` lapses: the day after `valid_to`, or for a body with a reassessment cycle
    (JCI: 3 years) the cycle's end after the last (re)assessment (else after `valid_from`),
    whichever comes first."""
    expired = Lapse(acc.valid_to + timedelta(days=1), "expired")
    cycle = REASSESSMENT_CYCLE_YEARS.get(acc.body.upper())
    if cycle is None:
        return expired
    due = _years_after(acc.last_reassessment or acc.valid_from, cycle)
    return Lapse(due, "reassessment-overdue") if due < expired.on else expired


def accreditation_status(acc: Accreditation, day: date) -> str:
    """`accredited`, `lapsed` (on or after its lapse) or `not-yet` (before `valid_from`)."""
    if day < acc.valid_from:
        return "not-yet"
    return "lapsed" if day >= lapse_of(acc).on else "accredited"


# --- checking a sender --------------------------------------------------------------------


@dataclass(frozen=True)
class SenderVerdict:
    refused: str | None  # why the sender may not submit, or None
    flags: tuple[str, ...] = ()  # accepted but noteworthy (lapsed accreditation)


def check_sender(record: Institution | None, today: date, *, strict: bool) -> SenderVerdict:
    """Whether an institution may submit on `today`.

    Blacklisted or outside its licence validity -> refused. An international accreditation
    not valid today -> accepted, flagged. No record -> refused in strict mode, accepted (flagged
    `unregistered`) otherwise, so embedded/demo deployments work without a registry.
    """
    if record is None:
        if strict:
            return SenderVerdict("sender has no institution registry record")
        return SenderVerdict(None, ("unregistered",))
    if record.blacklisted:
        return SenderVerdict(f"institution is blacklisted: {record.blacklist_reason or ''}")
    if today > record.licence_valid_to:
        return SenderVerdict(
            f"licence {record.licence_number} expired on {record.licence_valid_to.isoformat()}"
        )
    if today < record.licence_valid_from:
        return SenderVerdict(
            f"licence {record.licence_number} not valid before "
            f"{record.licence_valid_from.isoformat()}"
        )
    flags = tuple(
        # The last day it counted: valid_to when it expired, as the header always said.
        f"accreditation-lapsed:{a.body}:{(lapse_of(a).on - timedelta(days=1)).isoformat()}"
        for a in record.accreditations
        if a.international and accreditation_status(a, today) != "accredited"
    )
    return SenderVerdict(None, flags)


# --- FHIR -------------------------------------------------------------------------------------

LICENCE_SYSTEM = "urn:medledger:institution-licence"


def organization_resource(record: Institution, today: date) -> dict[str, object]:
    """FHIR R4B Organization (with the licence as identifier and accreditations as
    `extension` qualifications, since R4B Organization has no `qualification` element)."""
    verdict = check_sender(record, today, strict=True)
    ext: list[dict[str, object]] = [
        {
            "url": "urn:medledger:extension:accreditation",
            "extension": [
                {"url": "body", "valueString": a.body},
                {"url": "scope", "valueString": a.scope},
                {
                    "url": "period",
                    "valuePeriod": {
                        "start": a.valid_from.isoformat(),
                        "end": a.valid_to.isoformat(),
                    },
                },
            ]
            + (
                []
                if a.last_reassessment is None
                else [{"url": "lastReassessment", "valueDate": a.last_reassessment.isoformat()}]
            ),
        }
        for a in record.accreditations
    ]
    if record.region:
        ext.append({"url": "urn:medledger:extension:region", "valueString": record.region})
    if record.blacklisted:
        ext.append(
            {
                "url": "urn:medledger:extension:blacklist",
                "valueString": record.blacklist_reason or "blacklisted",
            }
        )
    return {
        "resourceType": "Organization",
        "id": record.org,
        "active": verdict.refused is None,
        "identifier": [
            {
                "system": LICENCE_SYSTEM,
                "value": record.licence_number,
                "period": {
                    "start": record.licence_valid_from.isoformat(),
                    "end": record.licence_valid_to.isoformat(),
                },
            }
        ],
        "name": record.name_en,
        "alias": [record.name_zh],
        "extension": ext,
    }


# Bumped by every registry change this process appends, so its own changes reach intake at
# once (exchange.registry.admission.SenderCache); process-wide because the change and the
# cache meet only in the database.
_changes = 0


def changes() -> int:
    """How many registry changes this process has appended."""
    return _changes


def register_demo_institution(log: Log, org: str, today: date) -> int:
    """The demo's sample hospital as a licensed, JCI-accredited institution in the Boao
    Lecheng pilot zone, signed by a demo admin key generated for this data directory."""
    with log.engine.connect() as conn:
        known = conn.execute(
            select(institutions_table.c.idx).where(institutions_table.c.org == org)
        ).first()
    if known is not None:  # a second start of the demo: the registry already knows it
        return int(known[0])
    key = Ed25519PrivateKey.generate()
    register_admin_key(log.engine, "demo-admin", key.public_key())
    record = Institution(
        org=org,
        name_zh="博鳌乐城国际医院（演示）",
        name_en="Boao Lecheng International Hospital (demo)",
        licence_number="DEMO-469000-0001",
        licence_valid_from=date(today.year - 1, 1, 1),
        licence_valid_to=date(today.year + 2, 12, 31),
        region="Hainan Boao Lecheng International Medical Tourism Pilot Zone",
        accreditations=(
            Accreditation(
                "JCI",
                "academic medical center",
                date(today.year - 1, 1, 1),
                date(today.year + 2, 12, 31),
                date(today.year - 1, 6, 1),
            ),
        ),
    )
    return append_attestation(log, sign_attestation(record, "demo-admin", key))
