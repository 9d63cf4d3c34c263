"""The case an AdverseEvent of an RWD Bundle reports, read into what the ICSR needs.

Personal data is minimised for a transfer abroad: the patient's and reporter's names are not
read at all; sex and age at onset are, because causality assessment needs them. The batch's
receiver is the suspect product's marketing-authorisation holder and its sender the hospital,
both read from the Bundle's Organizations.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from adapters.base import AdaptError
from adapters.e2b.drug import SNOMED, Drug, suspects
from adapters.trace_fhir import (
    MEDDRA_SYSTEM,
    BundleView,
    Located,
    codes,
    foreign_authorisation,
    translation,
)

SERIOUSNESS_SYSTEM = "http://terminology.hl7.org/CodeSystem/adverse-event-seriousness"
OUTCOME_SYSTEM = "http://terminology.hl7.org/CodeSystem/adverse-event-outcome"

# E.i.7 outcome (ICH ...1.1.11) from FHIR R4 adverse-event-outcome.
OUTCOME = {
    "resolved": "1",
    "recovering": "2",
    "ongoing": "3",
    "resolvedWithSequelae": "4",
    "fatal": "5",
    "unknown": "0",
}
# ISO 639-2 (E.i.1.1b is alpha-3). Chinese is the terminology code ``zho``.
_LANG = {"zh": "zho", "en": "eng", "ja": "jpn", "ko": "kor", "ru": "rus", "ar": "ara", "th": "tha"}
ID_SAFE = re.compile(r"[^A-Za-z0-9._]")


@dataclass(frozen=True)
class Case:
    """One AdverseEvent as the ICSR reports it; ``drugs`` are its suspects (G.k)."""

    path: str
    report_number: str
    native: str
    language: str
    english: str | None
    meddra: tuple[str, str | None] | None
    onset: str | None
    received: str | None
    criteria: frozenset[str]
    outcome: str
    country: str
    sex: str | None
    age: int | None
    qualification: str
    sender_org: str | None
    drugs: tuple[Drug, ...] = field(default=())


def read_cases(doc: Mapping[str, Any], where: str) -> list[Case]:
    """The cases of the AdverseEvents of ``doc``; ``where`` names the input in errors."""
    view = BundleView(doc)
    found = [_case(view, loc, doc) for loc in view.of_type("AdverseEvent")]
    if not found:
        raise AdaptError(f"{where}: no AdverseEvent to report")
    return found


def _case(view: BundleView, loc: Located, doc: Mapping[str, Any]) -> Case:
    ae = loc.resource
    event = e if isinstance(e := ae.get("event"), Mapping) else {}
    native = event.get("text") if isinstance(event.get("text"), str) else None
    if not native:
        raise AdaptError(f"{loc.path}.event.text: the reaction as reported (E.i.1.1a) is needed")
    language = _language(ae.get("language") or doc.get("language"), native)
    english = None
    if language != "eng":
        english = translation(event, "text", "en") or translation(event, "text", "en-GB")
        english = english or translation(event, "text", "en-US")
    meddra_codes = codes(event, MEDDRA_SYSTEM)
    meddra = None
    if meddra_codes:
        version = meddra_codes[0].get("version")
        meddra = (str(meddra_codes[0]["code"]), str(version) if version else None)
    seriousness = {str(c["code"]) for c in codes(ae.get("seriousness"), SERIOUSNESS_SYSTEM)}
    outcome_codes = codes(ae.get("outcome"), OUTCOME_SYSTEM)
    outcome = OUTCOME.get(str(outcome_codes[0]["code"]), "0") if outcome_codes else "0"
    if outcome == "5":
        seriousness.add("SeriousResultsInDeath")
    onset = ae.get("date") if isinstance(ae.get("date"), str) else None
    received = ae.get("recordedDate") if isinstance(ae.get("recordedDate"), str) else onset

    patient = view.resolve(ae.get("subject"), loc)
    sex, age = _patient(patient.resource if patient else {}, onset)
    reporter = view.resolve(ae.get("recorder"), loc)
    identifier = i if isinstance(i := ae.get("identifier"), Mapping) else {}
    number = identifier.get("value") or ae.get("id") or loc.path
    return Case(
        path=loc.path,
        report_number=ID_SAFE.sub("", str(number)) or "1",
        native=native,
        language=language,
        english=english,
        meddra=meddra,
        onset=onset,
        received=received,
        criteria=frozenset(seriousness),
        outcome=outcome,
        country=_country(view, loc),
        sex=sex,
        age=age,
        qualification=_qualification(reporter),
        sender_org=_sender_name(view),
        drugs=tuple(suspects(view, loc)),
    )


def _patient(patient: Mapping[str, Any], onset: str | None) -> tuple[str | None, int | None]:
    sex = {"male": "1", "female": "2"}.get(str(patient.get("gender")))
    birth = patient.get("birthDate")
    age = None
    day = re.compile(r"\d{4}-\d{2}-\d{2}")
    if isinstance(birth, str) and onset and day.fullmatch(birth) and day.fullmatch(onset[:10]):
        try:
            born, at = date.fromisoformat(birth), date.fromisoformat(onset[:10])
        except ValueError:
            return sex, None
        age = at.year - born.year - ((at.month, at.day) < (born.month, born.day))
    return sex, age


def _qualification(reporter: Located | None) -> str:
    """C.2.r.4: 1 physician, 2 pharmacist, 3 other health professional."""
    if reporter is None:
        return "3"
    if reporter.type == "PractitionerRole":
        role = reporter.resource.get("code")
        found = {str(c["code"]) for r in role or [] for c in codes(r, SNOMED)}
        if "46255001" in found:
            return "2"
        if "309343006" in found or "158965000" in found:
            return "1"
        return "3"
    return "1" if reporter.type == "Practitioner" else "3"


def _country(view: BundleView, loc: Located) -> str:
    """E.i.9: the Location's country when it is an ISO 3166 code, else CN (the pilot zone)."""
    where = view.resolve(loc.resource.get("location"), loc)
    address = where.resource.get("address") if where else None
    country = address.get("country") if isinstance(address, Mapping) else None
    return country if isinstance(country, str) and re.fullmatch(r"[A-Z]{2}", country) else "CN"


