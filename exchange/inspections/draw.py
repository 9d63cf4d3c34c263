"""Package draw implements "double random, one open" inspection draws on the ledger.

A regulator publishes a seed, then appends it to the log as an entry of kind `inspection`
(:func:`publish`); the draw is made from that entry alone, so it is bound to a log position
created after the seed was public, and anyone holding the log can re-draw and compare
(:func:`redraw`). The regulator cannot choose the sample: it cannot know the entry's leaf
hash before the log sequences it (its time and its `prev` chain are the log's), and a second
entry for the same seed is refused. Whoever sequences the entry is trusted not to grind its
salt or time (docs/regulators.md, "Limit").

The seed document is the RFC 8785 canonical JSON

    {"entries":M,"institutions":N,"seed":"S","v":1}

kept beside the entry (table `inspection_seeds`, with its salt); the entry commits to it by
SHA-256(salt || document) as every entry does, with sender the inspecting organisation and
media `application/json`. No patient data: the seed is printable ASCII of the regulator's
choosing and the document holds nothing else.

The draw of the seed entry at index i:

    tree size  n = i + 1                        the first tree that holds the seed entry
    key          = SHA-256("medledger-inspection/v1" || 0x00 || leaf hash of entry i
                            || n as 8 bytes big-endian)
    institutions = the senders of `institution` entries (the registry) before i
    entries(org) = the indexes before i of org's submissions (kinds record, consent, rwd,
                   settlement)

Institutions are ranked by SHA-256(key || 0x01 || org) and the first N are drawn; for each,
its entries are ranked by SHA-256(key || 0x02 || org || 0x00 || index as 8 bytes big-endian)
and the first M are drawn, listed in ledger order. Fewer than N institutions (or M entries)
are all drawn. Ranking by a keyed hash needs no random-number generator to agree on and
does not depend on the order the population is listed in. Org ids are FHIR ids (no NUL), so
the hashed strings cannot be confused.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, select

from exchange.errors import Conflict, Invalid, NotFound
from exchange.store.tables import inspection_seeds_table
from ledger.entry import SALT_SIZE, Entry, commitment, parse_entry
from ledger.errors import DuplicateConflict
from ledger.jcs import canonicalize
from ledger.log import Log, Submission
from ledger.merkle import leaf_hash

__all__ = [
    "KIND",
    "SUBMISSION_KINDS",
    "Draw",
    "Mismatch",
    "Request",
    "compare",
    "draw_key",
    "find_seed",
    "population",
    "publish",
    "redraw",
    "select_draw",
]

KIND = "inspection"
MEDIA = "application/json"
REGISTRY_KIND = "institution"  # exchange.registry.institutions.KIND
SUBMISSION_KINDS = frozenset({"record", "consent", "rwd", "settlement"})
DOMAIN = b"medledger-inspection/v1"
MAX_SEED = 128
MAX_COUNT = 10_000
_SEED = re.compile(rf"[\x20-\x7e]{{1,{MAX_SEED}}}")
_SENDER = re.compile(r"[A-Za-z0-9.-]{1,64}")
_CHUNK = 1000


class Mismatch(Exception):
    """A logged seed that does not hold: its document is missing or does not match the
    entry's commitment, or a draw differs from the re-draw. `index` is the seed entry's."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"seed entry {index}: {reason}")
        self.index = index
        self.reason = reason


@dataclass(frozen=True)
class Request:
    """What is drawn: N institutions, M entries of each, from `seed`."""

    seed: str
    institutions: int
    entries: int

    def __post_init__(self) -> None:
        if not _SEED.fullmatch(self.seed):
            raise Invalid(f"the seed must be 1 to {MAX_SEED} printable ASCII characters", "seed")
        for name in ("institutions", "entries"):
            value = getattr(self, name)
            if not 1 <= value <= MAX_COUNT:
                raise Invalid(f"{name} must be from 1 to {MAX_COUNT}, not {value}", name)

    def document(self) -> bytes:
        """The seed document the entry commits to (RFC 8785)."""
        return canonicalize(
            {"v": 1, "seed": self.seed, "institutions": self.institutions, "entries": self.entries}
        )

    @staticmethod
    def from_document(data: bytes) -> Request:
        try:
            obj = json.loads(data)
            if canonicalize(obj) != data or obj.get("v") != 1 or len(obj) != 4:
                raise ValueError("not a version-1 canonical seed document")
            return Request(str(obj["seed"]), int(obj["institutions"]), int(obj["entries"]))
        except (ValueError, KeyError, TypeError, AttributeError, Invalid) as e:
            raise ValueError(f"malformed seed document: {e}") from None


@dataclass(frozen=True)
class Draw:
    """One draw: the seed entry it is bound to and what was drawn, in draw order."""

    request: Request
    index: int  # the seed entry's
    leaf: bytes  # its leaf hash
    salt: bytes
    key: bytes
    population: Mapping[str, Sequence[int]]
    drawn: tuple[tuple[str, tuple[int, ...]], ...]

    @property
    def tree_size(self) -> int:
        return self.index + 1

    def to_json(self) -> dict[str, object]:
        return {
            "seed": self.request.seed,
            "institutions_asked": self.request.institutions,
            "entries_asked": self.request.entries,
            "seed_entry": {
                "index": self.index,
                "leaf_hash": base64.b64encode(self.leaf).decode(),
                "document": self.request.document().decode(),
                "salt": base64.b64encode(self.salt).decode(),
            },
            "tree_size": self.tree_size,
            "key": self.key.hex(),
            "population": {
                "institutions": len(self.population),
                "entries": sum(len(v) for v in self.population.values()),
            },
            "drawn": [
                {"institution": org, "of": len(self.population[org]), "entries": list(entries)}
                for org, entries in self.drawn
            ],
        }


