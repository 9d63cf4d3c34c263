"""A recipient's endpoint as the worker reads it for each delivery: parsed once per row."""

from __future__ import annotations

from pathlib import Path

from exchange.bootstrap import open_services
from exchange.config import Settings
from exchange.consent.crossborder import Recipient, set_recipient
from exchange.delivery.endpoints import BearerToken, FhirEndpoint, parse_endpoint
from exchange.outbox.endpoints import Parsed, endpoint_of, set_endpoint
from tests.outbox.helpers import BASIS, HOME


def test_a_changed_endpoint_is_read_again(tmp_path: Path) -> None:
    services = open_services(Settings(data_dir=tmp_path))
    try:
        engine, vault_ = services.engine, services.vault
        set_recipient(engine, Recipient(HOME, "KR", BASIS))
        parsed = Parsed()
        opened: list[bytes] = []
        open_secret = vault_.open_secret

        def counted(sealed: bytes, aad: bytes) -> bytes:
            opened.append(aad)
            return open_secret(sealed, aad)

        vault_.open_secret = counted  # type: ignore[method-assign]
        first = parse_endpoint("http://127.0.0.1:9/fhir", token="first-token")
        set_endpoint(engine, vault_, HOME, first)
        for _ in range(3):
            found = endpoint_of(engine, vault_, HOME, parsed)
            assert found is not None and found.endpoint == first
        assert len(opened) == 1  # the credentials opened once for the unchanged row
        set_endpoint(engine, vault_, HOME, parse_endpoint("mllp://127.0.0.1:2575"))
        found = endpoint_of(engine, vault_, HOME, parsed)
        assert found is not None and found.endpoint.transport == "mllp"
        set_endpoint(engine, vault_, HOME, parse_endpoint("http://127.0.0.1:9/fhir", token="new"))
        found = endpoint_of(engine, vault_, HOME, parsed)
        assert found is not None and isinstance(found.endpoint, FhirEndpoint)
        assert found.endpoint.credentials == BearerToken("new")
        set_endpoint(engine, vault_, HOME, None)
        assert endpoint_of(engine, vault_, HOME, parsed) is None
    finally:
        services.close()