def _language(value: Any, text: str) -> str:
    if isinstance(value, str) and value:
        return _LANG.get(value.split("-")[0].lower(), value.split("-")[0].lower())
    # No language stated: CJK ideographs mean Chinese (the pilot zone's records), else English.
    return "zho" if re.search(r"[\u4e00-\u9fff]", text) else "eng"


def holder_ids(view: BundleView) -> set[str]:
    """The marketing-authorisation holders the Medications name (the batch receiver, N.1.4)."""
    out: set[str] = set()
    for loc in view.of_type("Medication"):
        fma = foreign_authorisation(loc)
        if fma and fma.holder:
            holder = view.resolve({"reference": fma.holder}, loc)
            if holder is not None:
                out.add(_org_id(holder.resource))
    return out


def _hospital(view: BundleView) -> list[Located]:
    holders = {
        id(h.resource)
        for loc in view.of_type("Medication", "Device")
        if (fma := foreign_authorisation(loc)) and fma.holder
        if (h := view.resolve({"reference": fma.holder}, loc)) is not None
    }
    managing = [
        org
        for place in view.of_type("Location")
        if (org := view.resolve(place.resource.get("managingOrganization"), place)) is not None
    ]
    if managing:
        return managing
    return [o for o in view.of_type("Organization") if id(o.resource) not in holders]


def sender_ids(view: BundleView) -> set[str]:
    """The hospital (the batch sender, N.1.3): who manages the Location, else the non-holders."""
    return {_org_id(org.resource) for org in _hospital(view)}


def _sender_name(view: BundleView) -> str | None:
    names = [o.resource.get("name") for o in _hospital(view)]
    return next((n for n in names if isinstance(n, str)), None)


def _org_id(org: Mapping[str, Any]) -> str:
    for ident in org.get("identifier") or []:
        if isinstance(ident, Mapping) and isinstance(ident.get("value"), str):
            return str(ident["value"])
    return str(org.get("name") or org.get("id") or "UNKNOWN")
