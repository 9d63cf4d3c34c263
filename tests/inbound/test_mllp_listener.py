"""`serve --mllp-port`: HL7 v2 from registered home hospitals, sent by python-hl7's MLLP
client, recorded on the ledger like any submission, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import hl7
import hl7.mllp
import pytest

from exchange.cli.main import main
from exchange.delivery.inbound import convert
from exchange.identity.clients import register_client, revoke_client
from exchange.identity.mllp import register_sender
from exchange.intake import IntakeLimits
from exchange.intake.worker import check
from tests.api_helpers import Api
from tests.delivery.test_inbound_mllp import errs, msa, oru
from tests.outbox.helpers import HOME, TOKEN, deliveries, exchange, recipient, row
from tests.settlement.test_settlement_index import consent_bundle


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _send(port: int, *messages: bytes) -> list[hl7.Message]:
    """Each message over one python-hl7 MLLP connection, with the ACK it got."""

    async def run() -> list[hl7.Message]:
        reader, writer = await hl7.mllp.open_hl7_connection("127.0.0.1", port, encoding="utf-8")
        try:
            acks = []
            for raw in messages:
                writer.writeblock(raw)
                await writer.drain()
                acks.append(await asyncio.wait_for(reader.readmessage(), 60))
            return acks
        finally:
            writer.close()

    return asyncio.run(run())


def _index(ack: hl7.Message) -> int:
    code, _, text = msa(ack)
    assert code == "AA", (code, text, errs(ack))
    assert text.startswith("ledger index ")
    return int(text.removeprefix("ledger index "))


def _home(api: Api, kind: str = "facility", value: str = "BLIH") -> str:
    client, _ = register_client(api.services.engine, "home", "hospital", "seoul-uh")
    register_sender(api.services.engine, client.client_id, kind, value)
    return client.client_id


def test_a_registered_senders_oru_is_recorded(tmp_path: Path, db_url: str) -> None:
    port = _free_port()
    with exchange(tmp_path, db_url, mllp_port=port) as api:
        _home(api)
        first, again = _send(port, oru("ORU-1"), oru("ORU-1"))
        index = _index(first)
        entry = api.entry(index)
        assert entry.kind == "record" and entry.sender == "seoul-uh"
        # A repeat after a lost ACK is the same Bundle: answered with the same entry.
        assert _index(again) == index and api.log_size() == index + 1
        # Unreadable content: AE naming the segment, nothing recorded.
        lines = oru("ORU-2").decode().split("\r")
        n = next(i for i, line in enumerate(lines) if line.startswith("OBX|2|NM|"))
        fields = lines[n].split("|")
        fields[5] = "twelve"
        lines[n] = "|".join(fields)
        [bad] = _send(port, "\r".join(lines).encode())
        assert msa(bad)[0] == "AE" and errs(bad)[0][0] == "OBX^2^5"
        assert api.log_size() == index + 1


def test_unregistered_and_revoked_senders_are_rejected(tmp_path: Path) -> None:
    port = _free_port()
    with exchange(tmp_path, mllp_port=port) as api:
        client_id = _home(api, "facility", "ANOTHER")
        [unknown] = _send(port, oru())
        assert msa(unknown)[0] == "AR" and errs(unknown)[0][1] == "204"
        register_sender(api.services.engine, client_id, "peer", "127.0.0.1")
        [taken] = _send(port, oru())
        _index(taken)
        revoke_client(api.services.engine, client_id)
        [revoked] = _send(port, oru("ORU-3"))
        assert msa(revoked)[0] == "AR"


def test_clients_mllp_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = ["--data", str(tmp_path)]
    assert main(["clients", "add", "--name", "h", "--role", "hospital", "--org", "seoul-uh",
                 "--json", *data]) == 0  # fmt: skip
    client_id = json.loads(capsys.readouterr().out)["client_id"]
    assert main(["clients", "mllp", client_id, "--peer", "10.0.0.5", *data]) == 0
    assert main(["clients", "mllp", client_id, "--peer", "not-an-ip", *data]) == 1
    assert "--peer" in capsys.readouterr().err
    assert main(["clients", "mllp", "cl-unknown", "--facility", "BLIH", *data]) == 3
    assert main(["clients", "add", "--name", "i", "--role", "insurer", "--org", "ins",
                 "--json", *data]) == 0  # fmt: skip
    insurer = json.loads(capsys.readouterr().out)["client_id"]
    assert main(["clients", "mllp", insurer, "--facility", "BLIH", *data]) == 3


def test_an_oru_queues_deliveries_as_an_http_submission_does(tmp_path: Path, db_url: str) -> None:
    # The patient consented (over HTTP, by the same hospital) to delivery to a recipient with
    # an endpoint: the record arriving over MLLP is queued for it like one posted.
    port = _free_port()
    with exchange(tmp_path, db_url, mllp_port=port) as api:
        _home(api)
        hospital = api.credential(org="seoul-uh")
        recipient(api, f"http://127.0.0.1:{_free_port()}/fhir", token=TOKEN)
        converted = convert(oru("ORU-7"))
        patient = check(converted.bundle, "application/fhir+json", IntakeLimits()).patients[0]
        answer = api.post(consent_bundle(patient, HOME, purpose="TREAT"), hospital)
        assert answer.status_code == 201, answer.text
        index = _index(_send(port, oru("ORU-7"))[0])
        [queued] = deliveries(api, hospital)
        assert queued["recipient"] == HOME and queued["version"] == 1
        assert row(api, queued["id"]).bundle_idx == index
