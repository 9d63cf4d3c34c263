"""Witnesses for tests: one initialised in a directory and served over real HTTP on a free
port, and add-checkpoint bodies built by hand as the spec writes them."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from pathlib import Path

from ledger.cosignature import CosignerVerifier
from ledger.note import Verifier
from ledger.witness import WitnessServer, init, serve


def start_witness(
    data_dir: Path, name: str, logs: Sequence[Verifier], port: int = 0
) -> tuple[WitnessServer, CosignerVerifier]:
    """A witness served on a background thread (initialised on first use)."""
    if not (data_dir / "witness.key").exists():
        init(data_dir, name)
    server = serve(data_dir, [v.vkey() for v in logs], port=port).start()
    return server, server.witness.verifier


def body(old: int, proof: Sequence[bytes], note: str) -> bytes:
    """An add-checkpoint request body, written out as c2sp.org/tlog-witness gives it."""
    lines = [f"old {old}"] + [base64.b64encode(h).decode() for h in proof]
    return ("\n".join(lines) + "\n\n" + note).encode()


def monitor_path(origin: str) -> str:
    return "/" + hashlib.sha256(origin.encode()).hexdigest() + "/checkpoint"


def policy_file(
    path: Path, log: Verifier, witnesses: Sequence[tuple[str, CosignerVerifier, str]], quorum: str
) -> Path:
    lines = [f"log {log.vkey()}"]
    lines += [f"witness {name} {v.vkey()} {url}" for name, v, url in witnesses]
    lines.append(quorum)
    path.write_text("\n".join(lines) + "\n")
    return path
