"""Bulk Data `$export` jobs (FHIR Bulk Data Access IG v2.0.0, "Bulk Data Export"): state in SQL.

A job is kicked off by one client, runs in a worker thread, and ends as a manifest of NDJSON
files, one per resource type. The job and its files are rows (`exchange_export_jobs`,
`exchange_export_files`), so a finished export survives a restart; a job interrupted by one
is reported as failed, to be started again.

A file is kept as the list of its resources' places in the stored Bundles (Bundle id, version,
byte span), not as a copy of the data: the patient data stays where the store keeps it (and
encrypts it), and each download is rebuilt from it and checked against the SHA-256 the
manifest gave. That SHA-256 is patient data too (it confirms a guess of the file), so it is
kept only sealed under a key made from the Bundle keys of every Bundle version in the file
(:func:`exchange.vault.joint_key`), each of which needs the key of every patient its Bundle
names: an erasure of any one of those patients leaves it unreadable.
Each line is a resource exactly as submitted, except that line breaks between JSON tokens
become spaces (NDJSON needs one resource per line; JSON strings cannot hold a raw line break,
so no value changes and `1200.00` stays `1200.00`).

What goes into a job is decided by the same rules as a search (:mod:`exchange.settlement`):
a hospital's own submissions, or for an insurer the resources addressed to it that the
patient's consent permits at the job's transaction time, through the cross-border gate. Each
download is decided again, at its own time: an insurer gets a file only while every line of
it still passes (:func:`download`), and a job and its files expire :data:`DEFAULT_TTL` after
the kick-off.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    delete,
    insert,
    inspect,
    select,
    text,
    update,
)

from exchange import vault
from exchange.bundles.read import bundle_by_id, patients_of, subjects_by_index
from exchange.consent.crossborder import TransferLedger
from exchange.settlement import index as settlement
from exchange.store.tables import bundles_table, files_table, jobs_table, settlement_table
from ledger import store

SHA256_EXTENSION = "https://medledger.example/fhir/StructureDefinition/ndjson-sha256"
NDJSON = "application/fhir+ndjson"
OUTPUT_FORMATS = frozenset({NDJSON, "application/ndjson", "ndjson"})
# A job in progress whose worker has not reported for this long belongs to a process that
# is gone (restarted or killed): it is reported failed rather than polled for ever.
STALE_AFTER = timedelta(seconds=120)
BATCH = 500
# How long a job and its files are kept after the kick-off (`medledger serve --export-ttl`).
DEFAULT_TTL = timedelta(hours=24)
DIGEST_LABEL = b"medledger-export/v1 digest"

IN_PROGRESS, COMPLETED, FAILED = "in-progress", "completed", "failed"

log = logging.getLogger("medledger.exchange")

# One id per process: a worker of this process that is not running any more is known dead.
PROCESS = uuid.uuid4().hex


def upgrade_schema(conn: Connection, opened: vault.Vault) -> bool:
    """Seals again, in place, the files' SHA-256 of a store written before they were sealed
    under the Bundle keys: a plain `sha256` column of hex text (the first format), or a
    digest sealed under the joint key of the first vault format's data keys (a `keys`
    column). Each file's digest is sealed under the joint key of its Bundles' Bundle keys
    (the vault must be of its current format), or dropped when one of them can no longer be
    opened (the file then answers 410, as it did). Idempotent; True when it upgraded."""
    inspector = inspect(conn)
    if not inspector.has_table(files_table.name):
        return False
    columns = {c["name"] for c in inspector.get_columns(files_table.name)}
    plain: dict[tuple[str, int], bytes | None]  # each file's SHA-256, None when unknowable
    if "sha256" in columns:
        old = conn.execute(
            text(f'SELECT job_id, n, resource_type, count, sha256, refs FROM "{files_table.name}"')
        ).all()
        plain = {(r.job_id, int(r.n)): bytes.fromhex(r.sha256) for r in old}
    elif "keys" in columns:
        old = conn.execute(
            text(f'SELECT job_id, n, resource_type, count, digest, keys, refs '
                 f'FROM "{files_table.name}"')
        ).all()  # fmt: skip
        plain = {(r.job_id, int(r.n)): _first_format_digest(conn, opened, r) for r in old}
    else:
        return False
    rows = []
    for r in old:
        parsed = [(str(b), int(v), int(st), int(ln)) for b, v, st, ln in json.loads(r.refs)]
        bundles = bundle_indexes_of(conn, parsed)
        digest: bytes | None = plain[(r.job_id, int(r.n))]
        if digest is not None:
            try:
                digest = seal_digest(conn, opened, r.job_id, int(r.n), bundles, digest)
            except (vault.Erased, vault.VaultError):
                digest = None
        rows.append({"job_id": r.job_id, "n": r.n, "resource_type": r.resource_type,
                     "count": r.count, "digest": digest, "bundles": json.dumps(bundles),
                     "refs": r.refs})  # fmt: skip
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("PRAGMA secure_delete = ON")  # zero the old table's pages
    conn.execute(text(f'DROP TABLE "{files_table.name}"'))
    files_table.create(conn)
    if rows:
        conn.execute(insert(files_table), rows)
    return True


def _first_format_digest(conn: Connection, opened: vault.Vault, row: Any) -> bytes | None:
    """A digest sealed under the joint key of the first vault format's data keys (the
    patients' keys themselves), opened; None when one of them was erased."""
    if row.digest is None:
        return None
    key_ids = sorted(json.loads(row.keys))
    deks = opened.data_keys(conn, key_ids)
    if len(deks) != len(key_ids):
        return None
    key = vault.joint_key([deks[k] for k in key_ids], DIGEST_LABEL)
    return vault.unseal_first_format(key, bytes(row.digest), _digest_aad(row.job_id, int(row.n)))


