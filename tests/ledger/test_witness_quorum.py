"""A log's checkpoints witnessed by a quorum: CosignatureCollector with real witnesses over
real HTTP, a real log over SQLite and a policy file.

Two witnesses, quorum 2: the checkpoint carries both cosignatures within 5 s of a
submission; a stopped witness delays the quorum and never an append, and the quorum resumes
when it returns; 2 of 3 survive one down; a forked log collects no cosignature and the
witnesses' refusal is reported with its evidence; receipts against the witnessed checkpoint
verify under the policy.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ledger.audit import verify_evidence
from ledger.checkpoint import parse_checkpoint
from ledger.note import split
from ledger.policy import load_policy
from ledger.verify import verify_receipt
from ledger.witness.collector import CosignatureCollector

from ..ledger_helpers import new_signer, open_log, submission
from ..witness_helpers import policy_file, start_witness

DEADLINE = 5.0  # seconds: the bound from a submission to a witnessed checkpoint


def _wait(pred: Callable[[], bool], seconds: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        if pred():
            return time.monotonic() - t0
        time.sleep(0.02)
    raise AssertionError(f"not within {seconds} s")


def _size(note: str | None) -> int:
    return -1 if note is None else parse_checkpoint(split(note)[0]).size


@pytest.fixture
def setup(tmp_path: Path):
    """A log and `n` witnesses following it; returns a builder of collectors."""
    signer = new_signer()
    log = open_log(f"sqlite:///{tmp_path / 'log.db'}", signer)
    servers = []
    collectors = []

    def build(n: int, quorum: str, **kw):
        for i in range(n):
            servers.append(start_witness(tmp_path / f"w{i}", f"w{i}.example/w", [signer.verifier]))
        ws = [(f"W{i}", v, s.url) for i, (s, v) in enumerate(servers)]
        policy = load_policy(policy_file(tmp_path / "policy", signer.verifier, ws, quorum))
        kw.setdefault("max_backoff", 0.5)
        c = CosignatureCollector(policy, log.checkpoint, log.consistency_proof, **kw).start()
        collectors.append(c)
        return c, policy

    yield log, signer, servers, build, tmp_path
    for c in collectors:
        c.close()
    for s, _ in servers:
        s.stop()
    log.close()


def _append(log, c: CosignatureCollector, n: int = 1) -> tuple[int, float]:
    """Appends n entries (telling the collector after each); the size and the slowest append."""
    worst = 0.0
    for i in range(n):
        t0 = time.monotonic()
        log.append(submission(b"%d %f" % (i, time.time())))
        worst = max(worst, time.monotonic() - t0)
        c.notify()
    return log.size(), worst


def test_two_witnesses_quorum_two_within_five_seconds(setup) -> None:
    log, signer, _, build, _ = setup
    c, policy = build(2, "group both all W0 W1\nquorum both")
    for _ in range(5):
        size, _ = _append(log, c, 3)
        took = _wait(lambda s=size: _size(c.witnessed()) >= s, DEADLINE)
        assert took < DEADLINE
        ev = policy.require(c.witnessed())
        assert set(ev.cosigned) == {"W0", "W1"}
        assert ev.log == signer.verifier
    assert [s.cosigned for s in c.status()] == [log.size(), log.size()]
    assert all(s.last_error is None and s.failures == 0 for s in c.status())


def test_a_stopped_witness_delays_the_quorum_but_never_an_append(setup) -> None:
    log, signer, servers, build, tmp_path = setup
    c, policy = build(2, "group both all W0 W1\nquorum both")
    size, _ = _append(log, c, 2)
    _wait(lambda: _size(c.witnessed()) >= size, DEADLINE)
    down, _ = servers[1]
    port = down.address[1]
    down.stop()
    before = _size(c.witnessed())
    later, worst = _append(log, c, 30)
    assert worst < 1.0  # appends do not wait for witnesses (each is one commit, milliseconds)
    time.sleep(1.5)  # rounds keep running; W1 is retried with backoff
    assert _size(c.witnessed()) == before < later
    w1 = c.status()[1]
    assert w1.last_error and w1.failures >= 1
    assert c.status()[0].cosigned == later  # W0 keeps up on its own
    # W1 comes back on the same address: the quorum resumes at the log's size.
    servers[1] = start_witness(tmp_path / "w1", "w1.example/w", [signer.verifier], port=port)
    _wait(lambda: _size(c.witnessed()) == later, DEADLINE + 1.0)
    assert policy.require(c.witnessed()).met
    assert c.status()[1].failures == 0


def test_two_of_three_survive_one_down(setup) -> None:
    log, _, servers, build, _ = setup
    c, policy = build(3, "group two 2 W0 W1 W2\nquorum two")
    servers[2][0].stop()
    size, _ = _append(log, c, 4)
    _wait(lambda: _size(c.witnessed()) >= size, DEADLINE)
    assert set(policy.require(c.witnessed()).cosigned) == {"W0", "W1"}


def test_receipts_against_the_witnessed_checkpoint(setup) -> None:
    log, signer, _, build, _ = setup
    c, policy = build(2, "group both all W0 W1\nquorum both")
    size, _ = _append(log, c, 5)
    _wait(lambda: _size(c.witnessed()) >= size, DEADLINE)
    note = c.witnessed()
    assert note is not None
    for index in (0, 2, size - 1):
        receipt = log.receipt_at(index, note)
        verified = verify_receipt(receipt, [signer.verifier])
        assert verified.entry.index == index and verified.note == note
        assert policy.require(verified.note).met


def test_a_forked_log_collects_nothing_and_the_refusal_is_evidence(setup) -> None:
    log, signer, _, build, tmp_path = setup
    c, _ = build(2, "group both all W0 W1\nquorum both")
    size, _ = _append(log, c, 4)
    _wait(lambda: _size(c.witnessed()) >= size, DEADLINE)
    c.close()
    # The same key over another database: a split view of the same size.
    fork = open_log(f"sqlite:///{tmp_path / 'fork.db'}", signer)
    for i in range(size):
        fork.append(submission(b"fork %d" % i))
    policy = load_policy(tmp_path / "policy")
    fc = CosignatureCollector(
        policy, fork.checkpoint, fork.consistency_proof, max_backoff=0.5
    ).start()
    try:
        _wait(lambda: all(s.evidence is not None for s in fc.status()), DEADLINE)
        assert fc.witnessed() is None
        for s in fc.status():
            assert s.evidence is not None
            assert verify_evidence(s.evidence, [signer.verifier]).kind == "fork"
    finally:
        fc.close()
        fork.close()


def test_quorum_none_needs_no_witness(setup) -> None:
    log, _, _, build, _ = setup
    seen: list[str] = []
    c, _ = build(1, "quorum none", on_witnessed=seen.append)
    size, _ = _append(log, c, 2)
    _wait(lambda: _size(c.witnessed()) == size, DEADLINE)
    assert c.witnessed() == log.checkpoint() and seen[-1] == c.witnessed()


def test_a_quorum_the_reachable_witnesses_cannot_meet_is_refused(tmp_path: Path) -> None:
    signer = new_signer()
    server, v = start_witness(tmp_path / "w", "w.example/w", [signer.verifier])
    try:
        text = f"log {signer.verifier.vkey()}\nwitness A {v.vkey()}\nquorum A\n"
        (tmp_path / "p").write_text(text)
        with pytest.raises(ValueError, match="cannot be met"):
            CosignatureCollector(load_policy(tmp_path / "p"), str, lambda a, b: [])
    finally:
        server.stop()


def test_a_kept_witnessed_checkpoint_is_served_after_a_restart(setup) -> None:
    """A log restarted while its witnesses are down still serves the last witnessed
    checkpoint it kept (on_witnessed), and only one that meets the policy."""
    log, _, servers, build, tmp_path = setup
    kept: list[str] = []
    c, policy = build(2, "group both all W0 W1\nquorum both", on_witnessed=kept.append)
    size, _ = _append(log, c, 3)
    _wait(lambda: _size(c.witnessed()) >= size, DEADLINE)
    c.close()
    for server, _ in servers:
        server.stop()
    _append(log, c, 2)
    again = CosignatureCollector(
        policy, log.checkpoint, log.consistency_proof, initial=kept[-1], max_backoff=0.5
    ).start()
    try:
        assert again.witnessed() == kept[-1] and policy.require(kept[-1]).met
        time.sleep(0.5)
        assert again.witnessed() == kept[-1]  # no witness answers: the kept one stays
    finally:
        again.close()
    with pytest.raises(ValueError, match="initial witnessed checkpoint"):
        CosignatureCollector(
            policy, log.checkpoint, log.consistency_proof, initial=log.checkpoint()
        )
