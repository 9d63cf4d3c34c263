"""Verifying a case package offline, with only the log's verifier keys (and a witness policy).

The order of the checks decides which member a failure names, so that one changed byte is
blamed on the member it is in:

 1. the ZIP: the canonical layout, within bounds; a member whose bytes do not match their
    CRC-32 is named (archive.py);
 2. manifest.json: well-formed, rendered the one way, and its own digest matches it, so a
    change inside the manifest is blamed on the manifest;
 3. the member set: a member the manifest does not list, or one it lists that is missing;
 4. every member's SHA-256 against the manifest: a change inside any other member is blamed
    on that member here;
 5. what the members prove: the checkpoints' signatures (and the policy's quorum on the
    newest), the consistency proof between them, every receipt against the one checkpoint,
    every commitment SHA-256(salt ‖ bytes), every attestation's signature, every access
    entry; these fail only for a package built wrong or forged with matching hashes;
 6. the derived members (registry snapshots, accounting.json, index.html, the manifest's
    statements) are written again from what was verified and must be the same bytes.

Errors are CaseMalformed (exit 3) or CaseFailed (exit 4), each naming the member.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledger.checkpoint import Checkpoint
from ledger.entry import Entry
from ledger.note import NoteError, Verifier
from ledger.note import split as split_note
from ledger.policy import CheckpointRefused, Policy
from ledger.receipt import MAX_RECEIPT_BYTES, format_receipt, parse_receipt
from ledger.untrusted import InputRejected, read_json
from ledger.verify import (
    VerificationError,
    verify_checkpoint,
    verify_consistency,
    verify_receipt,
    verify_submission,
)

from . import layout
from .archive import MAX_PACKAGE_BYTES, read_zip
from .attestation import AttestationError, verify_attestation
from .errors import CaseFailed, CaseMalformed
from .layout import CaseMeta, Committed, DocumentMeta

MAX_MANIFEST_BYTES = 32 << 20


@dataclass(frozen=True)
class Finding:
    """What one member proves, in one line."""

    member: str
    proves: str


@dataclass(frozen=True)
class CaseReport:
    """A verified package: the log, the checkpoints, the witnesses whose cosignatures the
    policy checked, and one finding per member."""

    origin: str
    checkpoint_size: int
    latest_size: int
    witnesses: tuple[str, ...]
    findings: tuple[Finding, ...]

    def lines(self) -> list[str]:
        return [f"{f.member}: {f.proves}" for f in self.findings]


def verify_package(
    package: bytes | str | os.PathLike[str],
    keys: Sequence[str | Verifier],
    policy: Policy | None = None,
) -> CaseReport:
    """Checks a case package (its bytes or a path) offline and says what each member proves.

    `keys` are the log's verifier keys (vkey text or parsed); with `policy`, the newest
    checkpoint must also meet its quorum of witness cosignatures. Raises CaseMalformed (exit
    3) or CaseFailed (exit 4) naming the first member at fault; OSError for an unreadable
    path.
    """
    verifiers = _verifiers(keys)
    members = read_zip(_read(package))
    manifest = members.get(layout.MANIFEST)
    if manifest is None:
        raise CaseMalformed(layout.MANIFEST, "the package has no manifest")
    meta, files = _parse_manifest(manifest)
    for name in sorted(set(members) - set(files) - {layout.MANIFEST}):
        raise CaseFailed(name, "is not listed in manifest.json")
    for name in sorted(set(files) - set(members)):
        raise CaseFailed(name, "is listed in manifest.json but missing from the package")
    for name in sorted(files):
        if layout.sha256_hex(members[name]) != files[name]:
            raise CaseFailed(name, "its SHA-256 differs from the one manifest.json lists")
    return _Check(meta, members, verifiers, policy).run()


def _read(package: bytes | str | os.PathLike[str]) -> bytes:
    if isinstance(package, bytes):
        return package
    with Path(package).open("rb") as f:
        data = f.read(MAX_PACKAGE_BYTES + 1)
    if len(data) > MAX_PACKAGE_BYTES:
        raise CaseMalformed(None, f"the package is over {MAX_PACKAGE_BYTES:,} bytes")
    return data


def _verifiers(keys: Sequence[str | Verifier]) -> list[Verifier]:
    out = []
    for k in keys:
        try:
            out.append(k if isinstance(k, Verifier) else Verifier.from_vkey(k))
        except NoteError as e:
            raise CaseMalformed(None, f"verifier key: {e}") from e
    if not out:
        raise CaseMalformed(None, "no verifier key of the log was given")
    return out


# --- manifest.json ---------------------------------------------------------------------------


class _Shape:
    """Reads the manifest's JSON, raising CaseMalformed naming the field that is wrong."""

    @staticmethod
    def get(obj: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
        if not isinstance(obj, dict) or key not in obj:
            raise CaseMalformed(layout.MANIFEST, f"{where} has no {key!r}")
        value = obj[key]
        if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
            raise CaseMalformed(layout.MANIFEST, f"{where}.{key} has the wrong type")
        return value

    @staticmethod
    def day(value: Any, where: str, optional: bool = False) -> str | None:
        if value is None and optional:
            return None
        if not isinstance(value, str) or not layout.DAY.fullmatch(value):
            raise CaseMalformed(layout.MANIFEST, f"{where} is not a date YYYY-MM-DD")
        return value


def _parse_manifest(data: bytes) -> tuple[CaseMeta, dict[str, str]]:
    try:
        obj = read_json(data, MAX_MANIFEST_BYTES)
    except InputRejected as e:
        raise CaseMalformed(layout.MANIFEST, f"not strict JSON: {e}") from None
    g = _Shape.get
    if g(obj, "format", str, "manifest") != layout.FORMAT:
        raise CaseMalformed(layout.MANIFEST, f"not a {layout.FORMAT} manifest")
    log = g(obj, "log", dict, "manifest")
    period = g(obj, "period", dict, "manifest")
    registry = g(obj, "registry", dict, "manifest")
    docs = []
    for i, d in enumerate(g(obj, "documents", list, "manifest")):
        w = f"documents[{i}]"
        docs.append(
            DocumentMeta(
                id=g(d, "id", str, w),
                version=g(d, "version", int, w),
                kind=g(d, "kind", str, w),
                treatment_date=str(_Shape.day(g(d, "treatment_date", str, w), w)),
                index=g(d, "ledger_index", int, w),
                sender=g(d, "sender", str, w),
                recorded=g(d, "recorded", str, w),
            )
        )
    subjects = g(g(obj, "patient", dict, "manifest"), "subjects", list, "patient")
    dates = g(registry, "dates", list, "registry")
    attestations = g(registry, "attestations", list, "registry")
    accounting = g(obj, "accounting", list, "manifest")
    for what, values, kind in [
        ("patient.subjects", subjects, str),
        ("registry.dates", dates, str),
        ("registry.attestations", attestations, int),
        ("accounting", accounting, int),
    ]:
        if any(not isinstance(v, kind) or isinstance(v, bool) for v in values):
            raise CaseMalformed(layout.MANIFEST, f"{what} has an item of the wrong type")
    for day in dates:
        _Shape.day(day, "registry.dates")
    meta = CaseMeta(
        origin=g(log, "origin", str, "log"),
        checkpoint_size=g(log, "checkpoint_size", int, "log"),
        latest_size=g(log, "latest_size", int, "log"),
        subjects=tuple(subjects),
        period_from=_Shape.day(period.get("from"), "period.from", optional=True),
        period_to=_Shape.day(period.get("to"), "period.to", optional=True),
        documents=tuple(docs),
        registry_dates=tuple(dates),
        attestations=tuple(attestations),
        accounting=tuple(accounting),
    )
    files: dict[str, str] = {}
    for i, f in enumerate(g(obj, "files", list, "manifest")):
        name = g(f, "name", str, f"files[{i}]")
        if not layout.valid_member_name(name) or name == layout.MANIFEST or name in files:
            raise CaseMalformed(layout.MANIFEST, f"files[{i}] names {name[:80]!r}")
        files[name] = g(f, "sha256", str, f"files[{i}]")
    digest = g(obj, "digest", str, "manifest")
    if layout.render_json(obj) != data:
        raise CaseFailed(layout.MANIFEST, "is not rendered as a package writes it")
    body = {k: v for k, v in obj.items() if k != "digest"}
    if layout.sha256_hex(layout.render_json(body)) != digest:
        raise CaseFailed(layout.MANIFEST, "its digest does not match its content")
    return meta, files


# --- what the members prove ------------------------------------------------------------------


def _text(members: dict[str, bytes], name: str, limit: int) -> str:
    data = members[name]
    if len(data) > limit:
        raise CaseFailed(name, f"is over {limit:,} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise CaseFailed(name, "is not UTF-8") from None


def _canonical_note(name: str, note: str) -> None:
    """A note must be written the one way (base64 has spare bits a copy could flip)."""
    try:
        text, sigs = split_note(note)
    except NoteError as e:
        raise CaseFailed(name, str(e)) from e
    if text + "\n" + "".join(s.line() for s in sigs) != note:
        raise CaseFailed(name, "is not written as the log writes checkpoints")


class _Check:
    def __init__(
        self,
        meta: CaseMeta,
        members: dict[str, bytes],
        verifiers: list[Verifier],
        policy: Policy | None,
    ) -> None:
        self.meta = meta
        self.members = members
        self.verifiers = verifiers
        self.policy = policy
        self.findings: dict[str, str] = {}
        self.note = ""

    def run(self) -> CaseReport:
        m = self.meta
        cp = self._checkpoint(layout.CHECKPOINT, m.checkpoint_size)
        self.note = self.members[layout.CHECKPOINT].decode()
        latest = self._checkpoint(layout.LATEST, m.latest_size)
        witnesses = self._policy()
        self._consistency(cp, latest)
        entries = {d.index: self._document(d) for d in m.documents}
        attested = [self._attestation(i) for i in m.attestations]
        snapshots = {}
        for day in m.registry_dates:
            snapshots[day] = layout.registry_snapshot(day, attested)
            self._derived(layout.registry_member(day), layout.render_json(snapshots[day]))
            self._say_registry(day, snapshots[day])
        for d in m.documents:
            self._say_document(d, entries[d.index], snapshots)
        events = [self._access(i) for i in m.accounting]
        value = layout.accounting(m, events)
        self._derived(layout.ACCOUNTING, layout.render_json(value))
        self.findings[layout.ACCOUNTING] = (
            f"{len(events)} accesses to the patient's data in the period, each an access "
            "entry proven below"
        )
        self._derived(layout.INDEX, layout.index_html(m, snapshots, value))
        self.findings[layout.INDEX] = "the table of contents; it states only what is proven here"
        others = {k: v for k, v in self.members.items() if k != layout.MANIFEST}
        if layout.manifest_bytes(m, others) != self.members[layout.MANIFEST]:
            raise CaseFailed(layout.MANIFEST, "does not describe the package's members")
        self.findings[layout.MANIFEST] = "lists every member with its SHA-256; all match"
        return CaseReport(
            m.origin,
            cp.size,
            latest.size,
            witnesses,
            tuple(Finding(k, self.findings[k]) for k in sorted(self.findings)),
        )

    def _derived(self, name: str, expected: bytes) -> None:
        if self.members[name] != expected:
            raise CaseFailed(name, "does not state what the members it is derived from prove")

    def _checkpoint(self, name: str, size: int) -> Checkpoint:
        note = _text(self.members, name, MAX_RECEIPT_BYTES)
        try:
            cp = verify_checkpoint(note, self.verifiers, origin=self.meta.origin)
        except VerificationError as e:
            raise CaseFailed(name, e.reason) from e
        _canonical_note(name, note)
        if cp.size != size:
            raise CaseFailed(layout.MANIFEST, f"gives size {size} for {name}, of size {cp.size}")
        self.findings[name] = (
            f"the log {cp.origin} held {cp.size} entries with root "
            f"{base64.b64encode(cp.root).decode()} (signature verified)"
        )
        return cp

    def _policy(self) -> tuple[str, ...]:
        note = self.members[layout.LATEST].decode()
        if self.policy is None:
            lines = len(split_note(note)[1])
            self.findings[layout.LATEST] += (
                f"; {lines} signature line(s), witness cosignatures not checked (no policy)"
            )
            return ()
        try:
            ev = self.policy.require(note, self.verifiers)
        except CheckpointRefused as e:
            raise CaseFailed(layout.LATEST, f"does not meet the policy: {e}") from e
        names = tuple(sorted(ev.cosigned))
        self.findings[layout.LATEST] += (
            "; cosigned by " + (", ".join(names) or "no witness") + ": the policy's quorum is met"
        )
        return names

    def _consistency(self, cp: Checkpoint, latest: Checkpoint) -> None:
        name = layout.CONSISTENCY
        try:
            obj = read_json(self.members[name], MAX_RECEIPT_BYTES)
            if not isinstance(obj, dict) or set(obj) != {"size1", "size2", "hashes"}:
                raise CaseFailed(name, "holds exactly size1, size2 and hashes")
            hashes = obj["hashes"]
            if not isinstance(hashes, list) or len(hashes) > 64:
                raise CaseFailed(name, "hashes is not a list of at most 64")
            proof = [base64.b64decode(h, validate=True) for h in hashes]
        except (InputRejected, ValueError, TypeError) as e:
            raise CaseFailed(name, f"is not a consistency proof: {e}") from e
        if (
            layout.render_json(obj) != self.members[name]
            or [base64.b64encode(p).decode() for p in proof] != hashes
        ):
            raise CaseFailed(name, "is not written as a package writes it")
        if (obj["size1"], obj["size2"]) != (cp.size, latest.size):
            raise CaseFailed(name, f"is not between sizes {cp.size} and {latest.size}")
        try:
            verify_consistency(cp, latest, proof)
        except VerificationError as e:
            raise CaseFailed(name, e.reason) from e
        self.findings[name] = (
            f"the log of size {cp.size} is a prefix of the log of size {latest.size}: "
            "no entry was changed or removed in between"
        )

    def _committed(self, base: str, index: int, kind: str) -> tuple[Entry, bytes]:
        """Checks a committed document's receipt, salt and commitment; its entry and bytes."""
        proof, salt_name, doc = (base + ext for ext in (".tlog-proof", ".salt", ".json"))
        text = _text(self.members, proof, MAX_RECEIPT_BYTES)
        try:
            verified = verify_receipt(text, self.verifiers, origin=self.meta.origin)
        except VerificationError as e:
            raise CaseFailed(proof, e.reason) from e
        if format_receipt(parse_receipt(text)) != text:
            raise CaseFailed(proof, "is not written as the log writes receipts")
        if verified.note != self.note:
            raise CaseFailed(
                proof, f"is not against the package's checkpoint ({layout.CHECKPOINT})"
            )
        entry = verified.entry
        if entry.index != index:
            raise CaseFailed(proof, f"is the receipt of entry {entry.index}, not {index}")
        if entry.kind != kind:
            raise CaseFailed(proof, f"is of an entry of kind {entry.kind!r}, not {kind!r}")
        raw = self.members[salt_name]
        try:
            salt = base64.b64decode(raw.rstrip(b"\n"), validate=True)
        except ValueError:
            raise CaseFailed(salt_name, "is not base64") from None
        if base64.b64encode(salt) + b"\n" != raw or len(salt) != 32:
            raise CaseFailed(salt_name, "is not the base64 of a 32-byte salt and a newline")
        data = self.members[doc]
        try:
            verify_submission(entry, data, salt)
        except VerificationError as e:
            raise CaseFailed(doc, e.reason) from e
        self.findings[proof] = (
            f"entry {index} ({kind}, sent by {entry.sender} at {entry.time}) is in the log of "
            f"size {self.meta.checkpoint_size} (inclusion proof verified)"
        )
        self.findings[salt_name] = f"opens the commitment of entry {index}"
        return entry, data

    def _document(self, d: DocumentMeta) -> Entry:
        entry, _ = self._committed(d.base, d.index, d.kind)
        if (entry.sender, entry.time) != (d.sender, d.recorded):
            raise CaseFailed(layout.MANIFEST, f"misstates the sender or time of entry {d.index}")
        if entry.subject is not None and entry.subject.hex() not in self.meta.subjects:
            raise CaseFailed(d.base + ".tlog-proof", "its entry is about another patient")
        if d.treatment_date not in self.meta.registry_dates:
            raise CaseFailed(layout.MANIFEST, f"has no registry as of {d.treatment_date}")
        return entry

    def _say_document(
        self, d: DocumentMeta, entry: Entry, snapshots: dict[str, dict[str, Any]]
    ) -> None:
        digest = hashlib.sha256(self.members[d.base + ".json"]).hexdigest()
        parts = [
            f"Bundle {d.id} version {d.version} ({d.kind}), these exact bytes (SHA-256 "
            f"{digest[:16]}…), were recorded by {entry.sender} at {entry.time} in entry {d.index}"
        ]
        consent = self.meta.consent_before(d.index)
        if d.kind != "consent":
            parts.append(
                "no consent Bundle of the case before it"
                if consent is None
                else f"consent then: {consent.id} version {consent.version} (entry {consent.index})"
            )
        row = next(
            (r for r in snapshots[d.treatment_date]["institutions"] if r["org"] == entry.sender),
            None,
        )
        if row is None:
            parts.append(f"{entry.sender} had no registry record on {d.treatment_date}")
        else:
            licence = row["record"].get("licence_number")
            state = "valid" if row["licence_valid_on_date"] else "NOT valid"
            black = ", blacklisted" if row["blacklisted"] else ""
            parts.append(
                f"licence {licence} {state} on the treatment date {d.treatment_date}{black} "
                f"(registry entry {row['ledger_index']})"
            )
        self.findings[d.base + ".json"] = "; ".join(parts)

    def _attestation(self, index: int) -> Committed:
        base = layout.attestation_base(index)
        entry, data = self._committed(base, index, "institution")
        try:
            att = verify_attestation(data)
        except AttestationError as e:
            raise CaseFailed(base + ".json", str(e)) from e
        if att.org != entry.sender:
            raise CaseFailed(
                base + ".json", f"is about {att.org}, its entry's sender is {entry.sender}"
            )
        self.findings[base + ".json"] = (
            f"the registry record of {att.org}, signed by admin {att.admin} (Ed25519 key "
            f"{att.key.hex()[:16]}…), recorded in entry {index} at {entry.time}"
        )
        return Committed(index, entry.time, entry.sender, att.value)

    def _say_registry(self, day: str, snap: dict[str, Any]) -> None:
        parts = [
            f"{r['org']}: licence {'valid' if r['licence_valid_on_date'] else 'NOT valid'}"
            + (", blacklisted" if r["blacklisted"] else "")
            for r in snap["institutions"]
        ]
        self.findings[layout.registry_member(day)] = (
            f"the registry as of {day} by the attestations in this package: "
            + ("; ".join(parts) or "no institution")
        )

    def _access(self, index: int) -> Committed:
        base = layout.access_base(index)
        entry, data = self._committed(base, index, "access")
        try:
            value = read_json(data, layout.MAX_DOCUMENT_JSON_BYTES)
        except InputRejected as e:
            raise CaseFailed(base + ".json", f"is not strict JSON: {e}") from e
        if not isinstance(value, dict) or value.get("resourceType") != "AuditEvent":
            raise CaseFailed(base + ".json", "is not an AuditEvent")
        named = set(_pseudonyms(value))
        if entry.subject is not None:
            named.add(entry.subject.hex())
        if not named & set(self.meta.subjects):
            raise CaseFailed(base + ".json", "is not about this patient")
        day = entry.time[:10]
        m = self.meta
        if (m.period_from and day < m.period_from) or (m.period_to and day > m.period_to):
            raise CaseFailed(base + ".json", f"was recorded on {day}, outside the period")
        event = Committed(index, entry.time, entry.sender, value)
        s = layout.access_summary(event)
        self.findings[base + ".json"] = (
            f"{s['org'] or entry.sender} (client {s['client']}) {s['interaction']} "
            f"{', '.join(s['data'])} for purpose {s['purpose']}, outcome {s['outcome']}"
            f"{' (disclosed)' if s['disclosed'] else ''}, recorded in entry {index} at {entry.time}"
        )
        return event


def _pseudonyms(event: dict[str, Any]) -> Iterable[str]:
    """The patients an AuditEvent names (by pseudonym, as the service writes them)."""
    for e in layout.get_path(event, "entity") or []:
        if layout.get_path(e, "what", "identifier", "system") == "urn:medledger:pseudonym":
            value = layout.get_path(e, "what", "identifier", "value")
            if isinstance(value, str):
                yield value
