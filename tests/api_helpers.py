"""The exchange API under test: an app on a fresh data directory, clients, and checks."""

from __future__ import annotations

import base64
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import func, inspect, select, text

from exchange.app import create_app
from exchange.bootstrap import Services
from exchange.config import Settings
from exchange.identity.clients import register_client
from exchange.store.tables import bundles_table
from ledger.entry import Entry, parse_entry
from ledger.note import Verifier
from ledger.verify import verify_receipt, verify_submission
from tests.paths import VECTORS

FHIR_JSON = "application/fhir+json"
FHIR_JSON_UTF8 = "application/fhir+json; charset=utf-8"
BASE = "http://testserver"  # the public URL open_api gives the app
HOSPITAL_ORG = "hospital-a"
# The database open_api uses when not given one (set per test by conftest.api_backend).
API_DB_URL: ContextVar[str | None] = ContextVar("API_DB_URL", default=None)


@dataclass
class Api:
    client: TestClient
    services: Services

    def credential(self, role: str = "hospital", org: str | None = HOSPITAL_ORG) -> dict[str, str]:
        """Authorization headers of a newly registered client."""
        if role in ("auditor", "admin") and org == HOSPITAL_ORG:
            org = None
        _, token = register_client(self.services.engine, f"test {role}", role, org)
        return {"Authorization": f"Bearer {token}"}

    def post(
        self,
        body: bytes,
        headers: dict[str, str] | None = None,
        content_type: str | None = FHIR_JSON,
    ) -> Any:
        h = dict(headers or {})
        if content_type is not None:
            h["Content-Type"] = content_type
        return self.client.post("/fhir/Bundle", content=body, headers=h)

    def verifier(self) -> Verifier:
        return Verifier.from_vkey(self.client.get("/v1/log/key").text)

    def log_size(self) -> int:
        return self.services.log.size()

    def bundle_rows(self) -> int:
        with self.services.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(bundles_table)).scalar())

    def check_receipt(self, answer: dict[str, Any], body: bytes) -> Entry:
        """The receipt verifies offline with the log's key and commits to exactly `body`."""
        verified = verify_receipt(answer["receipt"], [self.verifier()])
        verify_submission(verified.entry, body, base64.b64decode(answer["salt"]))
        assert verified.entry.index == answer["index"]
        return verified.entry

    def entry(self, index: int) -> Entry:
        return parse_entry(self.services.log.entries(index, index + 1)[0])

    def read_back(self, location: str, headers: dict[str, str], body: bytes) -> Any:
        """Reads a submitted version back both ways and returns the Bundle read: the Bundle
        has the server's id, versionId and lastUpdated and every other member exactly as
        submitted (number lexemes included); the Binary is exactly `body`."""
        found = re.fullmatch(rf"{BASE}/fhir/Bundle/([^/]+)/_history/([0-9]+)", location)
        assert found, location
        bundle_id, version = found.groups()
        read = self.client.get(location, headers=headers)
        assert read.status_code == 200, read.text[:500]
        assert read.headers["content-type"] == FHIR_JSON_UTF8
        got = lexemes(read.content)
        last_updated = got["meta"]["lastUpdated"]
        modified = parsedate_to_datetime(read.headers["last-modified"])
        assert modified == datetime.fromisoformat(last_updated).replace(microsecond=0)
        want = lexemes(body)
        meta = want.get("meta") if isinstance(want.get("meta"), dict) else {}
        meta = {k: v for k, v in meta.items() if k not in ("versionId", "lastUpdated")}
        want["id"] = bundle_id
        want["meta"] = {"versionId": version, "lastUpdated": last_updated, **meta}
        assert got == want
        binary = location.replace("/fhir/Bundle/", "/fhir/Binary/")
        original = self.client.get(binary, headers=headers)
        assert original.status_code == 200 and original.content == body
        assert original.headers["etag"] == read.headers["etag"] == f'W/"{version}"'
        return read


