"""Verification under a witness policy, over a real log and real cosignatures: a checkpoint,
a receipt and a whole audit (from the log's tiles) pass only with the quorum's cosignatures;
too few is QuorumNotMet / "unwitnessed" naming who is missing, a cosignature dated too far
ahead does not count, and a bad line by a trusted witness rejects the checkpoint."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.audit import audit
from ledger.checkpoint import parse_checkpoint
from ledger.cosignature import Cosigner
from ledger.note import split
from ledger.policy import EXIT_NOT_WITNESSED, QuorumNotMet, parse_policy
from ledger.tiles.source import open_tiles
from ledger.tiles.sync import sync
from ledger.verify import (
    MAX_COSIGNATURE_SKEW,
    VerificationError,
    verify_receipt,
    verify_witnessed,
)

from ..ledger_helpers import new_signer, open_log, submission

WITNESSES = [Cosigner(f"w{i}.example/witness", Ed25519PrivateKey.generate()) for i in range(3)]


def _policy(quorum: str = "two") -> bytes:
    lines = [f"witness W{i} {w.verifier.vkey()}" for i, w in enumerate(WITNESSES)]
    lines.append("group two 2 W0 W1 W2")
    lines.append(f"quorum {quorum}")
    return ("\n".join(lines) + "\n").encode()


def _cosign(note: str, *who: int, ts: int | None = None) -> str:
    text = split(note)[0]
    stamp = int(time.time()) if ts is None else ts
    return note + "".join(WITNESSES[i].cosign(text, stamp).line() for i in who)


@pytest.fixture
def log(tmp_path: Path):
    signer = new_signer()
    lg = open_log(f"sqlite:///{tmp_path / 'log.db'}", signer)
    lg.append_batch([submission(b"%d" % i) for i in range(40)], receipts=False)
    yield lg, signer
    lg.close()


def test_two_of_three_witnesses_make_the_quorum(log) -> None:
    lg, signer = log
    policy = parse_policy(_policy())
    ev = verify_witnessed(_cosign(lg.checkpoint(), 2, 0), policy, [signer.verifier])
    assert ev.checkpoint.size == 40
    assert tuple(ev.cosigned) == ("W0", "W2")  # in the policy's order


def test_one_witness_is_not_a_quorum_and_the_error_names_the_missing(log) -> None:
    lg, signer = log
    with pytest.raises(QuorumNotMet) as e:
        verify_witnessed(_cosign(lg.checkpoint(), 1), parse_policy(_policy()), [signer.verifier])
    assert (e.value.cosigned, e.value.missing) == (("W1",), ("W0", "W2"))
    assert "'two' is not met" in str(e.value)
    assert EXIT_NOT_WITNESSED == 6


def test_a_cosignature_dated_ahead_counts_only_within_the_skew(log) -> None:
    lg, signer = log
    policy = parse_policy(_policy())
    now = int(time.time())
    near = _cosign(_cosign(lg.checkpoint(), 0), 1, ts=now + MAX_COSIGNATURE_SKEW)
    assert tuple(verify_witnessed(near, policy, [signer.verifier], now=now).cosigned) == (
        "W0",
        "W1",
    )
    far = _cosign(_cosign(lg.checkpoint(), 0), 1, ts=now + MAX_COSIGNATURE_SKEW + 1)
    with pytest.raises(QuorumNotMet) as e:
        verify_witnessed(far, policy, [signer.verifier], now=now)
    assert e.value.future == ("W1",)


def test_a_bad_line_by_a_trusted_witness_rejects_the_checkpoint(log) -> None:
    lg, signer = log
    note = _cosign(lg.checkpoint(), 0, 1)
    head, _, tail = note.rpartition("— ")
    forged = head + "— " + tail[: len(tail) // 2] + ("A" if tail[len(tail) // 2] != "A" else "B")
    forged += tail[len(tail) // 2 + 1 :]
    with pytest.raises(VerificationError):
        verify_witnessed(forged, parse_policy(_policy()), [signer.verifier])


def test_a_checkpoint_of_another_log_key_fails_before_the_witnesses(log) -> None:
    lg, _ = log
    with pytest.raises(VerificationError):
        verify_witnessed(
            _cosign(lg.checkpoint(), 0, 1), parse_policy(_policy()), [new_signer().verifier]
        )


def test_a_receipt_is_as_witnessed_as_its_checkpoint(log) -> None:
    lg, signer = log
    policy = parse_policy(_policy())
    witnessed = _cosign(lg.checkpoint(), 0, 1)
    r = verify_receipt(lg.receipt_at(7, witnessed), [signer.verifier], policy=policy)
    assert (r.entry.index, r.witnesses) == (7, ("W0", "W1"))
    assert verify_receipt(lg.receipt_at(7, lg.checkpoint()), [signer.verifier]).entry.index == 7
    with pytest.raises(QuorumNotMet):
        verify_receipt(lg.receipt_at(7, lg.checkpoint()), [signer.verifier], policy=policy)


def test_an_audit_under_a_policy(log, tmp_path: Path) -> None:
    lg, signer = log
    policy = parse_policy(_policy())
    bare, witnessed = tmp_path / "bare", tmp_path / "witnessed"
    sync(lg, bare)
    sync(lg, witnessed, note=_cosign(lg.checkpoint(), 1, 2))

    r = audit(open_tiles(str(bare)), [signer.verifier], policy=policy)
    assert r.status == "unwitnessed" and r.state is None
    assert r.unwitnessed is not None and r.unwitnessed.missing == ("W0", "W1", "W2")
    assert r.entries_checked == 40  # the data is checked all the same

    r = audit(open_tiles(str(witnessed)), [signer.verifier], policy=policy)
    assert r.ok and r.witnesses == ("W1", "W2"), r.error
    assert audit(open_tiles(str(bare)), [signer.verifier]).ok  # no policy, no witnesses needed


def test_the_checkpoint_verified_is_the_logs(log) -> None:
    lg, signer = log
    ev = verify_witnessed(
        _cosign(lg.checkpoint(), 0, 1), parse_policy(_policy()), [signer.verifier]
    )
    assert ev.checkpoint == parse_checkpoint(split(lg.checkpoint())[0])
