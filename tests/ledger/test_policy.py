"""C2SP tlog-policy: parsing (every rule of the spec, errors naming their line) and quorum
evaluation over real signed checkpoints and cosignatures, with hypothesis for the rules that
hold for every policy: adding a valid cosignature never turns a pass into a fail, and a group
of k out of n passes exactly when at least k of its members do."""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.checkpoint import format_checkpoint
from ledger.cosignature import Cosigner
from ledger.merkle import leaf_hash
from ledger.note import Signer, sign
from ledger.policy import (
    CheckpointRefused,
    Group,
    Policy,
    PolicyError,
    PolicyWitness,
    QuorumNotMet,
    load_policy,
    parse_policy,
)

ORIGIN = "log.example/medledger"
# Fixed keys: the parameters below name them, and every test process must collect the same ids.
LOG = Signer(ORIGIN, Ed25519PrivateKey.from_private_bytes(bytes([0xA0]) * 32))
COSIGNERS = [
    Cosigner(f"w{i}.example/witness", Ed25519PrivateKey.from_private_bytes(bytes([i + 1]) * 32))
    for i in range(6)
]


def _vk(i: int) -> str:
    return COSIGNERS[i].verifier.vkey()


SPEC_EXAMPLE = f"""\
log {LOG.verifier.vkey()}

witness X1 {_vk(0)}
witness X2 {_vk(1)}
witness X3 {_vk(2)}
group X-witnesses 2 X1 X2 X3

witness Y1 {_vk(3)}
witness Y2 {_vk(4)}
witness Y3 {_vk(5)}
group Y-witnesses any Y1 Y2 Y3

group X-and-Y all X-witnesses Y-witnesses
quorum X-and-Y
"""


def _checkpoint(size: int = 3, *cosigners: int, text_ts: int | None = None) -> str:
    text = format_checkpoint(ORIGIN, size, leaf_hash(b"%d" % size))
    ts = text_ts if text_ts is not None else int(time.time())
    note = sign(text, [LOG])
    return note + "".join(COSIGNERS[i].cosign(text, ts).line() for i in cosigners)


def test_spec_example_parses() -> None:
    p = parse_policy(SPEC_EXAMPLE.encode())
    assert [lg.verifier for lg in p.logs] == [LOG.verifier]
    assert [w.name for w in p.witnesses] == ["X1", "X2", "X3", "Y1", "Y2", "Y3"]
    assert p.groups == (
        Group("X-witnesses", 2, ("X1", "X2", "X3")),
        Group("Y-witnesses", 1, ("Y1", "Y2", "Y3")),
        Group("X-and-Y", 2, ("X-witnesses", "Y-witnesses")),
    )
    assert p.quorum == "X-and-Y"


@pytest.mark.parametrize(
    ("cosigners", "met"),
    [
        ((), False),
        ((0, 1), False),  # two X, no Y
        ((0, 3), False),  # one X, one Y
        ((0, 1, 3), True),
        ((1, 2, 5), True),
        ((0, 1, 2, 3, 4, 5), True),
        ((3, 4, 5), False),
    ],
)
def test_spec_example_quorum(cosigners: tuple[int, ...], met: bool) -> None:
    p = parse_policy(SPEC_EXAMPLE.encode())
    ev = p.evaluate(_checkpoint(3, *cosigners))
    assert ev.met is met
    assert set(ev.cosigned) == {p.witnesses[i].name for i in cosigners}
    assert ev.log == LOG.verifier and ev.checkpoint.size == 3
    if not met:
        with pytest.raises(QuorumNotMet) as e:
            p.require(_checkpoint(3, *cosigners))
        assert e.value.quorum == "X-and-Y"


def test_urls_whitespace_comments_and_none() -> None:
    text = (
        "# medledger policy\n"
        f"\t log\t{LOG.verifier.vkey()}   https://log.example/\n"
        "\n   # indented comment\n"
        f"witness A {_vk(0)} http://127.0.0.1:9000\n"
        f"witness B {_vk(1)}\n"
        "quorum none   \n"
    )
    p = parse_policy(text.encode())
    assert p.logs[0].url == "https://log.example/"
    assert p.witnesses[0] == PolicyWitness("A", COSIGNERS[0].verifier, "http://127.0.0.1:9000")
    assert p.witnesses[1].url is None
    assert p.quorum == "none"
    assert p.evaluate(_checkpoint(2)).met  # no cosignature needed


