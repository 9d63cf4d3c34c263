"""cosignature/v1 against a vector written out by hand from c2sp.org/tlog-cosignature.

The key is RFC 8032's section 7.1 TEST 1 Ed25519 key pair; the cosigner name is the spec's
example `witness.example.com/w1`; the message is the spec's example signed message, byte for
byte. The expected key id, signature line and vkey below were derived with hashlib and the
raw Ed25519 primitive, following the spec's formulas, not with ledger/cosignature.py; the test
re-derives them the same way so that the literals and the formulas check each other.
"""

from __future__ import annotations

import base64
import hashlib
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.cosignature import (
    Cosignature,
    CosignatureError,
    Cosigner,
    CosignerVerifier,
    key_id,
    signed_message,
    verify_cosignatures,
)
from ledger.note import Signature, Signer, Verifier, open_note, parse_signature_lines, sign, split

# RFC 8032 section 7.1, TEST 1.
SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
NAME = "witness.example.com/w1"
TIMESTAMP = 1679315147

# The checkpoint and the signed message of the spec's "Ed25519 signed message" section.
CHECKPOINT_TEXT = (
    "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
)
MESSAGE = (
    b"cosignature/v1\n"
    b"time 1679315147\n"
    b"example.com/behind-the-sofa\n"
    b"20852163\n"
    b"CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
)

KEY_ID_HEX = "7e6f4aaa"  # SHA-256("witness.example.com/w1" || 0x0A || 0x04 || PUBLIC)[:4]
TIMESTAMP_BE = bytes.fromhex("00000000641850cb")  # uint64 1679315147, big-endian
SIGNATURE_HEX = (
    "f933e6878058b808ec611a2a3090966ff81625a79117f9269b9b650abf6c279e"
    "c32c4aeeafb2b4c835dcd80acdf9322ea2db81fc76ee2f7009b29ddbbff68d09"
)
LINE = (
    "— witness.example.com/w1 fm9KqgAAAABkGFDL+TPmh4BYuAjsYRoqMJCWb/gWJaeRF/kmm5tlCr9sJ57DLErur7"
    "K0yDXc2ArN+TIuotuB/HbuL3AJsp3bv/aNCQ==\n"
)
VKEY = "witness.example.com/w1+7e6f4aaa+BNdamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea"

# The spec's own example: a checkpoint with the log's signature and a cosignature.
SPEC_EXAMPLE = (
    "example.com/behind-the-sofa\n"
    "20852163\n"
    "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    "\n"
    "— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zh"
    "cyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
    "— witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX"
    "3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n"
)


def _cosigner() -> Cosigner:
    return Cosigner(NAME, Ed25519PrivateKey.from_private_bytes(SECRET))


def test_the_literals_follow_the_spec_formulas() -> None:
    """The vector's own derivation, with hashlib and the raw Ed25519 primitive only."""
    kid = hashlib.sha256(NAME.encode() + b"\n" + b"\x04" + PUBLIC).digest()[:4]
    assert kid.hex() == KEY_ID_HEX
    assert struct.pack(">Q", TIMESTAMP) == TIMESTAMP_BE
    raw_key = Ed25519PrivateKey.from_private_bytes(SECRET)
    assert raw_key.sign(MESSAGE).hex() == SIGNATURE_HEX  # Ed25519 is deterministic
    body = base64.b64encode(kid + TIMESTAMP_BE + bytes.fromhex(SIGNATURE_HEX)).decode()
    assert LINE == f"\u2014 {NAME} {body}\n"
    assert VKEY == f"{NAME}+{KEY_ID_HEX}+" + base64.b64encode(b"\x04" + PUBLIC).decode()


def test_signed_message_is_the_spec_example_byte_for_byte() -> None:
    assert signed_message(CHECKPOINT_TEXT, TIMESTAMP) == MESSAGE


def test_key_id_and_vkey() -> None:
    assert key_id(NAME, PUBLIC).hex() == KEY_ID_HEX
    v = _cosigner().verifier
    assert v.public_key == PUBLIC and v.key_id.hex() == KEY_ID_HEX
    assert v.vkey() == VKEY
    assert CosignerVerifier.from_vkey(VKEY) == v


