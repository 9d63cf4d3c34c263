"""Logs to audit, in memory and over HTTP, and the single mutations an attacker could make.

MemorySource mirrors exchange.audit_sources.DbSource over plain lists, so thousands of
mutated copies of one log cost nothing to make. Each mutation returns the index the audit
must name: for entry mutations the first position where the stored list differs from the
signed one; for a stored hash the leaf whose append wrote it; for a stored checkpoint of
size s the last entry it covers, max(s-1, 0).
"""

from __future__ import annotations

import base64
import random
import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
from sqlalchemy import Connection, select

from ledger import merkle, store
from ledger.entry import Entry, commitment
from ledger.log import Log, Submission
from ledger.merkle import ProofError
from ledger.note import Signer
from ledger.store import make_engine

from .ledger_helpers import new_signer

ORIGIN = "audit.example/log"


def stored_hash_leaf(index: int) -> tuple[int, int]:
    """(leaf, level) of stored hash `index`: the leaf whose append writes it, and its height."""
    level, n = merkle.split_stored_hash_index(index)
    return ((n + 1) << level) - 1, level


def signer(origin: str = ORIGIN) -> Signer:
    return new_signer(origin)


def vkey(s: Signer) -> str:
    return s.verifier.vkey()


def sub(rng: random.Random, i: int) -> Submission:
    return Submission(
        kind=rng.choice(["record", "consent", "rwd", "settlement", "access"]),
        sender=rng.choice(["hosp-1", "hosp-2", "lecheng.rwd"]),
        commit=commitment(rng.randbytes(32), b"bundle %d" % i),
        subject=rng.randbytes(32) if rng.random() < 0.5 else None,
    )


def build_log(url: str, n: int, s: Signer, *, seed: int = 1, max_batch: int = 40) -> Log:
    """A log of n entries appended in random-sized batches (one checkpoint each)."""
    rng = random.Random(seed)
    log = Log(make_engine(url), s, origin=s.name)
    i = log.size()
    while i < n:
        k = min(n - i, rng.randint(1, max_batch))
        log.append_batch([sub(rng, i + j) for j in range(k)])
        i += k
    return log


