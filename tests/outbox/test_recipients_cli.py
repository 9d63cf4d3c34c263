"""`medledger recipients set … --endpoint`: endpoints stored with the recipient, credentials
sealed, every bad setting refused naming its option."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from exchange.bootstrap import open_store
from exchange.cli.main import main
from exchange.config import Settings
from exchange.delivery.endpoints import BearerToken, FhirEndpoint, MllpEndpoint, SmartCredentials
from exchange.outbox.endpoints import endpoint_of

TOKEN = "s3cr3t-bearer.token"


def _set(data: list[str], org: str, *options: str) -> int:
    basis = ["--basis", "standard-contract", "--reference", "琼网信备2026-0043"]
    return main(["recipients", "set", "--org", org, "--country", "KR", *basis, *options, *data])


def _db_bytes(tmp_path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in tmp_path.glob("*.db*"))


def test_endpoints_are_stored_with_sealed_credentials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = ["--data", str(tmp_path)]
    key = ec.generate_private_key(ec.SECP384R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (tmp_path / "smart.pem").write_bytes(pem)
    assert _set(data, "seoul-uh", "--endpoint", "http://127.0.0.1:9/fhir/",
                "--endpoint-token", TOKEN) == 0  # fmt: skip
    assert _set(data, "jeju-h", "--endpoint", "http://localhost:9/fhir", "--endpoint-client-id",
                "medledger", "--endpoint-key", str(tmp_path / "smart.pem")) == 0  # fmt: skip
    assert _set(data, "busan-mc", "--endpoint", "mllp://127.0.0.1:2575",
                "--message", "ADT_A08") == 0  # fmt: skip
    capsys.readouterr()
    assert main(["recipients", "show", "--org", "seoul-uh", "--json", *data]) == 0
    shown = capsys.readouterr().out
    assert json.loads(shown)["endpoint"] == "http://127.0.0.1:9/fhir"
    assert json.loads(shown)["auth"] == "bearer" and TOKEN not in shown
    # The database alone reveals no credential.
    stored = _db_bytes(tmp_path)
    assert TOKEN.encode() not in stored and b"PRIVATE KEY" not in stored
    engine, opened = open_store(Settings(data_dir=tmp_path))
    try:
        seoul = endpoint_of(engine, opened, "seoul-uh")
        jeju = endpoint_of(engine, opened, "jeju-h")
        busan = endpoint_of(engine, opened, "busan-mc")
    finally:
        engine.dispose()
    assert seoul is not None and seoul.endpoint == FhirEndpoint(
        "http://127.0.0.1:9/fhir", BearerToken(TOKEN)
    )
    assert jeju is not None and isinstance(jeju.endpoint, FhirEndpoint)
    creds = jeju.endpoint.credentials
    assert isinstance(creds, SmartCredentials) and creds.key_pem == pem and creds.alg == "ES384"
    assert busan is not None and busan.endpoint == MllpEndpoint("127.0.0.1", 2575, "ADT_A08")
    # Setting the recipient again keeps its endpoint; --no-endpoint removes it.
    assert _set(data, "busan-mc") == 0
    assert main(["recipients", "show", "--org", "busan-mc", "--json", *data]) == 0
    assert json.loads(capsys.readouterr().out)["message"] == "ADT_A08"
    assert _set(data, "busan-mc", "--no-endpoint") == 0
    assert main(["recipients", "show", "--org", "busan-mc", "--json", *data]) == 0
    assert json.loads(capsys.readouterr().out)["endpoint"] is None


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--endpoint", "http://fhir.example.kr/fhir"], "--endpoint:"),  # clear text off-host
        (["--endpoint", "mllp://127.0.0.1"], "--endpoint:"),  # no port
        (["--endpoint", "mllp://127.0.0.1:2575", "--message", "ORM_O01"], "--message:"),
        (["--endpoint", "mllp://127.0.0.1:2575", "--endpoint-token", TOKEN], "--endpoint-token:"),
        (["--endpoint", "https://h/fhir", "--endpoint-client-id", "c"], "--endpoint-key:"),
        (
            [
                "--endpoint",
                "https://h/fhir",
                "--endpoint-client-id",
                "c",
                "--endpoint-key",
                "/nonexistent.pem",
            ],
            "--endpoint-key:",
        ),  # fmt: skip
        (["--endpoint-token", TOKEN], "--endpoint:"),  # an option without the endpoint
    ],
)
def test_bad_endpoint_settings_name_their_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str], named: str
) -> None:
    data = ["--data", str(tmp_path)]
    assert _set(data, "seoul-uh", *options) == 1
    assert named in capsys.readouterr().err
    # Nothing was recorded.
    assert main(["recipients", "show", "--org", "seoul-uh", *data]) == 3
