"""`GET /metrics`: Prometheus text a real parser reads, counting what the requests did
(submissions by outcome, receipt latency, 429s) and the state (log size, Bundles by kind),
with no identifier, client or organisation in any label."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.api_helpers import open_api, patient_bundle


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_submissions_and_show_the_state(tmp_path: Path) -> None:
    with open_api(tmp_path / "data", max_in_flight=4) as api:
        hospital = api.credential()
        for n in range(3):
            assert api.post(patient_bundle(f"MRN-SECRET-{n}"), hospital).status_code == 201
        refused = api.client.post(
            "/fhir/Bundle",
            content=b"{}",
            headers={**hospital, "Content-Type": "application/fhir+json"},
        )
        assert refused.status_code in (400, 422)
        answer = api.client.get("/metrics")
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/plain; version=")
        seen = _samples(answer.text)
        accepted = (("kind", "record"), ("outcome", "accepted"))
        assert seen[("medledger_submissions_total", accepted)] == 3
        refused = (("kind", "unknown"), ("outcome", "refused"))
        assert seen[("medledger_submissions_total", refused)] == 1
        assert seen[("medledger_receipt_seconds_count", ())] == 3
        assert seen[("medledger_log_size", ())] == api.log_size()
        assert seen[("medledger_bundles_stored", (("kind", "record"),))] == 3
        assert seen[("medledger_submissions_in_flight", ())] == 0
        key = ("medledger_http_requests_total",
               (("method", "POST"), ("route", "/fhir/Bundle"), ("status", "201")))  # fmt: skip
        assert seen[key] == 3
        assert "MRN-SECRET" not in answer.text and "hospital-a" not in answer.text


def test_rate_limited_requests_are_counted(tmp_path: Path) -> None:
    from exchange.http.ratelimit import RateLimit

    with open_api(tmp_path / "data", rate_limit=RateLimit(0.001, 1)) as api:
        hospital = api.credential()
        codes = [api.client.get("/fhir/Organization", headers=hospital).status_code
                 for _ in range(3)]  # fmt: skip
        assert 429 in codes
        seen = _samples(api.client.get("/metrics").text)
        assert seen[("medledger_rate_limited_total", ())] == codes.count(429)


def _deliveries(text: str) -> dict[str, float]:
    return {
        s.labels["state"]: s.value
        for family in text_string_to_metric_families(text)
        if family.name == "medledger_deliveries"
        for s in family.samples
    }


def test_deliveries_by_state(tmp_path: Path) -> None:
    from tests.delivery.peers import bound_socket, fhir_receiver
    from tests.outbox.helpers import (
        TOKEN,
        consent,
        deliveries,
        exchange,
        recipient,
        record,
        settled,
    )

    with fhir_receiver() as peer, exchange(tmp_path / "a") as api:
        assert _deliveries(api.client.get("/metrics").text) == {
            "pending": 0, "delivered": 0, "failed": 0,
        }  # fmt: skip
        peer.bearer_tokens.add(TOKEN)
        recipient(api, f"{peer.base}/fhir", token=TOKEN)
        hospital = api.credential()
        consent(api, hospital)
        record(api, hospital)
        [done] = settled(api, hospital)
        assert done["status"] == "delivered"
        text = api.client.get("/metrics").text
        assert _deliveries(text) == {"pending": 0, "delivered": 1, "failed": 0}
        assert "home-kr" not in text  # no recipient in any label
    closed = bound_socket()  # a home hospital that does not answer: its delivery waits
    with exchange(tmp_path / "b") as api:
        recipient(api, f"http://127.0.0.1:{closed.getsockname()[1]}/fhir", token=TOKEN)
        hospital = api.credential()
        consent(api, hospital)
        record(api, hospital)
        assert [d["status"] for d in deliveries(api, hospital)] == ["pending"]
        text = api.client.get("/metrics").text
        assert _deliveries(text) == {"pending": 1, "delivered": 0, "failed": 0}
    closed.close()