def test_a_witness_as_the_quorum() -> None:
    p = parse_policy(f"witness A {_vk(0)}\nquorum A\n".encode())
    assert not p.evaluate(_checkpoint(2), [LOG.verifier]).met
    assert p.evaluate(_checkpoint(2, 0), [LOG.verifier]).met


def test_names_are_opaque_octets(tmp_path) -> None:
    kelvin = "\u212a".encode()  # not the letter K
    data = b"witness K " + _vk(0).encode() + b"\nwitness " + kelvin + b" " + _vk(1).encode()
    data += b"\ngroup g all K " + kelvin + b"\nquorum g\n"
    (tmp_path / "p").write_bytes(data)
    p = load_policy(tmp_path / "p")
    assert len(p.witnesses) == 2 and p.groups[0].threshold == 2
    # Not UTF-8 at all: still a name.
    p2 = parse_policy(b"witness \xff\xfe " + _vk(0).encode() + b"\nquorum \xff\xfe\n")
    assert p2.satisfied({p2.witnesses[0].name})


@pytest.mark.parametrize(
    ("text", "line", "match"),
    [
        ("quorum none\nquorum none\n", 2, "second quorum"),
        ("log x\nquorum none\n", 1, "log key"),
        (f"witness A {_vk(0)}\n", 0, "no quorum line"),
        ("witness A\nquorum none\n", 1, "witness <name> <vkey>"),
        (f"witness A {LOG.verifier.vkey()}\nquorum none\n", 1, "type 0x04"),
        (f"log {_vk(0)}\nquorum none\n", 1, "not an Ed25519 key"),
        (f"witness A {_vk(0)}\nwitness B {_vk(0)}\nquorum none\n", 2, "public key of witness A"),
        (f"log {LOG.verifier.vkey()}\nlog {LOG.verifier.vkey()}\nquorum none\n", 2, "twice"),
        (f"witness A {_vk(0)}\nwitness A {_vk(1)}\nquorum none\n", 2, "already defined"),
        (f"witness none {_vk(0)}\nquorum none\n", 1, "predefined"),
        (f"witness A {_vk(0)}\ngroup A any A\nquorum none\n", 2, "already defined"),
        (f"witness A {_vk(0)}\ngroup g any B\nquorum none\n", 2, "not defined on an earlier"),
        (f"witness A {_vk(0)}\ngroup g any none\nquorum none\n", 2, "cannot be a member"),
        (f"witness A {_vk(0)}\ngroup g any A A\nquorum none\n", 2, "member twice"),
        (f"witness A {_vk(0)}\ngroup g 2 A\nquorum none\n", 2, "above its 1"),
        (f"witness A {_vk(0)}\ngroup g 0 A\nquorum none\n", 2, "not all, any or 1..n"),
        (f"witness A {_vk(0)}\ngroup g 01 A\nquorum none\n", 2, "not all, any or 1..n"),
        (f"witness A {_vk(0)}\ngroup g A\nquorum none\n", 2, "group <name>"),
        ("quorum B\n", 1, "not defined on an earlier"),
        (f"quorum A\nwitness A {_vk(0)}\n", 1, "not defined on an earlier"),
        ("quorum\n", 1, "quorum <name>"),
        ("witnesses A\nquorum none\n", 1, "unknown keyword"),
        ("quorum none\r\n", 1, "control character 0x0d"),
        ("# fine\nquorum\x00 none\n", 2, "control character 0x00"),
        ("quorum none\x7f\n", 1, "control character 0x7f"),
    ],
)
def test_errors_name_their_line(text: str, line: int, match: str) -> None:
    with pytest.raises(PolicyError, match=match) as e:
        parse_policy(text.encode())
    assert e.value.line == line
    assert str(e.value).startswith(f"policy line {line}:" if line else "policy:")


def test_log_checks() -> None:
    p = parse_policy(SPEC_EXAMPLE.encode())
    other = Signer(ORIGIN, Ed25519PrivateKey.generate())
    text = format_checkpoint(ORIGIN, 3, leaf_hash(b"3"))
    with pytest.raises(CheckpointRefused, match="no signature by a trusted key"):
        p.evaluate(sign(text, [other]))
    stranger = Signer("other.example/log", Ed25519PrivateKey.generate())
    with pytest.raises(CheckpointRefused, match="no log of the policy"):
        p.evaluate(sign(format_checkpoint("other.example/log", 3, leaf_hash(b"3")), [stranger]))
    with pytest.raises(CheckpointRefused, match="malformed"):
        p.evaluate("not a note\n")


