"""`medledger backup` while the service appends, and the restore the runbook walks
(docs/operations.md): the copy opens writable, reads back every Bundle it holds byte for byte,
audits clean and takes new submissions; the vault key never lands in the backup; a restore
put beside a newer checkpoint file opens read-only and says why."""

from __future__ import annotations

import contextlib
import io
import shutil
import threading
from pathlib import Path

from exchange.cli.exits import EXIT_OK, EXIT_USAGE
from exchange.cli.main import main
from tests.api_helpers import open_api, patient_bundle


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_backup_while_serving_then_restore(tmp_path: Path) -> None:
    live, out, vault_copy = tmp_path / "live", tmp_path / "backup", tmp_path / "apart.vault.key"
    submitted: dict[str, bytes] = {}
    with open_api(live) as api:
        hospital = api.credential()
        vkey = api.client.get("/v1/log/key").text.strip()
        for n in range(20):
            body = patient_bundle(f"MRN-{n}")
            submitted[api.post(body, hospital).json()["id"]] = body
        before_backup = dict(submitted)  # acknowledged before the backup began
        stop = threading.Event()

        def keep_submitting() -> None:
            n = 100
            while not stop.is_set():
                body = patient_bundle(f"MRN-{n}")
                answer = api.post(body, hospital)
                assert answer.status_code == 201, answer.text
                submitted[answer.json()["id"]] = body
                n += 1

        writer = threading.Thread(target=keep_submitting)
        writer.start()
        try:
            code, stdout, err = _run("backup", "--data", str(live), "--out", str(out),
                                     "--vault-key-out", str(vault_copy))  # fmt: skip
        finally:
            stop.set()
            writer.join()
        assert code == EXIT_OK, err
        assert "vault key is in" in stdout
        assert api.post(patient_bundle("MRN-LATE"), hospital).status_code == 201
        newest_checkpoint = (live / "checkpoint").read_bytes()
        live_size = api.log_size()

    assert sorted(p.name for p in out.iterdir()) == ["checkpoint", "log.key", "medledger.db"]
    assert (live / "vault.key").read_bytes() == vault_copy.read_bytes()

    # The restore: the backup's files, and the vault key from where it was kept apart.
    restored = tmp_path / "restored"
    shutil.copytree(out, restored)
    shutil.copy2(vault_copy, restored / "vault.key")
    with open_api(restored) as api:
        assert api.services.log.read_only_reason is None
        size = api.log_size()
        assert 20 <= size <= live_size
        hospital = api.credential()
        read = 0
        for bundle_id, body in submitted.items():
            answer = api.client.get(f"/fhir/Binary/{bundle_id}", headers=hospital)
            if answer.status_code == 200:
                assert answer.content == body
                read += 1
            else:
                assert answer.status_code == 404  # submitted after the backup's snapshot
        assert read >= len(before_backup)
        for bundle_id, body in before_backup.items():  # every one acknowledged before it began
            assert api.client.get(f"/fhir/Binary/{bundle_id}", headers=hospital).content == body
        assert api.post(patient_bundle("MRN-AFTER"), hospital).status_code == 201
    assert _run("audit", "--db", str(restored), "--key", vkey)[0] == EXIT_OK

    # Restored beside the newer checkpoint: the entries it names are gone, so no appends.
    behind = tmp_path / "behind"
    shutil.copytree(out, behind)
    shutil.copy2(vault_copy, behind / "vault.key")
    (behind / "checkpoint").write_bytes(newest_checkpoint)
    assert live_size > size
    with open_api(behind) as api:
        assert api.services.log.read_only_reason is not None
        refused = api.post(patient_bundle("MRN-FORK"), api.credential())
        assert refused.status_code == 503, refused.text


def test_refusals(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with open_api(data) as api:
        api.post(patient_bundle("MRN-1"), api.credential())
    code, _, err = _run("backup", "--data", str(data), "--out", str(tmp_path / "b"),
                        "--vault-key-out", str(tmp_path / "b" / "vault.key"))  # fmt: skip
    assert code == EXIT_USAGE and "same backup" in err
    assert not (tmp_path / "b").exists()
    (tmp_path / "exists").mkdir()
    code, _, err = _run("backup", "--data", str(data), "--out", str(tmp_path / "exists"))
    assert code == EXIT_USAGE and "exists" in err
