"""Where `medledger audit` reads a log from: the database behind it, or its HTTP API.

Both implement ledger.audit.LogSource. DbSource reads the ledger tables directly (through
ledger/store.py) and so also offers the stored checkpoints, stored tree hashes and anything
kept beyond the head, which an audit then checks too. HttpSource reads only the public
log-read endpoints of docs (design: /v1/log/checkpoint, /v1/log/entries, /v1/log/proof/*):
they carry no personal data and need no credential beyond, at most, an auditor token.
Errors reaching either become SourceUnavailable (exit 2) with what to do next; an answer that
is not what a log API gives becomes SourceMalformed (exit 3).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
from sqlalchemy import Connection, Engine, create_engine, inspect, select
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from ledger import merkle, store
from ledger.audit import SourceMalformed, SourceUnavailable
from ledger.audit.reading import READ_TIMEOUT, Deadline, read_capped
from ledger.merkle import ProofError
from ledger.untrusted import InputRejected, read_json

_T = TypeVar("_T")
_Reader = Callable[[Sequence[int]], list[bytes]]  # stored hashes by index (ledger.store)

HTTP_PAGE = 1000
DB_PAGE = 4096

ANSWER_MAX = 1 << 20
"""Bytes of a checkpoint, proof or key list answer after gzip is undone; each is a few KiB."""
ENTRY_ANSWER_MAX = 2048
"""Bytes an entries answer may add per entry asked for; a base64 entry is under 800."""


class NotALog(Exception):
    """The database holds no medledger log. Exit 3."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


def database_url(spec: str) -> str:
    """A SQLAlchemy URL from --db: a URL, a SQLite file, or a --data directory."""
    if "://" in spec:
        return spec
    path = Path(spec)
    if path.is_dir():
        path = path / "medledger.db"
    return f"sqlite:///{path}"


class DbSource:
    """A log read straight from its database (SQLite or PostgreSQL), read-only."""

    page_size = DB_PAGE

    def __init__(self, bind: Engine | Connection, description: str = "") -> None:
        self.bind = bind
        self.description = description or str(getattr(bind, "url", "database"))

    @classmethod
    def from_url(cls, spec: str) -> DbSource:
        """Opens the database at `spec`; raises SourceUnavailable or NotALog."""
        url = database_url(spec)
        if url.startswith("sqlite"):
            file = url.split(":///", 1)[-1].split("?", 1)[0]
            if file and file != ":memory:" and not Path(file).exists():
                raise NotALog(
                    f"no database at {file}",
                    "pass the log's database file or --data directory, or a "
                    "postgresql+psycopg:// URL",
                )
        try:
            engine = create_engine(url)
        except (SQLAlchemyError, ValueError, ImportError) as e:
            raise NotALog(
                f"cannot use database URL {spec!r}: {e}",
                "pass a SQLAlchemy URL such as postgresql+psycopg://user@host/db or a SQLite file",
            ) from e
        src = cls(engine, description=_redact(url))
        src._check_tables()
        return src

    def _check_tables(self) -> None:
        names = set(self._run(lambda conn: inspect(conn).get_table_names()))
        need = {"ledger_head", "ledger_entries", "ledger_hashes", "ledger_checkpoints"}
        if not need <= names:
            raise NotALog(
                f"{self.description} holds no medledger log (missing {sorted(need - names)})",
                "point --db at the log's own database (the one `medledger serve` uses)",
            )

    def _conn(self) -> Any:
        if isinstance(self.bind, Connection):
            return _Borrowed(self.bind)
        try:
            return self.bind.connect()
        except DBAPIError as e:
            raise _unavailable(self.description, e) from e

    def _run(self, fn: Callable[[Connection], _T]) -> _T:
        try:
            with self._conn() as conn:
                return fn(conn)
        except DBAPIError as e:
            raise _unavailable(self.description, e) from e

    def checkpoint(self) -> str:
        head = self._run(store.read_head)
        if head is None:
            raise SourceUnavailable(
                f"{self.description} has no log head yet",
                "start the log once (`medledger serve`) or point --db at another database",
            )
        return head[2]

    def _fetch(self, sql: str, params: tuple[int, int]) -> list[Any]:
        """Rows straight from the driver's cursor: an audit reads every row of the log."""

        def q(conn: Connection) -> list[Any]:
            dbapi = conn.connection.dbapi_connection
            assert dbapi is not None
            if conn.dialect.paramstyle != "qmark":
                sql_ = sql.replace("?", "%s")
            else:
                sql_ = sql
            cur = dbapi.cursor()
            try:
                cur.execute(sql_, params)
                return list(cur.fetchall())
            finally:
                cur.close()

        return self._run(q)

    def entries(self, start: int, end: int) -> list[bytes]:
        rows = self._fetch(
            "SELECT data FROM ledger_entries WHERE idx >= ? AND idx < ? ORDER BY idx",
            (start, end),
        )
        return [bytes(r[0]) for r in rows]

    def checkpoints(self, first: int, last: int) -> list[tuple[int, str]]:
        t = store.checkpoints_table

        def q(conn: Connection) -> list[tuple[int, str]]:
            rows = conn.execute(
                select(t.c.size, t.c.note)
                .where(t.c.size >= first, t.c.size <= last)
                .order_by(t.c.size)
            ).all()
            return [(int(s), n) for s, n in rows]

        return self._run(q)

    def stored_hashes(self, start: int, end: int) -> list[tuple[int, bytes]]:
        return self._fetch(
            "SELECT idx, hash FROM ledger_hashes WHERE idx >= ? AND idx < ? ORDER BY idx",
            (start, end),
        )

    def beyond(self, size: int) -> tuple[int | None, int | None]:
        """Entries or checkpoints stored past the head (and past `size`), added outside the log.

        The log may be appending while it is audited: a row is only extra if the head, read
        after it, does not cover it (the log writes entries, checkpoint and head in one
        transaction).
        """
        e, c = store.entries_table, store.checkpoints_table

        def q(conn: Connection) -> tuple[int | None, int | None, int]:
            head = store.read_head(conn)
            floor = max(size, head[1] if head else 0)
            entry = conn.execute(
                select(e.c.idx).where(e.c.idx >= floor).order_by(e.c.idx).limit(1)
            ).scalar()
            cp = conn.execute(
                select(c.c.size).where(c.c.size > floor).order_by(c.c.size).limit(1)
            ).scalar()
            after = store.read_head(conn)
            return (
                None if entry is None else int(entry),
                None if cp is None else int(cp),
                after[1] if after else 0,
            )

        for _ in range(10):
            entry, cp, head = self._run(q)
            if (entry is None or entry >= head) and (cp is None or cp > head):
                return entry, cp
        return None, None  # the log keeps growing under the audit: nothing provably extra

    def _proof(self, fn: Callable[[_Reader], list[bytes]]) -> list[bytes]:
        def q(conn: Connection) -> list[bytes]:
            try:
                return fn(lambda ix: store.read_hashes(conn, ix))
            except LookupError as e:
                raise ProofError(f"the database cannot build this proof: {e}") from e

        return self._run(q)

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        return self._proof(lambda read: merkle.consistency_proof(size1, size2, read))

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        return self._proof(lambda read: merkle.inclusion_proof(index, size, read))

    def close(self) -> None:
        if isinstance(self.bind, Engine):
            self.bind.dispose()