def test_bad_cosignature_by_a_policy_witness_rejects_the_note() -> None:
    p = parse_policy(SPEC_EXAMPLE.encode())
    good = _checkpoint(3, 0, 1, 3)
    # X1's cosignature moved onto another checkpoint's text: same name and key id, bad sig.
    elsewhere = _checkpoint(4, 0).split("\n")[-2] + "\n"
    forged = _checkpoint(3, 1, 3) + elsewhere
    assert p.evaluate(good).met
    with pytest.raises(CheckpointRefused, match="does not verify"):
        p.evaluate(forged)


def test_unknown_cosigners_are_ignored() -> None:
    p = parse_policy(f"witness A {_vk(0)}\nquorum A\n".encode())
    note = _checkpoint(3, 0, 1, 2, 3)  # 1..3 are not in this policy
    ev = p.evaluate(note, [LOG.verifier])
    assert list(ev.cosigned) == ["A"] and ev.met


def test_future_cosignatures_may_be_refused() -> None:
    p = parse_policy(f"witness A {_vk(0)}\nquorum A\n".encode())
    note = _checkpoint(3, 0, text_ts=int(time.time()) + 3600)
    assert p.evaluate(note, [LOG.verifier]).met
    with pytest.raises(CheckpointRefused, match="after"):
        p.evaluate(note, [LOG.verifier], not_after=int(time.time()) + 60)


# --- properties --------------------------------------------------------------------------


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    """Random policies over the six cosigners: groups of earlier names, any threshold."""
    n = draw(st.integers(1, 6))
    witnesses = tuple(PolicyWitness(f"W{i}", COSIGNERS[i].verifier) for i in range(n))
    names = [w.name for w in witnesses]
    groups = []
    for g in range(draw(st.integers(0, 5))):
        members = draw(st.lists(st.sampled_from(names), min_size=1, max_size=6, unique=True))
        k = draw(st.integers(1, len(members)))
        groups.append(Group(f"G{g}", k, tuple(members)))
        names.append(f"G{g}")
    quorum = draw(st.sampled_from(names))
    return Policy((), witnesses, tuple(groups), quorum)


def _text(p: Policy) -> bytes:
    """The policy file of `p`, to test the parser against the same model."""
    lines = [f"witness {w.name} {w.verifier.vkey()}" for w in p.witnesses]
    lines += [f"group {g.name} {g.threshold} {' '.join(g.members)}" for g in p.groups]
    return ("\n".join([*lines, f"quorum {p.quorum}"]) + "\n").encode()


@settings(max_examples=300, deadline=None)
@given(policies(), st.data())
def test_adding_a_cosignature_never_turns_a_pass_into_a_fail(
    p: Policy, data: st.DataObject
) -> None:
    names = [w.name for w in p.witnesses]
    have = data.draw(st.sets(st.sampled_from(names)))
    extra = data.draw(st.sampled_from(names))
    if p.satisfied(have):
        assert p.satisfied(have | {extra})
    assert parse_policy(_text(p)) == p


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 6), st.data())
def test_a_k_of_n_group_passes_iff_k_members_pass(n: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(1, n))
    witnesses = tuple(PolicyWitness(f"W{i}", COSIGNERS[i].verifier) for i in range(n))
    p = Policy((), witnesses, (Group("g", k, tuple(w.name for w in witnesses)),), "g")
    have = data.draw(st.sets(st.sampled_from([w.name for w in witnesses])))
    assert p.satisfied(have) is (len(have) >= k)


@settings(max_examples=40, deadline=None)
@given(policies(), st.data())
def test_evaluate_is_monotone_over_real_cosignatures(p: Policy, data: st.DataObject) -> None:
    """The same property through evaluate(): real notes, real signatures."""
    idx = list(range(len(p.witnesses)))
    have = data.draw(st.sets(st.sampled_from(idx)))
    extra = data.draw(st.sampled_from(idx))
    before = p.evaluate(_checkpoint(7, *sorted(have)), [LOG.verifier])
    after = p.evaluate(_checkpoint(7, *sorted(have | {extra})), [LOG.verifier])
    assert before.met == p.satisfied(before.cosigned)
    if before.met:
        assert after.met
