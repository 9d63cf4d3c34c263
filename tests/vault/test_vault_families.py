"""Bundles that name several patients (a mother and her baby): erasing one patient makes every
Bundle that names that patient unreadable, and no other Bundle (issue 19, item 2)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange.identity.clients import Client, register_client
from exchange.privacy.erasure import ErasureError, confirm_erasure, request_erasure
from tests.api_helpers import Api, open_api, wrap
from tests.settlement.test_settlement_index import consent_bundle, settlement_bundle
from tests.settlement.test_settlement_search import insurer, pid, resources, search

MRN = "urn:example:mrn"
ORG = "hospital-a"


def family_bundle(*mrns: str, note: str = "") -> bytes:
    """A record Bundle naming these patients (one Patient each, in this order); none: an
    Observation alone."""
    raws = [
        json.dumps(
            {
                "resourceType": "Patient",
                "identifier": [{"system": MRN, "value": mrn}],
                "name": [{"family": f"F{note}"}],
            }
        ).encode()
        for mrn in mrns
    ]
    if not raws:
        raws = [
            json.dumps(
                {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": f"note {note}"},
                }
            ).encode()
        ]
    return wrap(raws)


class Admins:
    """Two admins of one store: one requests an erasure, the other confirms it."""

    def __init__(self, api: Api) -> None:
        engine = api.services.engine
        self.api = api
        self.first: Client = register_client(engine, "first admin", "admin", None)[0]
        self.second: Client = register_client(engine, "second admin", "admin", None)[0]

    def erase(self, mrn: str, system: str = MRN) -> Any:
        services = self.api.services
        request_id = request_erasure(services.vault, ORG, (system, mrn), self.first)
        return confirm_erasure(services.log, services.vault, request_id, self.second)


def status(api: Api, bundle_id: str, headers: dict[str, str]) -> int:
    return api.client.get(f"/fhir/Bundle/{bundle_id}", headers=headers).status_code


def test_erasing_the_baby_leaves_the_mothers_other_bundles_readable(
    tmp_path: Path, db_url: str
) -> None:
    with open_api(tmp_path / "data", db_url) as api:
        hospital = api.credential()
        admins = Admins(api)
        posted = {
            name: api.post(body, hospital).json()["id"]
            for name, body in (
                ("mother", family_bundle("MRN-MOTHER")),
                ("both", family_bundle("MRN-MOTHER", "MRN-BABY")),
                ("baby", family_bundle("MRN-BABY")),
                ("baby first", family_bundle("MRN-BABY", "MRN-MOTHER", note="2")),
                ("nobody", family_bundle()),
            )
        }
        done = admins.erase("MRN-BABY")
        assert done.keys == 1 and done.bundles == 3
        after = {name: status(api, bundle_id, hospital) for name, bundle_id in posted.items()}
        assert after == {"mother": 200, "both": 410, "baby": 410, "baby first": 410, "nobody": 200}
        admins.erase("MRN-MOTHER")
        assert status(api, posted["mother"], hospital) == 410
        assert status(api, posted["nobody"], hospital) == 200


# Submissions and erasures over one family of patients, in any order.
FAMILY = 4
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("submit"), st.lists(st.integers(0, FAMILY - 1), max_size=3, unique=True)),
        st.tuples(st.just("erase"), st.integers(0, FAMILY - 1)),
    ),
    min_size=1,
    max_size=12,
)


def test_a_bundle_is_readable_iff_none_of_its_patients_was_erased(tmp_path: Path) -> None:
    """After any sequence of submissions and erasures, a Bundle reads back exactly when no
    patient it names was erased since it was submitted; each erasure counts exactly the
    readable Bundles naming its patient."""
    families = itertools.count()
    with open_api(tmp_path / "data") as api:
        hospital = api.credential()
        admins = Admins(api)

        @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(_ops)
        def run(ops: list[tuple[str, Any]]) -> None:
            family = next(families)
            mrn = [f"MRN-{family}-{p}" for p in range(FAMILY)]
            generation = [0] * FAMILY  # how often each patient was erased
            known = [False] * FAMILY  # submitted since its last erasure
            bundles: list[tuple[str, bytes, dict[int, int]]] = []  # id, body, generations
            for n, (op, arg) in enumerate(ops):
                if op == "submit":
                    body = family_bundle(*(mrn[p] for p in arg), note=f"{family}.{n}")
                    answer = api.post(body, hospital)
                    assert answer.status_code == 201, answer.text
                    bundles.append((answer.json()["id"], body, {p: generation[p] for p in arg}))
                    for p in arg:
                        known[p] = True
                    continue
                if not known[arg]:
                    with pytest.raises(ErasureError, match="holds nothing"):
                        admins.erase(mrn[arg])
                    continue
                readable_naming = sum(
                    1
                    for _, _, named in bundles
                    if arg in named and all(generation[p] == g for p, g in named.items())
                )
                done = admins.erase(mrn[arg])
                assert done.bundles == readable_naming
                generation[arg] += 1
                known[arg] = False
            for bundle_id, body, named in bundles:
                read = api.client.get(f"/fhir/Binary/{bundle_id}/_history/1", headers=hospital)
                if all(generation[p] == g for p, g in named.items()):
                    assert read.status_code == 200 and read.content == body
                else:
                    assert read.status_code == 410, (bundle_id, named, generation)

        run()


def test_the_accounting_finds_a_bundle_by_every_patient_it_names(tmp_path: Path) -> None:
    """An insurer pulls the baby's claim from a Bundle that also names the mother: the
    disclosure is in the accounting of each patient the Bundle names."""
    mother, baby = (MRN, "MRN-M1"), (MRN, "MRN-B1")
    doc = json.loads(settlement_bundle(baby, "insurer-a"))
    doc["entry"].insert(
        0,
        {
            "fullUrl": "urn:uuid:00000000-0000-0000-0000-0000000000aa",
            "resource": {
                "resourceType": "Patient",
                "identifier": [{"system": mother[0], "value": mother[1]}],
            },
        },
    )
    with open_api(tmp_path / "data") as api:
        hospital = api.credential()
        assert api.post(json.dumps(doc).encode(), hospital).status_code == 201
        assert api.post(consent_bundle(baby, "insurer-a"), hospital).status_code == 201
        found = resources(search(api, "Claim", insurer(api), **{"patient.identifier": pid(baby)}))
        assert [r["resourceType"] for r in found] == ["Claim"]
        for patient in (baby, mother):
            url = f"/v1/patients/{patient[1]}/disclosures"
            doc = api.client.get(url, params={"system": patient[0]}, headers=hospital).json()
            assert doc["total"] == 1, patient
            assert doc["entry"][0]["resource"]["entity"][-1]["what"]["type"] == "Claim"


def test_no_bundle_is_sealed_under_a_key_another_process_erased(
    tmp_path: Path, db_url: str
) -> None:
    """The server holds the keys of both patients cached; the baby (second in the Bundle) is
    erased by another process: the next Bundle naming both is sealed under a new key of the
    baby's, never the destroyed one."""
    from exchange import vault

    with open_api(tmp_path / "data", db_url) as api:
        hospital = api.credential()
        first = api.post(family_bundle("MRN-M2", "MRN-B2"), hospital).json()
        services = api.services
        admins = Admins(api)
        other = vault.Vault(services.engine, services.vault.master, services.pseudonym_key)
        request_id = request_erasure(other, ORG, (MRN, "MRN-B2"), admins.first)
        confirm_erasure(services.log, other, request_id, admins.second)
        again = api.post(family_bundle("MRN-M2", "MRN-B2", note="again"), hospital)
        assert again.status_code == 201, again.text
        assert status(api, again.json()["id"], hospital) == 200
        assert status(api, first["id"], hospital) == 410
        # The mother's key was never touched: her entry subject is the same.
        assert api.entry(again.json()["index"]).subject == api.entry(first["index"]).subject


def test_concurrent_first_uses_of_a_family_make_one_key_per_patient(
    tmp_path: Path, db_url: str
) -> None:
    """Processes that meet the same new patients at once, in overlapping Bundles, agree on one
    key per patient (whichever made it first)."""
    from concurrent.futures import ThreadPoolExecutor

    from exchange import vault

    with open_api(tmp_path / "data", db_url) as api:
        services = api.services
        family = [(MRN, f"MRN-C{n}") for n in range(6)]
        named = [family[i : i + 3] for i in range(4)] * 4  # overlapping triples, four times over

        def keys_of(patients: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
            # A vault of its own, as in another process: nothing cached.
            own = vault.Vault(services.engine, services.vault.master, services.pseudonym_key)
            keys = own.patient_keys(ORG, patients)
            return {p: k.key_id for p, k in zip(patients, keys, strict=True)}

        with ThreadPoolExecutor(8) as pool:
            seen = list(pool.map(keys_of, named))
        agreed: dict[tuple[str, str], set[str]] = {}
        for found in seen:
            for patient, key_id in found.items():
                agreed.setdefault(patient, set()).add(key_id)
        assert sorted(agreed) == family and all(len(ids) == 1 for ids in agreed.values())
