"""Pack identity in RWD content: the intake's checks and what the recall index stores.

RWD content reports the use of a special-import product in the Boao Lecheng pilot zone, in
whatever Bundle it travels (a Bundle filed as ``settlement`` because it also carries an
Invoice reports the same administration). Every pack must stay traceable two ways: to the
foreign manufacturer (GTIN, lot, serial and expiry, GS1 General Specifications 3.3.2 / 3.4.1 /
3.5.2 / 3.4.7, for recalls and adverse event reports) and to the Chinese regulators (the
authorisation abroad and the pilot zone's import approval, and a Chinese trace code where the
pack carries one). The FHIR R4 places for each are listed in :mod:`adapters.trace_fhir`.

:func:`carries_rwd` says, from the resource types present, whether a Bundle has such content;
:func:`checks_for` is what the intake runs on every Bundle and :func:`recall_identities` what
the recall index stores of every Bundle, both by that test and never by the Bundle's kind.
:func:`check_rwd_bundle` is pure and total: it never raises on a malformed document and
returns OperationOutcome-style issues (severity, code, diagnostics, FHIRPath expression),
errors for what breaks traceability and warnings for what weakens it. :func:`pack_identities`
reads the same fields with the same rules, leniently, so what the index stores is what the
intake checked.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from adapters.trace_fhir import (
    GS1_DI_ISSUERS,
    USE_TYPES,
    BundleView,
    ForeignAuthorisation,
    Located,
    foreign_authorisation,
    gtin_codings,
    normalise_approval,
    trace_code_values,
)
from adapters.tracecode import (
    TraceCode,
    TraceCodeError,
    is_cset82,
    normalise_gtin,
    parse_trace_code,
)

__all__ = [
    "RWD_TYPES",
    "Issue",
    "PackIdentity",
    "carries_rwd",
    "check_rwd_bundle",
    "checks_for",
    "pack_identities",
    "product_identities",
    "recall_identities",
]

_ISO_ALPHA2 = re.compile(r"[A-Z]{2}")

# The resources that report the use of a product or what followed it.
RWD_TYPES = (*USE_TYPES, "AdverseEvent")


@dataclass(frozen=True)
class Issue:
    """One OperationOutcome.issue: the same four fields the intake's issues have."""

    severity: str
    code: str
    diagnostics: str
    expression: str | None = None

    def as_fhir(self) -> dict[str, Any]:
        """This issue as OperationOutcome.issue JSON."""
        out: dict[str, Any] = {
            "severity": self.severity,
            "code": self.code,
            "diagnostics": self.diagnostics,
        }
        if self.expression is not None:
            out["expression"] = [self.expression]
        return out


@dataclass(frozen=True)
class PackIdentity:
    """One pack (or lot) a Bundle used: what a recall matches on.

    ``gtin`` is the 14-digit form (GenSpecs 3.3.2); ``lot`` and ``serial`` are kept exactly as
    labelled (GS1 character set 82 is case-sensitive); ``expiry`` is the FHIR date;
    ``cn_code`` is a Chinese 20-digit trace code; ``path`` is the FHIRPath of the resource;
    ``import_approval`` is the special-import approval number in the form it is compared in
    (:func:`adapters.trace_fhir.normalise_approval`).
    """

    gtin: str | None
    lot: str | None
    serial: str | None
    expiry: str | None
    path: str
    cn_code: str | None = None
    import_approval: str | None = None


def carries_rwd(doc: object) -> bool:
    """Whether a Bundle reports the use of a product, whatever kind it is filed under.

    True when its entries (or their contained resources) include a MedicationAdministration,
    MedicationStatement, MedicationDispense or AdverseEvent, or a Medication or Device with
    the foreign-marketing-authorisation extension (a special-import product named anywhere
    must be traceable). A Bundle that also carries a Consent, an Invoice or a Claim is no less
    a report of use.
    """
    if not isinstance(doc, Mapping):
        return False
    view = BundleView(doc)
    if any(True for _ in view.of_type(*RWD_TYPES)):
        return True
    return any(
        foreign_authorisation(loc) is not None for loc in view.of_type("Medication", "Device")
    )


