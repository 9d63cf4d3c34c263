"""An audit's LogSource over C2SP tiles: a log read from a static host, a CDN or a directory.

TileSource answers what ledger.audit asks of a log from its tiles alone: the checkpoint at
``<prefix>/checkpoint``, entries from the entry bundles, and consistency and inclusion proofs
computed from the hash tiles, through a TileReader bound to the checkpoint's size and root.
Every tile is authenticated before use (ledger/tiles/reader.py): an entry bundle against its
level-0 tile, each full tile against the hash its parent tile holds, the partial tiles of the
right edge against the signed root. A static host keeps no stored checkpoints or interior
hashes beside the tiles, and nothing past its checkpoint: `checkpoints`, `stored_hashes` and
`beyond` have nothing to offer.

Reading fails the way the log API's does (docs/audit.md, "Hostile servers and files"):

  SourceUnavailable (exit 2)  no answer, a status other than 200 (a missing tile included),
                              a step waiting over READ_TIMEOUT seconds, the run's deadline
  SourceMalformed (exit 3)    an answer past its cap, bad gzip or another content encoding,
                              a checkpoint that is not UTF-8, a hash tile of the wrong
                              length, an entry bundle that does not parse
  AuditError (exit 4)         well-formed tiles that are not the signed tree's (code "tile"),
                              raised from `entries` into the audit, which reports it as it
                              reports an altered log; a proof from such tiles is a ProofError

Over HTTP one kept-alive connection is used (http.client), answers are read up to their cap
and no further, gzip is undone at most one byte past the cap, and with a `timeout` a watchdog
shuts the connection down when the whole run's time is up, however slowly a host trickles
its bytes. Standard library only.
"""

from __future__ import annotations

import http.client
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

from ..audit.errors import AuditError
from ..audit.reading import READ_TIMEOUT, Deadline, read_capped
from ..audit.source import SourceMalformed, SourceUnavailable
from ..checkpoint import CheckpointError, parse_checkpoint
from ..merkle import HASH_SIZE, ProofError
from ..note import NoteError
from ..note import split as split_note
from ..untrusted import InputRejected, read_file
from .layout import ENTRIES, TILE_HEIGHT, TILE_WIDTH, TileError, parse_path
from .reader import TileMismatch, TileReader

CHECKPOINT = "checkpoint"
PAGE = 16 * TILE_WIDTH
"""Entries an audit asks for at a time: sixteen bundles."""

ANSWER_MAX = 1 << 20
"""Bytes of a checkpoint; an entry bundle may add ENTRY_ANSWER_MAX per entry it holds."""
ENTRY_ANSWER_MAX = 2048
"""An entry is a few hundred bytes (docs/ledger-format.md): the log API's bound per entry."""

_SYNC_HINT = (
    "write the log's tiles there again (`medledger tiles sync --out DIR` into an empty "
    "directory), or report the host to the log's operator"
)


def answer_cap(path: str) -> int:
    """The most bytes the answer at `path` (after gzip is undone) may hold."""
    if path == CHECKPOINT:
        return ANSWER_MAX
    tile = parse_path(path)
    if tile.level == ENTRIES:
        return ANSWER_MAX + tile.width * ENTRY_ANSWER_MAX
    return TILE_WIDTH * HASH_SIZE