@dataclass(frozen=True)
class JobSpec:
    """What one kick-off asked for, as the client's role narrows it."""

    client_id: str
    org: str | None
    role: str
    purpose: str | None
    types: tuple[str, ...]
    since: str | None
    request: str


@dataclass(frozen=True)
class Job:
    id: str
    spec: JobSpec
    transaction_time: str
    status: str
    progress: str
    owner: str
    updated: str
    error: str | None


@dataclass(frozen=True)
class OutputFile:
    n: int
    resource_type: str
    count: int
    digest: bytes | None  # the SHA-256, sealed (see files_table)
    bundles: list[int]  # the ledger indexes of its Bundle versions
    refs: list[tuple[str, int, int, int]]


def _now() -> datetime:
    return datetime.now(UTC)


def _instant(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def start_job(engine: Engine, spec: JobSpec) -> Job:
    """Records a new job, in progress, owned by this process."""
    now = _instant(_now())
    job = Job(str(uuid.uuid4()), spec, now, IN_PROGRESS, "queued", PROCESS, now, None)
    with store.write_transaction(engine) as conn:
        conn.execute(
            insert(jobs_table).values(
                id=job.id,
                client_id=spec.client_id,
                org=spec.org,
                role=spec.role,
                purpose=spec.purpose,
                types=",".join(spec.types),
                since=spec.since,
                request=spec.request,
                transaction_time=job.transaction_time,
                status=job.status,
                progress=job.progress,
                owner=job.owner,
                updated=job.updated,
            )
        )
    return job


def load_job(engine: Engine, job_id: str) -> Job | None:
    with engine.connect() as conn:
        row = conn.execute(select(jobs_table).where(jobs_table.c.id == job_id)).first()
    if row is None:
        return None
    m = row._mapping
    spec = JobSpec(
        m["client_id"], m["org"], m["role"], m["purpose"],
        tuple(t for t in m["types"].split(",") if t), m["since"], m["request"],
    )  # fmt: skip
    return Job(
        m["id"], spec, m["transaction_time"], m["status"], m["progress"], m["owner"],
        m["updated"], m["error"],
    )  # fmt: skip


def files_of(engine: Engine, job_id: str) -> list[OutputFile]:
    t = files_table.c
    with engine.connect() as conn:
        rows = conn.execute(select(files_table).where(t.job_id == job_id).order_by(t.n)).all()
    return [
        OutputFile(
            int(r.n),
            r.resource_type,
            int(r._mapping["count"]),  # Row.count is the sequence method
            None if r.digest is None else bytes(r.digest),
            [int(i) for i in json.loads(r.bundles)],
            [(str(b), int(v), int(s), int(n)) for b, v, s, n in json.loads(r.refs)],
        )
        for r in rows
    ]


# --- expiry -------------------------------------------------------------------------------


def expires(job: Job, ttl: timedelta) -> datetime:
    """When the job and its files stop being served (and are deleted)."""
    return datetime.fromisoformat(job.transaction_time.replace("Z", "+00:00")) + ttl


def purge_expired(engine: Engine, ttl: timedelta, now: datetime | None = None) -> int:
    """Deletes the jobs kicked off longer than `ttl` ago, with their files; returns how many.
    Transaction times are fixed-width UTC text, so they compare as text."""
    cutoff = _instant((now or _now()) - ttl)
    with store.write_transaction(engine) as conn:
        old = (
            conn.execute(select(jobs_table.c.id).where(jobs_table.c.transaction_time < cutoff))
            .scalars()
            .all()
        )
        for start in range(0, len(old), BATCH):
            chunk = old[start : start + BATCH]
            conn.execute(delete(files_table).where(files_table.c.job_id.in_(chunk)))
            conn.execute(delete(jobs_table).where(jobs_table.c.id.in_(chunk)))
    return len(old)


# --- the sealed digests ---------------------------------------------------------------------


def bundle_indexes_of(conn: Connection, refs: Sequence[tuple[str, int, int, int]]) -> list[int]:
    """The ledger indexes of the Bundle versions of these refs (sorted, distinct): the
    Bundle keys the digest of their file is sealed under."""
    wanted = {(b, v) for b, v, _, _ in refs}
    ids = sorted({b for b, _ in wanted})
    t = bundles_table
    found: set[int] = set()
    for start in range(0, len(ids), BATCH):
        chunk = ids[start : start + BATCH]
        for row in conn.execute(select(t.c.id, t.c.version, t.c.idx).where(t.c.id.in_(chunk))):
            if (row.id, int(row.version)) in wanted:
                found.add(int(row.idx))
    return sorted(found)


def _digest_aad(job_id: str, n: int) -> bytes:
    return f"medledger-export/v1\x00{job_id}\x00{n}".encode()


def seal_digest(
    conn: Connection, opened: vault.Vault, job_id: str, n: int, bundles: list[int], digest: bytes
) -> bytes:
    key = opened.joint_key_of(conn, bundles, DIGEST_LABEL)
    return vault.seal_derived(key, digest, _digest_aad(job_id, n))


def file_sha256(vault_: vault.Vault, job_id: str, f: OutputFile) -> str | None:
    """The file's SHA-256 (hex), or None when it can no longer be known: a patient one of its
    Bundles names was erased (and the file can no longer be served)."""
    if f.digest is None:
        return None
    try:
        with vault_.engine.connect() as conn:
            key = vault_.joint_key_of(conn, f.bundles, DIGEST_LABEL)
    except vault.Erased:
        return None
    return vault.unseal_derived(key, f.digest, _digest_aad(job_id, f.n)).hex()


def delete_job(engine: Engine, job_id: str) -> bool:
    """Cancels (or discards) a job and its files; False when there was none."""
    with store.write_transaction(engine) as conn:
        conn.execute(delete(files_table).where(files_table.c.job_id == job_id))
        gone = conn.execute(delete(jobs_table).where(jobs_table.c.id == job_id))
    return gone.rowcount > 0


class _Running:
    """The ids of the jobs this process's workers are running."""

    def __init__(self) -> None:
        self._ids: set[str] = set()
        self._lock = threading.Lock()

    def add(self, job_id: str) -> None:
        with self._lock:
            self._ids.add(job_id)

    def discard(self, job_id: str) -> None:
        with self._lock:
            self._ids.discard(job_id)

    def __contains__(self, job_id: object) -> bool:
        with self._lock:
            return job_id in self._ids


RUNNING = _Running()


def is_orphaned(job: Job, now: datetime | None = None) -> bool:
    """An in-progress job no worker is running any more (its process restarted or died)."""
    if job.status != IN_PROGRESS:
        return False
    if job.owner == PROCESS:
        return job.id not in RUNNING
    updated = datetime.fromisoformat(job.updated.replace("Z", "+00:00"))
    return (now or _now()) - updated > STALE_AFTER


def mark_failed(engine: Engine, job_id: str, reason: str) -> None:
    with store.write_transaction(engine) as conn:
        conn.execute(
            update(jobs_table)
            .where(jobs_table.c.id == job_id, jobs_table.c.status == IN_PROGRESS)
            .values(status=FAILED, error=reason, updated=_instant(_now()))
        )


def _progress(engine: Engine, job_id: str, text: str) -> None:
    with store.write_transaction(engine) as conn:
        conn.execute(
            update(jobs_table)
            .where(jobs_table.c.id == job_id, jobs_table.c.status == IN_PROGRESS)
            .values(progress=text[:64], updated=_instant(_now()))
        )


# --- running a job ------------------------------------------------------------------------


def ndjson_line(resource: bytes) -> bytes:
    """One NDJSON line of a resource as submitted: line breaks between tokens become spaces
    (a raw line break cannot occur inside a JSON string, so no value changes)."""
    return resource.replace(b"\r", b" ").replace(b"\n", b" ") + b"\n"


def selected_rows(
    engine: Engine,
    job: Job,
    resource_type: str,
    policy: settlement.InsurerPolicy | None,
) -> list[settlement.Row]:
    """The rows of one type that go into the job's file, in ledger order."""
    spec = job.spec
    bounds = (settlement.DateBound("gt", spec.since),) if spec.since else ()
    chosen: list[settlement.Row] = []
    after: tuple[int, int] | None = None
    while True:
        batch = settlement.search_rows(
            engine,
            settlement.Query(
                (resource_type,),
                sender=spec.org if spec.role == "hospital" else None,
                insurer=spec.org if spec.role == "insurer" else None,
                last_updated=bounds,
                after=after,
                limit=BATCH,
            ),
        )
        for row in batch:
            if policy is None or policy.decide(row).permit:
                chosen.append(row)
        if len(batch) < BATCH:
            return chosen
        after = (batch[-1].index, batch[-1].pos)
        # A heartbeat: other processes tell a running job from an orphan by `updated`.
        _progress(engine, job.id, f"{resource_type}: {len(chosen)} resources so far")


def build_files(
    vault_: vault.Vault, gate: TransferLedger, job: Job
) -> list[tuple[OutputFile, bytes]]:
    """The job's output (blocking): one file per type with at least one resource."""
    engine = vault_.engine
    reader = settlement.BundleBytes(vault_)
    policy = None
    if job.spec.role == "insurer":
        assert job.spec.org is not None and job.spec.purpose is not None
        moment = datetime.fromisoformat(job.transaction_time.replace("Z", "+00:00"))
        policy = settlement.InsurerPolicy(
            engine, gate, job.spec.org, job.spec.purpose, moment, reader
        )
    out: list[tuple[OutputFile, bytes]] = []
    for n, rtype in enumerate(job.spec.types):
        _progress(engine, job.id, f"{n} of {len(job.spec.types)} types: {rtype}")
        rows = selected_rows(engine, job, rtype, policy)
        if not rows:
            continue
        data = b"".join(ndjson_line(reader.resource(r)) for r in rows)
        refs = [(r.bundle_id, r.version, r.start, r.length) for r in rows]
        n = len(out)
        with engine.connect() as conn:
            bundles = bundle_indexes_of(conn, refs)
            digest = hashlib.sha256(data).digest()
            sealed = seal_digest(conn, vault_, job.id, n, bundles, digest)
        out.append((OutputFile(n, rtype, len(rows), sealed, bundles, refs), data))
    return out


def finish_job(engine: Engine, job_id: str, files: Sequence[OutputFile]) -> bool:
    """Stores the files and completes the job in one transaction; False if it was cancelled."""
    with store.write_transaction(engine) as conn:
        done = conn.execute(
            update(jobs_table)
            .where(jobs_table.c.id == job_id, jobs_table.c.status == IN_PROGRESS)
            .values(status=COMPLETED, progress="done", updated=_instant(_now()))
        )
        if done.rowcount == 0:
            return False  # deleted while running: its files are not wanted
        if files:
            conn.execute(
                insert(files_table),
                [
                    {
                        "job_id": job_id,
                        "n": f.n,
                        "resource_type": f.resource_type,
                        "count": f.count,
                        "digest": f.digest,
                        "bundles": json.dumps(f.bundles),
                        "refs": json.dumps([list(r) for r in f.refs]),
                    }
                    for f in files
                ],
            )
    return True


def run_job(
    vault_: vault.Vault, gate: TransferLedger, job: Job, before: Callable[[], object] | None = None
) -> None:
    """The worker: builds and stores the job's files; a failure marks the job failed."""
    try:
        if before is not None:
            before()
        built = build_files(vault_, gate, job)
        finish_job(vault_.engine, job.id, [f for f, _ in built])
    except Exception as e:  # noqa: BLE001 - reported to the client through the job
        log.exception("export %s failed", job.id)
        try:
            mark_failed(
                vault_.engine, job.id, f"the export failed ({type(e).__name__}): start a new one"
            )
        except Exception:  # noqa: BLE001 - the database is gone too: polling will find it stale
            log.exception("export %s could not be marked failed", job.id)
    finally:
        RUNNING.discard(job.id)


def start_worker(
    vault_: vault.Vault, gate: TransferLedger, job: Job, before: Callable[[], object] | None = None
) -> None:
    """Runs the job in a daemon thread; `before` runs first in it (a hold, for tests)."""
    RUNNING.add(job.id)
    worker = threading.Thread(
        target=run_job, args=(vault_, gate, job, before), name=f"export-{job.id}", daemon=True
    )
    worker.start()


def file_bytes(vault_: vault.Vault, f: OutputFile) -> bytes:
    """A file rebuilt from the stored Bundles (LookupError when a Bundle is gone)."""
    cache: dict[tuple[str, int], bytes] = {}
    lines: list[bytes] = []
    for bundle_id, version, start, length in f.refs:
        key = (bundle_id, version)
        if key not in cache:
            stored = bundle_by_id(vault_, bundle_id, version)
            if stored is None:
                raise LookupError(f"Bundle {bundle_id} version {version} is gone")
            cache[key] = stored.data
        lines.append(ndjson_line(cache[key][start : start + length]))
    return b"".join(lines)


@dataclass(frozen=True)
class Disclosure:
    """A file as it may be served now, and whom it discloses."""

    data: bytes
    # Each patient an access entry names (the subject of a Bundle of its lines) -> the
    # further patients those Bundles name (exchange.db.patients_of), and -> its lines.
    patients: dict[bytes, list[bytes]]
    lines: dict[bytes, int]


class FileGone(Exception):
    """The file cannot be rebuilt as exported: data in it was erased (410)."""


class NoLongerPermitted(Exception):
    """A line of the file is no longer permitted to this insurer now (403): a patient
    withdrew, a consent expired, the cross-border gate closed."""


def download(
    vault_: vault.Vault, gate: TransferLedger, job: Job, f: OutputFile, now: datetime
) -> Disclosure:
    """The file, rebuilt and checked against its digest; for an insurer every line decided
    again, now, as a search would decide it, and the patients it discloses (a hospital's own
    submissions disclose nothing). A file is served whole or not at all: its manifest gave
    its count and SHA-256, so a changed consent refuses it, and a new export leaves out
    whoever withdrew."""
    engine = vault_.engine
    expected = file_sha256(vault_, job.id, f)
    if expected is None:
        raise FileGone("a data key of a Bundle in this file was destroyed by an erasure")
    try:
        data = file_bytes(vault_, f)
    except (LookupError, vault.Erased) as e:
        raise FileGone(str(e)) from None
    if hashlib.sha256(data).hexdigest() != expected:
        raise FileGone("the file no longer rebuilds to the digest the manifest gave")
    if job.spec.role != "insurer":
        return Disclosure(data, {}, {})
    assert job.spec.org is not None and job.spec.purpose is not None
    rows = rows_at(engine, f.refs)
    if any(row is None for row in rows):
        raise FileGone("a resource of this file is no longer indexed (its Bundle was erased)")
    reader = settlement.BundleBytes(vault_)
    policy = settlement.InsurerPolicy(engine, gate, job.spec.org, job.spec.purpose, now, reader)
    subjects = subjects_by_index(vault_, [row.index for row in rows if row is not None])
    named: list[list[bytes]] = []
    lines: dict[bytes, int] = {}
    for row in rows:
        assert row is not None
        verdict = policy.decide(row)
        if not verdict.permit:
            raise NoLongerPermitted(verdict.reason)
        named.append(subjects.get(row.index, []))
        if named[-1]:
            lines[named[-1][0]] = lines.get(named[-1][0], 0) + 1
    return Disclosure(data, patients_of(named), lines)


def rows_at(
    engine: Engine, refs: Sequence[tuple[str, int, int, int]]
) -> list[settlement.Row | None]:
    """The settlement index row of each ref (None where there is none any more)."""
    t = settlement_table.c
    ids = sorted({b for b, _, _, _ in refs})
    found: dict[tuple[str, int, int], settlement.Row] = {}
    with engine.connect() as conn:
        for start in range(0, len(ids), BATCH):
            chunk = ids[start : start + BATCH]
            for r in conn.execute(select(settlement_table).where(t.bundle_id.in_(chunk))):
                row = settlement.row_of(r)
                found[(row.bundle_id, row.version, row.start)] = row
    return [found.get((b, v, st)) for b, v, st, _ in refs]


def manifest(
    job: Job, files: Sequence[tuple[OutputFile, str | None]], base_url: str
) -> dict[str, Any]:
    """The complete-status body (Bulk Data IG v2, "Response - Complete Status").

    Each output item carries the SHA-256 of its file in `extension`, keyed by
    :data:`SHA256_EXTENSION` (the IG allows extension objects on the manifest's items); a
    file whose digest can no longer be known (data in it was erased) has none.
    """
    return {
        "transactionTime": job.transaction_time,
        "request": job.spec.request,
        "requiresAccessToken": True,
        "output": [
            {
                "type": f.resource_type,
                "url": f"{base_url}/fhir/$export-status/{job.id}/{f.n}.ndjson",
                "count": f.count,
                **({"extension": {SHA256_EXTENSION: sha256}} if sha256 is not None else {}),
            }
            for f, sha256 in files
        ],
        "error": [],
    }
