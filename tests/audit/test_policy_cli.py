"""`medledger verify --policy` and `medledger audit --policy` (and `--tiles`): a checkpoint
counts only with the cosignatures of the policy's quorum, collected here from two real
witnesses over HTTP. Too few is exit 6, naming who is missing; a forged witness line is 4;
a policy file that does not parse is 3, naming its line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from exchange.cli.exits import EXIT_MALFORMED, EXIT_NOT_WITNESSED, EXIT_VERIFY_FAILED
from exchange.cli.main import main
from ledger.log import Log
from ledger.note import Signer
from ledger.tiles.sync import sync
from ledger.witness import WitnessServer
from ledger.witness.client import WitnessClient, cosign
from tests.ledger_helpers import new_signer, open_log, submission
from tests.witness_helpers import policy_file, start_witness


@dataclass
class World:
    log: Log
    signer: Signer
    servers: list[WitnessServer]
    policy: Path  # W0 and W1, both required
    db: Path
    dir: Path

    def cosigned(self, *who: int) -> str:
        """The log's latest checkpoint with the cosignatures of the witnesses `who`."""
        note = self.log.checkpoint()
        lines = ""
        for i in who:
            server = self.servers[i]
            client = WitnessClient(server.url)
            try:  # from size 0: the witness's 409 names the size it holds
                c = cosign(client, note, server.witness.verifier, self.log.consistency_proof)
            finally:
                client.close()
            lines += c.line()
        return note + lines


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    signer = new_signer()
    db = tmp_path / "log.db"
    log = open_log(f"sqlite:///{db}", signer)
    log.append_batch([submission(b"%d" % i) for i in range(300)], receipts=False)
    started = [
        start_witness(tmp_path / f"w{i}", f"w{i}.example/w", [signer.verifier]) for i in range(2)
    ]
    ws = [(f"W{i}", v, s.url) for i, (s, v) in enumerate(started)]
    policy = policy_file(
        tmp_path / "policy", signer.verifier, ws, "group both all W0 W1\nquorum both"
    )
    yield World(log, signer, [s for s, _ in started], policy, db, tmp_path)
    for s, _ in started:
        s.stop()
    log.close()


def run(capsys: Any, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _receipt(world: World, note: str, index: int = 17) -> str:
    path = world.dir / f"r{index}-{len(note)}.tlog-proof"
    path.write_text(world.log.receipt_at(index, note))
    return str(path)


def test_verify_needs_the_quorum(world: World, capsys: Any) -> None:
    policy = str(world.policy)
    both = _receipt(world, world.cosigned(0, 1))
    code, out, err = run(capsys, "verify", both, "--policy", policy)
    assert code == 0, err
    assert "witnessed by W0, W1 (quorum both)" in out
    code, out, _ = run(capsys, "verify", both, "--policy", policy, "--json")
    assert code == 0 and json.loads(out)["witnesses"] == ["W0", "W1"]

    world.log.append(submission(b"more"))
    one = _receipt(world, world.cosigned(0))
    code, _, err = run(capsys, "verify", one, "--policy", policy)
    assert code == EXIT_NOT_WITNESSED == 6
    assert "cosigned by W0" in err and "no cosignature by W1" in err
    code, out, _ = run(capsys, "verify", one, "--policy", policy, "--json")
    answer = json.loads(out)
    assert (answer["result"], answer["exit"]) == ("unwitnessed", 6)
    assert (answer["witnesses"], answer["missing"], answer["index"]) == (["W0"], ["W1"], 17)

    # The log's own receipt carries no cosignature: verified with the key it is 0, under
    # the policy 6.
    plain = _receipt(world, world.log.checkpoint())
    assert run(capsys, "verify", plain, "--key", world.signer.verifier.vkey())[0] == 0
    code, _, err = run(capsys, "verify", plain, "--policy", policy)
    assert code == 6 and "no cosignature by W0, W1" in err


def test_a_forged_witness_line_fails_and_a_bad_policy_is_malformed(
    world: World, capsys: Any
) -> None:
    note = world.cosigned(0, 1)
    head, w0, w1 = note.rsplit("\n— ", 2)
    forged_sig = w1.split(" ", 1)
    raw = bytearray(forged_sig[1].encode())
    raw[-6] = ord("A") if raw[-6] != ord("A") else ord("B")
    forged = f"{head}\n— {w0}\n— {forged_sig[0]} {raw.decode()}"
    code, _, err = run(capsys, "verify", _receipt(world, forged), "--policy", str(world.policy))
    assert code == EXIT_VERIFY_FAILED, err

    bad = world.dir / "bad.policy"
    bad.write_text(world.policy.read_text() + "quorum nobody\n")
    code, _, err = run(capsys, "verify", _receipt(world, note), "--policy", str(bad))
    assert code == EXIT_MALFORMED and "policy line" in err
    missing = str(world.dir / "none.policy")
    assert run(capsys, "audit", "--db", str(world.db), "--policy", missing)[0] == EXIT_MALFORMED


def test_audit_from_the_database_is_unwitnessed(world: World, capsys: Any) -> None:
    # The database holds the log's own checkpoints, without cosignatures.
    code, out, _ = run(capsys, "audit", "--db", str(world.db), "--policy", str(world.policy),
                       "--json")  # fmt: skip
    answer = json.loads(out)
    assert code == 6 and answer["result"] == "unwitnessed" and answer["exit"] == 6
    assert answer["entries_checked"] == 300 and answer["missing"] == ["W0", "W1"]
    code, _, err = run(capsys, "audit", "--db", str(world.db), "--policy", str(world.policy))
    assert code == 6 and "NOT WITNESSED ENOUGH" in err and "no cosignature by W0, W1" in err


def test_audit_tiles_with_a_witnessed_checkpoint(world: World, capsys: Any) -> None:
    tiles = world.dir / "tiles"
    sync(world.log, tiles, note=world.cosigned(0, 1))
    policy, vkey = str(world.policy), world.signer.verifier.vkey()
    state = str(world.dir / "audit.json")
    code, out, err = run(capsys, "audit", "--tiles", str(tiles), "--policy", policy,
                         "--state", state)  # fmt: skip
    assert code == 0, err
    assert "OK: log test.example/log, 300 entries" in out and "witnessed by W0, W1" in out
    # One witness behind: the tiles' newer checkpoint verifies with the key, not the policy.
    world.log.append_batch([submission(b"x%d" % i) for i in range(5)], receipts=False)
    sync(world.log, tiles, note=world.cosigned(1))
    code, _, err = run(capsys, "audit", "--tiles", str(tiles), "--policy", policy,
                       "--state", state)  # fmt: skip
    assert code == 6 and "no cosignature by W0" in err
    code, out, err = run(capsys, "audit", "--tiles", str(tiles), "--key", vkey, "--state", state)
    assert code == 0 and "305 entries" in out, err