class TileSource:
    """A log read from its tiles through `fetch(path) -> bytes`, which raises SourceUnavailable
    or SourceMalformed and bounds each answer by answer_cap. See the module docstring."""

    def __init__(
        self,
        fetch: Callable[[str], bytes],
        description: str,
        *,
        page_size: int = PAGE,
        close: Callable[[], None] | None = None,
    ) -> None:
        self.fetch = fetch
        self.description = description
        self.page_size = page_size
        self._close = close
        self._reader: TileReader | None = None
        self._bundle: tuple[int, list[bytes]] | None = None  # the last one read

    def checkpoint(self) -> str:
        """The host's checkpoint note; the tiles are read as the tree it signs from now on."""
        data = self.fetch(CHECKPOINT)
        try:
            note = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise _malformed(self.description, CHECKPOINT, f"not UTF-8 (byte {e.start})") from e
        try:
            cp = parse_checkpoint(split_note(note)[0])
        except (NoteError, CheckpointError):
            self._reader = None  # the audit refuses the note itself, with its reason
            return note
        r = self._reader
        if r is None or (r.size, r.root) != (cp.size, cp.root):
            self._reader = TileReader(cp.size, cp.root, self.fetch)
            self._bundle = None
        return note

    def _tiles(self) -> TileReader:
        if self._reader is None:
            raise SourceMalformed(
                f"{self.description}: no readable checkpoint to read the tiles by",
                "check that the address is the log's tile prefix (where `checkpoint` and "
                "`tile/` are)",
            )
        return self._reader

    def entries(self, start: int, end: int) -> list[bytes]:
        r = self._tiles()
        end = min(end, r.size)
        out: list[bytes] = []
        pos = start
        while pos < end:
            k = pos >> TILE_HEIGHT
            bundle = self._read_bundle(r, k)
            base = k << TILE_HEIGHT
            out += bundle[pos - base : end - base]
            pos = base + TILE_WIDTH
        return out

    def _read_bundle(self, r: TileReader, k: int) -> list[bytes]:
        if self._bundle is not None and self._bundle[0] == k:
            return self._bundle[1]
        try:
            got = r.entries(k)
        except TileMismatch as e:
            raise self._tamper(r, e) from e
        except TileError as e:
            raise _malformed(self.description, f"tile/entries/{k}", str(e)) from e
        self._bundle = (k, got)
        return got

    def _tamper(self, r: TileReader, e: TileMismatch) -> AuditError:
        """The audit's finding for tiles that are well formed but not of the signed tree:
        the entry named, else the first entry of the tile that failed (the last entry of the
        tree when the right edge does not fold to the root)."""
        if e.entry is not None:
            index = e.entry
        elif len(e.tiles) == 1:
            t = e.tiles[0]
            index = (t.index << TILE_HEIGHT) << (max(t.level, 0) * TILE_HEIGHT)
        else:
            index = max(r.size - 1, 0)
        return AuditError(f"{self.description}: {e}", index, "tile")

    def _proof(self, build: Callable[[TileReader], list[bytes]]) -> list[bytes]:
        r = self._tiles()
        try:
            return build(r)
        except TileError as e:  # the audit checks every proof: a wrong one fails it there
            raise ProofError(f"the tiles cannot prove it: {e}") from e

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        return self._proof(lambda r: r.consistency_proof(size1, size2))

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        return self._proof(lambda r: r.inclusion_proof(index, size))

    def checkpoints(self, first: int, last: int) -> None:
        return None

    def stored_hashes(self, start: int, end: int) -> None:
        return None

    def beyond(self, size: int) -> tuple[None, None]:
        return None, None

    def close(self) -> None:
        if self._close is not None:
            self._close()


def open_tiles(location: str, *, timeout: float | None = None) -> TileSource:
    """A TileSource over ``http(s)://`` tile prefix or a directory that `tiles sync` wrote.
    With `timeout` the whole run ends (SourceUnavailable) that many seconds from now."""
    if location.startswith(("http://", "https://")):
        http = HttpTiles(location, timeout=timeout)
        return TileSource(http.get, http.base, close=http.close)
    d = DirectoryTiles(Path(location), timeout=timeout)
    return TileSource(d.get, str(d.root), close=d.close)


class DirectoryTiles:
    """Tiles as files under a directory, each read up to its cap."""

    def __init__(self, root: Path, *, timeout: float | None = None) -> None:
        self.root = root
        self.timeout = timeout
        self._deadline = Deadline(timeout)
        if not root.is_dir():
            raise SourceUnavailable(
                f"{root} is not a directory", "pass the directory `medledger tiles sync` wrote"
            )

    def get(self, path: str) -> bytes:
        file = self.root / path
        self._deadline.step(str(file))
        try:
            return read_file(file, answer_cap(path))
        except FileNotFoundError as e:
            raise SourceUnavailable(f"{file} does not exist", _SYNC_HINT) from e
        except OSError as e:
            raise SourceUnavailable(f"{file} cannot be read: {e}", _SYNC_HINT) from e
        except InputRejected as e:
            raise _malformed(str(self.root), path, str(e)) from e

    def close(self) -> None:
        self._deadline.close()


