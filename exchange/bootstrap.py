"""The composition root: one log instance's store, log, vault, indexes and caches, built once.

:func:`open_store` is the one way a process opens a store: the engine, the schema brought to
the current version (exchange.store.migrate, with the vault for the revisions that rewrite
stored values), and the vault. :func:`open_log` opens the log on it with its keyring;
:func:`open_services` builds everything a server stands on into one plain
:class:`Services`, which the HTTP layer hands out piece by piece (exchange.http.deps) and
the CLI commands use. Nothing else builds any of these: domain code is given the pieces it
needs (an engine, a vault, a log) as arguments.
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection as PipeEnd
from pathlib import Path

from sqlalchemy import Connection, Engine, select

from exchange import vault
from exchange.bundles.admission import Admission
from exchange.config import Settings, configure_json_logging
from exchange.consent.crossborder import TransferLedger
from exchange.delivery import backoff
from exchange.identity.cache import ClientCache
from exchange.identity.jwks_url import JwksFetcher
from exchange.indexes.derived import Indexes
from exchange.intake import IntakeLimits
from exchange.intake.runner import IntakeRunner
from exchange.keys.keyring import Keyring, KeyringError, open_keyring
from exchange.outbox import process as outbox_process
from exchange.outbox.queue import Queue
from exchange.outbox.worker import Worker, WorkerConfig
from exchange.privacy.upgrade import upgrade_vault
from exchange.registry.admission import SenderCache
from exchange.settlement import bulk_export
from exchange.shl.viewer import render_viewer
from exchange.store import migrate
from exchange.store.secrets import PSEUDONYM_KEY, SHL_TICKET_KEY, secret, secret_in
from exchange.store.tables import keys_table
from ledger import store
from ledger.audit.state import atomic_write
from ledger.errors import LedgerError
from ledger.keys import KeyFileError
from ledger.log import Log
from ledger.merkle import ProofError
from ledger.policy import CheckpointRefused, Policy, PolicyError, load_policy
from ledger.witness.collector import CosignatureCollector

log = logging.getLogger("medledger.exchange")


@dataclass
class Services:
    """What one log instance's server stands on."""

    settings: Settings
    log: Log
    intake: IntakeRunner
    clients: ClientCache
    pseudonym_key: bytes  # keys lookup tags (exchange.vault.lookup_tag), never an entry's subject
    admission: Admission
    vault: vault.Vault
    senders: SenderCache
    indexes: Indexes
    gate: TransferLedger  # the cross-border transfer gate
    outbox: Worker  # deliveries to home hospitals (its queue: outbox.queue)
    shl_viewer: bytes  # the SMART Health Links viewer page, trusting the log's active keys
    shl_secret: bytes  # seals SHL location tickets (exchange.shl.manifest.Locations)
    # The JWKS of SMART clients registered by URL, fetched and cached (exchange.identity.jwks_url).
    jwks: JwksFetcher = field(default_factory=JwksFetcher)
    witnesses: CosignatureCollector | None = None  # under a witness policy (serve --policy)
    started: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def engine(self) -> Engine:
        return self.log.engine

    @property
    def limits(self) -> IntakeLimits:
        return self.intake.limits

    def checkpoint(self) -> str:
        """The checkpoint the log's readers are served: under a witness policy the newest
        one its quorum cosigned, once there is one; else the log's latest."""
        if self.witnesses is not None and (note := self.witnesses.witnessed()) is not None:
            return note
        return self.log.checkpoint()

    def start(self) -> None:
        """Starts what runs beside requests: the intake workers, the witness rounds."""
        self.intake.start()
        if self.witnesses is not None:
            self.witnesses.start()

    def close(self) -> None:
        if self.witnesses is not None:
            self.witnesses.close()
        self.intake.close()
        self.clients.epoch.close()
        self.log.close()
        self.engine.dispose()


def _vault_is_empty(conn: Connection) -> bool:
    return conn.execute(select(keys_table.c.key_id).limit(1)).first() is None


def master_key(settings: Settings, *, vault_is_empty: bool) -> vault.MasterKey:
    """MEDLEDGER_VAULT_KEY (settings.vault_key), else `vault.key` beside the signing key,
    created on first use (mode 0600). With an explicit --key-file it is created only while
    the vault holds no key yet, so a forgotten key file is never silently replaced. Losing it
    loses every stored Bundle: back it up apart from the database (docs/privacy.md)."""
    create = settings.key_file is None or vault_is_empty
    return vault.load_master_key(settings.vault_key_path, create=create, given=settings.vault_key)


