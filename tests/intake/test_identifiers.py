"""One identifier, one patient: every spelling of a Patient.identifier that differs only by
Unicode normalisation or by invisible (zero-width, format) characters is the same patient,
wherever an identifier becomes a key (issue 19, item 14)."""

from __future__ import annotations

import itertools
import json
import os
import unicodedata
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange.indexes.patients import bundles_about, patient_index
from exchange.intake.kind import patient_identifiers
from exchange.vault import lookup_tag as pseudonym
from tests.api_helpers import Api, open_api, wrap
from tests.indexes.test_trace_api import GTIN
from tests.privacy.test_export_privacy import disclosures, finished
from tests.settlement.test_bulk_export import path_of
from tests.settlement.test_rwd_export_api import PASSPORT as RWD_PASSPORT
from tests.settlement.test_rwd_export_api import REGULATOR, patient_pack
from tests.settlement.test_settlement_index import consent_bundle, settlement_bundle
from tests.settlement.test_settlement_search import insurer, resources, search
from tests.vault.test_vault_families import Admins

ORG = "hospital-a"
SYSTEM = "urn:example:mrn"
INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff\u00ad\u200e\u200f\u2066\u2069"

# Letters with canonical decompositions (Latin, Vietnamese stacked marks, Hangul syllables,
# a Greek tonos, the ohm and angstrom singletons) beside plain ASCII.
_letters = st.sampled_from(
    list("AZaz09-/.|é ñÅệỗ한국ΆΩÅ") + ["a\u0323\u0302", "a\u0302\u0323", "\u1100\u1161"]
)


@st.composite
def spellings(draw: Any, min_size: int = 1) -> tuple[str, list[str]]:
    """A value and several spellings of it: composed, decomposed, mixed per character, with
    invisible characters anywhere."""
    parts = draw(st.lists(_letters, min_size=min_size, max_size=12))
    out = []
    for _ in range(draw(st.integers(2, 4))):
        text = ""
        for part in parts:
            form = draw(st.sampled_from(["NFC", "NFD", None]))
            text += unicodedata.normalize(form, part) if form else part
            text += "".join(draw(st.lists(st.sampled_from(INVISIBLE), max_size=2)))
        if draw(st.booleans()):
            text = draw(st.sampled_from(INVISIBLE)) + text
        out.append(text)
    return "".join(parts), out


@settings(max_examples=300, deadline=None)
@given(spellings())
def test_every_spelling_is_one_lookup_tag(case: tuple[str, list[str]]) -> None:
    _, variants = case
    key = os.urandom(32)
    tags = {pseudonym(key, ORG, (SYSTEM, v)) for v in variants}
    assert len(tags) == 1
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": SYSTEM, "value": v} for v in variants],
    }
    found = patient_identifiers({"resourceType": "Bundle", "entry": [{"resource": patient}]})
    # One patient; the kept spelling is composed and visible.
    visible = unicodedata.normalize("NFC", "".join(c for c in variants[0] if c not in INVISIBLE))
    assert found == ([(SYSTEM, visible)] if visible else [])


def patient_bundle(value: str, note: str) -> bytes:
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": SYSTEM, "value": value}],
        "name": [{"family": note}],
    }
    return wrap([json.dumps(patient, ensure_ascii=False).encode()])


def test_every_spelling_names_the_same_patient_through_the_api(tmp_path: Path) -> None:
    """Bundles submitted under different spellings of one MRN carry one subject, are found by
    any spelling, are in one accounting of disclosures and are erased together."""
    run_ids = itertools.count()
    with open_api(tmp_path / "data") as api:
        hospital = api.credential()
        admins = Admins(api)
        key = api.services.pseudonym_key
        indexes = api.services.indexes

        @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(spellings(min_size=2))
        def run(case: tuple[str, list[str]]) -> None:
            _, variants = case
            n = next(run_ids)
            variants = [f"R{n}-{v}" for v in variants]
            answers = [
                api.post(patient_bundle(v, f"N{i}"), hospital) for i, v in enumerate(variants)
            ]
            assert all(a.status_code == 201 for a in answers), [a.text for a in answers]
            ids = [a.json()["id"] for a in answers]
            subjects = {api.entry(a.json()["index"]).subject for a in answers}
            assert len(subjects) == 1
            indexes.fresh(patient_index(key))
            for v in variants:
                assert bundles_about(api.services.engine, key, ORG, (SYSTEM, v)) == ids
                url = f"/v1/patients/{v}/disclosures"
                got = api.client.get(url, params={"system": SYSTEM}, headers=hospital)
                assert got.status_code == 200, got.text
            done = admins.erase(variants[-1])
            assert done.bundles == len(ids)
            for bundle_id in ids:
                gone = api.client.get(f"/fhir/Bundle/{bundle_id}", headers=hospital)
                assert gone.status_code == 410

        run()