def append(log: Log, n: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    base = log.size()
    for i in range(0, n, 25):
        log.append_batch([sub(rng, base + i + j) for j in range(min(25, n - i))])


def copy_db(src: Path, dst: Path) -> None:
    import shutil

    for suffix in ("", "-wal", "-shm"):
        if Path(str(src) + suffix).exists():
            shutil.copy(str(src) + suffix, str(dst) + suffix)


# --- in memory -----------------------------------------------------------------------------


@dataclass
class MemorySource:
    """The ledger tables as lists, read like DbSource reads them."""

    head: str
    entries_: list[bytes]
    checkpoints_: dict[int, str]
    hashes: dict[int, bytes | None]  # stored index -> hash; None = row deleted
    page_size: int = 256
    description: str = "memory"
    reads: list[tuple[int, int]] = field(default_factory=list)
    stored: bool = True

    @classmethod
    def from_log(cls, log: Log) -> MemorySource:
        with log.engine.connect() as conn:
            head = store.read_head(conn)
            assert head is not None
            hashes = {
                int(i): bytes(h)
                for i, h in conn.execute(
                    select(store.hashes_table.c.idx, store.hashes_table.c.hash)
                )
            }
        return cls(
            head=head[2],
            entries_=log.entries(0, head[1]),
            checkpoints_=dict(log.checkpoints()),
            hashes=hashes,
        )

    def copy(self) -> MemorySource:
        return MemorySource(
            self.head,
            list(self.entries_),
            dict(self.checkpoints_),
            dict(self.hashes),
            self.page_size,
            self.description,
            stored=self.stored,
        )

    def checkpoint(self) -> str:
        return self.head

    def entries(self, start: int, end: int) -> list[bytes]:
        self.reads.append((start, end))
        return self.entries_[start:end]

    def checkpoints(self, first: int, last: int) -> list[tuple[int, str]]:
        return sorted((s, n) for s, n in self.checkpoints_.items() if first <= s <= last)

    def stored_hashes(self, start: int, end: int) -> list[tuple[int, bytes]] | None:
        if not self.stored:
            return None
        return [(i, self.hashes[i]) for i in range(start, end) if self.hashes.get(i) is not None]

    def beyond(self, size: int) -> tuple[int | None, int | None]:
        cps = [s for s in self.checkpoints_ if s > size]
        return (size if len(self.entries_) > size else None, min(cps) if cps else None)

    def _read(self, ix: Sequence[int]) -> list[bytes]:
        out = []
        for i in ix:
            h = self.hashes.get(i)
            if h is None:
                raise ProofError(f"no stored hash {i}")
            out.append(h)
        return out

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        return merkle.consistency_proof(size1, size2, self._read)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        return merkle.inclusion_proof(index, size, self._read)

    def close(self) -> None:
        pass


def entries_only(src: MemorySource) -> MemorySource:
    """The same log as an HTTP API shows it: no stored checkpoints or hashes."""
    c = src.copy()
    c.checkpoints_ = {}
    c.stored = False
    return c


# --- mutations -----------------------------------------------------------------------------

KINDS = ("flip", "delete", "insert", "reorder", "hash", "checkpoint")


def first_difference(a: Sequence[bytes], b: Sequence[bytes]) -> int:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


def forged_entry(index: int, prev: bytes, rng: random.Random) -> bytes:
    """A well-formed entry that chains correctly: only the signed roots can unmask it."""
    return Entry(
        index,
        prev,
        "2026-11-28T10:00:00.000Z",
        "record",
        "forger",
        rng.randbytes(32),
        "application/fhir+json",
    ).to_bytes()


@dataclass
class Mutation:
    kind: str
    detail: str
    expected: int
    entries: list[bytes] | None = None  # the new entry list, for entry mutations
    hash_index: int | None = None
    hash_value: bytes | None = None
    checkpoint_size: int | None = None
    checkpoint_note: str | None = None


def random_mutation(src: MemorySource, rng: random.Random, kind: str, other: Signer) -> Mutation:
    """One random single mutation of `kind`, and the index an audit must name."""
    es = src.entries_
    n = len(es)
    if kind == "flip":
        j = rng.randrange(n)
        data = bytearray(es[j])
        pos = rng.randrange(len(data))
        data[pos] ^= rng.randint(1, 255)
        new = list(es)
        new[j] = bytes(data)
        return Mutation(kind, f"entry {j} byte {pos}", j, entries=new)
    if kind == "delete":
        j = rng.randrange(n)
        new = es[:j] + es[j + 1 :]
        return Mutation(kind, f"entry {j}", first_difference(es, new), entries=new)
    if kind == "insert":
        j = rng.randrange(n + 1)
        how = rng.choice(["garbage", "copy", "forged"])
        if how == "garbage":
            item = rng.randbytes(rng.randint(1, 300))
        elif how == "copy":
            item = es[rng.randrange(n)]
        else:
            prev = merkle.leaf_hash(es[j - 1]) if j else b""
            item = forged_entry(j, prev, rng)
        new = es[:j] + [item] + es[j:]
        return Mutation(kind, f"{how} at {j}", first_difference(es, new), entries=new)
    if kind == "reorder":
        j, k = sorted(rng.sample(range(n), 2))
        new = list(es)
        if rng.random() < 0.5:
            new[j], new[k] = new[k], new[j]
            how = "swap"
        else:
            new.insert(k, new.pop(j))
            how = "move"
        return Mutation(kind, f"{how} {j} {k}", first_difference(es, new), entries=new)
    if kind == "hash":
        idx = rng.choice([i for i in src.hashes if src.hashes[i] is not None])
        leaf, level = stored_hash_leaf(idx)
        return Mutation(
            kind,
            f"stored hash {idx} (level {level})",
            leaf,
            hash_index=idx,
            hash_value=rng.randbytes(32),
        )
    if kind == "checkpoint":
        s = rng.choice(sorted(src.checkpoints_))
        note = src.checkpoints_[s]
        how = rng.choice(["char", "other-size", "other-key"])
        if how == "char":
            pos = rng.randrange(len(note))
            ch = note[pos]
            repl = rng.choice([c for c in "0123456789abcdefXYZ+/" if c != ch])
            new_note = note[:pos] + repl + note[pos + 1 :]
        elif how == "other-size":
            s2 = rng.choice([x for x in src.checkpoints_ if x != s])
            new_note = src.checkpoints_[s2]
        else:
            from ledger.note import sign

            new_note = sign(note.partition("\n\n")[0] + "\n", [other])
        return Mutation(
            kind,
            f"checkpoint {s} {how}",
            max(s - 1, 0),
            checkpoint_size=s,
            checkpoint_note=new_note,
        )
    raise ValueError(kind)


def apply_memory(src: MemorySource, m: Mutation) -> MemorySource:
    c = src.copy()
    if m.entries is not None:
        c.entries_ = m.entries
    if m.hash_index is not None:
        c.hashes[m.hash_index] = m.hash_value
    if m.checkpoint_size is not None:
        assert m.checkpoint_note is not None
        c.checkpoints_[m.checkpoint_size] = m.checkpoint_note
    return c


def disable_triggers(conn: Connection) -> None:
    """The attacker's copy: the append-only triggers go first (inside the test transaction)."""
    if conn.dialect.name == "sqlite":
        for t in store.APPEND_ONLY_TABLES:
            for op in ("update", "delete"):
                conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {t}_no_{op}")
    else:
        for t in store.APPEND_ONLY_TABLES:
            conn.exec_driver_sql(f"ALTER TABLE {t} DISABLE TRIGGER USER")


def apply_db(conn: Connection, src: MemorySource, m: Mutation, rng: random.Random) -> None:
    """Makes the same mutation in the ledger tables through `conn` (in its transaction)."""
    e, h, c = store.entries_table, store.hashes_table, store.checkpoints_table
    if m.entries is not None:
        old, new = src.entries_, m.entries
        changed = [i for i, (x, y) in enumerate(zip(old, new, strict=False)) if x != y]
        if len(old) == len(new) and len(changed) <= 2:  # a flipped byte or a swap
            for i in changed:
                conn.execute(e.update().where(e.c.idx == i).values(data=new[i]))
        else:  # rows shift: rewrite them from the first difference on
            j = first_difference(old, new)
            conn.execute(e.delete().where(e.c.idx >= j))
            rows = [{"idx": i, "prev": rng.randbytes(32), "data": d} for i, d in enumerate(new)][j:]
            if rows:
                conn.execute(e.insert(), rows)
    if m.hash_index is not None:
        conn.execute(h.update().where(h.c.idx == m.hash_index).values(hash=m.hash_value))
    if m.checkpoint_size is not None:
        conn.execute(c.update().where(c.c.size == m.checkpoint_size).values(note=m.checkpoint_note))


# --- over HTTP, the design's log-read endpoints --------------------------------------------


def mock_http(
    src: MemorySource,
    *,
    seen: list[str] | None = None,
    page_cap: int = 1000,
    fail: dict[str, int] | None = None,
) -> httpx.Client:
    """An httpx client whose server answers /v1/log/* from `src` as design.md specifies."""

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if seen is not None:
            seen.append(f"{path} {request.headers.get('authorization', '-')}")
        if fail and path in fail:
            return httpx.Response(fail[path], text="down")
        q = request.url.params
        if path == "/v1/log/checkpoint":
            return httpx.Response(200, text=src.head, headers={"content-type": "text/plain"})
        if path == "/v1/log/entries":
            start, end = int(q["start"]), int(q["end"])
            data = src.entries_[start : min(end, start + page_cap)]
            return httpx.Response(200, json=[base64.b64encode(d).decode() for d in data])
        try:
            if path == "/v1/log/proof/consistency":
                a, b = int(q["size1"]), int(q["size2"])
                proof = src.consistency_proof(a, b)
                return httpx.Response(
                    200, json={"size1": a, "size2": b, "hashes": [_b64(x) for x in proof]}
                )
            if path == "/v1/log/proof/inclusion":
                i, n = int(q["index"]), int(q["size"])
                proof = src.inclusion_proof(i, n)
                return httpx.Response(
                    200, json={"index": i, "tree_size": n, "hashes": [_b64(x) for x in proof]}
                )
        except ProofError as err:
            return httpx.Response(400, json={"error": str(err)})
        return httpx.Response(404, json={"error": "not found"})

    def streamed(request: httpx.Request) -> httpx.Response:
        r = handler(request)
        return httpx.Response(r.status_code, headers=r.headers, stream=_Unread(r.content))

    return httpx.Client(transport=httpx.MockTransport(streamed), base_url="http://ledger.test")


class _Unread(httpx.SyncByteStream):
    """A body not read yet, as a server's arrives: HttpSource reads an answer's raw bytes
    itself (to cap them), which httpx allows only before anything else has read them."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __iter__(self) -> Iterator[bytes]:
        yield self.data


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def pg_schema_url(base: str, schema: str) -> str:
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}"


def drop_sqlite_triggers(db: Path) -> None:
    import sqlite3

    con = sqlite3.connect(db)
    for t in store.APPEND_ONLY_TABLES:
        for op in ("update", "delete"):
            con.execute(f"DROP TRIGGER IF EXISTS {t}_no_{op}")
    con.commit()
    con.close()


@contextmanager
def serve_http(src: MemorySource, *, status: int | None = None) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 answering the design's /v1/log/* reads from `src`.

    With `status`, every request is answered with that status (a failing server).
    """
    client = mock_http(src)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if status is not None:
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"unavailable")
                return
            r = client.get(self.path)
            self.send_response(r.status_code)
            self.send_header("content-type", r.headers.get("content-type", "text/plain"))
            self.send_header("content-length", str(len(r.content)))
            self.end_headers()
            self.wfile.write(r.content)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def closed_port() -> int:
    """A local TCP port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
