"""SMART Health Links for the viewer's tests and benchmark.

A real ledger (ledger.log over SQLite) records a real IPS built by adapters.ips and answers a
real receipt; files are encrypted with a JOSE library (joserfc), not with the project's code;
and a small sharing server on the standard library's http.server speaks the SHL protocol
(manifest POST with recipient and passcode, files embedded or by location, the direct file of
a `U` link, 401 with remainingAttempts, 404 when inactive) and serves the viewer page.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from joserfc import jwe
from joserfc.jwk import OctKey

from adapters.base import AdaptOptions
from adapters.ips import adapt as adapt_ips
from exchange.shl.viewer import RESPONSE_HEADERS
from ledger.entry import commitment
from ledger.log import Log, Submission
from ledger.note import Signer
from ledger.store import make_engine
from ledger.verify import verify_receipt, verify_submission
from tests.paths import FIXTURES as TEST_FIXTURES

ORIGIN = "shl.test.example/log"
SENDER = "boao-lecheng-hospital"
SALT_EXTENSION = "urn:medledger:extension:salt"
FIXTURES = TEST_FIXTURES / "continuity"
IPS_NOW = datetime(2026, 11, 28, 10, 0, tzinfo=timezone(timedelta(hours=8)))
PATIENT_NAME = "MINJUN KIM / 김민준"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def ips_document(document_id: str = "ips-kr-0001") -> bytes:
    """The IPS of the Boao Korean patient's inpatient record and discharge medication."""
    files = ["boao-kr-inpatient-record.json", "boao-kr-discharge-meds.json"]
    bundles = [(FIXTURES / name).read_bytes() for name in files]
    return adapt_ips(bundles, AdaptOptions(now=IPS_NOW, control_id=document_id))


@dataclass(frozen=True)
class Recorded:
    """A document in the ledger: its exact bytes, the salt, and its receipt."""

    data: bytes
    salt: bytes
    receipt: str
    index: int
    time: str


class Ledger:
    """A signed log in a SQLite file, with unrelated entries around each recorded document."""

    def __init__(self, path: Path, origin: str = ORIGIN) -> None:
        self.signer = Signer(origin, Ed25519PrivateKey.generate())
        self.log = Log(make_engine(f"sqlite:///{path}"), self.signer, origin=origin)
        self._others(5)

    @property
    def vkey(self) -> str:
        return self.signer.verifier.vkey()

    def _others(self, n: int) -> None:
        for i in range(n):
            self.log.append(
                Submission(
                    kind="access",
                    sender=SENDER,
                    commit=commitment(os.urandom(32), b"other %d" % i),
                    media="application/json",
                )
            )

    def record(self, data: bytes) -> Recorded:
        """Appends `data` as the server does (commit = SHA-256(salt || bytes)); the receipt
        is against the newest checkpoint, and the project's own verifier accepts it."""
        salt = os.urandom(32)
        done = self.log.append(
            Submission(kind="record", sender=SENDER, commit=commitment(salt, data))
        )
        self._others(3)
        receipt = self.log.receipt(done.entry.index)
        verified = verify_receipt(receipt, [self.signer.verifier])
        verify_submission(verified.entry, data, salt)
        return Recorded(data, salt, receipt, done.entry.index, done.entry.time)

    def close(self) -> None:
        self.log.close()
        self.log.engine.dispose()


def provenance(target: str, rec: Recorded, receipt: str | None = None) -> dict[str, Any]:
    """The Provenance of design.md's SHL contract: `target` names the summary,
    signature[0].data is base64 of the receipt text, the salt is an extension."""
    when = rec.time.replace(".000Z", "Z") if rec.time.endswith(".000Z") else rec.time
    return {
        "resourceType": "Provenance",
        "id": f"ledger-{rec.index}",
        "extension": [{"url": SALT_EXTENSION, "valueBase64Binary": b64(rec.salt)}],
        "target": [{"reference": target}],
        "recorded": when,
        "agent": [{"who": {"display": f"ledger {ORIGIN}"}}],
        "signature": [
            {
                "type": [
                    {
                        "system": "urn:iso-astm:E1762-95:2013",
                        "code": "1.2.840.10065.1.12.1.5",
                        "display": "Verification Signature",
                    }
                ],
                "when": when,
                "who": {"display": f"ledger {ORIGIN}"},
                "data": b64((receipt if receipt is not None else rec.receipt).encode("utf-8")),
            }
        ],
    }


