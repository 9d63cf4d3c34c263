"""`medledger case export` on a real service's store, then `case verify` on what it wrote:
every version of the patient's Bundles (and only the patient's), the accounting, the export
recorded as an access entry about each patient the package names; refused without an admin,
over an existing file, for an unknown patient; an erased patient has no case any more, while a
package built before still verifies."""

from __future__ import annotations

import contextlib
import io
import json
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from exchange.cli.exits import EXIT_OK, EXIT_USAGE
from exchange.cli.main import main
from exchange.identity.clients import register_client
from exchange.privacy import erasure
from exchange.privacy.access import disclosures_of
from exchange.privacy.erasure import ADMIN_TOKEN_ENV
from tests.api_helpers import HOSPITAL_ORG, Api, open_api, patient_bundle, wrap

MRN = "urn:example:mrn"


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as e:  # argparse's own refusal of an argument
            code = int(e.code or 0)
    return code, out.getvalue(), err.getvalue()


def _state(api: Api, data: Path) -> list[str]:
    url = api.services.settings.db_url
    return ["--data", str(data)] + (["--db", url] if url else [])


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def _mother_and_baby() -> bytes:
    raws = [
        b'{"resourceType":"Patient","identifier":[{"system":"' + MRN.encode()
        + b'","value":"' + mrn + b'"}],"name":[{"family":"Li"}]}'
        for mrn in (b"MRN-MOTHER", b"MRN-BABY")
    ]  # fmt: skip
    return wrap(raws, "urn:uuid:00000000-0000-4000-8000-00000000babe")


def test_export_then_verify(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    with open_api(data, db_url) as api:
        hospital = api.credential()
        ident = "urn:uuid:00000000-0000-4000-8000-000000000001"
        first = api.post(patient_bundle("MRN-MOTHER", ident, name="Li"), hospital)
        second = api.post(
            patient_bundle("MRN-MOTHER", ident, name="Li-Wang"), {**hospital, "If-Match": 'W/"1"'}
        )
        both = api.post(_mother_and_baby(), hospital)
        other = api.post(patient_bundle("MRN-OTHER", name="Kim"), hospital)
        assert {r.status_code for r in (first, second, both, other)} == {201}
        vkey = api.client.get("/v1/log/key").text.strip()
        admin, token = register_client(api.services.engine, "admin", "admin", None)
        monkeypatch.setenv(ADMIN_TOKEN_ENV, token)
        out = tmp_path / "case.zip"
        patient = ["--patient", f"{MRN}|MRN-MOTHER", "--org", HOSPITAL_ORG, "--by", admin.client_id]

        code, stdout, err = _run("case", "export", *patient, "--out", str(out), "--json",
                                 *_state(api, data))  # fmt: skip
        assert code == EXIT_OK, err
        report = json.loads(stdout)
        assert report["documents"] == 3  # both versions, and the Bundle naming the baby too
        names = set(_members(out))
        ids = {first.json()["id"], both.json()["id"]}
        assert {
            n.split("/")[1].rsplit("_v", 1)[0] for n in names if n.startswith("bundles/")
        } == ids
        assert other.json()["id"] not in " ".join(names)

        code, stdout, err = _run("case", "verify", str(out), "--key", vkey)
        assert code == EXIT_OK, err
        assert stdout.startswith("OK: case package of log ")

        # The export is in the accounting of both the mother and the baby it discloses.
        vault_ = api.services.vault
        for mrn in ("MRN-MOTHER", "MRN-BABY"):
            rows = disclosures_of(api.services.engine, vault_.subjects_of(HOSPITAL_ORG, (MRN, mrn)))
            exports = [r for r in rows if r.action == "export" and r.purpose == "HLEGAL"]
            assert len(exports) == 1 and exports[0].index in report["access_entries"], mrn
        assert len(report["access_entries"]) == 1  # about the mother, naming the baby too

        # A period without treatment dates, an existing file, an unknown patient, no admin.
        tomorrow = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
        new = str(tmp_path / "new.zip")
        for argv, code_ in [
            ([*patient, "--from", tomorrow, "--out", new], EXIT_USAGE),
            ([*patient, "--out", str(out)], EXIT_USAGE),
            (
                [
                    "--patient",
                    f"{MRN}|NOBODY",
                    "--org",
                    HOSPITAL_ORG,
                    "--by",
                    admin.client_id,
                    "--out",
                    new,
                ],
                EXIT_USAGE,
            ),  # fmt: skip
            ([*patient[:-1], "not-an-admin", "--out", new], EXIT_USAGE),
            ([*patient, "--from", "2026-13-01", "--out", new], EXIT_USAGE),
        ]:
            got, _, err = _run("case", "export", *argv, *_state(api, data))
            assert got == code_, (argv, err)
            assert "Traceback" not in err and err
        assert not Path(new).exists()

        # Erased: no case any more; the package built before still verifies.
        other_admin, other_token = register_client(api.services.engine, "admin 2", "admin", None)
        request = erasure.request_erasure(vault_, HOSPITAL_ORG, (MRN, "MRN-MOTHER"), admin)
        erasure.confirm_erasure(api.services.log, vault_, request, other_admin)
        del other_token
        got, _, err = _run("case", "export", *patient, "--out", new, *_state(api, data))
        assert got == EXIT_USAGE and "erased" in err, err
        assert _run("case", "verify", str(out), "--key", vkey)[0] == EXIT_OK