def checks_for(doc: object) -> list[Issue]:
    """The traceability issues of a Bundle, decided by its content; what the intake calls.

    :func:`check_rwd_bundle` when :func:`carries_rwd`, else nothing: the checks follow the
    resource types present, never the kind the Bundle is filed under. Errors refuse (422).
    """
    return check_rwd_bundle(doc) if carries_rwd(doc) else []


def recall_identities(doc: object) -> list[PackIdentity]:
    """What the recall index stores for a Bundle of any kind: the packs of RWD content.

    :func:`pack_identities` when :func:`carries_rwd`, else none, so the index holds the packs
    of every Bundle the intake checked as RWD content and of no other.
    """
    return pack_identities(doc) if carries_rwd(doc) else []


def check_rwd_bundle(doc: object) -> list[Issue]:
    """Check the pack identities of an RWD Bundle (any parsed JSON); [] means nothing to report."""
    if not isinstance(doc, Mapping):
        return [Issue("error", "structure", "not a JSON object", None)]
    view = BundleView(doc)
    issues: list[Issue] = []
    products = _used_products(view, issues)
    for loc in view.of_type("Medication", "Device"):
        special = foreign_authorisation(loc) is not None
        if id(loc.resource) in products or special or loc.resource.get("udiCarrier"):
            _read_product(loc, issues)
        if id(loc.resource) in products and not special:
            issues.append(
                Issue(
                    "information",
                    "informational",
                    f"{loc.type} {loc.resource.get('id', '')} carries no foreign-marketing-"
                    "authorisation extension: treated as a product authorised in China, its "
                    "traceability to a foreign manufacturer is not checked",
                    loc.path,
                )
            )
    return issues


def pack_identities(doc: object) -> list[PackIdentity]:
    """The packs a Bundle names (Medications and Devices with a GTIN or a Chinese code).

    Every Medication or Device resource counts, used or not: a pack that appears in an RWD
    Bundle is one a recall must find. Repeats are dropped, the first path kept.
    """
    if not isinstance(doc, Mapping):
        return []
    out: list[PackIdentity] = []
    seen: set[tuple[str | None, ...]] = set()
    for loc in BundleView(doc).of_type("Medication", "Device"):
        for identity in _read_product(loc, None):
            key = (
                identity.gtin,
                identity.lot,
                identity.serial,
                identity.cn_code,
                identity.import_approval,
            )
            if key not in seen:
                seen.add(key)
                out.append(identity)
    return out


def product_identities(loc: Located) -> list[PackIdentity]:
    """The pack identities of one Medication or Device resource (no checks)."""
    if loc.type not in ("Medication", "Device"):
        return []
    return _read_product(loc, None)


# -- which products a Bundle uses -------------------------------------------------------------


def _used_products(view: BundleView, issues: list[Issue]) -> set[int]:
    """ids of the Medication/Device resources that uses and adverse events point at."""
    used: set[int] = set()
    for loc in view.of_type(*USE_TYPES):
        ref = loc.resource.get("medicationReference")
        if isinstance(ref, Mapping):
            target = view.resolve(ref, loc)
            if target is None or target.type != "Medication":
                issues.append(
                    Issue(
                        "warning",
                        "business-rule",
                        f"medicationReference {ref.get('reference')!r} is not a Medication in "
                        "this Bundle: the pack cannot be checked",
                        f"{loc.path}.medicationReference",
                    )
                )
            else:
                used.add(id(target.resource))
        elif loc.resource.get("medicationCodeableConcept") is not None:
            issues.append(
                Issue(
                    "warning",
                    "business-rule",
                    "the product is a CodeableConcept: no batch, so no pack to trace; refer "
                    "to a Medication with code, batch and trace code",
                    f"{loc.path}.medicationCodeableConcept",
                )
            )
    for loc in view.of_type("AdverseEvent"):
        suspects = loc.resource.get("suspectEntity")
        if not isinstance(suspects, list) or not suspects:
            issues.append(
                Issue(
                    "warning",
                    "required",
                    "an adverse event without suspectEntity names no product to report to its "
                    "marketing-authorisation holder",
                    f"{loc.path}.suspectEntity",
                )
            )
            continue
        for k, suspect in enumerate(suspects):
            instance = suspect.get("instance") if isinstance(suspect, Mapping) else None
            target = view.resolve(instance, loc)
            if target is not None and target.type in USE_TYPES:
                ref = target.resource.get("medicationReference")
                target = view.resolve(ref, target) if isinstance(ref, Mapping) else None
            if target is None or target.type not in ("Medication", "Device"):
                issues.append(
                    Issue(
                        "warning",
                        "business-rule",
                        "suspectEntity.instance does not lead to a Medication or Device in this "
                        "Bundle: the suspect pack cannot be checked",
                        f"{loc.path}.suspectEntity[{k}].instance",
                    )
                )
            else:
                used.add(id(target.resource))
    return used