def lexemes(data: bytes) -> Any:
    """JSON with every number kept as the text it was written as: 1.50 is not 1.5."""
    return json.loads(data, parse_float=str, parse_int=str)


@contextmanager
def open_api(
    data: Path,
    db_url: str | None = None,
    settings: dict[str, Any] | None = None,
    *,
    policy: Path | None = None,
    **app_options: Any,
) -> Iterator[Api]:
    """The app over `data` (and `db_url`), with further Settings fields from `settings`."""
    db_url = db_url if db_url is not None else API_DB_URL.get()
    # The public URL the test client's requests are addressed to (exchange.public).
    app_options.setdefault("public_url", "http://testserver")
    options = {"policy": policy, **(settings or {})}
    app = create_app(Settings(data_dir=data, db_url=db_url, **options), **app_options)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Api(client, app.services)


def wrap(raws: list[bytes], identifier: str | None = None) -> bytes:
    """A collection Bundle around raw resource bytes, so their lexemes (120.00) survive."""
    entries = b",".join(
        b'{"fullUrl":"urn:uuid:'
        + str(uuid.UUID(int=i + 1)).encode()
        + b'","resource":'
        + raw
        + b"}"
        for i, raw in enumerate(raws)
    )
    ident = b""
    if identifier is not None:
        ident = b'"identifier":{"system":"urn:ietf:rfc:3986","value":"' + identifier.encode()
        ident += b'"},'
    return b'{"resourceType":"Bundle",' + ident + b'"type":"collection","entry":[' + entries + b"]}"


def observation_bundle(value: str = "120.00", identifier: str | None = None) -> bytes:
    """A small record Bundle whose decimal and time lexemes must survive byte for byte."""
    obs = (
        '{"resourceType":"Observation","status":"final","code":{"coding":[{"system":'
        '"http://loinc.org","code":"8480-6"}]},"effectiveDateTime":"2026-03-02T08:20:00.000Z",'
        f'"valueQuantity":{{"value":{value},"unit":"mm[Hg]","system":'
        '"http://unitsofmeasure.org","code":"mm[Hg]"}}'
    ).encode()
    return wrap([obs], identifier)


def patient_bundle(mrn: str, identifier: str | None = None, name: str = "Kim") -> bytes:
    patient = (
        '{"resourceType":"Patient","identifier":[{"system":"urn:example:mrn","value":"'
        + mrn
        + '"}],"name":[{"family":"'
        + name
        + '"}]}'
    ).encode()
    return wrap([patient], identifier)


def is_outcome(response: Any) -> dict[str, Any]:
    """The response is a FHIR OperationOutcome with at least one issue; returns it."""
    assert response.headers["content-type"].startswith(FHIR_JSON), response.headers
    doc = response.json()
    assert doc["resourceType"] == "OperationOutcome"
    assert doc["issue"] and all(i["severity"] and i["code"] for i in doc["issue"])
    return doc


def vector_params(folder: str, pattern: str = "*.json") -> list[Any]:
    root = VECTORS / folder
    if not root.is_dir():
        reason = f"public test vectors not present at {VECTORS}"
        return [pytest.param(None, marks=pytest.mark.skip(reason=reason), id="absent")]
    return [pytest.param(p, id=p.name) for p in sorted(root.glob(pattern))]


def stored_values_by_table(api: Api) -> dict[str, list[bytes]]:
    """Every value of every column of every table of the app's database, as bytes."""
    out: dict[str, list[bytes]] = {}
    with api.services.engine.connect() as conn:
        for table in inspect(conn).get_table_names():
            values = out.setdefault(table, [])
            for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                for v in row:
                    if isinstance(v, (bytes, memoryview)):
                        values.append(bytes(v))
                    elif v is not None:
                        values.append(str(v).encode())
    return out


@contextmanager
def served(app: Any) -> Iterator[str]:
    """`app` under uvicorn on a free loopback port, in a background thread, lifespan on, for
    clients that speak HTTP on a socket (TestClient does not); yields the base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the app did not start under uvicorn")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
