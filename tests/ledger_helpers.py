"""Building logs for tests: a signer, a log on a given database URL, quick submissions."""

from __future__ import annotations

import hashlib
import os

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

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
