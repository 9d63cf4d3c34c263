"""Real storage failures mid-load: a full SQLite database and a PostgreSQL cut off by its network.

Each must be answered 503 + Retry-After as an OperationOutcome, leave no partial entry, and
heal without a restart once the fault is gone.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import event

from exchange.audit.sources import HttpSource
from ledger.audit import audit
from tests.api_helpers import Api, is_outcome, observation_bundle, open_api


def big_bundle(n: int) -> bytes:
    """An Observation Bundle padded with a long note, so storing it needs fresh pages."""
    doc = json.loads(observation_bundle(identifier=f"urn:uuid:00000000-0000-4000-8000-{n:012d}"))
    doc["entry"][0]["resource"]["note"] = [{"text": f"{n} " + "x" * 60_000}]
    return json.dumps(doc).encode()


def assert_refused_transiently(r: Any) -> None:
    assert r.status_code == 503, r.text
    assert int(r.headers["Retry-After"]) >= 1
    is_outcome(r)


def assert_intact(api: Api, entries: int) -> None:
    assert api.log_size() == entries
    assert api.bundle_rows() == entries


def audit_ok(api: Api, size: int) -> bool:
    result = audit(HttpSource("http://testserver", client=api.client), [api.verifier()])
    return result.ok and result.size == size


class PageCap:
    """SQLite's own `max_page_count` on every connection the service checks out: a full disk."""

    def __init__(self, api: Api) -> None:
        self.pages: int | None = None
        engine = api.services.engine

        @event.listens_for(engine, "checkout")
        def _cap(dbapi_conn: Any, _rec: Any, _proxy: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA max_page_count={self.pages or 1073741823}")
            cur.close()

        with engine.connect() as conn:
            self.used = int(conn.exec_driver_sql("PRAGMA page_count").scalar())


def test_a_full_sqlite_database_is_503_without_a_partial_entry_and_heals(tmp_path: Path) -> None:
    with open_api(tmp_path) as api:
        h = api.credential()
        for n in range(3):
            assert api.post(big_bundle(n), h).status_code == 201
        cap = PageCap(api)
        cap.pages = cap.used
        for n in range(3, 6):
            assert_refused_transiently(api.post(big_bundle(n), h))
        assert_intact(api, 3)
        assert api.client.get("/v1/log/checkpoint").status_code == 200  # reads still served
        cap.pages = None
        answer = api.post(big_bundle(3), h)
        assert answer.status_code == 201, answer.text
        api.check_receipt(answer.json(), big_bundle(3))
        assert_intact(api, 4)
        assert audit_ok(api, 4)


class TcpProxy:
    """A loopback TCP relay to the PostgreSQL server that the test can cut and restore.

    Cutting closes every relayed connection and refuses new ones, as a dead server or network
    does, without touching the shared server itself.
    """

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.up = True
        self.open: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                conn.close()
                continue
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                conn.close()
                continue
            with self.lock:
                self.open += [conn, upstream]
            threading.Thread(target=self._pump, args=(conn, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, conn), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        self.up = False
        with self.lock:
            doomed, self.open = self.open, []
        for s in doomed:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.cut()
        self.listener.close()


@contextmanager
def proxied(pg_url: str) -> Iterator[tuple[str, TcpProxy]]:
    parts = urlsplit(pg_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{proxy.port}"
    url = urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))
    try:
        yield url, proxy
    finally:
        proxy.close()


def test_postgres_going_down_is_503_without_a_partial_entry_and_heals(
    pg_url: str, tmp_path: Path
) -> None:
    with proxied(pg_url) as (url, proxy), open_api(tmp_path, db_url=url) as api:
        h = api.credential()
        for n in range(3):
            assert api.post(big_bundle(n), h).status_code == 201
        proxy.cut()
        for n in range(3, 6):
            assert_refused_transiently(api.post(big_bundle(n), h))
        proxy.restore()
        answer = api.post(big_bundle(3), h)
        assert answer.status_code == 201, answer.text
        api.check_receipt(answer.json(), big_bundle(3))
        assert_intact(api, 4)
        assert audit_ok(api, 4)