def test_cosign_gives_the_vector_line() -> None:
    cosig = _cosigner().cosign(CHECKPOINT_TEXT, TIMESTAMP)
    assert cosig.line() == LINE
    assert cosig.timestamp == TIMESTAMP and cosig.signature.hex() == SIGNATURE_HEX


def test_the_vector_line_verifies_and_yields_its_timestamp() -> None:
    (sig,) = parse_signature_lines(LINE)
    got = CosignerVerifier.from_vkey(VKEY).verify(CHECKPOINT_TEXT, sig)
    assert got.timestamp == TIMESTAMP and got.name == NAME


def test_spec_example_layout() -> None:
    """The spec's example cosignature: 4-byte key id, uint64 timestamp, 64-byte signature,
    and its timestamp is the one of the spec's example message (the witness key is not
    published, so only the layout can be checked)."""
    _, sigs = split(SPEC_EXAMPLE)
    witness = next(s for s in sigs if s.name == "witness.example.com/w1")
    assert len(witness.key_id) == 4 and len(witness.signature) == 8 + 64
    assert Cosignature.from_signature(witness).timestamp == TIMESTAMP


def test_one_changed_byte_fails() -> None:
    v = CosignerVerifier.from_vkey(VKEY)
    (sig,) = parse_signature_lines(LINE)
    other_time = Signature(
        sig.name, sig.key_id, struct.pack(">Q", TIMESTAMP + 1) + sig.signature[8:]
    )
    with pytest.raises(CosignatureError, match="does not verify"):
        v.verify(CHECKPOINT_TEXT, other_time)
    with pytest.raises(CosignatureError, match="does not verify"):
        v.verify(CHECKPOINT_TEXT.replace("20852163", "20852164"), sig)
    with pytest.raises(CosignatureError, match="72"):
        v.verify(CHECKPOINT_TEXT, Signature(sig.name, sig.key_id, sig.signature[:-1]))


def test_a_cosigner_key_is_not_a_log_key() -> None:
    """Type 0x04 keys are refused where an Ed25519 note key (0x01) is expected, and the
    other way round; the key ids differ for the same name and public key."""
    with pytest.raises(ValueError, match="not an Ed25519 key"):
        Verifier.from_vkey(VKEY)
    log_vkey = f"{NAME}+" + hashlib.sha256(NAME.encode() + b"\n\x01" + PUBLIC).digest()[:4].hex()
    log_vkey += "+" + base64.b64encode(b"\x01" + PUBLIC).decode()
    assert Verifier.from_vkey(log_vkey).key_id.hex() != KEY_ID_HEX
    with pytest.raises(CosignatureError, match="type 0x04"):
        CosignerVerifier.from_vkey(log_vkey)


def test_verify_cosignatures_ignores_unknown_keys_and_rejects_bad_known_ones() -> None:
    note = CHECKPOINT_TEXT + "\n" + LINE + SPEC_EXAMPLE.split("\n\n")[1]
    text, sigs = split(note)
    v = CosignerVerifier.from_vkey(VKEY)
    found = verify_cosignatures(text, sigs, [v])
    assert list(found) == [v] and found[v].timestamp == TIMESTAMP
    assert verify_cosignatures(text, sigs, []) == {}
    with pytest.raises(CosignatureError, match="after"):
        verify_cosignatures(text, sigs, [v], not_after=TIMESTAMP - 1)
    # Same name and key id, one signature byte changed: the whole note is rejected.
    prefix = f"\u2014 {NAME} "
    raw = bytearray(base64.b64decode(LINE[len(prefix) : -1]))
    raw[40] ^= 1
    tampered = CHECKPOINT_TEXT + "\n" + prefix + base64.b64encode(raw).decode() + "\n"
    t_text, t_sigs = split(tampered)
    with pytest.raises(CosignatureError, match="does not verify"):
        verify_cosignatures(t_text, t_sigs, [v])


def test_log_verification_ignores_cosignatures() -> None:
    """A log verifier opening a cosigned checkpoint sees the cosignature as an unknown key."""
    signer = Signer("example.com/behind-the-sofa", Ed25519PrivateKey.generate())
    note = sign(CHECKPOINT_TEXT, [signer]) + LINE
    opened = open_note(note, [signer.verifier])
    assert [s.name for s in opened.verified] == [signer.name]
    assert [s.name for s in opened.unverified] == [NAME]
