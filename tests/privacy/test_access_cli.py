"""`medledger access explain`: a client's requests, most recent first, with the outcome and
the reason their access entries recorded; exit 1 for a client nobody knows."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from exchange.cli.main import main
from exchange.identity.clients import register_client
from tests.api_helpers import open_api
from tests.paths import ROOT
from tests.settlement.test_settlement_index import consent_bundle, settlement_bundle
from tests.settlement.test_settlement_search import KIM, LEE, PAY, pid, recipient, search, submit


def explain(capsys, db: str, *args: str) -> tuple[int, str, str]:
    code = main(["access", "explain", "--db", db, *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_clients_requests_with_outcome_and_reason(tmp_path: Path, capsys) -> None:
    db = f"sqlite:///{tmp_path / 'medledger.db'}"
    with open_api(tmp_path / "data", db) as api:
        hospital = api.credential()
        submit(api, settlement_bundle(KIM, "insurer-a"), hospital)
        submit(api, consent_bundle(KIM, "insurer-a"), hospital)
        submit(api, settlement_bundle(LEE, "insurer-a", tag="L1"), hospital)  # no consent
        recipient(api, "insurer-a")
        client, token = register_client(api.services.engine, "ins", "insurer", "insurer-a")
        ins = {"Authorization": f"Bearer {token}"}
        assert search(api, "Claim", {**ins, **PAY}, **{"patient.identifier": pid(KIM)}).is_success
        assert search(api, "Claim", {**ins, **PAY}, **{"patient.identifier": pid(LEE)}).is_success
        no_purpose = search(api, "Claim", ins, **{"patient.identifier": pid(KIM)})
        assert no_purpose.status_code >= 400
        other, _ = register_client(api.services.engine, "quiet", "insurer", "insurer-a")
    code, out, _ = explain(capsys, db, "--client", client.client_id, "--json")
    assert code == 0
    doc = json.loads(out)
    reqs = doc["requests"]
    assert doc["client_id"] == client.client_id and len(reqs) == 3
    assert [r["index"] for r in reqs] == sorted((r["index"] for r in reqs), reverse=True)
    refused, lee, kim = reqs
    assert (kim["action"], kim["result"], kim["purpose"]) == ("search", "disclosed", "HPAYMT")
    assert kim["patients"] == 1 and kim["reason"]
    assert (lee["result"], lee["outcome"]) == ("refused", "4") and lee["reason"]
    assert refused["result"] == "refused" and str(no_purpose.status_code) in refused["reason"]
    assert KIM[1] not in out and LEE[1] not in out  # patients only as a count
    code, text, _ = explain(capsys, db, "--client", client.client_id)
    lines = text.splitlines()
    assert code == 0 and len(lines) == 3
    assert f"entry {kim['index']}" in lines[2] and "DISCLOSED" in lines[2]
    assert "REFUSED" in lines[0] and refused["reason"] in lines[0]
    # --since keeps what was recorded at or after it; --limit the most recent.
    later = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    code, out, _ = explain(capsys, db, "--client", client.client_id, "--since", later, "--json")
    assert code == 0 and json.loads(out)["requests"] == []
    earlier = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    code, out, _ = explain(capsys, db, "--client", client.client_id, "--since", earlier, "--json")
    assert len(json.loads(out)["requests"]) == 3
    code, out, _ = explain(capsys, db, "--client", client.client_id, "--limit", "1", "--json")
    assert [r["index"] for r in json.loads(out)["requests"]] == [refused["index"]]
    # A registered client with no requests is no error; an unknown one is.
    code, out, _ = explain(capsys, db, "--client", other.client_id)
    assert code == 0 and "no requests by client" in out
    code, _, err = explain(capsys, db, "--client", "nobody")
    assert code == 1 and "nobody" in err and "clients list" in err
    with pytest.raises(SystemExit) as bad:
        main(["access", "explain", "--db", db, "--client", "x", "--since", "yesterday"])
    assert bad.value.code == 1 and "ISO 8601" in capsys.readouterr().err


def test_no_database_is_created_where_there_is_none(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    done = subprocess.run(
        [sys.executable, "-m", "exchange.cli", "access", "explain", "--client", "x",
         "--data", str(missing)],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 3 and "no medledger database" in done.stderr
    assert not missing.exists()
    helped = subprocess.run(
        [sys.executable, "-m", "exchange.cli", "access", "explain", "--help"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert helped.returncode == 0 and "examples:" in helped.stdout
