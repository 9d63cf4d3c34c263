"""Entry bytes are canonical and strict; the signing key file is private and typed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.entry import Entry, EntryError, commitment, parse_entry
from ledger.keys import KeyFileError, generate_key_file, load_or_create_signer, load_signer
from ledger.note import Verifier

H = bytes(range(32))


def _entry(**kw) -> Entry:
    base = dict(
        index=1,
        prev=H,
        time="2026-11-28T09:30:00.123Z",
        kind="record",
        sender="hospital-a",
        commit=H,
        media="application/fhir+json",
    )
    return Entry(**{**base, **kw})


@given(
    index=st.integers(1, 2**53 - 1),
    kind=st.from_regex(r"[a-z][a-z0-9-]{0,31}", fullmatch=True),
    sender=st.from_regex(r"[A-Za-z0-9\-.]{1,64}", fullmatch=True),
    subject=st.one_of(st.none(), st.binary(min_size=32, max_size=32)),
    commit=st.binary(min_size=32, max_size=32),
)
def test_entry_round_trip(index, kind, sender, subject, commit) -> None:
    e = _entry(index=index, kind=kind, sender=sender, subject=subject, commit=commit)
    data = e.to_bytes()
    assert parse_entry(data) == e
    assert parse_entry(data).to_bytes() == data


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b.replace(b'"v":1', b'"v":2'),
        lambda b: b.replace(b'"index":1', b'"index":1.0'),
        lambda b: b.replace(b'"index":1', b'"index":01'),
        lambda b: b.replace(b"{", b'{"extra":"x",', 1),
        lambda b: b.replace(b"{", b'{"commit":"x",', 1),
        lambda b: b.replace(b",", b", ", 1),
        lambda b: b.replace(b'"kind":"record"', b'"kind":"Record"'),
        lambda b: b.replace(b'"time":"2026-11-28T09:30:00.123Z"', b'"time":"2026-11-28T09:30:00Z"'),
        lambda b: b[:-1],
        lambda b: b"\xef\xbb\xbf" + b,
    ],
)
def test_non_canonical_or_foreign_entries_rejected(mutate) -> None:
    data = _entry().to_bytes()
    with pytest.raises(EntryError):
        parse_entry(mutate(data))


def test_entry_field_rules() -> None:
    for bad in (
        dict(index=0),
        dict(prev=b""),
        dict(index=-1),
        dict(sender="a b"),
        dict(media="fhir"),
        dict(subject=b"short"),
        dict(commit=b"x"),
    ):
        with pytest.raises(EntryError):
            _entry(**bad).to_bytes()
    with pytest.raises(EntryError):
        commitment(b"short salt", b"data")


def test_key_file_created_private_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "data" / "log.key"
    s1 = load_or_create_signer(path, "example.org/log")
    assert os.stat(path).st_mode & 0o777 == 0o600
    s2 = load_signer(path, "example.org/log")
    assert s1.verifier == s2.verifier
    assert Verifier.from_vkey(s1.verifier.vkey()) == s1.verifier
    with pytest.raises(FileExistsError):
        generate_key_file(path)


def test_key_file_refused_when_readable_or_wrong(tmp_path: Path) -> None:
    path = tmp_path / "log.key"
    generate_key_file(path)
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_signer(path, "example.org/log")
    other = tmp_path / "other.key"
    other.write_text("not a key")
    os.chmod(other, 0o600)
    with pytest.raises(KeyFileError, match="PKCS#8"):
        load_signer(other, "example.org/log")
    with pytest.raises(KeyFileError, match="cannot read"):
        load_signer(tmp_path / "missing.key", "example.org/log")


@given(
    index=st.integers(0, 2**53 - 1),
    kind=st.from_regex(r"[a-z][a-z0-9-]{0,31}", fullmatch=True),
    sender=st.from_regex(r"[A-Za-z0-9\-.]{1,64}", fullmatch=True),
    media=st.from_regex(r"[a-z]+/[a-z0-9.+\-]{1,64}", fullmatch=True),
    subject=st.one_of(st.none(), st.binary(min_size=32, max_size=32)),
    commit=st.binary(min_size=32, max_size=32),
    prev=st.binary(min_size=32, max_size=32),
    millis=st.integers(0, 2**47),
)
def test_direct_bytes_equal_rfc8785_reference(
    index, kind, sender, media, subject, commit, prev, millis
) -> None:
    # RFC 8785 through the general canonicaliser is the reference the fast path must equal.
    from datetime import UTC, datetime, timedelta

    from ledger.entry import format_time

    t = format_time(datetime(2000, 1, 1, tzinfo=UTC) + timedelta(milliseconds=millis))
    e = _entry(
        index=index,
        prev=prev if index else b"",
        time=t,
        kind=kind,
        sender=sender,
        media=media,
        subject=subject,
        commit=commit,
    )
    assert e.to_bytes() == e.canonical_bytes()
