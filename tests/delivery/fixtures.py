"""The patient records the delivery tests send: the continuity fixtures of the adapters."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "continuity"
NOW = datetime(2026, 11, 28, 10, 0, tzinfo=timezone(timedelta(hours=8)))


def boao_kr() -> list[bytes]:
    """A Korean patient's inpatient record and discharge medication, as stored."""
    names = ["boao-kr-inpatient-record.json", "boao-kr-discharge-meds.json"]
    return [(FIXTURES / name).read_bytes() for name in names]


def shanghai_ru() -> list[bytes]:
    return [(FIXTURES / "shanghai-ru-outpatient.json").read_bytes()]
