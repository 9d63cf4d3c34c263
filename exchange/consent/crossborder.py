"""The cross-border transfer gate: may this patient's data leave China for this recipient?

PIPL art. 38 allows personal information to be provided abroad only on a legal basis: a CAC
security assessment, a certification, a standard contract filed with the provincial CAC, or
(Provisions on Promoting and Regulating Cross-Border Data Flows, 2024, art. 5) what a contract
with the individual or an emergency protecting life and health makes necessary. Art. 39 adds
a separate consent naming the foreign recipient. The 2024 Provisions (art. 8) make a security
assessment mandatory once sensitive personal information of 10,000 or more individuals has been
provided abroad since 1 January of the current year.

:func:`decide` is the rule, pure; :class:`TransferLedger` counts distinct patients per year in
the database and applies the rule atomically, so concurrent disclosures cannot overshoot the
threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy import (
    Engine,
    func,
    insert,
    select,
    update,
)

from exchange.store.tables import recipients_table, transfers_table
from ledger import store

BasisKind = Literal[
    "standard-contract", "security-assessment", "certification", "emergency", "contract-necessity"
]
BASIS_KINDS: tuple[str, ...] = (
    "standard-contract",
    "security-assessment",
    "certification",
    "emergency",
    "contract-necessity",
)
# Bases that are a filing or approval and so carry its number.
NUMBERED_BASES = frozenset({"standard-contract", "security-assessment", "certification"})
DEFAULT_THRESHOLD = 10_000
CHINA = "CN"


@dataclass(frozen=True)
class LegalBasis:
    """The recorded basis for transfers to one recipient: its kind and filing/approval id."""

    kind: str
    reference: str | None = None


@dataclass(frozen=True)
class GateConfig:
    threshold: int = DEFAULT_THRESHOLD
    # With a security assessment on file for the exchange, the yearly count does not cap.
    security_assessment_id: str | None = None


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    counted: bool = False  # this transfer adds the patient to this year's count


def basis_problem(basis: LegalBasis | None) -> str | None:
    """What is wrong with a recorded legal basis, or None when it stands."""
    if basis is None:
        return (
            "no legal basis is recorded for transfers to this recipient: record the standard "
            "contract filing id, security assessment id or certification, or the emergency / "
            "contract-necessity ground"
        )
    if basis.kind not in BASIS_KINDS:
        return f"legal basis {basis.kind!r} is not one of {', '.join(BASIS_KINDS)}"
    if basis.kind in NUMBERED_BASES and not (basis.reference or "").strip():
        return f"a {basis.kind} basis needs its filing or approval number"
    return None


def decide(
    *,
    recipient_country: str,
    basis: LegalBasis | None,
    consent_names_recipient: bool,
    patient_counted_this_year: bool,
    distinct_patients_this_year: int,
    config: GateConfig,
) -> Decision:
    """The gate's rule for one disclosure of one patient's sensitive data."""
    if recipient_country.upper() == CHINA:
        return Decision(True, "the recipient is in China: not a cross-border transfer")
    problem = basis_problem(basis)
    if problem is not None:
        return Decision(False, problem)
    if not consent_names_recipient:
        return Decision(
            False,
            "the patient's separate consent to cross-border transfer (PIPL art. 39) does not "
            "name this recipient",
        )
    if patient_counted_this_year:
        return Decision(True, "allowed; the patient is already counted this year")
    assessed = config.security_assessment_id or (
        basis.reference if basis is not None and basis.kind == "security-assessment" else None
    )
    if assessed is None and distinct_patients_this_year >= config.threshold:
        return Decision(
            False,
            f"{distinct_patients_this_year} patients' sensitive data already left China this "
            f"year, the threshold ({config.threshold}) above which a CAC security assessment "
            "is required: configure the assessment id to go on",
        )
    return Decision(True, "allowed", counted=True)


@dataclass(frozen=True)
class Recipient:
    org: str
    country: str
    basis: LegalBasis | None


def set_recipient(engine: Engine, recipient: Recipient) -> None:
    """Record (or replace) where a recipient is and the legal basis of transfers to it."""
    if len(recipient.country) != 2 or not recipient.country.isalpha():
        raise ValueError(f"country {recipient.country!r} is not an ISO 3166-1 alpha-2 code")
    if recipient.basis is not None and (problem := basis_problem(recipient.basis)):
        raise ValueError(problem)
    values = {
        "country": recipient.country.upper(),
        "basis": recipient.basis.kind if recipient.basis else None,
        "reference": recipient.basis.reference if recipient.basis else None,
    }
    t = recipients_table
    with store.write_transaction(engine) as conn:
        if conn.execute(select(t.c.org).where(t.c.org == recipient.org)).first() is None:
            conn.execute(insert(t).values(org=recipient.org, **values))
        else:
            conn.execute(update(t).where(t.c.org == recipient.org).values(**values))


def recipient_of(engine: Engine, org: str) -> Recipient | None:
    """The recorded recipient, or None: an unrecorded recipient has no legal basis."""
    t = recipients_table
    with engine.connect() as conn:
        row = conn.execute(select(t.c.country, t.c.basis, t.c.reference).where(t.c.org == org))
        found = row.first()
    return None if found is None else recipient_of_row(org, *found)


def recipient_of_row(org: str, country: str, basis: str | None, reference: str | None) -> Recipient:
    """The recipient a row of the recipients table records."""
    return Recipient(org, country, None if basis is None else LegalBasis(basis, reference))


class TransferLedger:
    """The per-year set of patients whose data left China, and the gate applied to it."""

    def __init__(self, engine: Engine, config: GateConfig | None = None) -> None:
        self.engine = engine
        self.config = config or GateConfig()

    def distinct_patients(self, year: int) -> int:
        with self.engine.connect() as conn:
            q = select(func.count()).select_from(transfers_table)
            return int(conn.execute(q.where(transfers_table.c.year == year)).scalar_one())

    def admit(
        self,
        *,
        year: int,
        subject: bytes,
        recipient: str,
        recipient_country: str,
        basis: LegalBasis | None,
        consent_names_recipient: bool,
    ) -> Decision:
        """Decide one transfer and, when it adds a patient, count them, in one transaction."""
        t = transfers_table
        counted_now = select(t.c.subject).where(t.c.year == year, t.c.subject == subject)
        if recipient_country.upper() != CHINA:
            # A patient counted this year is never counted again, and the year's count does
            # not bear on them: decided without the write lock (most deliveries are these).
            with self.engine.connect() as conn:
                if conn.execute(counted_now).first() is not None:
                    return decide(
                        recipient_country=recipient_country, basis=basis,
                        consent_names_recipient=consent_names_recipient,
                        patient_counted_this_year=True, distinct_patients_this_year=0,
                        config=self.config,
                    )  # fmt: skip
        with store.write_transaction(self.engine) as conn:
            if conn.dialect.name == "postgresql":
                # One gate decision at a time per year: the count and the insert must agree.
                conn.execute(select(func.pg_advisory_xact_lock(38_000_000 + year)))
            counted = conn.execute(counted_now).first()
            total = conn.execute(
                select(func.count()).select_from(t).where(t.c.year == year)
            ).scalar_one()
            decision = decide(
                recipient_country=recipient_country,
                basis=basis,
                consent_names_recipient=consent_names_recipient,
                patient_counted_this_year=counted is not None,
                distinct_patients_this_year=int(total),
                config=self.config,
            )
            if decision.counted:
                conn.execute(
                    insert(t).values(year=year, subject=subject, first_recipient=recipient)
                )
        return decision
