"""A transparency-log witness (C2SP tlog-witness, tlog-cosignature), and a log's side of it.

A witness is a separate, small program: a health authority, an insurer or an accreditation
body runs one, on its own machine, without the rest of medledger. It keeps the latest
checkpoint it cosigned for each log it follows and cosigns a new one only when a consistency
proof shows it extends that one, so a log that showed two different trees to two parties
could not collect a quorum of cosignatures for both. It needs the standard library,
``cryptography`` and the verifier path of ledger/ only.

One job a module:

  core       add-checkpoint: parsing the request, the spec's checks and statuses, cosigning
  store      the witness's SQLite file: its name, latest checkpoint per log, refusals
  server     the HTTP interface (POST /add-checkpoint, GET /<origin hash>/checkpoint)
  client     a log's (or monitor's) side of one witness: submit, with 409 handled
  collector  a log's background loop keeping every witness of a policy up to date, and the
             newest checkpoint that meets the policy's quorum
  __main__   ``python -m ledger.witness init|serve|vkey``

A witness's data directory holds ``witness.key`` (its Ed25519 key, PKCS#8 PEM, mode 0600) and
``witness.db`` (mode 0600); the directory is made 0700.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..cosignature import Cosigner, CosignerVerifier
from ..keys import KeyFileError, load_signer, write_key_file
from ..note import NoteError, Verifier, is_valid_key_name
from .core import AddCheckpointError, ForkRefused, SizeConflict, Witness
from .server import WitnessServer
from .store import WitnessStore, WitnessStoreError

KEY_FILE = "witness.key"
DB_FILE = "witness.db"
_NAME = "name"

__all__ = [
    "DB_FILE",
    "KEY_FILE",
    "AddCheckpointError",
    "ForkRefused",
    "SizeConflict",
    "Witness",
    "WitnessServer",
    "WitnessSetupError",
    "WitnessStore",
    "WitnessStoreError",
    "init",
    "open_witness",
    "serve",
    "verifier",
    "vkey",
]


class WitnessSetupError(Exception):
    """The data directory is not a witness's (or already is one), or a log key is unusable."""


def init(data_dir: Path, name: str) -> str:
    """Makes `data_dir` a witness named `name` (a key name: no spaces, no plus; a schema-less
    URL is recommended) with a new Ed25519 key; returns its verifier key (type 0x04).

    Refuses a directory that already holds a witness key: WitnessSetupError naming its vkey.
    """
    if not is_valid_key_name(name):
        raise WitnessSetupError(f"invalid witness name {name!r}: no spaces and no plus sign")
    key_path = data_dir / KEY_FILE
    if key_path.exists():
        raise WitnessSetupError(f"{data_dir} already holds a witness: {vkey(data_dir)}")
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    store = WitnessStore(data_dir / DB_FILE)
    store.set_meta(_NAME, name)
    key = Ed25519PrivateKey.generate()
    try:
        write_key_file(key_path, key)
    except FileExistsError:
        raise WitnessSetupError(f"{data_dir} already holds a witness: {vkey(data_dir)}") from None
    return Cosigner(name, key).verifier.vkey()


def _cosigner(data_dir: Path) -> tuple[Cosigner, WitnessStore]:
    db = data_dir / DB_FILE
    if not (data_dir / KEY_FILE).exists() or not db.exists():
        raise WitnessSetupError(
            f"{data_dir} is not a witness's data directory (run init with --data {data_dir})"
        )
    store = WitnessStore(db)
    name = store.get_meta(_NAME)
    if name is None:
        raise WitnessSetupError(f"{db} does not name its witness; run init again")
    try:
        signer = load_signer(data_dir / KEY_FILE, name)
    except KeyFileError as e:
        raise WitnessSetupError(str(e)) from e
    return Cosigner(name, signer.private_key), store


def vkey(data_dir: Path) -> str:
    """The verifier key (signed-note vkey, type 0x04) of the witness in `data_dir`."""
    return _cosigner(data_dir)[0].verifier.vkey()


def verifier(data_dir: Path) -> CosignerVerifier:
    return _cosigner(data_dir)[0].verifier


def open_witness(data_dir: Path, logs: Iterable[Verifier | str]) -> Witness:
    """The witness of `data_dir`, following the logs whose verifier keys (objects or vkey
    text, Ed25519, named after each log's origin) are given."""
    keys = []
    for lg in logs:
        try:
            keys.append(Verifier.from_vkey(lg) if isinstance(lg, str) else lg)
        except NoteError as e:
            raise WitnessSetupError(f"log key {lg!r}: {e}") from e
    if not keys:
        raise WitnessSetupError("a witness needs at least one log key to follow")
    cosigner, store = _cosigner(data_dir)
    return Witness(store, cosigner, keys)


def serve(
    data_dir: Path,
    logs: Iterable[Verifier | str],
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    timeout: float = 10.0,
    max_connections: int = 64,
) -> WitnessServer:
    """The witness of `data_dir` bound to (host, port), port 0 choosing a free one; call
    start() (background thread) or serve_forever(), and stop()."""
    witness = open_witness(data_dir, logs)
    return WitnessServer(witness, host, port, timeout=timeout, max_connections=max_connections)
