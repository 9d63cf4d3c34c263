"""A log's (or a monitor's) side of one witness: POST <prefix>/add-checkpoint over HTTP.

WitnessClient sends one request on a kept-alive connection and sorts the answer: the
signature lines of a 200, the witness's size of a 409 (WitnessConflict), a refusal
(WitnessRefused, with the fork evidence a 422 may carry), or no usable answer
(WitnessUnavailable: connection, timeout, 5xx, 429; WitnessBadAnswer: outside the protocol).
Every read is bounded by `timeout` and answers by MAX_RESPONSE_BYTES.

cosign() is the whole exchange for one checkpoint: it starts from the size the caller
believes the witness holds (0 when it does not know, as the spec suggests), follows a 409 to
the size the witness names with a consistency proof from the caller's `prove`, and returns
the witness's cosignature, verified with its key.
"""

from __future__ import annotations

import http.client
import ssl
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from ..audit.evidence import Evidence
from ..checkpoint import CheckpointError, parse_checkpoint
from ..cosignature import Cosignature, CosignatureError, CosignerVerifier, verify_cosignatures
from ..note import NoteError, Signature, parse_signature_lines
from ..note import split as split_note
from ..untrusted import InputRejected, read_uint64
from ..verify import MalformedInput
from .core import SIZE_TYPE, format_request

MAX_RESPONSE_BYTES = 256 << 10
"""Cosignature lines are a few hundred bytes; a fork's evidence a few KiB."""

Prove = Callable[[int, int], Sequence[bytes]]
"""prove(size1, size2): the log's RFC 6962 consistency proof between two of its tree sizes."""


class WitnessError(Exception):
    """The witness did not cosign."""


class WitnessUnavailable(WitnessError):
    """No answer (connection refused or lost, timeout) or a temporary one (5xx, 429)."""


class WitnessBadAnswer(WitnessError):
    """An answer outside the protocol, or a cosignature that does not verify."""


class WitnessConflict(WitnessError):
    """409: the witness holds a checkpoint of `size`, not the old size sent."""

    def __init__(self, size: int) -> None:
        super().__init__(f"the witness holds size {size}")
        self.size = size


class WitnessRefused(WitnessError):
    """The witness refused the checkpoint with `status` (400, 403, 404, 413, 422, ...).
    `evidence` is set when it refused a fork: two checkpoints the log signed for one size."""

    def __init__(self, status: int, reason: str, evidence: Evidence | None = None) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason
        self.evidence = evidence


class WitnessClient:
    """One witness at a submission prefix URL (http or https). Not thread-safe: one per
    thread, or one caller at a time."""

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"a witness URL is http(s)://host[:port][/prefix], not {url!r}")
        self.url = url
        self.timeout = timeout
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._path = parts.path.rstrip("/") + "/add-checkpoint"
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._https:
                self._conn = http.client.HTTPSConnection(
                    self._host,
                    self._port,
                    timeout=self.timeout,
                    context=ssl.create_default_context(),
                )
            else:
                self._conn = http.client.HTTPConnection(
                    self._host, self._port, timeout=self.timeout
                )
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _post(self, body: bytes) -> tuple[int, str, bytes]:
        # A kept-alive connection the server has since closed fails on first use: one retry
        # on a fresh connection. A repeated submission is harmless (the witness answers 409).
        for attempt in (0, 1):
            reused = self._conn is not None
            conn = self._connection()
            try:
                conn.request(
                    "POST",
                    self._path,
                    body=body,
                    headers={"Content-Type": "text/plain; charset=utf-8"},
                )
                resp = conn.getresponse()
                data = resp.read(MAX_RESPONSE_BYTES + 1)
            except (OSError, http.client.HTTPException) as e:
                self.close()
                if reused and attempt == 0 and not isinstance(e, TimeoutError):
                    continue
                raise WitnessUnavailable(f"{self.url}: {e or type(e).__name__}") from e
            if len(data) > MAX_RESPONSE_BYTES:
                self.close()
                raise WitnessBadAnswer(f"{self.url}: answer over {MAX_RESPONSE_BYTES:,} bytes")
            if resp.will_close:
                self.close()
            return resp.status, resp.getheader("Content-Type", ""), data
        raise AssertionError("unreachable")  # pragma: no cover

    def add_checkpoint(self, note: str, old_size: int, proof: Sequence[bytes]) -> list[Signature]:
        """Submits `note` with a consistency proof from `old_size`; the signature lines of a
        200 answer (not yet verified). Raises the WitnessError subclasses above."""
        status, ctype, data = self._post(format_request(old_size, proof, note))
        if status == 200:
            try:
                return parse_signature_lines(data.decode("utf-8"))
            except (UnicodeDecodeError, NoteError) as e:
                raise WitnessBadAnswer(f"{self.url}: 200 without signature lines: {e}") from e
        if status == 409:
            if ctype.split(";")[0].strip() != SIZE_TYPE:
                raise WitnessBadAnswer(f"{self.url}: 409 with Content-Type {ctype!r}")
            try:
                text = data.decode("ascii")
                if not text.endswith("\n"):
                    raise InputRejected("no newline")
                size = read_uint64(text[:-1])
            except (UnicodeDecodeError, InputRejected) as e:
                raise WitnessBadAnswer(f"{self.url}: 409 body is not a size: {e}") from e
            raise WitnessConflict(size)
        if status >= 500 or status == 429:
            raise WitnessUnavailable(f"{self.url}: {status} {_snippet(data)}")
        evidence = None
        if status == 422 and ctype.split(";")[0].strip() == "application/json":
            try:
                evidence = Evidence.from_json(data)
            except MalformedInput as e:
                raise WitnessBadAnswer(f"{self.url}: 422 with unreadable evidence: {e}") from e
        reason = evidence.summary if evidence is not None else _snippet(data)
        raise WitnessRefused(status, reason, evidence)


def _snippet(data: bytes) -> str:
    return data[:300].decode("utf-8", "replace").strip()


def cosign(
    client: WitnessClient,
    note: str,
    verifier: CosignerVerifier,
    prove: Prove,
    old_size: int = 0,
    *,
    attempts: int = 3,
) -> Cosignature:
    """The witness's verified cosignature of `note` (a checkpoint signed by the log).

    Starts from `old_size`, the size the caller believes the witness holds; on a 409 sends
    again from the size the witness names, with prove(size, checkpoint size), up to
    `attempts` times (the witness may move meanwhile when several parties submit).
    A witness holding a larger tree than `note`'s raises WitnessConflict with its size.
    """
    try:
        text, _ = split_note(note)
        size = parse_checkpoint(text).size
    except (NoteError, CheckpointError) as e:
        raise ValueError(f"not a signed checkpoint: {e}") from e
    held = old_size
    for _ in range(attempts):
        if held > size:
            raise WitnessConflict(held)
        proof = list(prove(held, size)) if 0 < held < size else []
        try:
            sigs = client.add_checkpoint(note, held, proof)
        except WitnessConflict as e:
            held = e.size
            continue
        try:
            found = verify_cosignatures(text, sigs, [verifier])
        except CosignatureError as e:
            raise WitnessBadAnswer(f"{client.url}: {e}") from e
        if verifier not in found:
            names = ", ".join(f"{s.name}+{s.key_id.hex()}" for s in sigs)
            raise WitnessBadAnswer(
                f"{client.url}: no cosignature by {verifier.vkey()} among {names}"
            )
        return found[verifier]
    raise WitnessConflict(held)
