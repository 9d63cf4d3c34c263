"""The service under a witness policy (`serve --policy`): two real witnesses over HTTP, quorum
2. A submission's checkpoint carries both cosignatures within 5 s, at /v1/log/checkpoint and
/tlog/checkpoint; receipts from /v1/log/entries/{i}/receipt verify under the policy; a
stopped witness delays the quorum but not a single 201, and such a receipt is 404 until the
witness is back; the witnessed checkpoint is served again at once after a restart."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from exchange.bootstrap import open_engine, open_log
from exchange.cli.exits import EXIT_MALFORMED
from exchange.cli.main import main
from exchange.config import Settings
from ledger.checkpoint import parse_checkpoint
from ledger.note import Verifier, split
from ledger.policy import Policy, QuorumNotMet, load_policy
from ledger.verify import verify_receipt
from ledger.witness import WitnessServer
from tests.api_helpers import Api, is_outcome, observation_bundle, open_api
from tests.ledger_helpers import new_signer
from tests.witness_helpers import policy_file, start_witness

DEADLINE = 5.0  # seconds from a submission to a checkpoint with both cosignatures


def _wait(pred: Callable[[], bool], seconds: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        if pred():
            return time.monotonic() - t0
        time.sleep(0.02)
    raise AssertionError(f"not within {seconds} s")


@dataclass
class Witnessed:
    data: Path
    vkey: Verifier
    servers: list[WitnessServer]
    policy_path: Path
    policy: Policy

    def restart(self, i: int) -> None:
        port = self.servers[i].address[1]
        self.servers[i] = start_witness(
            self.data.parent / f"w{i}", f"w{i}.example/w", [self.vkey], port=port
        )[0]


@pytest.fixture
def witnessed(tmp_path: Path) -> Iterator[Witnessed]:
    data = tmp_path / "data"
    settings = Settings(data_dir=data)
    log, _ = open_log(settings, open_engine(settings))  # makes the log's key
    vkey = log.signer.verifier
    log.close()
    started = [start_witness(tmp_path / f"w{i}", f"w{i}.example/w", [vkey]) for i in range(2)]
    ws = [(f"W{i}", v, s.url) for i, (s, v) in enumerate(started)]
    path = policy_file(tmp_path / "policy", vkey, ws, "group both all W0 W1\nquorum both")
    w = Witnessed(data, vkey, [s for s, _ in started], path, load_policy(path))
    yield w
    for s in w.servers:
        s.stop()


@pytest.fixture
def api(witnessed: Witnessed) -> Iterator[Api]:
    with open_api(witnessed.data, policy=witnessed.policy_path) as a:
        yield a


def _size(note: str) -> int:
    return parse_checkpoint(split(note)[0]).size


def _covered(api: Api, policy: Policy) -> int:
    """The size of the served checkpoint when the quorum cosigned it, else -1 (the log's own
    checkpoint is served until the witnesses cosign one)."""
    try:
        return policy.require(_served(api)).checkpoint.size
    except QuorumNotMet:
        return -1


def _served(api: Api) -> str:
    r = api.client.get("/v1/log/checkpoint")
    assert r.status_code == 200
    return r.text


def test_a_submission_is_witnessed_by_both_within_five_seconds(
    api: Api, witnessed: Witnessed
) -> None:
    headers = api.credential()
    for i in range(3):
        t0 = time.monotonic()
        r = api.post(observation_bundle(f"13{i}.5"), headers)
        assert r.status_code == 201
        index = r.json()["index"]
        left = DEADLINE - (time.monotonic() - t0)
        took = _wait(lambda i=index: _covered(api, witnessed.policy) > i, left)
        assert took < DEADLINE
        note = _served(api)
        assert set(witnessed.policy.require(note).cosigned) == {"W0", "W1"}
        assert api.client.get("/tlog/checkpoint").text == note
        receipt = api.client.get(f"/v1/log/entries/{index}/receipt")
        assert receipt.status_code == 200
        v = verify_receipt(receipt.text, [witnessed.vkey], policy=witnessed.policy)
        assert v.witnesses == ("W0", "W1") and v.entry.index == index
    assert all(s.last_error is None for s in api.services.witnesses.status())


def test_a_stopped_witness_delays_the_quorum_never_a_201(api: Api, witnessed: Witnessed) -> None:
    headers = api.credential()
    first = api.post(observation_bundle("140.5"), headers).json()["index"]
    _wait(lambda: _covered(api, witnessed.policy) > first, DEADLINE)
    witnessed.servers[1].stop()
    before = _served(api)
    worst, indexes = 0.0, []
    for i in range(8):
        t0 = time.monotonic()
        r = api.post(observation_bundle(f"15{i}.5"), headers)
        worst = max(worst, time.monotonic() - t0)
        assert r.status_code == 201, r.text
        indexes.append(r.json()["index"])
    assert worst < 2.0  # a submission never waits for a witness
    time.sleep(1.0)  # rounds go on: W0 cosigns, W1 is retried
    assert _served(api) == before  # no quorum without W1: the older witnessed checkpoint
    w1 = api.services.witnesses.status()[1]
    assert w1.last_error and w1.failures >= 1
    missing = api.client.get(f"/v1/log/entries/{indexes[-1]}/receipt")
    assert missing.status_code == 404
    assert "no witnessed checkpoint covers entry" in is_outcome(missing)["issue"][0]["diagnostics"]
    assert api.client.get(f"/v1/log/entries/{first}/receipt").status_code == 200

    witnessed.restart(1)
    _wait(lambda: _covered(api, witnessed.policy) > indexes[-1], DEADLINE + 4.0)  # + backoff
    receipt = api.client.get(f"/v1/log/entries/{indexes[-1]}/receipt")
    assert receipt.status_code == 200
    assert verify_receipt(receipt.text, [], policy=witnessed.policy).witnesses == ("W0", "W1")


def test_the_witnessed_checkpoint_outlives_a_restart(witnessed: Witnessed) -> None:
    with open_api(witnessed.data, policy=witnessed.policy_path) as api:
        index = api.post(observation_bundle("160.5"), api.credential()).json()["index"]
        _wait(lambda: _covered(api, witnessed.policy) > index, DEADLINE)
        note = _served(api)
    for s in witnessed.servers:
        s.stop()  # from now on nothing can be cosigned: only the kept checkpoint is witnessed
    with open_api(witnessed.data, policy=witnessed.policy_path) as api:
        assert _served(api) == note
        assert api.client.get(f"/v1/log/entries/{index}/receipt").status_code == 200
    # Without the policy the log's own latest checkpoint is served, with no cosignature.
    with open_api(witnessed.data) as api:
        plain = _served(api)
        assert _size(plain) == _size(note) and plain != note and plain in note


def test_serve_refuses_an_unusable_policy(
    witnessed: Witnessed, tmp_path: Path, capsys: Any
) -> None:
    other = new_signer("other.example/log").verifier
    same_name = new_signer(witnessed.vkey.name).verifier  # the log's origin, another key
    cases = {
        "line 3": "log {log}\nwitness W0 {w0}\nquorum W1\n",  # an unknown name
        "cannot be met": "log {log}\nwitness W0 {w0}\nquorum W0\n",  # W0 without a URL
        "no log of the policy has the origin": f"log {other.vkey()}\nquorum none\n",
        "does not accept this log's": f"log {same_name.vkey()}\nquorum none\n",
    }
    w0 = witnessed.policy.witnesses[0].verifier.vkey()
    for expected, text in cases.items():
        bad = tmp_path / "bad.policy"
        bad.write_text(text.format(log=witnessed.vkey.vkey(), w0=w0))
        code = main(["serve", "--data", str(witnessed.data), "--intake-workers", "0",
                     "--policy", str(bad)])  # fmt: skip
        err = capsys.readouterr().err
        assert code == EXIT_MALFORMED, err
        assert expected in err, err