def draw_key(leaf: bytes, tree_size: int) -> bytes:
    """SHA-256("medledger-inspection/v1" || 0x00 || leaf hash || tree size, 8 bytes BE)."""
    return hashlib.sha256(DOMAIN + b"\x00" + leaf + tree_size.to_bytes(8, "big")).digest()


def _org_rank(key: bytes, org: str) -> bytes:
    return hashlib.sha256(key + b"\x01" + org.encode("ascii")).digest()


def _entry_rank(key: bytes, org: str, index: int) -> bytes:
    return hashlib.sha256(
        key + b"\x02" + org.encode("ascii") + b"\x00" + index.to_bytes(8, "big")
    ).digest()


def select_draw(
    key: bytes, population: Mapping[str, Sequence[int]], institutions: int, entries: int
) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """The first `institutions` orgs by keyed rank, each with its first `entries` indexes by
    keyed rank, listed in ledger order."""
    orgs = sorted(population, key=lambda org: _org_rank(key, org))[:institutions]
    return tuple(
        (
            org,
            tuple(
                sorted(
                    sorted(set(population[org]), key=lambda i: _entry_rank(key, org, i))[:entries]
                )
            ),
        )
        for org in orgs
    )


def population(entries: Sequence[Entry] | Iterator[Entry]) -> dict[str, list[int]]:
    """The institutions the registry entries name, each with the indexes of its
    submissions, from entries given in ledger order."""
    registered: dict[str, list[int]] = {}
    submitted: dict[str, list[int]] = {}
    for e in entries:
        if e.kind == REGISTRY_KIND:
            registered.setdefault(e.sender, [])
        elif e.kind in SUBMISSION_KINDS:
            submitted.setdefault(e.sender, []).append(e.index)
    return {org: submitted.get(org, []) for org in registered}


def _entries_before(log: Log, end: int) -> Iterator[Entry]:
    for start in range(0, end, _CHUNK):
        for data in log.entries(start, min(end, start + _CHUNK)):
            yield parse_entry(data)


def find_seed(engine: Engine, seed: str) -> int | None:
    """The index of the entry that logged `seed`, if one did."""
    t = inspection_seeds_table
    with engine.connect() as conn:
        row = conn.execute(select(t.c.idx).where(t.c.seed == seed)).first()
    return None if row is None else int(row[0])


def publish(log: Log, request: Request, sender: str) -> int:
    """Appends the seed entry (or finds the one a retry of the same request appended) and
    returns its index. A seed is logged once: the same seed with other counts is refused."""
    if not _SENDER.fullmatch(sender):
        raise Invalid("the inspecting organisation must be a FHIR id", "org")
    document = request.document()
    salt = os.urandom(SALT_SIZE)

    def write(conn: Connection, entry: Entry) -> None:
        conn.execute(
            inspection_seeds_table.insert().values(
                idx=entry.index, seed=request.seed, salt=salt, data=document
            )
        )

    seed_key = "inspection:" + hashlib.sha256(request.seed.encode("ascii")).hexdigest()
    try:
        appended = log.append(
            Submission(
                kind=KIND,
                sender=sender,
                commit=commitment(salt, document),
                media=MEDIA,
                dedupe_keys=(seed_key,),
                digest=hashlib.sha256(document).digest(),
                write=write,
            )
        )
    except DuplicateConflict as e:
        raise Conflict(
            f"the seed was logged at entry {e.index} with other counts; a seed is drawn once "
            f"(inspect check --index {e.index})",
            "seed",
        ) from None
    return appended.entry.index


def _seed_row(conn: Connection, index: int) -> tuple[bytes, bytes] | None:
    t = inspection_seeds_table
    row = conn.execute(select(t.c.salt, t.c.data).where(t.c.idx == index)).first()
    return None if row is None else (bytes(row[0]), bytes(row[1]))


def redraw(log: Log, index: int) -> Draw:
    """The draw of the seed entry at `index`, from the log and the stored seed document."""
    size = log.size()
    if not 0 <= index < size:
        raise NotFound(f"the log has no entry {index} (its size is {size})", "index")
    data = log.entries(index, index + 1)[0]
    entry = parse_entry(data)
    if entry.kind != KIND:
        raise NotFound(f"entry {index} is of kind {entry.kind!r}, not {KIND!r}", "index")
    with log.engine.connect() as conn:
        row = _seed_row(conn, index)
    if row is None:
        raise Mismatch(index, "no seed document is stored for it")
    salt, document = row
    if commitment(salt, document) != entry.commit:
        raise Mismatch(index, "the stored seed document does not match the entry's commitment")
    try:
        request = Request.from_document(document)
    except ValueError as e:
        raise Mismatch(index, str(e)) from None
    leaf = leaf_hash(data)
    key = draw_key(leaf, index + 1)
    pop = population(_entries_before(log, index))
    drawn = select_draw(key, pop, request.institutions, request.entries)
    return Draw(request, index, leaf, salt, key, pop, drawn)


def compare(expected: object, draw: Draw) -> None:
    """Raises Mismatch naming the first member of a draw's JSON (as :meth:`Draw.to_json`
    printed it) that the re-draw does not give."""
    if not isinstance(expected, dict):
        raise Mismatch(draw.index, "the draw to check is not a JSON object")
    fresh = draw.to_json()
    for name, value in fresh.items():
        if expected.get(name) != value:
            raise Mismatch(
                draw.index,
                f"{name} differs: the draw says {expected.get(name)!r}, the re-draw {value!r}",
            )
    extra = sorted(set(expected) - set(fresh))
    if extra:
        raise Mismatch(draw.index, f"the draw has members a draw does not: {extra}")
