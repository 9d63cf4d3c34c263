"""Signing-key rotation end to end: receipts from before, during and after the overlap verify
with the published keys; a checkpoint signed by a retired key after its retirement does not."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from exchange.audit.sources import HttpSource
from exchange.cli.main import main
from exchange.config import DEFAULT_ORIGIN
from exchange.keys.keyring import source_keyset
from ledger.audit import audit
from ledger.keys import load_signer
from ledger.keyset import KeySet
from ledger.log import Log
from ledger.note import Verifier, split
from ledger.store import make_engine
from ledger.verify import VerificationError, verify_receipt
from tests.api_helpers import Api, observation_bundle, open_api
from tests.ledger_helpers import submission


def state_args(data: Path, db_url: str) -> list[str]:
    return ["--data", str(data), "--db", db_url]


def keys_cmd(capsys: Any, data: Path, db_url: str, *args: str) -> dict[str, Any]:
    assert main(["keys", *args, *state_args(data, db_url), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def submit(api: Api, headers: dict[str, str], value: str) -> dict[str, Any]:
    r = api.post(observation_bundle(value), headers)
    assert r.status_code == 201, r.text
    return r.json()


def signature_count(receipt: str) -> int:
    return len(split(receipt.partition("\n\n")[2])[1])


@dataclass
class Rotated:
    api: Api
    data: Path
    db_url: str
    old: Verifier
    new: Verifier
    receipts: dict[str, str]
    keyset: KeySet
    keys_file: Path


@pytest.fixture
def rotated(tmp_path: Path, db_url: str, capsys: Any) -> Any:
    data = tmp_path / "data"
    with open_api(data, db_url) as api:
        headers = api.credential()
        old = api.verifier()
        before = submit(api, headers, "1.5")
        added = keys_cmd(capsys, data, db_url, "add")
        new = Verifier.from_vkey(added["vkey"])
        assert api.verifier() == old  # the primary key stays the old one during the overlap
        during = submit(api, headers, "2.5")  # the running server picks the new key up
        retired = keys_cmd(capsys, data, db_url, "retire", old.key_id.hex())
        assert retired["index"] > added["index"]
        after = submit(api, headers, "3.5")
        r = api.client.get("/v1/log/keys")
        assert r.status_code == 200
        keys_file = tmp_path / "keys.json"
        keys_file.write_text(r.text)
        receipts = {"before": before["receipt"], "during": during["receipt"]}
        receipts["after"] = after["receipt"]
        yield Rotated(api, data, db_url, old, new, receipts, KeySet.from_json(r.json()), keys_file)


def test_published_keys_carry_the_lifetimes(rotated: Rotated) -> None:
    by_id = {k.verifier.key_id: k for k in rotated.keyset.keys}
    old, new = by_id[rotated.old.key_id], by_id[rotated.new.key_id]
    assert old.added is None and old.retired is not None
    assert new.added is not None and new.added < old.retired and new.retired is None
    listed = rotated.api.client.get("/v1/log/keys").json()
    assert [k["status"] for k in listed] == ["retired", "active"]
    assert [len(k["documents"]) for k in listed] == [1, 1]
    # After the retirement the primary key is the new one (back-compatible /v1/log/key).
    assert rotated.api.verifier() == rotated.new


def test_receipts_before_during_after_verify_with_the_published_keys(rotated: Rotated) -> None:
    r = rotated.receipts
    assert [signature_count(r[k]) for k in ("before", "during", "after")] == [1, 2, 1]
    for name, receipt in r.items():
        assert verify_receipt(receipt, [], keyset=rotated.keyset).entry.kind == "record", name
    # During the overlap either key alone verifies: old clients keep working.
    verify_receipt(r["during"], [rotated.old])
    verify_receipt(r["during"], [rotated.new])
    verify_receipt(r["before"], [rotated.old])
    with pytest.raises(VerificationError, match="no signature by a trusted key"):
        verify_receipt(r["after"], [rotated.old])
    # Fresh receipts of the old entries, against the latest checkpoint, verify too.
    for index in range(rotated.api.log_size()):
        fresh = rotated.api.client.get(f"/v1/log/entries/{index}/receipt").text
        verify_receipt(fresh, [], keyset=rotated.keyset)


def test_cli_verify_with_the_published_key_list(rotated: Rotated, tmp_path: Path, capsys) -> None:
    for name, receipt in rotated.receipts.items():
        f = tmp_path / f"{name}.tlog-proof"
        f.write_text(receipt)
        assert main(["verify", str(f), "--keys", str(rotated.keys_file)]) == 0, name
    capsys.readouterr()


def forge_with_retired_key(rotated: Rotated) -> str:
    """An attacker holding the retired key appends and signs a checkpoint with it alone."""
    old = load_signer(rotated.data / "log.key", DEFAULT_ORIGIN)
    assert old.verifier == rotated.old
    forger = Log(make_engine(rotated.db_url), old, origin=DEFAULT_ORIGIN, verifiers=[rotated.new])
    try:
        return forger.append(submission(b"forged")).receipt
    finally:
        forger.close()
        forger.engine.dispose()


def test_a_retired_key_signing_after_its_end_is_rejected(
    rotated: Rotated, tmp_path: Path, capsys
) -> None:
    vkeys = [f"--key={rotated.old.vkey()}"]
    assert main(["audit", "--db", rotated.db_url, *vkeys, "--json"]) == 0
    capsys.readouterr()
    forged = forge_with_retired_key(rotated)
    size = rotated.api.log_size()
    old = rotated.keyset.by_key_id(rotated.old.key_id.hex())
    assert old is not None
    retired_at = old.retired
    # Offline: the receipt's signature is valid, but the key was retired inside that tree.
    verify_receipt(forged, [rotated.old])  # what a verifier without lifetimes would accept
    with pytest.raises(VerificationError, match=f"retired at size {retired_at}"):
        verify_receipt(forged, [], keyset=rotated.keyset)
    f = tmp_path / "forged.tlog-proof"
    f.write_text(forged)
    assert main(["verify", str(f), "--keys", str(rotated.keys_file), "--json"]) == 4
    assert "retired" in json.loads(capsys.readouterr().out)["error"]
    # The audit derives the lifetimes from the log's own key entries and names the checkpoint.
    assert main(["audit", "--db", rotated.db_url, *vkeys, "--json"]) == 4
    out = json.loads(capsys.readouterr().out)
    err = out["error"]
    assert (err["code"], err["index"], err["checkpoint"]) == ("key-rule", size - 1, size)
    assert f"retired at size {retired_at}" in err["message"]
    # Over HTTP (the public reads and GET /v1/log/keys) the same.
    source = HttpSource("http://testserver", client=rotated.api.client)
    keyset = source_keyset(source, [rotated.new])
    assert keyset == rotated.keyset
    result = audit(source, [rotated.new, *keyset.verifiers()], keyset=keyset)
    assert result.status == "failed" and result.error is not None
    assert result.error.code == "key-rule" and result.error.index == size - 1


def test_audit_accepts_the_rotated_log_from_either_key(rotated: Rotated, capsys) -> None:
    for key in (rotated.old, rotated.new):
        assert main(["audit", "--db", rotated.db_url, f"--key={key.vkey()}", "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["result"] == "ok" and out["size"] == rotated.api.log_size()
    source = HttpSource("http://testserver", client=rotated.api.client)

    keyset = source_keyset(source, [rotated.old])
    assert audit(source, keyset.verifiers(), keyset=keyset).ok


def test_a_log_that_never_rotated_publishes_its_one_key(tmp_path: Path) -> None:
    with open_api(tmp_path / "data") as api:
        [only] = api.client.get("/v1/log/keys").json()
        assert only["vkey"] == api.verifier().vkey()
        assert (only["added_at"], only["retired_at"], only["status"]) == (None, None, "active")
        assert only["documents"] == []


def test_incremental_audit_across_a_rotation(tmp_path: Path, db_url: str, capsys) -> None:
    data, audit_state = tmp_path / "data", tmp_path / "audit.json"
    with open_api(data, db_url) as api:
        headers = api.credential()
        old = api.verifier()
        audit_args = ["audit", "--db", db_url, f"--key={old.vkey()}", "--state", str(audit_state)]
        submit(api, headers, "1.5")
        assert main(audit_args) == 0
        capsys.readouterr()
        keys_cmd(capsys, data, db_url, "add")
        submit(api, headers, "2.5")
        assert main(audit_args) == 0
        capsys.readouterr()
        keys_cmd(capsys, data, db_url, "retire", old.key_id.hex())
        submit(api, headers, "3.5")
        assert main([*audit_args, "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["result"] == "ok" and out["size"] == api.log_size() == 5


# --- the auditor's commands after a rotation, holding only the original key -----------------


def test_verify_with_the_original_key_names_the_rotation(
    rotated: Rotated, tmp_path: Path, capsys
) -> None:
    f = tmp_path / "after.tlog-proof"
    f.write_text(rotated.receipts["after"])
    new_label = f"{rotated.new.name}+{rotated.new.key_id.hex()}"
    assert main(["verify", str(f), f"--key={rotated.old.vkey()}", "--json"]) == 4
    out = json.loads(capsys.readouterr().out)
    assert out["rotation"] is True and new_label in out["error"]
    assert "--keys" in out["next"] and "/v1/log/keys" in out["next"]
    assert "report the log" not in out["next"]
    assert main(["verify", str(f), f"--key={rotated.old.vkey()}"]) == 4
    err = capsys.readouterr().err
    assert "rotated its signing key" in err and "--keys keys.json" in err
    assert main(["verify", str(f), "--keys", str(rotated.keys_file)]) == 0
    capsys.readouterr()


def test_audit_reports_the_key_events_it_saw(rotated: Rotated, capsys) -> None:
    old = rotated.keyset.by_key_id(rotated.old.key_id.hex())
    new = rotated.keyset.by_key_id(rotated.new.key_id.hex())
    assert old is not None and new is not None
    label = {k: f"{k.name}+{k.key_id.hex()}" for k in (rotated.old, rotated.new)}
    args = ["audit", "--db", rotated.db_url, f"--key={rotated.old.vkey()}"]
    assert main([*args, "--json"]) == 0
    events = json.loads(capsys.readouterr().out)["key_events"]
    assert events == [
        {"index": new.added, "action": "add", "key": label[rotated.new]},
        {"index": old.retired, "action": "retire", "key": label[rotated.old]},
    ]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert f"key rotation: entry {new.added} added key {label[rotated.new]}" in text
    assert f"key rotation: entry {old.retired} retired key {label[rotated.old]}" in text


def test_no_key_events_for_a_log_that_never_rotated(tmp_path: Path, capsys) -> None:
    with open_api(tmp_path / "data", f"sqlite:///{tmp_path / 'm.db'}") as api:
        submit(api, api.credential(), "1.5")
        args = ["audit", "--db", f"sqlite:///{tmp_path / 'm.db'}", f"--key={api.verifier().vkey()}"]
        assert main([*args, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["key_events"] == []
        assert main(args) == 0
        assert "key rotation" not in capsys.readouterr().out


def test_fork_evidence_after_a_rotation_verifies_with_the_log_key_list(
    rotated: Rotated, tmp_path: Path, capsys
) -> None:
    if not rotated.db_url.startswith("sqlite"):
        pytest.skip("the fork is made from a copy of the SQLite file")
    fork_db = tmp_path / "fork.db"
    src = sqlite3.connect(rotated.db_url.removeprefix("sqlite:///"))
    dst = sqlite3.connect(fork_db)
    src.backup(dst)
    src.close()
    dst.close()
    # The log goes on; the copy, signed by the same (new) key, grows another history.
    submit(rotated.api, rotated.api.credential(), "4.5")
    state, evidence = tmp_path / "audit.json", tmp_path / "evidence.json"
    original = [f"--key={rotated.old.vkey()}", "--state", str(state), "-q"]
    assert main(["audit", "--db", rotated.db_url, *original]) == 0
    signer = load_signer(rotated.data / "keys" / f"{rotated.new.key_id.hex()}.key", DEFAULT_ORIGIN)
    fork = Log(make_engine(f"sqlite:///{fork_db}"), signer, origin=DEFAULT_ORIGIN)
    try:
        fork.append(submission(b"other"))
        fork.append(submission(b"history"))
    finally:
        fork.close()
        fork.engine.dispose()
    forked = ["audit", "--db", f"sqlite:///{fork_db}", *original, "--evidence", str(evidence)]
    assert main(forked) == 5
    capsys.readouterr()
    # With only the original key the evidence cannot be checked, and the message says why.
    code = main(["verify-evidence", str(evidence), f"--key={rotated.old.vkey()}", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 4 and out["rotation"] is True
    assert "--keys" in out["next"] and "/v1/log/keys" in out["next"]
    assert "altered" not in out["next"]
    # The log's key list, as GET /v1/log/keys gave it, confirms the fork.
    assert main(["verify-evidence", str(evidence), "--keys", str(rotated.keys_file)]) == 5
    assert "CONFIRMED" in capsys.readouterr().out
    both = [f"--key={rotated.old.vkey()}", f"--key={rotated.new.vkey()}"]
    assert main(["verify-evidence", str(evidence), *both]) == 5
    capsys.readouterr()
    assert main(["verify-evidence", str(evidence)]) == 1
    assert "--keys" in capsys.readouterr().err
