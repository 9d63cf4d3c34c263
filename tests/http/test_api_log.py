"""/v1/log: checkpoint, key, entries, proofs and receipts, readable without credentials."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from exchange.audit.sources import HttpSource
from ledger import merkle
from ledger.audit import audit
from ledger.checkpoint import Checkpoint
from ledger.entry import parse_entry
from ledger.verify import verify_checkpoint, verify_consistency, verify_receipt
from tests.api_helpers import Api, is_outcome, observation_bundle, open_api


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with open_api(tmp_path / "data") as a:
        yield a


def submit(api: Api, n: int) -> None:
    headers = api.credential()
    for i in range(n):
        assert api.post(observation_bundle(f"{api.log_size() + i}.5"), headers).status_code == 201


def checkpoint(api: Api) -> Checkpoint:
    r = api.client.get("/v1/log/checkpoint")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return verify_checkpoint(r.text, [api.verifier()])


def test_checkpoint_and_key(api: Api) -> None:
    assert checkpoint(api).size == 0
    submit(api, 3)
    cp = checkpoint(api)
    assert (cp.size, cp.origin) == (3, api.services.log.origin)
    assert api.client.get("/v1/log/key").text.startswith(api.services.log.origin + "+")


def test_entries_form_the_hash_chain(api: Api) -> None:
    submit(api, 5)
    r = api.client.get("/v1/log/entries", params={"start": 0, "end": 5})
    entries = [base64.b64decode(x) for x in r.json()]
    assert [parse_entry(e).index for e in entries] == [0, 1, 2, 3, 4]
    for prev, entry in zip(entries, entries[1:], strict=False):
        assert parse_entry(entry).prev == merkle.leaf_hash(prev)
    clipped = api.client.get("/v1/log/entries", params={"start": 3, "end": 100}).json()
    assert len(clipped) == 2
    assert api.client.get("/v1/log/entries", params={"start": 9, "end": 12}).json() == []


def test_inclusion_proofs_verify_against_the_checkpoint(api: Api) -> None:
    submit(api, 7)
    cp = checkpoint(api)
    entries = api.services.log.entries(0, 7)
    for index in range(7):
        r = api.client.get("/v1/log/proof/inclusion", params={"index": index, "size": 7})
        proof = r.json()
        assert (proof["index"], proof["tree_size"]) == (index, 7)
        hashes = [base64.b64decode(h) for h in proof["hashes"]]
        merkle.verify_inclusion(index, 7, merkle.leaf_hash(entries[index]), hashes, cp.root)


def test_consistency_proof_between_two_checkpoints(api: Api) -> None:
    submit(api, 3)
    old = checkpoint(api)
    submit(api, 6)
    new = checkpoint(api)
    r = api.client.get("/v1/log/proof/consistency", params={"size1": 3, "size2": 9})
    body = r.json()
    assert (body["size1"], body["size2"]) == (3, 9)
    verify_consistency(old, new, [base64.b64decode(h) for h in body["hashes"]])
    same = api.client.get("/v1/log/proof/consistency", params={"size1": 9, "size2": 9})
    assert same.json()["hashes"] == []


def test_receipt_of_an_entry_verifies_against_the_latest_checkpoint(api: Api) -> None:
    submit(api, 4)
    r = api.client.get("/v1/log/entries/1/receipt")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    verified = verify_receipt(r.text, [api.verifier()])
    assert verified.entry.index == 1 and verified.checkpoint.size == 4


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("/v1/log/proof/inclusion", {"index": 2, "size": 2}, 400),
        ("/v1/log/proof/inclusion", {"index": 0, "size": 9}, 404),
        ("/v1/log/proof/inclusion", {"index": -1, "size": 2}, 400),
        ("/v1/log/proof/inclusion", {"index": "x", "size": 2}, 400),
        ("/v1/log/proof/inclusion", {"size": 2}, 400),
        ("/v1/log/proof/consistency", {"size1": 0, "size2": 2}, 400),
        ("/v1/log/proof/consistency", {"size1": 2, "size2": 1}, 400),
        ("/v1/log/proof/consistency", {"size1": 1, "size2": 9}, 404),
        ("/v1/log/entries", {"start": 2, "end": 1}, 400),
        ("/v1/log/entries", {"start": 0, "end": 2**60}, 400),
        ("/v1/log/entries/2/receipt", {}, 404),
        ("/v1/log/entries/x/receipt", {}, 400),
    ],
)
def test_bad_log_reads_are_operation_outcomes(
    api: Api, path: str, params: dict[str, object], status: int
) -> None:
    submit(api, 2)
    r = api.client.get(path, params=params)
    assert r.status_code == status
    is_outcome(r)


def test_an_auditor_reads_the_whole_log_over_http(api: Api) -> None:
    submit(api, 12)
    source = HttpSource("http://testserver", client=api.client, page_size=5)
    result = audit(source, [api.verifier()])
    assert result.status == "ok" and result.size == 12
