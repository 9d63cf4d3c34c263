"""Named crash points, armed by environment variable, for crash tests of the write path.

``MEDLEDGER_FAULT=after-insert`` kills the process with SIGKILL the first time the writer
reaches that point; ``after-insert:0.2`` does so with probability 0.2 at each pass. Several
points may be armed, comma-separated. Unarmed, a point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import random
import signal

FAULT_ENV = "MEDLEDGER_FAULT"

POINTS = (
    "after-lock",  # the write lock is held, nothing written yet
    "after-insert",  # entries and hashes inserted, not committed
    "during-sign",  # the batch's checkpoint is being signed
    "after-commit",  # committed and durable, no caller has its receipt yet
)


def armed() -> dict[str, float]:
    """The armed points and their probabilities, from the environment."""
    spec = os.environ.get(FAULT_ENV, "")
    out: dict[str, float] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, p = item.partition(":")
        if name not in POINTS:
            raise ValueError(f"{FAULT_ENV}: unknown fault point {name!r}; known: {POINTS}")
        out[name] = float(p) if p else 1.0
    return out


def fault_point(name: str) -> None:
    """Dies here, as a power cut would, when `name` is armed."""
    p = armed().get(name)
    if p is not None and random.random() < p:
        os.kill(os.getpid(), signal.SIGKILL)