def _data_upgrades(settings: Settings, engine: Engine) -> migrate.DataUpgrades:
    """The revisions' work that needs the vault, opened on the migration's own connection."""
    opened: list[vault.Vault] = []

    def vault_in(conn: Connection) -> vault.Vault:
        if not opened:
            master = master_key(settings, vault_is_empty=_vault_is_empty(conn))
            opened.append(vault.Vault(engine, master, secret_in(conn, PSEUDONYM_KEY)))
        return opened[0]

    return migrate.DataUpgrades(
        vault=lambda conn: upgrade_vault(vault_in(conn), conn),
        export_digests=lambda conn: bulk_export.upgrade_schema(conn, vault_in(conn)),
    )


def open_engine(settings: Settings) -> Engine:
    """The store's engine, its schema upgraded to the current version (the vault is opened
    only if a revision rewrites stored values)."""
    engine = settings.open_engine()
    done = migrate.upgrade(engine, _data_upgrades(settings, engine))
    if done:
        log.info("store upgraded: %s", "; ".join(done))
    return engine


def open_store(settings: Settings) -> tuple[Engine, vault.Vault]:
    """The store's engine, its schema upgraded to the current version, and its vault."""
    _require_key_file(settings)
    engine = open_engine(settings)
    with engine.connect() as conn:
        empty = _vault_is_empty(conn)
    master = master_key(settings, vault_is_empty=empty)
    return engine, vault.Vault(engine, master, secret(engine, PSEUDONYM_KEY))


def _require_key_file(settings: Settings) -> None:
    """An explicit --key-file must exist: nothing is created beside a key that is not there
    (the vault key would be, for a new store), and the error says how to make one."""
    if settings.key_file is not None and not settings.key_file.exists():
        raise KeyFileError(
            f"no signing key at {settings.key_file}: create the log's key files with "
            f"`medledger keys init --key-file {settings.key_file}` (docs/operations.md)"
        )


def active_vkeys(engine: Engine, ring: Keyring) -> list[str]:
    """The verifier keys of the log's keys active at its current size: those the SHL viewer
    page is built with (it checks receipts against the newest checkpoint)."""
    with engine.connect() as conn:
        head = store.read_head(conn)
        keys = ring.keyset(conn)
    return [k.verifier.vkey() for k in keys.active_at(0 if head is None else head[1])]


def open_log(settings: Settings, engine: Engine) -> tuple[Log, Keyring]:
    """The log on an open store, with its keyring: every checkpoint is signed by each key
    active at its size (`log.key` and the keys added since, `keys/<key id>.key` beside it;
    docs/operations.md). The last-checkpoint file makes the log refuse to append after the
    database was rolled back or replaced."""
    _require_key_file(settings)
    ring = open_keyring(
        engine, settings.origin, settings.signing_key_path, create=settings.key_file is None
    )
    with engine.connect() as conn:
        head = store.read_head(conn)
        keys = ring.keyset(conn)
    active = keys.active_at(0 if head is None else head[1])
    held = [s for k in active if (s := ring.signer_for(k.verifier.key_id)) is not None]
    if not held:
        raise KeyringError(
            f"none of the log's active keys is held in {ring.first_key} or {ring.keys_dir}"
        )
    ledger_log = Log(
        engine,
        held[0],
        origin=settings.origin,
        checkpoint_file=settings.checkpoint_path,
        signers_at=ring.signers_at,
        verifiers=keys.verifiers(),
    )
    return ledger_log, ring


class WitnessPolicyError(Exception):
    """The witness policy (Settings.policy) cannot be used: unreadable, malformed, naming
    other log keys only, or with a quorum its witnesses with URLs cannot meet."""


def open_witnesses(settings: Settings, ledger_log: Log) -> CosignatureCollector | None:
    """The collector of the log's cosignatures under `settings.policy` (None without one),
    not started: it offers each new checkpoint to the policy's witnesses, is told of every
    commit (Log.on_commit; it batches them into rounds, a few a second at most), and keeps
    the newest witnessed checkpoint in `settings.witnessed_path` for the next start."""
    path = settings.policy
    if path is None:
        return None
    try:
        policy = load_policy(path)
    except PolicyError as e:
        raise WitnessPolicyError(f"witness policy {path}: {e}") from e
    except OSError as e:
        raise WitnessPolicyError(f"cannot read the witness policy {path}: {e.strerror}") from e
    if policy.logs:  # readers trust its log keys: one must be a key this log signs with
        try:
            policy.evaluate(ledger_log.checkpoint())
        except CheckpointRefused as e:
            raise WitnessPolicyError(
                f"witness policy {path} does not accept this log's checkpoints: {e}"
            ) from e
    kept = settings.witnessed_path

    def keep(note: str) -> None:
        try:
            atomic_write(kept, note.encode(), mode=0o600)
        except OSError as e:
            log.warning("cannot keep the witnessed checkpoint in %s: %s", kept, e)

    try:
        collector = CosignatureCollector(
            policy,
            ledger_log.checkpoint,
            ledger_log.consistency_proof,
            on_witnessed=keep,
            initial=_kept_witnessed(kept, ledger_log, policy),
        )
    except ValueError as e:
        raise WitnessPolicyError(f"witness policy {path}: {e}") from e
    ledger_log.on_commit(collector.notify)
    return collector