# -- one product ------------------------------------------------------------------------------


def _read_product(loc: Located, issues: list[Issue] | None) -> list[PackIdentity]:
    if loc.type == "Medication":
        return _read_medication(loc, issues)
    return _read_device(loc, issues)


def _report(issues: list[Issue] | None, severity: str, code: str, text: str, path: str) -> None:
    if issues is not None:
        issues.append(Issue(severity, code, text, path))


def _read_medication(loc: Located, issues: list[Issue] | None) -> list[PackIdentity]:
    res, path = loc.resource, loc.path
    gtin: str | None = None
    for rel, code in gtin_codings(res):
        try:
            value = normalise_gtin(code)
        except ValueError as e:
            _report(issues, "error", "value", f"GTIN coding: {e}", f"{path}.{rel}")
            continue
        if gtin is None:
            gtin = value
        elif value != gtin:
            _report(
                issues,
                "error",
                "business-rule",
                f"two GTINs ({gtin}, {value}) for one pack: a Medication is one trade item",
                f"{path}.{rel}",
            )
    batch = b if isinstance(b := res.get("batch"), Mapping) else {}
    lot = _str(batch.get("lotNumber"))
    expiry = _str(batch.get("expirationDate"))

    codes = _trace_codes(loc, issues)
    serials: list[str | None] = []
    cn_code: str | None = None
    for rel, tc in codes:
        where = f"{path}.{rel}"
        if tc.kind == "cn20":
            cn_code = cn_code or tc.cn_code
            continue
        if tc.kind != "gs1":
            continue
        if tc.gtin is not None:
            if gtin is None:
                gtin = tc.gtin
                if not any(True for _ in gtin_codings(res)):
                    _report(
                        issues,
                        "error",
                        "required",
                        f"the trace code gives GTIN {tc.gtin}; code.coding must carry it "
                        "(system https://www.gs1.org/gtin)",
                        f"{path}.code",
                    )
            elif tc.gtin != gtin:
                _report(
                    issues,
                    "error",
                    "business-rule",
                    f"the trace code's GTIN {tc.gtin} differs from code.coding GTIN {gtin}",
                    where,
                )
        _agree(issues, "lot", tc.lot, lot, where, f"{path}.batch.lotNumber", "(10)")
        _agree_expiry(issues, tc, expiry, where, f"{path}.batch.expirationDate")
        lot = lot or tc.lot
        expiry = expiry or tc.expiry_fhir()
        serials.append(tc.serial)

    fma = foreign_authorisation(loc)
    if fma is not None and issues is not None:
        _check_authorisation(fma, issues)
        if gtin is None:
            issues.append(
                Issue(
                    "error",
                    "required",
                    "a special-import product needs its GTIN (code.coding with system "
                    "https://www.gs1.org/gtin) to stay traceable to its manufacturer",
                    f"{path}.code",
                )
            )
        _check_batch(issues, lot, expiry, f"{path}.batch")

    approval = _approval(fma)
    if gtin is None and cn_code is None and approval is None:
        return []
    serials = [s for s in serials if s is not None] or [None]
    return [
        PackIdentity(gtin, lot, s, expiry, path, cn_code, approval) for s in dict.fromkeys(serials)
    ]


