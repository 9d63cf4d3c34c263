"""Importing this module warms intake in the importing process.

The R4B models load lazily, per resource and data type, so without it a fresh process pays
for loading them on its first Bundle of each kind. The intake pool's fork server preloads this
module (multiprocessing's preload takes module names, not functions): every worker forked
from it starts warm, and so does a pool restarted after a worker died. A process that runs
intake itself imports it once before it is ready (exchange.intake.worker.warm).
"""

from __future__ import annotations

from exchange.intake.samples import sample_bundles
from exchange.intake.strict_json import IntakeLimits
from exchange.intake.worker import check


def _warm() -> None:
    limits = IntakeLimits()
    for body in sample_bundles():
        check(body, "application/fhir+json", limits)


_warm()
