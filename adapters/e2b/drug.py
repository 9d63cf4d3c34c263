"""The suspect drug (E2B(R3) section G.k): read from the FHIR Medication and its use, written
as a substance administration.

The drug as it was obtained abroad (G.k.2.2, G.k.2.4) with its foreign authorisation number,
country and holder (G.k.3.1-3) and the batch (G.k.4.r.7); the pack's GS1 code and the pilot
zone's import approval go in G.k.11 so the holder can trace it.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass

from adapters.base import AdaptError
from adapters.e2b.elements import ICH, ISO3166, el, observation, ts_date
from adapters.rwd_identity import PackIdentity, product_identities
from adapters.trace_fhir import (
    USE_TYPES,
    BundleView,
    ForeignAuthorisation,
    Located,
    codes,
    foreign_authorisation,
    text_of,
    trace_code_values,
)
from adapters.tracecode import TraceCodeError, parse_trace_code

SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"

# G.k.4.r.10.1 route of administration (ICH E2B route list, ...1.1.14) from SNOMED CT.
_ROUTE = {"47625008": "042", "26643006": "048", "34206005": "058", "78421000": "030"}


@dataclass(frozen=True)
class Drug:
    """One suspect drug, as G.k writes it."""

    path: str
    name: str
    authorisation: ForeignAuthorisation | None
    holder_name: str | None
    identity: PackIdentity | None
    pack_code: str | None
    cn_code: str | None
    start: str | None
    dose: tuple[str, str] | None
    route: tuple[str | None, str | None]
    dosage_text: str | None


def suspects(view: BundleView, loc: Located) -> list[Drug]:
    """The suspect Medications of an AdverseEvent, each with its use when the Bundle has one."""
    drugs: list[Drug] = []
    suspects = loc.resource.get("suspectEntity")
    for suspect in suspects if isinstance(suspects, list) else []:
        instance = suspect.get("instance") if isinstance(suspect, Mapping) else None
        target = view.resolve(instance, loc)
        use: Located | None = None
        if target is not None and target.type in USE_TYPES:
            use = target
            ref = target.resource.get("medicationReference")
            target = view.resolve(ref, target) if isinstance(ref, Mapping) else None
        if target is None or target.type != "Medication":
            continue
        if use is None:
            use = _use_of(view, target)
        drugs.append(_drug(view, target, use))
    if not drugs:
        raise AdaptError(
            f"{loc.path}.suspectEntity: no suspect Medication in the Bundle (G.k needs one)"
        )
    return drugs


def _drug(view: BundleView, med: Located, use: Located | None) -> Drug:
    res = med.resource
    name = text_of(res.get("code"))
    if not name:
        raise AdaptError(f"{med.path}.code: the product name as reported (G.k.2.2) is needed")
    fma = foreign_authorisation(med)
    holder_name = None
    if fma and fma.holder:
        holder = view.resolve({"reference": fma.holder}, med)
        if holder is not None and isinstance(holder.resource.get("name"), str):
            holder_name = holder.resource["name"]
    identities = [i for i in product_identities(med) if i.gtin is not None]
    identity = identities[0] if identities else None
    pack_code = None
    cn_code = None
    for _, scan in trace_code_values(res):
        try:
            tc = parse_trace_code(scan)
        except TraceCodeError:
            continue
        if tc.kind == "gs1" and pack_code is None:
            pack_code = tc.hri()
        elif tc.kind == "cn20" and cn_code is None:
            cn_code = tc.cn_code
    start, dose, route, text = _dosage(use) if use is not None else (None, None, (None, None), None)
    return Drug(
        path=med.path,
        name=name,
        authorisation=fma,
        holder_name=holder_name,
        identity=identity,
        pack_code=pack_code,
        cn_code=cn_code,
        start=start,
        dose=dose,
        route=route,
        dosage_text=text,
    )


def _use_of(view: BundleView, med: Located) -> Located | None:
    for loc in view.of_type(*USE_TYPES):
        target = view.resolve(loc.resource.get("medicationReference"), loc)
        if target is not None and target.resource is med.resource:
            return loc
    return None


def _dosage(
    use: Located,
) -> tuple[str | None, tuple[str, str] | None, tuple[str | None, str | None], str | None]:
    res = use.resource
    start = res.get("effectiveDateTime") or res.get("whenHandedOver")
    period = res.get("effectivePeriod")
    if not start and isinstance(period, Mapping):
        start = period.get("start")
    dosage = res.get("dosage")
    if isinstance(dosage, list):
        dosage = dosage[0] if dosage else None
    dose = route = None
    text = None
    if isinstance(dosage, Mapping):
        text = dosage.get("text") if isinstance(dosage.get("text"), str) else None
        quantity = dosage.get("dose")
        if not isinstance(quantity, Mapping):
            rates = dosage.get("doseAndRate")
            first = rates[0] if isinstance(rates, list) and rates else {}
            quantity = first.get("doseQuantity") if isinstance(first, Mapping) else None
        if isinstance(quantity, Mapping) and quantity.get("value") is not None:
            unit = quantity.get("code") if quantity.get("system") == UCUM else None
            dose = (str(quantity["value"]), str(unit or quantity.get("unit") or "1"))
        concept = dosage.get("route")
        snomed = codes(concept, SNOMED)
        ich = _ROUTE.get(str(snomed[0]["code"])) if snomed else None
        route = (ich, text_of(concept))
    return (start if isinstance(start, str) else None), dose, route or (None, None), text


def write_drug(organizer: ET.Element, drug: Drug, drug_id: str) -> None:
    """G.k for one drug, a component of the organizer of the case's drugs."""
    admin = el(
        el(organizer, "component", typeCode="COMP"),
        "substanceAdministration",
        classCode="SBADM",
        moodCode="EVN",
    )
    el(admin, "id", root=drug_id)
    instance = el(el(admin, "consumable", typeCode="CSM"), "instanceOfKind", classCode="INST")
    kind = el(instance, "kindOfProduct", classCode="MMAT", determinerCode="KIND")
    el(kind, "name").text = drug.name  # G.k.2.2
    fma = drug.authorisation
    if fma is not None and (fma.number or fma.country or drug.holder_name):
        approval = el(
            el(el(kind, "asManufacturedProduct", classCode="MANU"), "subjectOf", typeCode="SBJ"),
            "approval",
            classCode="CNTRCT",
            moodCode="EVN",
        )
        if fma.number:
            el(approval, "id", extension=fma.number, root=f"{ICH}.3.4")  # G.k.3.1
        if drug.holder_name:
            holder = el(
                el(el(approval, "holder", typeCode="HLD"), "role", classCode="HLD"),
                "playingOrganization",
                classCode="ORG",
                determinerCode="INSTANCE",
            )
            el(holder, "name").text = drug.holder_name  # G.k.3.3
        if fma.country:
            territory = el(
                el(
                    el(approval, "author", typeCode="AUT"),
                    "territorialAuthority",
                    classCode="TERR",
                ),
                "territory",
                classCode="NAT",
                determinerCode="INSTANCE",
            )
            el(territory, "code", code=fma.country, codeSystem=ISO3166)  # G.k.3.2
    obtained = (fma.source_country or fma.country) if fma else None
    if obtained:
        event = el(
            el(instance, "subjectOf", typeCode="SBJ"),
            "productEvent",
            classCode="ACT",
            moodCode="EVN",
        )
        el(event, "code", code="1", codeSystem=f"{ICH}.1.18")
        org = el(
            el(el(event, "performer", typeCode="PRF"), "assignedEntity", classCode="ASSIGNED"),
            "representedOrganization",
            classCode="ORG",
            determinerCode="INSTANCE",
        )
        el(el(org, "addr"), "country").text = obtained  # G.k.2.4

    dosing = el(
        el(admin, "outboundRelationship2", typeCode="COMP"),
        "substanceAdministration",
        classCode="SBADM",
        moodCode="EVN",
    )
    if drug.dosage_text:
        el(dosing, "text").text = drug.dosage_text  # G.k.4.r.8
    if drug.start:
        period = el(dosing, "effectiveTime", {"xsi:type": "IVL_TS"})
        el(period, "low", value=ts_date(drug.start, keep_time=True) or "")  # G.k.4.r.4
    ich_route, route_text = drug.route
    if ich_route:
        el(dosing, "routeCode", code=ich_route, codeSystem=f"{ICH}.1.14")  # G.k.4.r.10.1
    elif route_text:
        el(el(dosing, "routeCode"), "originalText").text = route_text
    if drug.dose:
        el(dosing, "doseQuantity", value=drug.dose[0], unit=drug.dose[1])  # G.k.4.r.1a/b
    lot = drug.identity.lot if drug.identity else None
    product = el(
        el(el(dosing, "consumable", typeCode="CSM"), "instanceOfKind", classCode="INST"),
        "productInstanceInstance",
        classCode="MMAT",
        determinerCode="INSTANCE",
    )
    el(product, "id", nullFlavor="NI")
    if lot:
        el(product, "lotNumberText").text = lot  # G.k.4.r.7
    else:
        el(product, "lotNumberText", nullFlavor="UNK")

    info = _additional_info(drug)
    if info:
        note = observation(el(admin, "outboundRelationship2", typeCode="REFR"), "2")
        el(note, "value", {"xsi:type": "ST"}).text = info  # G.k.11


def _additional_info(drug: Drug) -> str:
    parts: list[str] = []
    if drug.pack_code:
        parts.append(f"GS1 pack code {drug.pack_code}")
    elif drug.identity and drug.identity.gtin:
        parts.append(f"GTIN {drug.identity.gtin}")
    if drug.identity and drug.identity.expiry:
        parts.append(f"expiry {drug.identity.expiry}")
    if drug.authorisation and drug.authorisation.import_approval:
        parts.append(
            "imported under special-import approval "
            f"{drug.authorisation.import_approval} (Hainan Boao Lecheng pilot zone, CN)"
        )
    if drug.cn_code:
        parts.append(f"Chinese drug trace code {drug.cn_code}")
    return "; ".join(parts)
