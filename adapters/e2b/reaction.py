"""The reaction (E2B(R3) section E.i), written from the case.

The reaction as the primary source reported it, verbatim in its language (E.i.1.1a/b), and
its English translation when the Bundle carries one (E.i.1.2); a MedDRA code (E.i.2.1a/b) only
when the Bundle gives one -- no MedDRA tables are shipped, so none is looked up; where it
happened (E.i.9), the seriousness criteria (E.i.3.2) and the outcome (E.i.7).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from adapters.e2b.case import Case
from adapters.e2b.elements import ICH, ISO3166, el, observation, ts_date

MEDDRA_OID = "2.16.840.1.113883.6.163"

# E.i.3.2a-f: the ICH seriousness criteria (code system ICH ...1.1.19) and the FHIR R4
# adverse-event-seriousness codes that state them.
_CRITERIA = (
    ("34", "SeriousResultsInDeath"),
    ("21", "SeriousIsLifeThreatening"),
    ("33", "SeriousResultsInHospitalization"),
    ("35", "SeriousResultsInDisability"),
    ("12", "SeriousIsBirthDefect"),
    ("26", "SeriousRequiresPreventImpairment"),
)


def write_reaction(role: ET.Element, case: Case, reaction_id: str) -> None:
    """E.i for the case's reaction, under the patient's role."""
    obs = observation(el(role, "subjectOf2", typeCode="SBJ"), "29")
    obs.insert(0, ET.Element("id", {"root": reaction_id}))
    if case.onset:
        period = el(obs, "effectiveTime", {"xsi:type": "IVL_TS"})
        el(period, "low", value=ts_date(case.onset, keep_time=True) or "")  # E.i.4
    value = el(obs, "value", {"xsi:type": "CE"})
    if case.meddra is not None:  # E.i.2.1a/b, only when the Bundle coded it
        value.set("code", case.meddra[0])
        value.set("codeSystem", MEDDRA_OID)
        if case.meddra[1]:
            value.set("codeSystemVersion", case.meddra[1])
    native = el(value, "originalText", language=case.language)
    native.text = case.native  # E.i.1.1a/b
    place = el(
        el(el(obs, "location", typeCode="LOC"), "locatedEntity", classCode="LOCE"),
        "locatedPlace",
        classCode="COUNTRY",
        determinerCode="INSTANCE",
    )
    el(place, "code", code=case.country, codeSystem=ISO3166)  # E.i.9
    if case.english:
        translated = observation(el(obs, "outboundRelationship2", typeCode="PERT"), "30")
        el(translated, "value", {"xsi:type": "ED"}).text = case.english  # E.i.1.2
    for code, fhir_code in _CRITERIA:  # E.i.3.2a-f
        criterion = observation(el(obs, "outboundRelationship2", typeCode="PERT"), code)
        if fhir_code in case.criteria:
            el(criterion, "value", {"xsi:type": "BL"}, value="true")
        else:
            el(criterion, "value", {"xsi:type": "BL"}, nullFlavor="NI")
    outcome = observation(el(obs, "outboundRelationship2", typeCode="PERT"), "27")
    el(outcome, "value", {"xsi:type": "CE"}, code=case.outcome, codeSystem=f"{ICH}.1.11")