class _Borrowed:
    """A connection lent by the caller (tests audit inside their own transaction)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def __enter__(self) -> Connection:
        return self.conn

    def __exit__(self, *exc: object) -> None:
        return None


def _redact(url: str) -> str:
    """The URL without its password, for messages and state files."""
    head, sep, rest = url.partition("://")
    if "@" in rest and ":" in rest.split("@", 1)[0]:
        user = rest.split("@", 1)[0].split(":", 1)[0]
        rest = f"{user}:***@" + rest.split("@", 1)[1]
    return head + sep + rest


def _unavailable(where: str, e: DBAPIError) -> SourceUnavailable:
    detail = str(getattr(e, "orig", e)).strip().splitlines()[0] if str(e) else type(e).__name__
    return SourceUnavailable(
        f"the database {where} cannot be read: {detail}",
        "check that the database server is running and --db is right, then audit again",
    )


class HttpSource:
    """A log read from a medledger server's public log endpoints (no personal data).

    The server is trusted for nothing, its manners included. With `timeout` the source gives
    up once that many seconds have passed since it was made (SourceUnavailable): every step of
    a request waits at most the time left, and when it runs out a watchdog shuts down the
    connections, which ends a read however slowly the server trickles its bytes. Each answer
    is read up to its size cap and no further (after undoing gzip, so a small bomb cannot
    inflate past it), and its JSON through ledger.untrusted.read_json; an answer past a cap or
    not of the API's shape is SourceMalformed.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float | None = None,
        page_size: int = HTTP_PAGE,
        client: httpx.Client | None = None,
    ) -> None:
        self.base = base_url.rstrip("/")
        self.description = self.base
        self.page_size = page_size
        headers = {"Accept": "application/json, text/plain", "Accept-Encoding": "gzip"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.client = client or httpx.Client(follow_redirects=True)
        self.headers = headers
        self.timeout = timeout
        self._deadline = Deadline(timeout)

    def _trace(self, event: str, info: dict[str, Any]) -> None:
        """httpcore's trace extension: hands every socket the source opens to the deadline."""
        if event in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            self._deadline.watch(info["return_value"].get_extra_info("socket"))

    # -- reading

    def _get(
        self, path: str, params: dict[str, int] | None = None, limit: int = ANSWER_MAX
    ) -> tuple[int, bytes, str]:
        """(status, body, url) of a GET; the body is read only for a 200."""
        url = f"{self.base}{path}"
        try:
            with self.client.stream(
                "GET",
                url,
                params=params,
                headers=self.headers,
                timeout=httpx.Timeout(self._deadline.step(url)),
                extensions={"trace": self._trace},
            ) as r:
                url = str(r.request.url)
                _check_status(r.status_code, url)
                body = b""
                if r.status_code == 200:
                    body = read_capped(
                        r.iter_raw(),
                        length=r.headers.get("content-length", ""),
                        coding=r.headers.get("content-encoding", ""),
                        limit=limit,
                        malformed=lambda what: _malformed(url, what),
                    )
                return r.status_code, body, url
        except httpx.HTTPError as e:
            if self._deadline.passed():
                raise self._deadline.out_of_time(url) from e
            if isinstance(e, httpx.TimeoutException):
                raise SourceUnavailable(
                    f"{url} did not answer in time ({type(e).__name__}: one step of a request "
                    f"waited over {READ_TIMEOUT:g} s)",
                    "the server or the link is overloaded: retry later",
                ) from e
            raise SourceUnavailable(
                f"cannot reach {url}: {e}",
                "check --url and that the server is running, then audit again",
            ) from e

    def _json(
        self, path: str, params: dict[str, int] | None = None, limit: int = ANSWER_MAX
    ) -> tuple[int, Any, str]:
        """(status, JSON value, url) of a GET; the value is None unless the status is 200."""
        status, body, url = self._get(path, params, limit)
        if status != 200:
            return status, None, url
        try:
            return status, read_json(body, limit), url
        except InputRejected as e:
            raise _malformed(url, f"not the API's JSON: {e}") from e

    def checkpoint(self) -> str:
        status, body, url = self._get("/v1/log/checkpoint")
        if status != 200:
            raise _not_api(url, f"status {status}")
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError as e:
            raise _malformed(url, f"a checkpoint that is not UTF-8 (byte {e.start})") from e

    def entries(self, start: int, end: int) -> list[bytes]:
        limit = ANSWER_MAX + max(end - start, 0) * ENTRY_ANSWER_MAX
        status, body, url = self._json("/v1/log/entries", {"start": start, "end": end}, limit)
        if status != 200:
            raise _not_api(url, f"status {status}")
        if not isinstance(body, list):
            raise _malformed(url, "not a JSON list")
        return [_decode(x, url) for x in body]

    def _proof(self, path: str, params: dict[str, int]) -> list[bytes]:
        status, body, url = self._json(path, params)
        if status != 200:
            raise ProofError(f"the server has no such proof (status {status})")
        hashes = body.get("hashes") if isinstance(body, dict) else None
        if not isinstance(hashes, list):
            raise _malformed(url, "a proof without a hashes list")
        return [_decode(h, url) for h in hashes]

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        return self._proof("/v1/log/proof/consistency", {"size1": size1, "size2": size2})

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        return self._proof("/v1/log/proof/inclusion", {"index": index, "size": size})

    def log_keys(self) -> tuple[Any, str] | None:
        """(GET /v1/log/keys as JSON, its URL), or None when the server has no key list."""
        status, body, url = self._json("/v1/log/keys")
        if status == 404:
            return None
        if status != 200:
            raise _not_api(url, f"status {status}")
        return body, url

    def checkpoints(self, first: int, last: int) -> None:
        return None

    def stored_hashes(self, start: int, end: int) -> None:
        return None

    def beyond(self, size: int) -> tuple[None, None]:
        return None, None

    def close(self) -> None:
        self._deadline.close()
        self.client.close()


def _check_status(status: int, url: str) -> None:
    if status in (401, 403):
        raise SourceUnavailable(
            f"{url} refused the request ({status})",
            "log reads need no credential on a medledger server; if this one asks, pass an "
            "auditor token with --token (medledger clients add --role auditor)",
        )
    if status == 429 or status >= 500:
        raise SourceUnavailable(
            f"{url} answered {status}", "the server is overloaded or failing: retry later"
        )


def _decode(x: object, where: str) -> bytes:
    if not isinstance(x, str):
        raise _malformed(where, "a list item is not a base64 string")
    try:
        return base64.b64decode(x, validate=True)
    except ValueError as e:  # binascii.Error, or a plain ValueError for non-ASCII text
        raise _malformed(where, "a list item is not base64") from e


def _not_api(url: str, what: str) -> SourceUnavailable:
    return SourceUnavailable(
        f"{url} did not answer as a medledger log API does ({what})",
        "check that --url is the server's base address (e.g. https://host:8000), not a page "
        "or a proxy's error page",
    )


def _malformed(url: str, what: str) -> SourceMalformed:
    return SourceMalformed(
        f"{url} answered what no medledger log API gives: {what}",
        "check that --url is the server's base address (e.g. https://host:8000); a server "
        "that answers this way is broken or hostile: report it to its operator",
    )
