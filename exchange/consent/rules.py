"""Consent evaluation: may this insurer see this patient's data, for this purpose, now?

Pure functions over the patient's FHIR R4 Consent resources (as parsed JSON) and one request.
Nothing here reads a database or a clock: the caller passes `now`, so a withdrawal or a newer
consent takes effect on the very next request it evaluates.

Rules (FHIR R4 Consent, section 15.6.4 "Consent Rules" and Consent.provision):

- Which Consents exist: those of the *latest version* of each consent Bundle. The caller passes
  exactly those (:func:`exchange.settlement.consents_of`); a Consent that a newer version of
  its Bundle no longer carries no longer exists, whatever its status or dateTime said. Within
  them, the Consents are grouped by `id` and the last submitted of each id counts (a Consent
  without an id is its own). `entered-in-error`, `draft` and `proposed` consents count for
  nothing.
- The newest consent by `dateTime` among the remaining wins (a tie goes to the later
  submission). Every Consent needs a `dateTime` (intake refuses one without, 422 at
  `Consent.dateTime`): one stored without it before that rule cannot be ordered, so nothing is
  permitted until the hospital sends it again with its dateTime. If the winner is not
  `active`, nothing is permitted: withdrawing the newest consent does not revive an older.
- Its root provision is evaluated against the request: a provision applies when every criterion
  it states matches (period contains now; an actor is this insurer's Organization; a purpose
  covers the request's purpose; a class names the resource type; dataPeriod contains the
  resource's date). A nested provision is an exception to its parent: when it applies, its
  decision (itself subject to its own exceptions) replaces the parent's. If applying exceptions
  disagree, deny wins.
- The result is permit only when that evaluation says permit; anything else denies. A root
  deny provision that does not apply to a request (opt-out scoped elsewhere) still denies here,
  because PIPL article 23 requires a separate consent for each recipient.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
RESOURCE_TYPES = "http://hl7.org/fhir/resource-types"

# v3-ActReason HPAYMT ("healthcare payment") and its specializations used by payers: a consent
# naming HPAYMT covers a request for any of them; one naming a specialization covers only that.
PAYMENT_PURPOSES: Mapping[str, frozenset[str]] = {
    "HPAYMT": frozenset(
        {"HPAYMT", "CLMATTCH", "COVAUTH", "COVERAGE", "ELIGDTRM", "ELIGVER", "ELIGRSP"}
    ),
    "CLMATTCH": frozenset({"CLMATTCH"}),
    "COVAUTH": frozenset({"COVAUTH"}),
    "COVERAGE": frozenset({"COVERAGE", "ELIGDTRM", "ELIGVER", "ELIGRSP"}),
    "ELIGDTRM": frozenset({"ELIGDTRM"}),
    "ELIGVER": frozenset({"ELIGVER"}),
    "ELIGRSP": frozenset({"ELIGRSP"}),
}
INSURER_PURPOSES = frozenset(PAYMENT_PURPOSES)
# v3-ActReason HRESCH ("healthcare research") and its CLINTRCH ("clinical trial research"): what
# a regulator evaluating real-world data of a product asks for (exchange/regulator.py).
RESEARCH_PURPOSES: Mapping[str, frozenset[str]] = {
    "HRESCH": frozenset({"HRESCH", "CLINTRCH"}),
    "CLINTRCH": frozenset({"CLINTRCH"}),
}
REGULATOR_PURPOSES = frozenset(RESEARCH_PURPOSES)
# v3-ActReason HLEGAL ("legal"): what a mediation committee or an arbitrator named in the
# patient's consent asks a case package for (exchange/disputes).
LEGAL_PURPOSES: Mapping[str, frozenset[str]] = {"HLEGAL": frozenset({"HLEGAL"})}
MEDIATOR_PURPOSES = frozenset(LEGAL_PURPOSES)
# v3-ActReason TREAT ("treatment") and its specializations: what a delivery to the patient's
# home hospital is for (exchange.outbox). ETREAT covers its own BTG and ERTREAT.
TREATMENT_PURPOSES: Mapping[str, frozenset[str]] = {
    "TREAT": frozenset({"TREAT", "CLINTRL", "COC", "ETREAT", "BTG", "ERTREAT", "POPHLTH"}),
    "CLINTRL": frozenset({"CLINTRL"}),
    "COC": frozenset({"COC"}),
    "ETREAT": frozenset({"ETREAT", "BTG", "ERTREAT"}),
    "BTG": frozenset({"BTG"}),
    "ERTREAT": frozenset({"ERTREAT"}),
    "POPHLTH": frozenset({"POPHLTH"}),
}
_COVERS: Mapping[str, frozenset[str]] = {
    **PAYMENT_PURPOSES,
    **RESEARCH_PURPOSES,
    **LEGAL_PURPOSES,
    **TREATMENT_PURPOSES,
}


@dataclass(frozen=True)
class Purposes:
    """The purposes of use one kind of recipient may ask under, and their name in refusals.
    A consent stating a purpose covers a request for it or for one it covers (_COVERS): a
    consent stating ETREAT alone does not cover TREAT."""

    name: str
    codes: frozenset[str]


PAYMENT = Purposes("payment", INSURER_PURPOSES)
RESEARCH = Purposes("research", REGULATOR_PURPOSES)
LEGAL = Purposes("legal", MEDIATOR_PURPOSES)
TREATMENT = Purposes("treatment", frozenset(TREATMENT_PURPOSES))

_IGNORED_STATUSES = frozenset({"entered-in-error", "draft", "proposed"})


class ConsentError(ValueError):
    """A Consent resource cannot be evaluated (its shape is not R4's)."""


@dataclass(frozen=True)
class Request:
    """One insurer's request for one resource type of one patient."""

    org: str  # the insurer's organisation id (Organization/{org})
    purpose: str  # a v3-ActReason code
    resource_type: str
    now: datetime
    data_date: date | None = None  # the resource's clinical date, for dataPeriod


@dataclass(frozen=True)
class Decision:
    permit: bool
    reason: str  # why, for the AuditEvent and the OperationOutcome (no PHI)
    consent_id: str | None = None


def _instant(text: str) -> datetime:
    """A FHIR dateTime as an aware instant; a date alone is its first moment in UTC."""
    if len(text) == 4:
        text += "-01-01"
    elif len(text) == 7:
        text += "-01"
    if len(text) == 10:
        return datetime.fromisoformat(text).replace(tzinfo=UTC)
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def period_contains(period: Mapping[str, Any] | None, moment: datetime) -> bool:
    """FHIR Period semantics: an absent bound is open; both bounds are inclusive."""
    if not period:
        return True
    start, end = period.get("start"), period.get("end")
    if start is not None and moment < _instant(start):
        return False
    if end is not None and moment > _instant(end):
        return False
    return True


def actor_matches(actors: Sequence[Mapping[str, Any]], org: str) -> bool:
    """Does any actor name this Organization, by reference or by identifier value?"""
    for actor in actors:
        ref = actor.get("reference") or {}
        if ref.get("reference") == f"Organization/{org}":
            return True
        if (ref.get("identifier") or {}).get("value") == org:
            return True
    return False


def purpose_matches(purposes: Sequence[Mapping[str, Any]], requested: str) -> bool:
    """Does a stated purpose cover the requested one (HPAYMT covers its specializations)?"""
    for coding in purposes:
        if coding.get("system", ACT_REASON) != ACT_REASON:
            continue
        code = coding.get("code")
        if code == requested or requested in _COVERS.get(str(code), frozenset()):
            return True
    return False


def class_matches(classes: Sequence[Mapping[str, Any]], resource_type: str) -> bool:
    return any(c.get("code") == resource_type for c in classes)


def provision_applies(provision: Mapping[str, Any], req: Request) -> bool:
    """Does every criterion this provision states hold for the request?"""
    if not period_contains(provision.get("period"), req.now):
        return False
    if "actor" in provision and not actor_matches(provision["actor"], req.org):
        return False
    if "purpose" in provision and not purpose_matches(provision["purpose"], req.purpose):
        return False
    if "class" in provision and not class_matches(provision["class"], req.resource_type):
        return False
    if "dataPeriod" in provision:
        if req.data_date is None:
            return False  # a resource without a date cannot be shown to fall inside
        moment = datetime(req.data_date.year, req.data_date.month, req.data_date.day, tzinfo=UTC)
        if not period_contains(provision["dataPeriod"], moment):
            return False
    return True


def provision_decision(provision: Mapping[str, Any], req: Request) -> str | None:
    """`permit`, `deny`, or None when the provision does not apply (nested = exceptions)."""
    if not provision_applies(provision, req):
        return None
    own = provision.get("type")
    nested = [provision_decision(p, req) for p in provision.get("provision", [])]
    applied = [d for d in nested if d is not None]
    if applied:
        return "deny" if "deny" in applied else "permit"
    if own not in ("permit", "deny"):
        # R4: a provision without a type only groups its exceptions; it decides nothing.
        return None
    return str(own)


class UndatedConsent(ConsentError):
    """A counted Consent has no `dateTime`, so which consent is newest cannot be told."""

    def __init__(self, consent_id: str | None) -> None:
        super().__init__(
            f"consent {consent_id or '(without id)'} has no dateTime, so which consent is the "
            "newest cannot be told: the hospital must send it again with Consent.dateTime"
        )
        self.consent_id = consent_id


def current_consents(consents: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The last submitted version of each Consent id, in submission order of those versions
    (`consents`: the Consents of the latest version of each Bundle, in submission order)."""
    latest: dict[str, tuple[int, Mapping[str, Any]]] = {}
    for order, consent in enumerate(consents):
        if consent.get("resourceType") != "Consent":
            raise ConsentError(f"expected a Consent, got {consent.get('resourceType')!r}")
        key = str(consent.get("id") or f"#{order}")
        latest[key] = (order, consent)
    return [c for _, c in sorted(latest.values(), key=lambda t: t[0])]


def newest_consent(consents: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The consent that decides: the newest by dateTime, a tie going to the later submission.
    Raises :class:`UndatedConsent` when a counted Consent has no dateTime."""
    counted = [c for c in current_consents(consents) if c.get("status") not in _IGNORED_STATUSES]
    if not counted:
        return None
    for consent in counted:
        if not consent.get("dateTime"):
            cid = consent.get("id")
            raise UndatedConsent(cid if isinstance(cid, str) else None)
    ranked = sorted(enumerate(counted), key=lambda t: (_instant(t[1]["dateTime"]), t[0]))
    return ranked[-1][1]


def evaluate(
    consents: Iterable[Mapping[str, Any]], req: Request, purposes: Purposes = PAYMENT
) -> Decision:
    """The decision for one request, given the patient's current Consents (those of the latest
    version of each Bundle) in submission order: a payer's (PAYMENT), a regulator's
    (RESEARCH), a mediator's (LEGAL) or a treating organisation's, a delivery to the
    patient's home hospital (TREATMENT)."""
    if req.purpose not in purposes.codes:
        return Decision(False, f"purpose of use {req.purpose!r} is not a {purposes.name} purpose")
    try:
        consent = newest_consent(consents)
    except UndatedConsent as e:
        return Decision(False, str(e), e.consent_id)
    if consent is None:
        return Decision(False, "the patient has no consent on record")
    cid = consent.get("id")
    if consent.get("status") != "active":
        return Decision(False, f"the newest consent is {consent.get('status')}", cid)
    root = consent.get("provision")
    if not root:
        return Decision(False, "the newest consent has no provision", cid)
    decision = provision_decision(root, req)
    if decision == "permit":
        return Decision(True, "permitted by consent", cid)
    if decision == "deny":
        return Decision(False, "denied by consent", cid)
    return Decision(False, "the consent does not cover this recipient, purpose or data", cid)
