"""`medledger clients revoke|rotate`, JWKS replacement and expiring credentials.

Each change is made by the CLI (or the library under it) against the database a running app
serves from, and must hold on the app's very next request: the app has just used the old
credential, so its cache holds it.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from sqlalchemy import inspect, text

from exchange.cli.main import main
from exchange.identity import cache as identity_cache
from exchange.identity import clients as auth
from exchange.store import tables
from tests.api_helpers import Api, observation_bundle, open_api

Capture = pytest.CaptureFixture[str]
TOKEN_URL = "http://testserver/auth/token"


def cli(capsys: Capture, *args: str) -> tuple[int, str, str]:
    """The command's exit code and output (argparse's usage errors exit 1 through SystemExit)."""
    try:
        code = main(list(args))
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def add(capsys: Capture, data: Path, *extra: str) -> dict[str, Any]:
    code, out, err = cli(capsys, "clients", "add", "--data", str(data), "--name", "his",
                         "--role", "hospital", "--org", "hospital-a", "--json", *extra)  # fmt: skip
    assert code == 0, err
    return dict(json.loads(out))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def submits(api: Api, token: str) -> int:
    return int(api.post(observation_bundle(), bearer(token)).status_code)


def listed(capsys: Capture, data: Path) -> dict[str, dict[str, Any]]:
    code, out, _ = cli(capsys, "clients", "list", "--data", str(data), "--json")
    assert code == 0
    return {c["client_id"]: c for c in json.loads(out)}


# --- mlt_ credentials ------------------------------------------------------------------------


def test_revoke_takes_effect_on_the_next_request(tmp_path: Path, capsys: Capture) -> None:
    data = tmp_path / "data"
    info = add(capsys, data)
    with open_api(data) as api:
        assert submits(api, info["token"]) == 201  # the app now holds it in its cache
        code, out, _ = cli(capsys, "clients", "revoke", info["client_id"], "--data", str(data))
        assert code == 0 and "no longer work" in out
        refused = api.post(observation_bundle(), bearer(info["token"]))
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Bearer")
    row = listed(capsys, data)[info["client_id"]]
    assert row["status"] == "revoked" and row["revoked"]
    # A second revocation changes nothing; rotating a revoked client is refused.
    code, out, _ = cli(capsys, "clients", "revoke", info["client_id"], "--data", str(data))
    assert code == 0 and "already" in out
    code, _, err = cli(capsys, "clients", "rotate", info["client_id"], "--data", str(data))
    assert code == 3 and "revoked" in err


def test_revocation_on_either_database_beside_a_busy_app(
    tmp_path: Path, db_url: str, capsys: Capture
) -> None:
    with open_api(tmp_path / "data", db_url) as api:
        engine = api.services.engine
        client, token = auth.register_client(engine, "his", "hospital", "hospital-a")
        other, other_token = auth.register_client(engine, "lab", "hospital", "hospital-a")
        for _ in range(3):
            assert submits(api, token) == 201 and submits(api, other_token) == 201
        assert auth.revoke_client(engine, client.client_id)
        assert submits(api, token) == 401
        assert submits(api, other_token) == 201  # the others keep working


def test_rotate_gives_a_new_token_and_the_old_one_dies(tmp_path: Path, capsys: Capture) -> None:
    data = tmp_path / "data"
    info = add(capsys, data)
    with open_api(data) as api:
        assert submits(api, info["token"]) == 201
        code, out, _ = cli(capsys, "clients", "rotate", info["client_id"], "--data", str(data),
                           "--json")  # fmt: skip
        assert code == 0
        rotated = json.loads(out)
        assert rotated["client_id"] == info["client_id"] and rotated["token"] != info["token"]
        assert submits(api, info["token"]) == 401
        assert submits(api, rotated["token"]) == 201
    assert listed(capsys, data)[info["client_id"]]["status"] == "active"


def test_an_expired_credential_is_refused_even_from_the_cache(tmp_path: Path) -> None:
    with open_api(tmp_path / "data") as api:
        expires = int(time.time()) + 2
        _, token = auth.register_client(
            api.services.engine, "temp", "hospital", "hospital-a", expires=expires
        )
        assert submits(api, token) == 201
        time.sleep(max(0.0, expires - time.time()) + 0.05)
        assert submits(api, token) == 401


def test_find_client_refuses_revoked_and_expired_credentials(tmp_path: Path) -> None:
    """find_client also authenticates admins outside HTTP (the erasure CLI)."""
    with open_api(tmp_path / "data") as api:
        engine = api.services.engine
        admin, token = auth.register_client(engine, "ops", "admin", None)
        assert auth.find_client(engine, auth.hash_token(token)) == admin
        auth.revoke_client(engine, admin.client_id)
        assert auth.find_client(engine, auth.hash_token(token)) is None
        _, old = auth.register_client(engine, "old", "admin", None, expires=int(time.time()) - 1)
        assert auth.find_client(engine, auth.hash_token(old)) is None


def test_expiry_given_on_the_command_line(tmp_path: Path, capsys: Capture) -> None:
    data = tmp_path / "data"
    info = add(capsys, data, "--expires", "30d")
    left = (
        time.mktime(time.strptime(info["expires"], "%Y-%m-%dT%H:%M:%SZ")) - time.mktime(
            time.gmtime()
        )
    )  # fmt: skip
    assert 30 * 86400 - 60 < left <= 30 * 86400
    assert listed(capsys, data)[info["client_id"]]["expires"] == info["expires"]
    code, out, _ = cli(capsys, "clients", "rotate", info["client_id"], "--data", str(data),
                       "--expires", "2099-01-01T00:00:00+08:00", "--json")  # fmt: skip
    assert code == 0 and json.loads(out)["expires"] == "2098-12-31T16:00:00Z"
    for bad in ("2020-01-01T00:00:00Z", "soon", "2099-01-01T00:00:00", "0d", "12y"):
        code, out, err = cli(capsys, "clients", "add", "--data", str(data), "--name", "x",
                             "--role", "auditor", "--expires", bad)  # fmt: skip
        assert code == 1 and out == "" and "--expires" in err, bad


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["revoke", "cl-0000000000000000"], 3, "not registered"),
        (["rotate", "cl-0000000000000000"], 3, "not registered"),
        (["rotate", "cl-0000000000000000", "--jwks", "absent.json"], 1, "cannot read"),
        (["rotate", "cl-x", "--expires", "1d", "--jwks", "absent.json"], 1, "not allowed"),
        (["revoke"], 1, "client_id"),
    ],
)
def test_cli_refusals_and_their_exit_codes(
    tmp_path: Path, capsys: Capture, args: list[str], code: int, says: str
) -> None:
    data = tmp_path / "data"
    add(capsys, data)
    got, out, err = cli(capsys, "clients", *args, "--data", str(data))
    assert (got, out) == (code, "") and says in err, err


def test_no_database_is_local_state_not_a_new_database(tmp_path: Path, capsys: Capture) -> None:
    missing = tmp_path / "nowhere"
    code, _, err = cli(capsys, "clients", "revoke", "cl-1", "--data", str(missing))
    assert code == 3 and "no medledger database" in err
    assert not missing.exists()


# --- SMART Backend Services clients -----------------------------------------------------------


class Smart:
    def __init__(self, api: Api, client_id: str) -> None:
        self.api, self.client_id = api, client_id

    def token(self, key: Any, kid: str) -> Any:
        now = int(time.time())
        claims = {"iss": self.client_id, "sub": self.client_id, "aud": TOKEN_URL,
                  "exp": now + 240, "jti": str(uuid.uuid4())}  # fmt: skip
        assertion = jwt.encode(claims, key, algorithm="ES384", headers={"kid": kid})
        return self.api.client.post(
            "/auth/token",
            data={"grant_type": "client_credentials", "client_assertion_type":
                  "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                  "client_assertion": assertion, "scope": "system/Bundle.cr"},
        )  # fmt: skip

    def bearer(self, key: Any, kid: str) -> dict[str, str]:
        answer = self.token(key, kid)
        assert answer.status_code == 200, answer.text
        return bearer(answer.json()["access_token"])


def jwks_file(path: Path, key: Any, kid: str) -> Path:
    jwk = {**json.loads(ECAlgorithm.to_jwk(key.public_key())), "kid": kid}
    path.write_text(json.dumps({"keys": [jwk]}))
    return path


@pytest.fixture
def keys() -> Iterator[tuple[Any, Any]]:
    yield ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP384R1())


def test_revoking_a_smart_client_kills_its_access_tokens(
    tmp_path: Path, capsys: Capture, keys: tuple[Any, Any]
) -> None:
    data = tmp_path / "data"
    info = add(capsys, data, "--jwks", str(jwks_file(tmp_path / "a.json", keys[0], "a")))
    with open_api(data) as api:
        backend = Smart(api, info["client_id"])
        access = backend.bearer(keys[0], "a")
        assert api.post(observation_bundle(), access).status_code == 201
        assert cli(capsys, "clients", "revoke", info["client_id"], "--data", str(data))[0] == 0
        assert api.post(observation_bundle(), access).status_code == 401
        again = backend.token(keys[0], "a")
        assert again.status_code == 401 and again.json()["error"] == "invalid_client"


def test_replacing_the_jwks_refuses_the_old_keys_and_their_tokens(
    tmp_path: Path, capsys: Capture, keys: tuple[Any, Any]
) -> None:
    data = tmp_path / "data"
    info = add(capsys, data, "--jwks", str(jwks_file(tmp_path / "a.json", keys[0], "a")))
    with open_api(data) as api:
        backend = Smart(api, info["client_id"])
        old = backend.bearer(keys[0], "a")
        assert api.post(observation_bundle(), old).status_code == 201
        new_jwks = jwks_file(tmp_path / "b.json", keys[1], "b")
        code, out, _ = cli(capsys, "clients", "rotate", info["client_id"], "--data", str(data),
                           "--jwks", str(new_jwks))  # fmt: skip
        assert code == 0 and "replaced" in out
        assert api.post(observation_bundle(), old).status_code == 401
        refused = backend.token(keys[0], "a")
        assert refused.status_code == 401 and "names no key" in refused.json()["error_description"]
        assert api.post(observation_bundle(), backend.bearer(keys[1], "b")).status_code == 201
        assert submits(api, info["token"]) == 201  # the mlt_ credential is another credential
    (tmp_path / "private.json").write_text(
        json.dumps({"keys": [{**json.loads(ECAlgorithm.to_jwk(keys[1])), "kid": "p"}]})
    )
    code, _, err = cli(capsys, "clients", "rotate", info["client_id"], "--data", str(data),
                       "--jwks", str(tmp_path / "private.json"))  # fmt: skip
    assert code == 3 and "private" in err


def test_a_plain_client_can_be_given_a_jwks(
    tmp_path: Path, capsys: Capture, keys: tuple[Any, Any]
) -> None:
    data = tmp_path / "data"
    info = add(capsys, data)
    jwks = jwks_file(tmp_path / "a.json", keys[0], "a")
    assert cli(capsys, "clients", "rotate", info["client_id"], "--data", str(data),
               "--jwks", str(jwks))[0] == 0  # fmt: skip
    assert listed(capsys, data)[info["client_id"]]["smart"] is True
    with open_api(data) as api:
        access = Smart(api, info["client_id"]).bearer(keys[0], "a")
        assert api.post(observation_bundle(), access).status_code == 201


# --- the cache and the epoch -----------------------------------------------------------------


class CountedReads(identity_cache.EpochReader):
    """The real reader, counting its reads."""

    reads = 0

    def read(self) -> int:
        self.reads += 1
        return super().read()


def test_each_lookup_sees_changes_made_before_it_and_threads_share_reads(
    tmp_path: Path, db_url: str
) -> None:
    with open_api(tmp_path / "data", db_url) as api:
        engine = api.services.engine
        client, token = auth.register_client(engine, "his", "hospital", "hospital-a")
        cache = identity_cache.ClientCache(engine)
        cache.epoch = counted = CountedReads(engine)

        async def burst() -> list[auth.Client | None]:
            return list(await asyncio.gather(*(cache.lookup(token) for _ in range(200))))

        found = asyncio.run(burst())
        assert all(c is not None and c.client_id == client.client_id for c in found)
        if counted.inline:
            assert counted.reads == 200  # SQLite: read on the loop, microseconds each
        else:
            assert 1 <= counted.reads <= 100, counted.reads  # one read serves many lookups
        auth.revoke_client(engine, client.client_id)
        assert asyncio.run(burst()) == [None] * 200
        counted.close()


def test_a_database_of_an_earlier_version_gains_the_new_columns(
    tmp_path: Path, db_url: str
) -> None:
    with open_api(tmp_path / "data", db_url) as api:
        engine = api.services.engine
        _, token = auth.register_client(engine, "old", "hospital", "hospital-a")
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE exchange_clients DROP COLUMN expires"))
            conn.execute(text("ALTER TABLE exchange_clients DROP COLUMN revoked"))
            conn.execute(text("DROP TABLE exchange_credential_epoch"))
            # A store of the first release: no Alembic revision recorded (exchange.store).
            conn.execute(text("DROP TABLE alembic_version"))
    with open_api(tmp_path / "data", db_url) as api:
        columns = {c["name"] for c in inspect(api.services.engine).get_columns("exchange_clients")}
        assert {"expires", "revoked"} <= columns
        assert tables.credential_epoch_table.name in inspect(api.services.engine).get_table_names()
        assert submits(api, token) == 201
