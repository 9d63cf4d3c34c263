"""`medledger institutions register-key|set|show`, run through the real CLI entry point."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)

from exchange.cli.main import main
from tests.registry.test_institutions import BASE


def _pem(path: Path) -> Path:
    key = Ed25519PrivateKey.generate()
    path.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    return path


def test_set_then_show_replays(tmp_path: Path, capsys) -> None:
    data = ["--data", str(tmp_path / "d")]
    pem = _pem(tmp_path / "admin.pem")
    assert main(["institutions", "register-key", "--admin", "a1", "--key", str(pem), *data]) == 0
    rec = tmp_path / "rec.json"
    rec.write_text(json.dumps(BASE.to_json()))
    args = ["institutions", "set", "--record", str(rec), "--admin", "a1", "--key", str(pem)]
    assert main([*args, *data]) == 0
    capsys.readouterr()
    assert main(["institutions", "show", "--org", BASE.org, *data]) == 0
    assert json.loads(capsys.readouterr().out) == BASE.to_json()
    assert main(["institutions", "show", "--org", BASE.org, "--as-of", "2000-01-01", *data]) == 3
    other = _pem(tmp_path / "other.pem")
    rec.write_text(json.dumps(replace(BASE, licence_valid_to=date(2099, 1, 1)).to_json()))
    bad = ["institutions", "set", "--record", str(rec), "--admin", "a1", "--key", str(other)]
    assert main([*bad, *data]) == 1
    assert "not the registered key" in capsys.readouterr().err
