"""The writer thread survives cancelled callers, and the checkpoint file never moves backwards."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from ledger.checkpoint import parse_checkpoint
from ledger.last_checkpoint import read_last_checkpoint, write_last_checkpoint
from ledger.note import split as split_note

from ..ledger_helpers import new_signer, open_log, submission

WAIT = 10.0  # seconds; a healthy writer answers in milliseconds


def _blocking(sub, entered: threading.Event, release: threading.Event):
    """`sub` with a row writer that holds the batch open until `release` is set."""

    def hold(conn, entry):
        entered.set()
        assert release.wait(WAIT), "the test never released the batch"

    return type(sub)(**{**sub.__dict__, "write": hold})


def test_cancelled_caller_does_not_kill_the_writer(tmp_path: Path) -> None:
    log = open_log(f"sqlite:///{tmp_path / 'l.db'}", new_signer())
    entered, release = threading.Event(), threading.Event()
    first = log.submit(_blocking(submission(b"held"), entered, release))
    assert entered.wait(WAIT)
    # Queued behind the held batch, then abandoned by its caller (a client disconnect).
    queued = log.submit(submission(b"abandoned"))
    assert queued.cancel()
    # A batch already being written can no longer be cancelled: its entry will exist.
    assert not first.cancel()
    release.set()
    assert first.result(WAIT).entry.index == 0
    later = log.submit(submission(b"later"))
    assert later.result(WAIT).entry.index == 1  # the cancelled one was never appended
    assert log.size() == 2
    log.close()


def test_dead_writer_is_restarted(tmp_path: Path) -> None:
    log = open_log(f"sqlite:///{tmp_path / 'l.db'}", new_signer())
    log.append(submission(b"a"))
    # Stand in for a writer that ended without being closed.
    log._queue.put(None)
    log._writer.join(WAIT)
    assert not log._writer.is_alive()
    assert log.submit(submission(b"b")).result(WAIT).entry.index == 1
    log.close()


def _in_threads(work, n: int) -> list[BaseException]:
    """Runs work(0) .. work(n - 1) at once, one thread each; what they raised."""
    errors: list[BaseException] = []

    def run(t: int) -> None:
        try:
            work(t)
        except BaseException as e:  # noqa: BLE001 - returned to the test
            errors.append(e)

    threads = [threading.Thread(target=run, args=(t,)) for t in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def _file_size(path: Path) -> int:
    note = read_last_checkpoint(path)
    assert note is not None
    return parse_checkpoint(split_note(note)[0]).size


def test_duplicate_first_in_batch_keeps_checkpoint_file_current(tmp_path: Path) -> None:
    signer = new_signer()
    url = f"sqlite:///{tmp_path / 'l.db'}"
    cp_file = tmp_path / "checkpoint"
    log = open_log(url, signer, checkpoint_file=cp_file)
    log.append(submission(b"A", keys=("k-a",)))
    for i in range(4):
        log.append(submission(b"%d" % i))
    log.close()
    reopened = open_log(url, signer, checkpoint_file=cp_file)
    assert reopened.read_only_reason is None
    out = reopened.append_batch([submission(b"A", keys=("k-a",)), submission(b"new")])
    assert out[0].duplicate and not out[1].duplicate
    assert _file_size(cp_file) == 6
    assert read_last_checkpoint(cp_file) == reopened.checkpoint()


def test_batch_of_duplicates_leaves_checkpoint_file_alone(tmp_path: Path) -> None:
    signer = new_signer()
    url = f"sqlite:///{tmp_path / 'l.db'}"
    cp_file = tmp_path / "checkpoint"
    log = open_log(url, signer, checkpoint_file=cp_file)
    log.append(submission(b"A", keys=("k-a",)))
    log.append(submission(b"B"))
    before = read_last_checkpoint(cp_file)
    out = log.append_batch([submission(b"A", keys=("k-a",))])
    assert out[0].duplicate
    assert read_last_checkpoint(cp_file) == before and _file_size(cp_file) == 2


def test_concurrent_checkpoint_file_writers_do_not_collide(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint"

    def writer(t: int) -> None:
        for i in range(100):
            write_last_checkpoint(path, f"note {t} {i}\n")

    assert _in_threads(writer, 6) == []
    text = path.read_text()
    assert text.startswith("note ") and text.count("\n") == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint"]


def test_bulk_batch_without_receipts_stores_the_same_log(tmp_path: Path) -> None:
    from ledger.verify import verify_receipt

    signer = new_signer()
    log = open_log(f"sqlite:///{tmp_path / 'l.db'}", signer)
    out = log.append_batch([submission(b"%d" % i) for i in range(50)], receipts=False)
    assert [o.receipt for o in out] == [""] * 50
    assert all(o.checkpoint == log.checkpoint() for o in out) and log.size() == 50
    # Receipts built later verify against the batch's signed checkpoint.
    for o in out[::7]:
        v = verify_receipt(log.receipt(o.entry.index), [signer.verifier])
        assert v.entry == o.entry and v.checkpoint.size == 50


def test_every_answer_is_already_in_the_checkpoint_file(tmp_path: Path) -> None:
    """The checkpoint file is written beside the database commits, not in their way, but no
    caller hears of an entry before the file holds a checkpoint that covers it."""
    cp_file = tmp_path / "checkpoint"
    log = open_log(f"sqlite:///{tmp_path / 'l.db'}", new_signer(), checkpoint_file=cp_file)
    short: list[tuple[int, int]] = []

    def appender(t: int) -> None:
        for i in range(40):
            r = log.append(submission(b"%d-%d" % (t, i)))
            seen = _file_size(cp_file)
            if seen <= r.entry.index:
                short.append((r.entry.index, seen))

    assert _in_threads(appender, 8) == [] and short == []
    log.close()
    assert _file_size(cp_file) == 320
    assert read_last_checkpoint(cp_file) == log.checkpoint()


def test_a_failing_checkpoint_file_write_reaches_the_callers(tmp_path: Path) -> None:
    import shutil

    cp_file = tmp_path / "w" / "checkpoint"
    cp_file.parent.mkdir()
    log = open_log(f"sqlite:///{tmp_path / 'l.db'}", new_signer(), checkpoint_file=cp_file)
    log.append(submission(b"first"))
    shutil.rmtree(cp_file.parent)
    cp_file.parent.write_text("not a directory")  # refuses the temp file, even to root
    with pytest.raises(OSError):
        log.submit(submission(b"second")).result(WAIT)
    cp_file.parent.unlink()
    cp_file.parent.mkdir()
    # The entry is committed all the same; the next batch brings the file up to date.
    assert log.size() == 2
    assert log.append(submission(b"third")).entry.index == 2
    log.close()
    assert _file_size(cp_file) == 3
