"""`medledger clients add|list` and the demo seeding: credentials shown once, kept hashed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from exchange.cli.main import main
from exchange.demo import instructions, seed
from exchange.intake.samples import try_me_bundle
from tests.api_helpers import observation_bundle, open_api

Capture = pytest.CaptureFixture[str]


def add(capsys: Capture, data: Path, *args: str) -> tuple[int, str, str]:
    code = main(["clients", "add", "--data", str(data), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_add_prints_a_credential_that_works(tmp_path: Path, capsys: Capture) -> None:
    data = tmp_path / "data"
    code, out, _ = add(
        capsys,
        data,
        "--name",
        "Boao HIS",
        "--role",
        "hospital",
        "--org",
        "boao-lecheng-intl",
        "--json",
    )
    assert code == 0
    info = json.loads(out)
    assert info["role"] == "hospital" and info["org"] == "boao-lecheng-intl"
    assert info["client_id"] and info["token"].startswith("mlt_")
    with open_api(data) as api:
        headers = {"Authorization": f"Bearer {info['token']}"}
        r = api.post(observation_bundle(), headers)
        assert r.status_code == 201
        assert api.entry(0).sender == "boao-lecheng-intl"


def test_only_the_hash_of_the_credential_is_stored(tmp_path: Path, capsys: Capture) -> None:
    data = tmp_path / "data"
    _, out, _ = add(capsys, data, "--name", "a", "--role", "auditor", "--json")
    token = json.loads(out)["token"]
    stored = b"".join(p.read_bytes() for p in data.glob("medledger.db*"))
    assert token.encode() not in stored
    assert hashlib.sha256(token.encode()).digest() in stored


def test_plain_output_and_list(tmp_path: Path, capsys: Capture) -> None:
    data = tmp_path / "data"
    code, out, _ = add(capsys, data, "--name", "ops", "--role", "admin")
    assert code == 0 and "token: mlt_" in out and "shown only now" in out
    token = out.split("token: ")[1].split()[0]
    assert main(["clients", "list", "--data", str(data), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(c["name"], c["role"]) for c in listed] == [("ops", "admin")]
    assert token not in json.dumps(listed)


@pytest.mark.parametrize(
    "args",
    [
        ["--name", "h", "--role", "hospital"],  # a hospital acts for an org
        ["--name", "i", "--role", "insurer"],
        ["--name", "h", "--role", "hospital", "--org", "not an id"],
        ["--name", " ", "--role", "auditor"],
    ],
)
def test_usage_errors_exit_1(tmp_path: Path, capsys: Capture, args: list[str]) -> None:
    code, out, err = add(capsys, tmp_path / "data", *args)
    assert code == 1 and out == "" and err


def test_unknown_role_exits_1(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["clients", "add", "--data", str(tmp_path), "--name", "x", "--role", "root"])
    assert caught.value.code == 1


def test_demo_seeds_each_kind_once(tmp_path: Path) -> None:
    with open_api(tmp_path / "data") as api:
        demo = seed(api.services, tmp_path / "demo")
        assert sorted(s.kind for s in demo.stored) == sorted(
            ["record", "consent", "rwd", "settlement"] * 2
        )
        assert all(s.created for s in demo.stored) and api.log_size() == 9
        again = seed(api.services, tmp_path / "demo")  # a second start: retries, not new entries
        assert [s.index for s in again.stored] == [s.index for s in demo.stored]
        assert not any(s.created for s in again.stored) and api.log_size() == 9

        text = instructions(demo, "http://127.0.0.1:8000", api.verifier().vkey())
        (_, token), _, _ = demo.clients
        assert f"export HOSPITAL_TOKEN={token}" in text and "curl" in text
        headers = {"Authorization": f"Bearer {token}"}
        assert (tmp_path / "demo" / "settlement-1.json").read_bytes() == api.client.get(
            f"/fhir/Binary/{demo.stored[6].id}", headers=headers
        ).content
        try_me = (tmp_path / "demo" / "try-me.json").read_bytes()
        assert try_me == try_me_bundle()
        assert api.post(try_me, headers).status_code == 201