def fhir_json(resource: dict[str, Any]) -> bytes:
    return json.dumps(resource, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def encrypt(
    key: bytes, plaintext: bytes, *, cty: str = "application/fhir+json", deflate: bool = False
) -> str:
    """A compact JWE, `alg dir`, `enc A256GCM`, `zip DEF` when asked (SHL "Encrypting")."""
    header = {"alg": "dir", "enc": "A256GCM", "cty": cty}
    if deflate:
        header["zip"] = "DEF"
    return jwe.encrypt_compact(header, plaintext, OctKey.import_key(key))


@dataclass
class SharedLink:
    """What the sharing server holds for one link."""

    key: bytes
    files: list[tuple[str, str]]  # (contentType, compact JWE)
    passcode: str | None = None
    attempts: int = 3
    active: bool = True
    direct: bool = False
    embedded: frozenset[int] = frozenset()  # positions served embedded, the rest by location


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any = None


@dataclass
class ShlServer:
    """The sharing side of SHL on http.server, serving `page` at /shl/view."""

    page: bytes
    links: dict[str, SharedLink] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    _files: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def share(
        self,
        files: Sequence[tuple[str, bytes]],
        *,
        key: bytes | None = None,
        passcode: str | None = None,
        direct: bool = False,
        long_term: bool = False,
        exp: int | None = None,
        label: str | None = None,
        embedded: Sequence[int] = (1,),
        deflate: Sequence[int] = (),
        jwes: dict[int, str] | None = None,
    ) -> str:
        """Registers a link to `files` ((contentType, plaintext) pairs, encrypted here, or
        given ready in `jwes` by position) and returns its `shlink:/` text."""
        key = key or secrets.token_bytes(32)
        encrypted = [
            (ct, (jwes or {}).get(i) or encrypt(key, data, cty=ct, deflate=i in deflate))
            for i, (ct, data) in enumerate(files)
        ]
        link_id = b64url(secrets.token_bytes(32))
        self.links[link_id] = SharedLink(
            key, encrypted, passcode, direct=direct, embedded=frozenset(embedded)
        )
        flag = "".join(f for f, on in (("L", long_term), ("P", passcode), ("U", direct)) if on)
        payload: dict[str, Any] = {
            "url": f"{self.base}/shl/{'u' if direct else 'm'}/{link_id}",
            "key": b64url(key),
        }
        if flag:
            payload["flag"] = flag
        if exp is not None:
            payload["exp"] = exp
        if label is not None:
            payload["label"] = label
        return "shlink:/" + b64url(json.dumps(payload, separators=(",", ":")).encode())

    def viewer_url(self, shlink: str, recipient: str | None = None) -> str:
        query = "" if recipient is None else "?" + urlencode({"recipient": recipient})
        return f"{self.base}/shl/view{query}#{shlink}"

    def link_id(self, shlink: str) -> str:
        payload = json.loads(base64.urlsafe_b64decode(shlink[8:] + "=="))
        return payload["url"].rsplit("/", 1)[1]

    # -- the protocol --------------------------------------------------------------------

    def manifest(self, link_id: str, body: Any) -> tuple[int, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("recipient"), str):
            return 400, {"error": "recipient is required"}
        with self._lock:  # wrong passcodes are counted one at a time (SHL: lifetime count)
            link = self.links.get(link_id)
            if link is None or not link.active or link.direct:
                return 404, {"error": "no such active link"}
            if link.passcode is not None and body.get("passcode") != link.passcode:
                link.attempts -= 1
                if link.attempts <= 0:
                    link.active = False
                return 401, {"remainingAttempts": max(link.attempts, 0)}
            files = []
            for i, (ct, token) in enumerate(link.files):
                if i in link.embedded:
                    files.append({"contentType": ct, "embedded": token})
                else:
                    name = b64url(secrets.token_bytes(24))
                    self._files[name] = token
                    files.append({"contentType": ct, "location": f"{self.base}/shl/file/{name}"})
        return 200, {"files": files}

    def file(self, name: str) -> str | None:
        with self._lock:  # location URLs are single-use
            return self._files.pop(name, None)

    def direct_file(self, link_id: str, recipient: str | None) -> tuple[int, str | None]:
        link = self.links.get(link_id)
        if recipient is None:
            return 400, None
        if link is None or not link.active or not link.direct:
            return 404, None
        return 200, link.files[0][1]


def _handler(server: ShlServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet tests
            pass

        def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, value: Any) -> None:
            self._send(status, json.dumps(value).encode(), {"Content-Type": "application/json"})

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            server.seen.append(Seen("GET", url.path, query))
            parts = url.path.strip("/").split("/")
            if url.path == "/shl/view":
                self._send(200, server.page, RESPONSE_HEADERS)
            elif len(parts) == 3 and parts[:2] == ["shl", "file"]:
                token = server.file(parts[2])
                if token is None:
                    self._json(404, {"error": "no such file"})
                else:
                    self._send(200, token.encode(), {"Content-Type": "application/jose"})
            elif len(parts) == 3 and parts[:2] == ["shl", "u"]:
                recipient = query.get("recipient", [None])[0]
                status, token = server.direct_file(parts[2], recipient)
                if token is None:
                    self._json(status, {"error": "no such link"})
                else:
                    self._send(200, token.encode(), {"Content-Type": "application/jose"})
            else:
                self._json(404, {"error": "not found"})

        def do_POST(self) -> None:  # noqa: N802
            url = urlsplit(self.path)
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            server.seen.append(Seen("POST", url.path, parse_qs(url.query), body))
            parts = url.path.strip("/").split("/")
            if len(parts) == 3 and parts[:2] == ["shl", "m"]:
                self._json(*server.manifest(parts[2], body))
            else:
                self._json(404, {"error": "not found"})

    return Handler


def now_epoch() -> int:
    return int(datetime.now(UTC).timestamp())
