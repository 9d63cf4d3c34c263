"""`medledger case verify`: the command over the library, with its exit codes (0 holds, 4 a
member fails and is named, 3 not a package or an unreadable key or policy)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest

from exchange.cases.archive import write_zip
from exchange.cli.main import main

from .case_helpers import World, policy_text


def _members(package: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(package)) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["case", "verify", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def files(world: World, package: bytes, tmp_path: Path) -> tuple[Path, Path]:
    zip_path, key_path = tmp_path / "case.zip", tmp_path / "log.vkey"
    zip_path.write_bytes(package)
    key_path.write_text(f"# the log's key\n{world.signer.verifier.vkey()}\n")
    return zip_path, key_path


def test_a_package_verifies_with_one_line_per_member(
    files: tuple[Path, Path], package: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    zip_path, key_path = files
    code, out, _ = _run(capsys, str(zip_path), "--key", str(key_path))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("OK: case package of log ")
    assert {ln.strip().split(": ", 1)[0] for ln in lines[1:]} == set(_members(package))


def test_json_and_a_witness_policy(
    world: World, files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    zip_path, _ = files
    met, unmet = tmp_path / "met.policy", tmp_path / "unmet.policy"
    met.write_bytes(policy_text(world))
    unmet.write_bytes(policy_text(world, with_witness=False))
    key = world.signer.verifier.vkey()
    code, out, _ = _run(capsys, str(zip_path), "--key", key, "--policy", str(met), "--json")
    assert code == 0 and json.loads(out)["witnesses"] == ["W"]
    code, out, _ = _run(capsys, str(zip_path), "--key", key, "--policy", str(unmet), "--json")
    assert code == 4
    assert json.loads(out)["member"] == "log/latest-checkpoint"


def test_a_changed_byte_is_exit_4_naming_its_member(
    world: World, package: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    members = _members(package)
    body = bytearray(members["bundles/b-3_v1.json"])
    body[body.index(b"1200.00") + 5] ^= 1  # 1200.00 -> 1200.10
    members["bundles/b-3_v1.json"] = bytes(body)
    bad = tmp_path / "bad.zip"
    bad.write_bytes(write_zip(members))
    code, _, err = _run(capsys, str(bad), "--key", world.signer.verifier.vkey())
    assert code == 4
    assert "bundles/b-3_v1.json" in err


@pytest.mark.parametrize(
    ("what", "argv"),
    [
        ("not a zip", ["{dir}/notes.txt", "--key", "{key}"]),
        ("no such file", ["{dir}/missing.zip", "--key", "{key}"]),
        ("not a key", ["{zip}", "--key", "{dir}/notes.txt"]),
        ("bad policy", ["{zip}", "--key", "{key}", "--policy", "{dir}/notes.txt"]),
    ],
)
def test_malformed_input_is_exit_3(
    world: World,
    files: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    what: str,
    argv: list[str],
) -> None:
    (tmp_path / "notes.txt").write_text("hello\n")
    zip_path, _ = files
    fill = {"dir": str(tmp_path), "zip": str(zip_path), "key": world.signer.verifier.vkey()}
    code, _, err = _run(capsys, *(a.format(**fill) for a in argv))
    assert code == 3, (what, err)
    assert "Traceback" not in err and err.startswith("medledger case verify: ")