def _read_device(loc: Located, issues: list[Issue] | None) -> list[PackIdentity]:
    res, path = loc.resource, loc.path
    lot = _str(res.get("lotNumber"))
    serial = _str(res.get("serialNumber"))
    expiry = _str(res.get("expirationDate"))
    gtin: str | None = None
    cn_code: str | None = None
    carriers = res.get("udiCarrier")
    for k, carrier in enumerate(carriers if isinstance(carriers, list) else []):
        if not isinstance(carrier, Mapping):
            continue
        where = f"{path}.udiCarrier[{k}]"
        issuer = carrier.get("issuer")
        di = _str(carrier.get("deviceIdentifier"))
        if issuer not in GS1_DI_ISSUERS:
            continue
        if di is not None:
            try:
                di = normalise_gtin(di)
            except ValueError as e:
                _report(
                    issues,
                    "error",
                    "value",
                    f"GS1 device identifier: {e}",
                    f"{where}.deviceIdentifier",
                )
                di = None
        gtin = gtin or di
        hrf = _str(carrier.get("carrierHRF"))
        aidc = _str(carrier.get("carrierAIDC"))
        parsed_hrf = _parse(hrf, issues, f"{where}.carrierHRF") if hrf else None
        parsed_aidc = _parse_aidc(aidc, issues, f"{where}.carrierAIDC") if aidc else None
        if parsed_hrf and parsed_aidc and set(parsed_hrf.elements) != set(parsed_aidc.elements):
            _report(
                issues,
                "error",
                "business-rule",
                f"carrierAIDC reads {parsed_aidc.hri()} but carrierHRF is {parsed_hrf.hri()}",
                f"{where}.carrierAIDC",
            )
        for tc, rel in ((parsed_hrf, "carrierHRF"), (parsed_aidc, "carrierAIDC")):
            if tc is None or tc.kind != "gs1":
                continue
            at = f"{where}.{rel}"
            if tc.gtin is not None and di is not None and tc.gtin != di:
                _report(
                    issues,
                    "error",
                    "business-rule",
                    f"the UDI carrier's GTIN {tc.gtin} differs from deviceIdentifier {di}",
                    at,
                )
            gtin = gtin or tc.gtin
            _agree(issues, "lot", tc.lot, lot, at, f"{path}.lotNumber", "(10)")
            _agree(issues, "serial", tc.serial, serial, at, f"{path}.serialNumber", "(21)")
            _agree_expiry(issues, tc, expiry, at, f"{path}.expirationDate")
            lot, serial = lot or tc.lot, serial or tc.serial
            expiry = expiry or tc.expiry_fhir()
    for _, tc in _trace_codes(loc, issues):
        if tc.kind == "cn20":
            cn_code = cn_code or tc.cn_code

    fma = foreign_authorisation(loc)
    if fma is not None and issues is not None:
        _check_authorisation(fma, issues)
        if gtin is None:
            issues.append(
                Issue(
                    "error",
                    "required",
                    "a special-import device needs a GS1 UDI carrier (issuer "
                    "http://hl7.org/fhir/NamingSystem/gs1-di) to stay traceable to its "
                    "manufacturer",
                    f"{path}.udiCarrier",
                )
            )
        if lot is None and serial is None:
            issues.append(
                Issue(
                    "error",
                    "required",
                    "a special-import device needs its lot or serial number (UDI production "
                    "identifier) for a recall to find it",
                    f"{path}.lotNumber",
                )
            )
    approval = _approval(fma)
    if gtin is None and cn_code is None and approval is None:
        return []
    return [PackIdentity(gtin, lot, serial, expiry, path, cn_code, approval)]


# -- shared checks ----------------------------------------------------------------------------


def _trace_codes(loc: Located, issues: list[Issue] | None) -> list[tuple[str, TraceCode]]:
    out: list[tuple[str, TraceCode]] = []
    for rel, scan in trace_code_values(loc.resource):
        tc = _parse(scan, issues, f"{loc.path}.{rel}")
        if tc is not None:
            out.append((rel, tc))
    return out


def _parse(scan: str, issues: list[Issue] | None, where: str) -> TraceCode | None:
    try:
        tc = parse_trace_code(scan)
    except TraceCodeError as e:
        _report(issues, "error", "value", str(e), where)
        return None
    for note in tc.notes:
        _report(issues, "warning", "value", note, where)
    if tc.kind == "other":
        _report(
            issues,
            "warning",
            "value",
            f"{scan!r} is neither a GS1 code nor a Chinese 20-digit trace code: a recall "
            "cannot match it",
            where,
        )
    return tc


def _parse_aidc(aidc: str, issues: list[Issue] | None, where: str) -> TraceCode | None:
    """carrierAIDC is base64 of the symbol's data (FHIR R4 Device.udiCarrier.carrierAIDC)."""
    try:
        data = base64.b64decode(aidc, validate=True).decode("latin-1")
    except (binascii.Error, ValueError):
        _report(issues, "error", "value", "carrierAIDC is not base64", where)
        return None
    return _parse(data, issues, where)


