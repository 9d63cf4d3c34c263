"""Reads as FHIR clients nobody here wrote see them, over HTTP from a `medledger serve` process.

fhirpy and fhirclient (the SMART Python client) read a Bundle that was submitted with its own
`id` and `meta.versionId`: both see the server's. The exact submitted bytes come back as
`GET /fhir/Binary/{id}`, and `medledger verify --bundle` verifies the receipt against those.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fhirclient import client as smart_client
from fhirclient.models.bundle import Bundle as FhirclientBundle
from fhirpy import SyncFHIRClient

from tests.http.test_serve_uvicorn import cli, serving

CLIENT_CHOSEN = (
    b'{"resourceType":"Bundle","id":"client-chosen","meta":{"versionId":"7",'
    b'"lastUpdated":"2001-01-01T00:00:00Z"},"type":"collection","entry":[{"fullUrl":'
    b'"urn:uuid:00000000-0000-4000-8000-000000000001","resource":{"resourceType":"Observation",'
    b'"status":"final","code":{"text":"weight"},"valueQuantity":{"value":70.50,"unit":"kg"}}}]}'
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    """A served log with one hospital client: (base URL, its token, the data directory)."""
    data = tmp_path_factory.mktemp("clients") / "data"
    added = cli("clients", "add", "--data", str(data), "--name", "his", "--role", "hospital",
                "--org", "hospital-a", "--json")  # fmt: skip
    assert added.returncode == 0, added.stderr
    with serving(data, "--intake-workers", "0") as (base, _):
        yield base, json.loads(added.stdout)["token"], data


@pytest.fixture(scope="module")
def submitted(server: tuple[str, str, Path]) -> httpx.Response:
    base, token, _ = server
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
    answer = httpx.post(f"{base}/fhir/Bundle", content=CLIENT_CHOSEN, headers=headers, timeout=30)
    assert answer.status_code == 201, answer.text
    return answer


def test_fhirpy_reads_the_server_id_and_version(
    server: tuple[str, str, Path], submitted: httpx.Response
) -> None:
    base, token, _ = server
    fhir = SyncFHIRClient(f"{base}/fhir", authorization=f"Bearer {token}")
    bundle_id = submitted.json()["id"]
    read = fhir.reference("Bundle", bundle_id).to_resource()
    assert read.id == bundle_id != "client-chosen"
    assert read["meta"]["versionId"] == "1"
    assert read["meta"]["lastUpdated"] != "2001-01-01T00:00:00Z"
    assert read["entry"][0]["resource"]["valueQuantity"]["value"] == 70.5
    assert submitted.headers["location"] == f"{base}/fhir/Bundle/{bundle_id}/_history/1"
    assert submitted.headers["etag"] == 'W/"1"'


def test_fhirclient_reads_and_vreads_the_server_id_and_version(
    server: tuple[str, str, Path], submitted: httpx.Response
) -> None:
    base, token, _ = server
    settings = {"app_id": "medledger-test", "api_base": base + "/fhir/"}
    smart = smart_client.FHIRClient(settings=settings)
    smart.server.session.headers["Authorization"] = f"Bearer {token}"
    bundle_id = submitted.json()["id"]
    for path in (f"Bundle/{bundle_id}", f"Bundle/{bundle_id}/_history/1"):
        read = FhirclientBundle.read_from(path, smart.server)
        assert read.id == bundle_id
        assert read.meta.versionId == "1"
        assert read.meta.lastUpdated.isostring != "2001-01-01T00:00:00Z"


def test_verify_checks_the_receipt_against_the_binary(
    server: tuple[str, str, Path], submitted: httpx.Response, tmp_path: Path
) -> None:
    base, token, _ = server
    answer = submitted.json()
    headers = {"Authorization": f"Bearer {token}"}
    binary = httpx.get(f"{base}/fhir/Binary/{answer['id']}/_history/1", headers=headers)
    read = httpx.get(submitted.headers["location"], headers=headers)
    assert binary.content == CLIENT_CHOSEN and read.content != CLIENT_CHOSEN
    (tmp_path / "receipt").write_text(answer["receipt"])
    (tmp_path / "log.vkey").write_text(httpx.get(f"{base}/v1/log/key").text)
    for name, got in (("original.json", binary), ("read.json", read)):
        (tmp_path / name).write_bytes(got.content)

    def verify(bundle: str) -> int:
        run = cli("verify", str(tmp_path / "receipt"), "--key", str(tmp_path / "log.vkey"),
                  "--bundle", str(tmp_path / bundle), "--salt", answer["salt"])  # fmt: skip
        return run.returncode

    assert verify("original.json") == 0
    assert verify("read.json") == 4  # the read carries the server's id: not what was committed
