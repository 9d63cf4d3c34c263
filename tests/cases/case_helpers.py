"""A realistic case on a real log: a patient treated at a Lecheng hospital, the registry's
signed attestations (the service's own signing), Bundles with exact bytes, access entries with
BALP AuditEvents, and later entries of other patients beyond the case's checkpoint."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from exchange.cases import Case, Document, Recorded
from exchange.identity.clients import Client
from exchange.privacy.access import audit_event
from exchange.registry.institutions import Accreditation, Institution, sign_attestation
from ledger.cosignature import Cosigner
from ledger.entry import commitment
from ledger.log import Log, Submission
from ledger.note import Signer
from ledger.store import make_engine

ORIGIN = "ledger.example/boao"
HOSPITAL = "boao-lecheng-intl"
INSURER = "ins-munich"
PSEUDONYM_KEY = b"k" * 32


def pseudonym(patient: str) -> bytes:
    return hmac.new(PSEUDONYM_KEY, patient.encode(), hashlib.sha256).digest()


PATIENT = pseudonym("urn:oid:2.16.840.1.113883.2.6|P-0042")
OTHER = pseudonym("urn:oid:2.16.840.1.113883.2.6|P-0099")


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def bundle_bytes(kind: str, n: int, version: int = 1) -> bytes:
    """A FHIR Bundle as a hospital's engine writes it (decimals and Chinese text kept)."""
    resource: dict[str, object]
    if kind == "consent":
        resource = {
            "resourceType": "Consent",
            "status": "active",
            "scope": {"coding": [{"code": "patient-privacy"}]},
            "provision": {"purpose": [{"code": "HPAYMT"}, {"code": "HLEGAL"}]},
        }
    elif kind == "settlement":
        resource = {"resourceType": "Claim", "status": "active", "total": {"value": 1200.00}}
    else:
        resource = {"resourceType": "Observation", "status": "final", "note": [{"text": "血压"}]}
    text = json.dumps(
        {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [
                {"resource": {"resourceType": "Patient", "identifier": [{"value": "P-0042"}]}},
                {"resource": resource},
            ],
            "identifier": {"value": f"b-{n}"},
            "meta": {"versionId": str(version)},
        },
        ensure_ascii=False,
    )
    return text.replace("1200.0", "1200.00").encode()


@dataclass
class World:
    log: Log
    signer: Signer
    witness: Cosigner
    case: Case
    path: Path


def build_world(tmp: Path) -> World:
    signer = Signer(ORIGIN, Ed25519PrivateKey.generate())
    clock = Clock()
    log = Log(make_engine(f"sqlite:///{tmp / 'ledger.db'}"), signer, origin=ORIGIN, clock=clock)
    admin = Ed25519PrivateKey.generate()

    def at(day: int) -> None:
        clock.now = datetime(2026, 3, day, 9, 30, tzinfo=UTC)

    def append(
        kind: str,
        sender: str,
        salt: bytes,
        data: bytes,
        subject: bytes | None,
        media: str = "application/fhir+json",
    ) -> int:
        sub = Submission(
            kind=kind, sender=sender, commit=commitment(salt, data), media=media, subject=subject
        )
        return log.append(sub).entry.index

    def attest(day: int, licence_to: date, name_en: str) -> Recorded:
        at(day)
        record = Institution(
            org=HOSPITAL,
            name_zh="博鳌乐城国际医院",
            name_en=name_en,
            licence_number="PDY-469000-0001",
            licence_valid_from=date(2025, 1, 1),
            licence_valid_to=licence_to,
            region="Hainan Boao Lecheng Pilot Zone",
            accreditations=(Accreditation("JCI", "hospital", date(2025, 1, 1), date(2028, 1, 1)),),
        )
        data = sign_attestation(record, "registry-admin", admin)
        salt = os.urandom(32)
        return Recorded(
            append("institution", HOSPITAL, salt, data, None, "application/json"), salt, data
        )

    def bundle(day: int, kind: str, n: int, version: int = 1) -> Document:
        at(day)
        data, salt = bundle_bytes(kind, n, version), os.urandom(32)
        index = append(kind, HOSPITAL, salt, data, PATIENT)
        return Document(f"b-{n}", version, kind, date(2026, 3, day), index, salt, data)

    def access(day: int, purpose: str, action: str = "read") -> Recorded:
        at(day)
        client = Client("c-77", "Munich Re claims", "insurer", INSURER)
        event = audit_event(
            client,
            action=action,
            resource_type="Claim",
            patient_subject=PATIENT,
            purpose=purpose,
            outcome="0",
            recorded=f"2026-03-{day:02d}T10:00:00.000+08:00",
        )
        data = json.dumps(event, separators=(",", ":"), sort_keys=True).encode()
        salt = os.urandom(32)
        return Recorded(append("access", INSURER, salt, data, PATIENT), salt, data)

    first = attest(1, date(2026, 3, 9), "Boao Lecheng <International> Hospital")
    docs = [bundle(2, "consent", 1), bundle(3, "record", 2)]
    at(3)
    append("record", "other-hospital", os.urandom(32), b"{}", OTHER)  # another patient
    access1 = access(4, "HPAYMT")
    renewed = attest(8, date(2029, 12, 31), "Boao Lecheng International Hospital")
    docs += [bundle(10, "settlement", 3), bundle(11, "consent", 1, version=2)]
    access2 = access(12, "HPAYMT", "search")
    checkpoint = log.checkpoint()
    at(20)
    for i in range(5):  # the log grows past the case's checkpoint
        append("record", "other-hospital", os.urandom(32), b"%d" % i, OTHER)
    witness = Cosigner("witness.example/w1", Ed25519PrivateKey.generate())
    latest = log.checkpoint()
    text = latest[: latest.index("\n\n") + 1]
    latest += witness.cosign(text, 1_780_000_000).line()
    case = Case(
        checkpoint=checkpoint,
        latest=latest,
        subjects=[PATIENT],
        documents=docs,
        attestations=[first, renewed],
        disclosures=[access1, access2],
        period_from=date(2026, 3, 1),
        period_to=date(2026, 3, 31),
    )
    return World(log, signer, witness, case, tmp)


def policy_text(world: World, *, with_witness: bool = True) -> bytes:
    lines = [f"log {world.signer.verifier.vkey()}"]
    w = (
        world.witness
        if with_witness
        else Cosigner("witness.example/w2", Ed25519PrivateKey.generate())
    )
    lines += [f"witness W {w.verifier.vkey()}", "quorum W"]
    return ("\n".join(lines) + "\n").encode()