class HttpTiles:
    """Tiles from an HTTP(S) prefix, on one kept-alive connection (see the module docstring).
    One caller at a time."""

    def __init__(self, base: str, *, timeout: float | None = None) -> None:
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SourceUnavailable(
                f"{base!r} is not an http(s) address",
                "pass the tile prefix, e.g. https://host/tlog (where `checkpoint` is)",
            )
        self.base = base.rstrip("/")
        self.timeout = timeout
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._conn: http.client.HTTPConnection | None = None
        self._deadline = Deadline(timeout)

    # -- the connection

    def _connect(self, step: float) -> http.client.HTTPConnection:
        conn = self._conn
        if conn is None:
            if self._https:
                conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=step, context=ssl.create_default_context()
                )
            else:
                conn = http.client.HTTPConnection(self._host, self._port, timeout=step)
            conn.connect()
            self._conn = conn
            if conn.sock is not None:
                self._deadline.watch(conn.sock)
        elif conn.sock is not None:
            conn.sock.settimeout(step)
        return conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def close(self) -> None:
        self._deadline.close()
        self._drop()

    # -- reading

    def get(self, path: str) -> bytes:
        """The bytes at `path` under the prefix, read within answer_cap(path)."""
        url = f"{self.base}/{path}"
        limit = answer_cap(path)
        # A kept-alive connection the host has since closed fails on first use: one retry
        # on a fresh connection (a GET may be repeated).
        for attempt in (0, 1):
            reused = self._conn is not None
            try:
                conn = self._connect(self._deadline.step(url))
                conn.request(
                    "GET",
                    f"{self._prefix}/{path}",
                    headers={"Accept-Encoding": "gzip, identity", "Accept": "*/*"},
                )
                resp = conn.getresponse()
                if resp.status != 200:
                    self._drop()  # its body is not read: the connection cannot be reused
                    raise _status(url, resp.status, resp.getheader("Location"))
                body = _read_body(resp, limit, url, self.base)
                if resp.will_close:
                    self._drop()
                return body
            except (OSError, http.client.HTTPException) as e:
                self._drop()
                if self._deadline.passed():
                    raise self._deadline.out_of_time(url) from e
                if isinstance(e, TimeoutError):
                    raise SourceUnavailable(
                        f"{url} did not answer in time (one step of a request waited over "
                        f"{READ_TIMEOUT:g} s)",
                        "the host or the link is overloaded: retry later",
                    ) from e
                if reused and attempt == 0:
                    continue
                raise SourceUnavailable(
                    f"cannot reach {url}: {e or type(e).__name__}",
                    "check the address and that the host is up, then audit again",
                ) from e
            except SourceMalformed:
                self._drop()
                raise
        raise AssertionError("unreachable")  # pragma: no cover


def _read_body(resp: http.client.HTTPResponse, limit: int, url: str, base: str) -> bytes:
    def chunks() -> Iterator[bytes]:
        while chunk := resp.read(65536):
            yield chunk
        if resp.length:  # read(amt) ends quietly at a connection closed early
            raise http.client.IncompleteRead(b"", resp.length)

    return read_capped(
        chunks(),
        length=resp.getheader("Content-Length", "") or "",
        coding=resp.getheader("Content-Encoding", "") or "",
        limit=limit,
        malformed=lambda what: _malformed(base, url, what),
    )


def _status(url: str, status: int, location: str | None) -> SourceUnavailable:
    if 300 <= status < 400:
        return SourceUnavailable(
            f"{url} redirects ({status}) to {location or 'nowhere'}",
            "pass the address it redirects to as the tile prefix",
        )
    if status == 404:
        return SourceUnavailable(
            f"{url} is not there (404)",
            "check that the address is the log's tile prefix (where `checkpoint` and `tile/` "
            "are); a host missing a tile its checkpoint needs is incomplete: " + _SYNC_HINT,
        )
    return SourceUnavailable(f"{url} answered {status}", "retry later")


def _malformed(where: str, path: str, what: str) -> SourceMalformed:
    return SourceMalformed(
        f"{where}: {path} is not what a tile host serves: {what}",
        "check that the address is the log's tile prefix; a host that answers this way is "
        "broken or hostile: " + _SYNC_HINT,
    )
