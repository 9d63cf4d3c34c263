"""Building logs for tests: a signer, a log on a given database URL, quick submissions, and a
counter of the queries a log runs."""

from __future__ import annotations

import hashlib
import os
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, event

from ledger.entry import commitment
from ledger.log import Log, Submission
from ledger.note import Signer
from ledger.store import make_engine

ORIGIN = "test.example/log"


def new_signer(origin: str = ORIGIN) -> Signer:
    return Signer(origin, Ed25519PrivateKey.generate())


def open_log(url: str, signer: Signer, **kw) -> Log:
    return Log(make_engine(url), signer, origin=signer.name, **kw)


def submission(payload: bytes, *, keys: tuple[str, ...] = (), kind: str = "record") -> Submission:
    return Submission(
        kind=kind,
        sender="hospital-a",
        commit=commitment(os.urandom(32), payload),
        dedupe_keys=keys,
        digest=hashlib.sha256(payload).digest(),
    )


def count_selects(engine: Engine) -> dict[str, int]:
    """A counter of the SELECT statements the engine runs from now on (`counter["n"]`)."""
    counter = {"n": 0}

    def before(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            counter["n"] += 1

    event.listen(engine, "before_cursor_execute", before)
    return counter
