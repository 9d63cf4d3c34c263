"""The SQLite engine's pool and its writers: what a busy server leans on every request."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import event

from ledger import store


def test_connections_are_kept_for_as_many_threads_as_a_server_runs(tmp_path: Path) -> None:
    # A connection returned past the pool's size is closed, and the next checkout pays for a
    # new one and its PRAGMAs: as many as the server's threads are kept.
    engine = store.make_engine(store.sqlite_url(tmp_path))
    made: list[object] = []
    event.listen(engine, "connect", lambda conn, record: made.append(conn))
    for _ in range(2):
        held = [engine.connect() for _ in range(40)]
        for conn in held:
            conn.close()
    assert len(made) == 40
    engine.dispose()
