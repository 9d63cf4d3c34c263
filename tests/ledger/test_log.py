"""The log over a real store: chain, receipts, idempotency, group commit, bounded reads."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text

from ledger import merkle
from ledger.audit import audit
from ledger.errors import DuplicateConflict, LedgerError, LogStateError
from ledger.verify import verify_checkpoint, verify_receipt

from ..audit_helpers import MemorySource
from ..ledger_helpers import count_selects, new_signer, open_log, submission


def test_chain_and_receipts(db_url: str) -> None:
    signer = new_signer()
    log = open_log(db_url, signer)
    results = [log.append(submission(b"bundle %d" % i)) for i in range(20)]
    assert [r.entry.index for r in results] == list(range(20))
    audited = audit(MemorySource.from_log(log), [signer.verifier])
    assert audited.ok and audited.size == 20, audited.error
    final = verify_checkpoint(log.checkpoint(), [signer.verifier])
    for r in results:
        v = verify_receipt(r.receipt, [signer.verifier])
        assert v.entry == r.entry
        proof = log.consistency_proof(v.checkpoint.size, final.size)
        merkle.verify_consistency(
            v.checkpoint.size, final.size, v.checkpoint.root, final.root, proof
        )
    log.close()


def test_chain_break_names_first_bad_entry(tmp_path) -> None:
    signer = new_signer()
    log = open_log(f"sqlite:///{tmp_path / 'l.db'}", signer)
    for i in range(10):
        log.append(submission(b"%d" % i))
    # Entry 6 replaced by a well-formed entry of another log: the chain breaks at 6.
    other = open_log(f"sqlite:///{tmp_path / 'o.db'}", new_signer())
    for i in range(10):
        other.append(submission(b"x%d" % i))
    source = MemorySource.from_log(log)
    source.entries_[6] = other.entries(6, 7)[0]
    found = audit(source, [signer.verifier])
    assert found.error is not None
    assert (found.error.index, found.error.code) == (6, "chain"), found.error
    # Entry 3 altered but still well-formed: entry 4's prev and the signed roots name it.
    source = MemorySource.from_log(log)
    source.entries_[3] = source.entries_[3].replace(b'"kind":"record"', b'"kind":"recorc"')
    found = audit(source, [signer.verifier])
    assert found.error is not None
    assert (found.error.index, found.error.code) == (3, "altered-entry"), found.error
    other.close()


def test_idempotent_retry_returns_original_receipt(db_url: str) -> None:
    log = open_log(db_url, new_signer())
    first = log.append(submission(b"A", keys=("hospital-a/idem/k1",)))
    log.append(submission(b"B"))
    again = log.append(submission(b"A", keys=("hospital-a/idem/k1",)))
    assert again.duplicate and not first.duplicate
    assert again.receipt == first.receipt and again.entry == first.entry
    assert log.size() == 2
    with pytest.raises(DuplicateConflict) as e:
        log.append(submission(b"other bytes", keys=("hospital-a/idem/k1",)))
    assert e.value.index == 0 and e.value.key == "hospital-a/idem/k1"
    assert log.size() == 2


def test_duplicates_within_one_batch(tmp_path) -> None:
    log = open_log(f"sqlite:///{tmp_path / 'l.db'}", new_signer())
    out = log.append_batch([submission(b"A", keys=("k",)) for _ in range(5)])
    assert [getattr(r, "duplicate", None) for r in out] == [False, True, True, True, True]
    assert log.size() == 1


def test_failing_row_writer_loses_nothing_else(tmp_path) -> None:
    log = open_log(f"sqlite:///{tmp_path / 'l.db'}", new_signer())

    def boom(conn, entry):
        raise LedgerError("refused by the caller")

    good = submission(b"ok")
    bad = submission(b"bad")
    bad = type(bad)(**{**bad.__dict__, "write": boom})
    out = log.append_batch([good, bad, submission(b"ok2")])
    assert isinstance(out[1], LedgerError)
    assert [o.entry.index for o in (out[0], out[2])] == [0, 1]
    assert log.size() == 2


def test_commit_listeners_hear_of_each_batch_that_appended(tmp_path) -> None:
    log = open_log(f"sqlite:///{tmp_path / 'l.db'}", new_signer())
    heard: list[int] = []
    log.on_commit(lambda: heard.append(log.size()))

    def broken() -> None:
        raise RuntimeError("a listener's own failure")

    log.on_commit(broken)
    log.append_batch([submission(b"A", keys=("k",)), submission(b"B")])
    appended = log.append(submission(b"C"))  # through the writer thread
    assert not appended.duplicate and heard == [2, 3]
    assert log.append(submission(b"A", keys=("k",))).duplicate
    assert heard == [2, 3]  # nothing appended: nothing to hear
    log.close()


def test_concurrent_appends_32x200(db_url: str) -> None:
    signer = new_signer()
    log = open_log(db_url, signer)
    receipts: list[str] = []
    lock = threading.Lock()

    def worker(t: int) -> None:
        for i in range(200):
            r = log.append(submission(b"%d-%d" % (t, i)))
            with lock:
                receipts.append(r.receipt)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert log.size() == 6400
    final = verify_checkpoint(log.checkpoint(), [signer.verifier])
    seen = set()
    for r in receipts:
        v = verify_receipt(r, [signer.verifier])
        seen.add(v.entry.index)
        if v.checkpoint.size < final.size:
            merkle.verify_consistency(
                v.checkpoint.size,
                final.size,
                v.checkpoint.root,
                final.root,
                log.consistency_proof(v.checkpoint.size, final.size),
            )
        else:
            assert v.checkpoint.root == final.root
    assert seen == set(range(6400))
    batches = len(log.checkpoints(1))
    assert batches < 6400, "appends were not grouped"
    audited = audit(MemorySource.from_log(log), [signer.verifier])
    assert audited.ok and audited.root == final.root, audited.error
    log.close()


def test_root_and_proofs_use_bounded_queries_at_65536(db_url: str) -> None:
    log = open_log(db_url, new_signer())
    n = 65_536
    batch = 8192
    for start in range(0, n, batch):
        log.append_batch([submission(b"%d" % i) for i in range(start, start + batch)])
    assert log.size() == n
    counter = count_selects(log.engine)
    cases = [(0, n), (n - 1, n), (12345, n), (40000, 50001)]
    for index, size in cases:
        before = counter["n"]
        root = log.root(size)
        proof = log.inclusion_proof(index, size)
        used = counter["n"] - before
        assert used <= 3, f"{used} queries for root+proof at {size}"
        leaf = merkle.leaf_hash(log.entries(index, index + 1)[0])
        merkle.verify_inclusion(index, size, leaf, proof, root)
    before = counter["n"]
    proof = log.consistency_proof(1000, n)
    assert counter["n"] - before <= 2
    merkle.verify_consistency(1000, n, log.root(1000), log.root(n), proof)


def test_origin_mismatch_refused(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    open_log(url, new_signer("a.example/log")).append(submission(b"x"))
    with pytest.raises(LogStateError, match="holds the log"):
        open_log(url, new_signer("b.example/log"))


def test_entries_are_append_only(tmp_path) -> None:
    log = open_log(f"sqlite:///{tmp_path / 'l.db'}", new_signer())
    log.append(submission(b"x"))
    for stmt in (
        "UPDATE ledger_entries SET data = x'00'",
        "DELETE FROM ledger_entries",
        "DELETE FROM ledger_hashes",
        "UPDATE ledger_checkpoints SET note = ''",
    ):
        with pytest.raises(Exception, match="append-only"):
            with log.engine.begin() as conn:
                conn.execute(text(stmt))
    assert log.size() == 1 and len(log.entries(0, 1)) == 1


def test_append_only_on_postgresql(pg_url: str) -> None:
    log = open_log(pg_url, new_signer())
    log.append(submission(b"x"))
    for stmt in (
        "UPDATE ledger_entries SET data = '\\x00'",
        "DELETE FROM ledger_hashes",
        "TRUNCATE ledger_entries",
    ):
        with pytest.raises(Exception, match="append-only"):
            with log.engine.begin() as conn:
                conn.execute(text(stmt))