def _agree(
    issues: list[Issue] | None,
    what: str,
    coded: str | None,
    stated: str | None,
    code_path: str,
    field_path: str,
    ai: str,
) -> None:
    if coded is None:
        return
    if stated is None:
        _report(
            issues,
            "error",
            "required",
            f"the trace code gives {what} {ai}{coded}; the element must carry it",
            field_path,
        )
    elif stated != coded:
        _report(
            issues,
            "error",
            "business-rule",
            f"{what} {stated!r} differs from the trace code's {ai}{coded}: one of them names "
            "another pack",
            code_path,
        )


def _agree_expiry(
    issues: list[Issue] | None, tc: TraceCode, stated: str | None, code_path: str, field_path: str
) -> None:
    if tc.expiry is None:
        return
    if stated is None:
        _report(
            issues,
            "error",
            "required",
            f"the trace code gives expiry (17) {tc.expiry_fhir()}; the element must carry it",
            field_path,
        )
        return
    if tc.expiry_day_given:
        same = stated[:10] == tc.expiry.isoformat()
    else:
        # Day 00 on the label: the month is what is known; its last day is what it means.
        same = stated[:7] == tc.expiry.isoformat()[:7] and (
            len(stated) == 7 or stated[:10] == tc.expiry.isoformat()
        )
    if not same:
        _report(
            issues,
            "error",
            "business-rule",
            f"expiry {stated!r} differs from the trace code's (17) {tc.expiry_fhir()}",
            code_path,
        )


def _approval(fma: ForeignAuthorisation | None) -> str | None:
    if fma is None or fma.import_approval is None:
        return None
    try:
        return normalise_approval(fma.import_approval)
    except ValueError:
        return None


def _check_authorisation(fma: ForeignAuthorisation, issues: list[Issue]) -> None:
    if fma.import_approval is None:
        issues.append(
            Issue(
                "error",
                "required",
                "a product authorised abroad is used in the pilot zone only under a special-"
                "import approval: its number (importApproval) is required; it is what the "
                "regulator traces the use by",
                f"{fma.path}.extension('importApproval')",
            )
        )
    if fma.number is None:
        issues.append(
            Issue(
                "error",
                "required",
                "the foreign marketing authorisation needs its number (E2B(R3) G.k.3.1)",
                f"{fma.path}.extension('number')",
            )
        )
    if fma.country is None:
        issues.append(
            Issue(
                "error",
                "required",
                "the foreign marketing authorisation needs its country as ISO 3166-1 alpha-2 "
                "(system urn:iso:std:iso:3166; E2B(R3) G.k.3.2)",
                f"{fma.path}.extension('country')",
            )
        )
    elif not _ISO_ALPHA2.fullmatch(fma.country):
        issues.append(
            Issue(
                "error",
                "code-invalid",
                f"country {fma.country!r} is not an ISO 3166-1 alpha-2 code",
                f"{fma.path}.extension('country')",
            )
        )
    elif fma.country == "CN":
        issues.append(
            Issue(
                "warning",
                "business-rule",
                "authorised in China: a special import is a product authorised abroad",
                f"{fma.path}.extension('country')",
            )
        )
    if fma.holder is None:
        issues.append(
            Issue(
                "information",
                "informational",
                "no marketing-authorisation holder named: adverse event reports have no "
                "receiver to address",
                f"{fma.path}.extension('holder')",
            )
        )


def _check_batch(issues: list[Issue], lot: str | None, expiry: str | None, path: str) -> None:
    if lot is None:
        issues.append(
            Issue(
                "error",
                "required",
                "a special-import pack needs its batch/lot number (GS1 AI 10): a recall names lots",
                f"{path}.lotNumber",
            )
        )
    elif not is_cset82(lot):
        issues.append(
            Issue(
                "warning",
                "value",
                f"lot {lot!r} is not 1-20 characters of GS1 character set 82: it cannot be "
                "written as (10) in a GS1 Digital Link or EPCIS event",
                f"{path}.lotNumber",
            )
        )
    if expiry is None:
        issues.append(
            Issue(
                "warning",
                "required",
                "no expiry date (GS1 AI 17) for a special-import pack",
                f"{path}.expirationDate",
            )
        )


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
