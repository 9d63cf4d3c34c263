"""Known credentials, cached per process and trusted only while the credential epoch holds.

Every change of a credential (a revocation, a rotation, a JWKS replaced; exchange.identity.clients)
bumps the one row of `exchange_credential_epoch`; each request reads it before it trusts a
credential it has cached, so a change made by any process counts from the next request on.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Engine

from exchange.identity import smart
from exchange.identity.clients import (
    _MAX_TOKEN_CHARS,
    TOKEN_PREFIX,
    Client,
    find_credential,
    hash_token,
    live,
)
from exchange.store.tables import credential_epoch_table
from ledger.errors import LedgerUnavailable


class EpochReader:
    """Reads the credential epoch over a database connection of its own, in autocommit so that
    each read sees every commit before it. A pooled connection per read would cost ten times
    the read; ClientCache runs one read at a time, so one connection serves it.

    On SQLite the read is a few microseconds of a local file in WAL mode, where readers do not
    wait for writers: it runs `inline`, on the event loop, since a thread hop would cost
    twenty times more. Elsewhere it is a network round trip, run in a thread.
    """

    _SQL = f"SELECT epoch FROM {credential_epoch_table.name} WHERE id = 1"
    # How long an inline read may wait for a lock (a WAL reader seldom waits at all).
    _SQLITE_BUSY_MS = 200

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.inline = engine.dialect.name == "sqlite"
        self._conn: Any = None

    def read(self) -> int:
        try:
            if self._conn is None:
                self._conn = self._connect()
            cur = self._conn.cursor()
            try:
                cur.execute(self._SQL)
                row = cur.fetchone()
            finally:
                cur.close()
        except self.engine.dialect.dbapi.Error as e:  # type: ignore[union-attr]
            self.close()  # a broken connection is replaced on the next read
            raise LedgerUnavailable(f"the credential epoch cannot be read: {e}") from e
        return int(row[0])

    def _connect(self) -> Any:
        conn = self.engine.raw_connection()
        driver = conn.driver_connection
        conn.detach()  # not returned to the pool: it stays open for the next read
        if self.inline:
            # make_engine's SQLite connections run without implicit transactions already.
            cur = conn.cursor()
            cur.execute(f"PRAGMA busy_timeout={self._SQLITE_BUSY_MS}")
            cur.close()
        elif driver is not None:
            driver.autocommit = True
        return conn

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                conn.close()
            except self.engine.dialect.dbapi.Error:  # type: ignore[union-attr]
                pass  # already broken


class ClientCache:
    """Known credentials, kept so a busy client costs no lookup of its credential per request,
    and trusted only while the credential epoch is the one they were found under.

    Each request reads the epoch with a query started after the request arrived, so any change
    committed before it (a revocation, a rotation, by this process or the CLI) is seen: no
    request is answered on a credential that was already revoked. Requests arriving together
    share one read: while a read is running, newcomers wait for the next one, which starts
    when it ends. Only hits are kept (random guesses cannot fill it).
    """

    def __init__(self, engine: Engine, max_size: int = 10_000) -> None:
        self.engine = engine
        self.max_size = max_size
        self.epoch = EpochReader(engine)
        self._hits: dict[bytes, tuple[Client, int | None]] = {}
        self._epoch: int | None = None  # the epoch the hits were found under
        self._running: asyncio.Future[int] | None = None
        self._next: asyncio.Future[int] | None = None

    async def lookup(self, token: str) -> Client | None:
        if len(token) > _MAX_TOKEN_CHARS:
            return None
        epoch = await self._fresh_epoch()
        if epoch != self._epoch:
            self._hits.clear()
            self._epoch = epoch
        key = hash_token(token)
        hit = self._hits.get(key)
        if hit is None:
            hit = await run_in_threadpool(find_credential, self.engine, key)
            if hit is None:
                return None
            # Kept only if no newer epoch was seen meanwhile: this lookup may predate it.
            if self._epoch == epoch:
                if len(self._hits) >= self.max_size:
                    self._hits.clear()
                self._hits[key] = hit
        return live(hit)

    async def _fresh_epoch(self) -> int:
        """The epoch as read by a query that started after this call."""
        if self.epoch.inline:
            return self.epoch.read()
        if self._running is None:
            self._running = self._start_read()
            waited = self._running
        else:
            if self._next is None:
                self._next = asyncio.get_running_loop().create_future()
            waited = self._next
        # Shielded: a request that goes away must not cancel a read others wait for.
        return await asyncio.shield(waited)

    def _start_read(self) -> asyncio.Future[int]:
        read = asyncio.ensure_future(run_in_threadpool(self.epoch.read))
        read.add_done_callback(self._read_done)
        return read

    def _read_done(self, read: asyncio.Future[int]) -> None:
        waiting, self._next = self._next, None
        if waiting is None:
            self._running = None
            return
        self._running = self._start_read()
        self._running.add_done_callback(lambda done: _settle(waiting, done))


def _settle(target: asyncio.Future[int], done: asyncio.Future[int]) -> None:
    if done.cancelled():
        target.cancel()
    elif done.exception() is not None:
        target.set_exception(done.exception())  # type: ignore[arg-type]
    else:
        target.set_result(done.result())


async def authenticate(cache: ClientCache, token: str) -> Client | None:
    """The client behind an `mlt_` credential or a live SMART access token."""
    if token.startswith(TOKEN_PREFIX):
        return await cache.lookup(token)
    engine = cache.engine
    grant = await run_in_threadpool(smart.lookup_token, engine, token)
    if grant is None:
        return None
    return Client(grant.client_id, grant.name, grant.role, grant.org, grant.scopes, grant.purpose)
