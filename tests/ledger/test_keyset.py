"""ledger/keyset.py: key lifetimes against a replay model, the checkpoint rule, key documents."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.checkpoint import format_checkpoint
from ledger.entry import Entry, commitment
from ledger.keyset import (
    KeyEvent,
    KeyRuleError,
    KeySet,
    apply_event,
    check_event_entry,
    derive_keyset,
    is_anchored,
    parse_key_document,
    sign_key_document,
)
from ledger.note import Signer, sign

ORIGIN = "keys.example/log"
POOL = [Signer(ORIGIN, Ed25519PrivateKey.generate()) for _ in range(7)]
OTHER = Signer(ORIGIN, Ed25519PrivateKey.generate())  # never in any key set


# --- a model: replay the key entries inside the tree -----------------------------------------


def replay_active(ops: list[tuple[int, str, int]], size: int) -> set[int]:
    """Keys (pool positions) a checkpoint of `size` must carry: key 0 from the start, then
    every key entry inside the tree (index < size) applied in order."""
    active = {0}
    for index, action, k in ops:
        if index >= size:
            break
        if action == "add":
            active.add(k)
        else:
            active.discard(k)
    return active


@st.composite
def histories(draw: st.DrawFn) -> list[tuple[int, str, int]]:
    """Valid add/retire sequences over the pool at increasing entry indexes."""
    ops: list[tuple[int, str, int]] = []
    index = -1
    active, used = {0}, {0}
    for _ in range(draw(st.integers(0, 10))):
        index += draw(st.integers(1, 4))
        can_add = [k for k in range(len(POOL)) if k not in used]
        can_retire = sorted(active) if len(active) > 1 else []
        choices = (["add"] if can_add else []) + (["retire"] if can_retire else [])
        if not choices:
            break
        action = draw(st.sampled_from(choices))
        k = draw(st.sampled_from(can_add if action == "add" else can_retire))
        (active.add if action == "add" else active.discard)(k)
        used.add(k)
        ops.append((index, action, k))
    return ops


def build(ops: list[tuple[int, str, int]]) -> KeySet:
    ks = KeySet.first([POOL[0].verifier])
    for index, action, k in ops:
        ks = ks.apply(index, action, POOL[k].verifier)
    return ks


def ids(keys: KeySet, size: int) -> set[int]:
    pos = {s.verifier: n for n, s in enumerate(POOL)}
    return {pos[k.verifier] for k in keys.active_at(size)}


@settings(max_examples=150, deadline=None)
@given(histories())
def test_active_keys_match_a_replay_of_the_entries_in_the_tree(ops) -> None:
    ks = build(ops)
    last = ops[-1][0] if ops else 0
    for size in range(last + 3):
        assert ids(ks, size) == replay_active(ops, size), size
    assert ks.active_at(last + 1)  # a log is never left without a key


@settings(max_examples=150, deadline=None)
@given(histories(), st.data())
def test_a_checkpoint_passes_exactly_when_signed_by_the_active_keys(ops, data) -> None:
    ks = build(ops)
    size = data.draw(st.integers(0, (ops[-1][0] if ops else 0) + 2), label="size")
    signed = data.draw(st.sets(st.integers(0, len(POOL) - 1)), label="signed")
    stranger = data.draw(st.booleans(), label="unknown key also signed")
    verified = [POOL[k].verifier for k in signed] + ([OTHER.verifier] if stranger else [])
    known = {n for n in signed if ks.find((POOL[n].name, POOL[n].verifier.key_id))}
    expected_ok = known == replay_active(ops, size)
    if expected_ok:
        ks.check_signatures(size, verified)
    else:
        with pytest.raises(KeyRuleError):
            ks.check_signatures(size, verified)


@settings(max_examples=100, deadline=None)
@given(histories(), st.data())
def test_invalid_events_are_refused_and_change_nothing(ops, data) -> None:
    ks = build(ops)
    last = ops[-1][0] if ops else -1
    current = {n for n, s in enumerate(POOL) if any(k.verifier == s.verifier for k in ks.current())}
    known = {n for n, s in enumerate(POOL) if ks.find((s.name, s.verifier.key_id))}
    action = data.draw(st.sampled_from(["add", "retire"]))
    k = data.draw(st.integers(0, len(POOL) - 1))
    index = data.draw(st.integers(max(last - 2, 0), last + 3))
    valid = index > last and (
        (action == "add" and k not in known)
        or (action == "retire" and k in current and len(current) > 1)
    )
    if valid:
        after = ks.apply(index, action, POOL[k].verifier)
        assert len(after.keys) == len(ks.keys) + (action == "add")
    else:
        with pytest.raises(KeyRuleError):
            ks.apply(index, action, POOL[k].verifier)


def test_retirement_is_named_in_the_rejection() -> None:
    ks = build([(3, "add", 1), (5, "retire", 0)])
    ks.check_signatures(5, [POOL[0].verifier, POOL[1].verifier])  # last checkpoint of the overlap
    with pytest.raises(KeyRuleError, match="retired at size 5"):
        ks.check_signatures(6, [POOL[0].verifier])
    with pytest.raises(KeyRuleError, match="retired at size 5"):
        ks.check_signatures(6, [POOL[0].verifier, POOL[1].verifier])
    with pytest.raises(KeyRuleError, match="lacks a signature"):
        ks.check_signatures(4, [POOL[0].verifier])
    with pytest.raises(KeyRuleError, match="added only by entry 3"):
        ks.check_signatures(3, [POOL[0].verifier, POOL[1].verifier])


def test_open_checkpoint_verifies_signatures_then_lifetimes() -> None:
    ks = build([(0, "add", 1), (1, "retire", 0)])
    root = bytes(32)
    good = sign(format_checkpoint(ORIGIN, 2, root), [POOL[1]])
    assert ks.open_checkpoint(good).size == 2
    forged = sign(format_checkpoint(ORIGIN, 2, root), [POOL[0]])
    with pytest.raises(KeyRuleError, match="retired"):
        ks.open_checkpoint(forged)
    tampered = good.replace("\n2\n", "\n3\n", 1)
    with pytest.raises(KeyRuleError, match="invalid signature"):
        ks.open_checkpoint(tampered)


def test_json_round_trip_and_bad_input() -> None:
    ks = build([(2, "add", 1), (4, "retire", 0)])
    again = KeySet.from_json(json.loads(json.dumps(ks.to_json())))
    assert again == ks
    for bad in ([], {}, [{"vkey": "x"}], [{"vkey": POOL[0].verifier.vkey(), "added_at": -1}]):
        with pytest.raises(KeyRuleError):
            KeySet.from_json(bad)
    item = {"vkey": POOL[0].verifier.vkey(), "added_at": 5, "retired_at": 5}
    with pytest.raises(KeyRuleError, match="after added_at"):
        KeySet.from_json([item])


# --- key documents ---------------------------------------------------------------------------


def test_documents_chain_keys_from_the_first_one() -> None:
    add = sign_key_document(ORIGIN, "add", POOL[1].verifier, [POOL[0]], POOL[1])
    retire = sign_key_document(ORIGIN, "retire", POOL[0].verifier, [POOL[0], POOL[1]])
    doc = parse_key_document(add)
    assert (doc.action, doc.key, doc.by) == ("add", POOL[1].verifier, (POOL[0].verifier,))
    events = [KeyEvent(7, add, b"s" * 32), KeyEvent(9, retire, b"t" * 32)]
    ks = derive_keyset(ORIGIN, events, [OTHER.verifier])
    assert [(k.verifier, k.added, k.retired) for k in ks.keys] == [
        (POOL[0].verifier, None, 9),
        (POOL[1].verifier, 7, None),
    ]
    assert is_anchored(ks, [POOL[1].verifier]) and not is_anchored(ks, [OTHER.verifier])
    assert derive_keyset(ORIGIN, [], [OTHER.verifier]).verifiers() == [OTHER.verifier]


def test_documents_without_authority_or_possession_are_refused() -> None:
    first = KeySet.first([POOL[0].verifier])
    # Authorised by a key that is not in the set.
    stranger = sign_key_document(ORIGIN, "add", POOL[1].verifier, [OTHER], POOL[1])
    with pytest.raises(KeyRuleError, match="not an active key"):
        apply_event(first, ORIGIN, KeyEvent(1, stranger, b""))
    # An add the new key did not sign: no proof of possession.
    text = sign_key_document(ORIGIN, "add", POOL[1].verifier, [POOL[0]], POOL[1])
    body, _, sigs = text.partition("\n\n")
    only_old = body + "\n\n" + sigs.splitlines()[0] + "\n"
    with pytest.raises(KeyRuleError, match="not signed by"):
        apply_event(first, ORIGIN, KeyEvent(1, only_old, b""))
    # Another log's document, and an altered one.
    other_log = sign_key_document("other.example/log", "add", POOL[1].verifier, [POOL[0]], POOL[1])
    with pytest.raises(KeyRuleError, match="for log"):
        apply_event(first, ORIGIN, KeyEvent(1, other_log, b""))
    swapped = text.replace(POOL[1].verifier.vkey(), POOL[2].verifier.vkey(), 1)
    with pytest.raises(KeyRuleError):
        apply_event(first, ORIGIN, KeyEvent(1, swapped, b""))
    with pytest.raises(KeyRuleError, match="signed by the new key"):
        sign_key_document(ORIGIN, "add", POOL[1].verifier, [POOL[0]], POOL[2])


def test_an_event_must_match_its_entry() -> None:
    note = sign_key_document(ORIGIN, "add", POOL[1].verifier, [POOL[0]], POOL[1])
    salt = bytes(range(32))
    prev = bytes(32)
    time = "2026-11-28T09:30:00.123Z"

    def entry(kind: str, data: bytes) -> bytes:
        commit = commitment(salt, data)
        return Entry(4, prev, time, kind, "log", commit, "text/plain").to_bytes()

    check_event_entry(KeyEvent(4, note, salt), entry("key", note.encode()))
    with pytest.raises(KeyRuleError, match="not a key entry"):
        check_event_entry(KeyEvent(4, note, salt), entry("record", note.encode()))
    with pytest.raises(KeyRuleError, match="does not commit"):
        check_event_entry(KeyEvent(4, note, salt), entry("key", b"other"))
    with pytest.raises(KeyRuleError, match="not a key entry"):
        check_event_entry(KeyEvent(5, note, salt), entry("key", note.encode()))