def _kept_witnessed(path: Path, ledger_log: Log, policy: Policy) -> str | None:
    """The witnessed checkpoint kept by the last run, when it still meets the policy and is
    of this log's tree; else None (the witnesses cosign the latest one again soon)."""
    if not policy.logs or not path.exists():
        return None
    try:
        note = path.read_text(encoding="utf-8")
        cp = policy.require(note).checkpoint
        if cp.origin == ledger_log.origin and ledger_log.root(cp.size) == cp.root:
            return note
        reason = "it is not of this log's tree"
    except (OSError, UnicodeDecodeError, CheckpointRefused, LedgerError, ProofError) as e:
        reason = str(e)
    log.warning("not serving the witnessed checkpoint kept in %s: %s", path, reason)
    return None


def open_services(
    settings: Settings,
    *,
    limits: IntakeLimits | None = None,
    intake_workers: int = 0,
    intake: IntakeRunner | None = None,
    max_in_flight: int = 128,
) -> Services:
    """The services of one log instance. `intake`, when given, is a runner started before
    (its workers warm while the store opens); else one of `intake_workers` is made."""
    engine, opened = open_store(settings)
    ledger_log, ring = open_log(settings, engine)
    try:
        witnesses = open_witnesses(settings, ledger_log)
    except WitnessPolicyError:
        ledger_log.close()
        engine.dispose()
        raise
    if intake is None:
        intake = IntakeRunner(limits or IntakeLimits(), intake_workers)
    # Export jobs that expired while no server ran are gone before the first request.
    bulk_export.purge_expired(engine, settings.export_ttl)
    indexes = Indexes(opened)
    gate = TransferLedger(engine)
    return Services(
        settings=settings,
        log=ledger_log,
        intake=intake,
        clients=ClientCache(engine),
        pseudonym_key=opened.lookup_key,
        admission=Admission(max_in_flight),
        vault=opened,
        senders=SenderCache(engine, strict=settings.institutions_strict),
        indexes=indexes,
        gate=gate,
        outbox=outbox_worker(settings, opened, indexes, ledger_log, gate),
        shl_viewer=render_viewer(active_vkeys(engine, ring)),
        shl_secret=secret(engine, SHL_TICKET_KEY),
        witnesses=witnesses,
    )


def run_outbox(
    settings: Settings, signals: PipeEnd, submitted: ctypes.c_double, json_logs: bool
) -> None:
    """The outbox's own process (exchange.outbox.process): the store opened again, and its
    worker run until the server stops it (`signals`, `submitted`: outbox_process.serve)."""
    if json_logs:
        configure_json_logging()
    engine, opened = open_store(settings)
    ledger_log, _ = open_log(settings, engine)
    try:
        gate = TransferLedger(engine)
        worker = outbox_worker(settings, opened, Indexes(opened), ledger_log, gate)
        outbox_process.serve(worker, signals, submitted)
    finally:
        ledger_log.close()
        engine.dispose()


def outbox_worker(
    settings: Settings, opened: vault.Vault, indexes: Indexes, ledger_log: Log, gate: TransferLedger
) -> Worker:
    """The outbox's worker, on the schedule the settings give (exchange.outbox)."""
    policy = backoff.Policy(
        base=settings.delivery_first_wait,
        cap=settings.delivery_max_wait,
        deadline=settings.delivery_give_up,
    )
    # A claim outlives any attempt (and the work around it); a killed server's claims end
    # with it, so its deliveries are taken up again by then.
    lease = timedelta(seconds=2 * settings.delivery_timeout + 5)
    config = WorkerConfig(policy, settings.delivery_timeout, settings.delivery_poll, lease)
    return Worker(Queue(opened, indexes, opened.lookup_key), ledger_log, gate, config)
