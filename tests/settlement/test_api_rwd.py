"""Lecheng RWD Bundles at the API: a traceable pack is accepted, an untraceable one refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.api_helpers import is_outcome, open_api
from tests.paths import FIXTURES as TEST_FIXTURES

FIXTURES = TEST_FIXTURES / "trace"
MED = 7  # the Medication's entry in the administration Bundle


def administration() -> dict[str, Any]:
    return json.loads((FIXTURES / "lecheng-rwd-administration.json").read_text("utf-8"))


def test_a_traceable_administration_is_accepted_as_rwd(tmp_path: Path) -> None:
    with open_api(tmp_path) as api:
        body = (FIXTURES / "lecheng-rwd-administration.json").read_bytes()
        r = api.post(body, api.credential())
        assert r.status_code == 201, r.text
        assert r.json()["kind"] == "rwd"
        api.check_receipt(r.json(), body)


@pytest.mark.parametrize(
    ("break_it", "expression"),
    [
        (
            lambda med: med["code"]["coding"][0].__setitem__("code", "00312345678907"),
            f"Bundle.entry[{MED}].resource.code.coding[0].code",
        ),
        (
            lambda med: med["batch"].__setitem__("lotNumber", "AB12C35"),
            f"Bundle.entry[{MED}].resource.extension[1].valueString",
        ),
    ],
    ids=["gtin-check-digit", "lot-disagrees-with-trace-code"],
)
def test_an_untraceable_pack_is_refused_and_nothing_is_appended(
    tmp_path: Path, break_it: Any, expression: str
) -> None:
    doc = administration()
    break_it(doc["entry"][MED]["resource"])
    with open_api(tmp_path) as api:
        before = api.log_size()
        r = api.post(json.dumps(doc).encode(), api.credential())
        assert r.status_code == 422, r.text
        outcome = is_outcome(r)
        assert any(expression in issue.get("expression", []) for issue in outcome["issue"])
        assert api.log_size() == before
        assert api.bundle_rows() == 0