def submit_claim_and_consent(api: Api, claim_as: str, consent_as: str) -> None:
    """A claim to insurer-a, and the patient's consent to it, naming the patient as given."""
    hospital = api.credential()
    for body in (
        settlement_bundle((SYSTEM, claim_as), "insurer-a"),
        consent_bundle((SYSTEM, consent_as), "insurer-a"),
    ):
        assert api.post(body, hospital).status_code == 201


def test_an_insurer_finds_the_patient_by_any_spelling(tmp_path: Path) -> None:
    """A consent given under one spelling releases the claim filed under another."""
    composed = "Nguyễn-0042"
    decomposed = unicodedata.normalize("NFD", composed).replace("-", "-\u200b")
    assert decomposed != composed
    with open_api(tmp_path / "data") as api:
        submit_claim_and_consent(api, composed, decomposed)
        ins = insurer(api)
        for spelled in (composed, decomposed):
            params = {"patient.identifier": f"{SYSTEM}|{spelled}"}
            found = resources(search(api, "Claim", ins, **params))
            assert [r["resourceType"] for r in found] == ["Claim"], spelled


def test_a_slash_in_an_identifier_value_works_on_the_disclosures_route(tmp_path: Path) -> None:
    value = "2024/MRN/0042"
    with open_api(tmp_path / "data") as api:
        hospital = api.credential()
        submit_claim_and_consent(api, value, value)
        found = search(api, "Claim", insurer(api), **{"patient.identifier": f"{SYSTEM}|{value}"})
        assert len(resources(found)) == 1
        url = "/v1/patients/" + value.replace("/", "%2F") + "/disclosures"
        got = api.client.get(url, params={"system": SYSTEM}, headers=hospital)
        assert got.status_code == 200, got.text
        assert got.json()["total"] == 1
        assert got.json()["entry"][0]["resource"]["entity"][-1]["what"]["type"] == "Claim"


def test_exports_and_reads_find_the_patient_by_any_spelling(tmp_path: Path) -> None:
    """Every path that decides on a patient or records a disclosure about one takes the
    identifier in its one spelling: an insurer's export (decided at the kick-off and again at
    the download), a regulator's RWD export and an admin's Bundle read each release data under
    a consent given in another spelling, and each is in the accounting under any spelling."""
    composed = "Trần-0043"
    spellings = [composed, unicodedata.normalize("NFD", composed), composed.replace("-", "\u200b-")]
    passport = "555555561"
    with open_api(tmp_path / "data") as api:
        hospital = api.credential()
        submit_claim_and_consent(api, spellings[1], spellings[2])
        ins = insurer(api)
        done = finished(api, ins, _type="Claim")
        (item,) = done.json()["output"]
        assert item["count"] == 1
        assert api.client.get(path_of(item["url"]), headers=ins).status_code == 200

        rwd = api.post(patient_pack(0, passport), hospital)
        assert rwd.status_code == 201, rwd.text
        consent = consent_bundle((RWD_PASSPORT, "\u2060" + passport), REGULATOR, purpose="HRESCH")
        assert api.post(consent, hospital).status_code == 201
        regulator = {**api.credential("regulator", REGULATOR), "X-Purpose-Of-Use": "HRESCH"}
        got = api.client.get("/v1/trace/rwd-export", params={"gtin": GTIN}, headers=regulator)
        assert got.status_code == 200 and got.content.count(b"\n") == 1, got.text

        admin = api.credential("admin", None)
        read = api.client.get(f"/fhir/Bundle/{rwd.json()['id']}", headers=admin)
        assert read.status_code == 200

        for spelled in spellings:
            events = disclosures(api, hospital, (SYSTEM, spelled))
            assert [e["subtype"][0]["code"] for e in events] == ["operation"], spelled
        for spelled in (passport, passport + "\u200d", "\ufeff" + passport):
            events = disclosures(api, hospital, (RWD_PASSPORT, spelled))
            assert [e["subtype"][0]["code"] for e in events] == ["operation", "read"], spelled
