"""HL7 v2.5.1 messages from FHIR R4 Bundles, built and validated with hl7apy (STRICT).

Four messages, for the systems hospitals abroad already run:

- ``ADT_A08`` - ADT^A08 "update patient information" in structure ADT_A01 (Chapter 3, §3.3.8):
  PID, PV1, AL1 per allergy, DG1 per diagnosis, PR1 per procedure.
- ``ORU_R01`` - unsolicited observation results (Chapter 7, §7.3.1): one OBR per
  DiagnosticReport or panel (or per single Observation), OBX with LOINC codes and UCUM units,
  NTE for notes.
- ``MDM_T02`` - original document notification and content (Chapter 9, §9.6.2): TXA and one OBX
  of type ED carrying, Base64-encoded, the PDF of a DocumentReference when the Bundles hold one,
  else the IPS of these Bundles (``adapters.ips``).
- ``RDS_O13`` - pharmacy dispense (Chapter 4A, §4A.3.9): ORC + RXD per MedicationDispense with
  lot (RXD-18), expiry (RXD-19) and manufacturer (RXD-20); the GS1 serial number (AI 21) goes
  in an OBX because RXD has no field for it.

Coded elements (CE) carry the source coding in the primary triplet and, in the alternate
triplet, a second source coding or a coding derived by ``adapters.terminology``: v2 has no flag
for "derived", so a derived code never takes the primary place. Code systems are named with
HL7 table 0396 identifiers; those outside the table get a ``99``-prefixed local name.

Output is deterministic: the clock (MSH-7, EVN-2) and the control id (MSH-10) are inputs, and
the same Bundles give the same bytes. Values are escaped (``adapters.hl7v2_text``); CR, LF, VT
and FS inside a value raise :class:`AdaptError` naming the element and the field.
"""

from __future__ import annotations

import base64
import copy
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message
from hl7apy.exceptions import HL7apyException, MaxLengthReached

from adapters import hl7v2_text as tx
from adapters.base import AdaptError, AdaptOptions
from adapters.ips import build_ips, content_id
from adapters.ips_index import (
    BundleIndex,
    Entry,
    codings,
    concept_text,
    first_of,
    international_display,
)
from adapters.ips_json import dumps, loads_bundle
from adapters.terminology import ConceptMapSet, default_concept_maps, enrich, is_derived

__all__ = ["MESSAGES", "adapt", "build_message"]

# message name -> (MSH-9.1 code, MSH-9.2 trigger, MSH-9.3 structure)
MESSAGES = {
    "ADT_A08": ("ADT", "A08", "ADT_A01"),
    "ORU_R01": ("ORU", "R01", "ORU_R01"),
    "MDM_T02": ("MDM", "T02", "MDM_T02"),
    "RDS_O13": ("RDS", "O13", "RDS_O13"),
}

# FHIR code system -> HL7 table 0396 coding system (or a "99" local name).
V2_SYSTEMS = {
    "http://loinc.org": "LN",
    "http://snomed.info/sct": "SCT",
    "http://hl7.org/fhir/sid/icd-10": "I10",
    "http://www.whocc.no/atc": "WC",
    "http://unitsofmeasure.org": "UCUM",
    "http://hl7.org/fhir/sid/cvx": "CVX",
    "http://hl7.org/fhir/sid/ndc": "NDC",
    "http://standardterms.edqm.eu": "99EDQM",
    "https://www.gs1.org/gtin": "99GTIN",
    "https://fhir.medledger.example/CodeSystem/gbt-14396-2016": "99GBT14396",
    "https://fhir.medledger.example/CodeSystem/nhsa-icd10-2.0": "99NHSAICD10",
    "https://fhir.medledger.example/CodeSystem/gbt-15657-2021": "99GBT15657",
    "http://terminology.hl7.org/CodeSystem/v2-0162": "HL70162",
}

# SNOMED CT routes -> HL7 table 0162 (route of administration).
ROUTES_0162 = {
    "26643006": ("PO", "Oral"),
    "47625008": ("IV", "Intravenous"),
    "78421000": ("IM", "Intramuscular"),
    "34206005": ("SC", "Subcutaneous"),
    "6064005": ("TP", "Topical"),
    "37161004": ("PR", "Rectal"),
    "46713006": ("NS", "Nasal"),
    "37839007": ("SL", "Sublingual"),
    "447694001": ("RESP", "Respiratory (inhalation)"),
}

# LOINC document type -> HL7 table 0270 (document type), for TXA-2.
DOCUMENT_TYPES_0270 = {
    "60591-5": "TS",  # patient summary: transfer summary is the nearest 0270 kind
    "18842-5": "DS",
    "18761-7": "TS",
    "11488-4": "CN",
    "34117-2": "HP",
    "11504-8": "OP",
    "28570-0": "PN",
    "11506-3": "PR",
    "34108-1": "PR",
}

_GENDER = {"male": "M", "female": "F", "other": "O", "unknown": "U"}
_NAME_USE = {"official": "L", "usual": "D", "nickname": "N", "anonymous": "S",
             "maiden": "M", "old": "U", "temp": "U"}
_PATIENT_CLASS = {"IMP": "I", "ACUTE": "I", "NONAC": "I", "AMB": "O", "EMER": "E",
                  "PRENC": "P", "OBSENC": "O", "HH": "O", "VR": "O", "SS": "O"}
_ALLERGEN_TYPE = {"medication": "DA", "food": "FA", "environment": "EA", "biologic": "MA"}
_SEVERITY = {"severe": "SV", "moderate": "MO", "mild": "MI"}
_RESULT_STATUS = {"registered": "I", "preliminary": "P", "partial": "P", "final": "F",
                  "amended": "C", "corrected": "C", "appended": "C", "cancelled": "X"}
_COUNTRY_3 = {"CN": "CHN", "KR": "KOR", "RU": "RUS", "SA": "SAU", "TH": "THA", "US": "USA",
              "GB": "GBR", "JP": "JPN", "DE": "DEU", "FR": "FRA", "AE": "ARE", "KZ": "KAZ",
              "MN": "MNG", "VN": "VNM", "MY": "MYS", "SG": "SGP", "ID": "IDN", "PH": "PHL"}
_ENCAPSULATED_MAX = 65536  # ED-5 data is TX: 65536 characters in HL7 v2.5.1
_CONTROL_ID = re.compile(r"^[\x21-\x7e]{1,20}$")
_GS1_SERIAL = re.compile(r"\(21\)([^()]+)")


# -- public API ---------------------------------------------------------------------------------


def build_message(
    bundles: Sequence[Mapping[str, Any]],
    message: str,
    *,
    now: datetime,
    control_id: str,
    sending_application: str = "MEDLEDGER",
    sending_facility: str | None = None,
    receiving_application: str | None = None,
    receiving_facility: str | None = None,
    maps: ConceptMapSet | None = None,
) -> str:
    """Build one HL7 v2.5.1 message from the Bundles of one patient; segments joined by CR.

    ``message`` is ``ADT_A08``, ``ORU_R01``, ``MDM_T02`` or ``RDS_O13`` (``ADT^A08`` also
    accepted). ``now`` stamps MSH-7 (timezone-aware); ``control_id`` is MSH-10 (1-20
    printable ASCII). ``sending_facility`` is MSH-4.1; by default the identifier of the
    encounter's service provider when it fits HL7's 20 characters, else the application.
    """
    name = message.replace("^", "_").upper()
    if name not in MESSAGES:
        raise AdaptError(
            f"message {message!r}: not one of {', '.join(sorted(MESSAGES))}"
        )
    if not isinstance(control_id, str) or not _CONTROL_ID.match(control_id):
        raise AdaptError(
            f"control id {control_id!r}: MSH-10 takes 1-20 printable ASCII characters"
        )
    builder = _Builder(BundleIndex(bundles), now, maps or default_concept_maps())
    return builder.build(
        name, control_id,
        sending_application=sending_application, sending_facility=sending_facility,
        receiving_application=receiving_application, receiving_facility=receiving_facility,
    )


def adapt(bundles: list[bytes], options: AdaptOptions) -> bytes:
    """``medledger adapt hl7v2``: Bundle files in, one message out (UTF-8, CR after each segment).

    ``options.message`` picks the message (default ``ORU_R01``); ``options.control_id`` is
    MSH-10, by default derived from the input bytes so the same files give the same message.
    """
    docs = [loads_bundle(data, f"input {i + 1}") for i, data in enumerate(bundles)]
    control_id = options.control_id or content_id("ML", bundles)[:20]
    text = build_message(docs, options.message or "ORU_R01", now=options.now,
                         control_id=control_id)
    return (text + "\r").encode("utf-8")


# -- the builder --------------------------------------------------------------------------------


class _Builder:
    def __init__(self, index: BundleIndex, now: datetime, maps: ConceptMapSet) -> None:
        self.index = index
        self.now = now
        self.maps = maps
        self.stamp = tx.dtm_now(now)
        # Field values as assigned, per segment: id(segment) -> field number -> repetitions.
        self.assigned: dict[int, dict[int, list[str]]] = {}

    def build(self, name: str, control_id: str, **msh: str | None) -> str:
        code, trigger, structure = MESSAGES[name]
        msg = Message(structure, version=tx.VERSION, validation_level=VALIDATION_LEVEL.STRICT,
                      reference=(tx.profile(structure) or {}).get(structure))
        self.control_id = control_id
        self._msh(msg.msh[0], code, trigger, structure, control_id, **msh)
        getattr(self, f"_{name.lower()}")(msg)
        try:
            msg.validate()
        except HL7apyException as e:
            raise AdaptError(f"{name}: the message does not validate: {e}") from None
        return self._er7(msg)

    def _er7(self, msg: Any) -> str:
        """The message text: hl7apy's segment order, the field values exactly as assigned.

        hl7apy's own ``to_er7`` escapes every backslash that does not open one of the
        sequences it knows (F S T R E H N), which would turn a ``\\Xhh\\`` escape into
        literal text; the values assigned here are already escaped, so they are written as is.
        """
        lines = []
        for segment in _segments(msg):
            fields = self.assigned.get(id(segment), {})
            last = max(fields, default=0)
            if segment.name == "MSH":
                values = ["~".join(fields.get(i, [])) for i in range(3, last + 1)]
                lines.append("|".join(["MSH", "^~\\&", *values]))
            else:
                values = ["~".join(fields.get(i, [])) for i in range(1, last + 1)]
                lines.append("|".join([segment.name, *values]))
        return "\r".join(lines)

    # -- field assignment -------------------------------------------------------------------

    def put(self, segment: Any, field: str, value: str | Sequence[str] | None, where: str) -> None:
        """Assign ER7 (one value or repetitions) to ``field``; errors name ``where``."""
        reps = [value] if isinstance(value, str) else [v for v in (value or []) if v]
        reps = [r for r in reps if r]
        label = field.replace("_", "-")
        for i, rep in enumerate(reps):
            try:
                if i == 0:
                    setattr(segment, field.lower(), rep)
                else:
                    segment.add_field(field).value = rep
            except MaxLengthReached as e:
                raise AdaptError(
                    f"{where} ({label}): longer than HL7 v2.5.1 allows there "
                    f"({e.args[1] if len(e.args) > 1 else 'limit'} characters after escaping)"
                ) from None
            except (HL7apyException, ValueError) as e:
                raise AdaptError(f"{where} ({label}): not a valid value: {_short(e)}") from None
        if reps:
            self.assigned.setdefault(id(segment), {})[int(field.split("_")[1])] = reps

    def esc(self, value: Any, where: str) -> str:
        if value is None:
            return ""
        return tx.escape(str(value), where)

    # -- common segments --------------------------------------------------------------------

    def _msh(self, msh: Any, code: str, trigger: str, structure: str, control_id: str,
             sending_application: str | None, sending_facility: str | None,
             receiving_application: str | None, receiving_facility: str | None) -> None:
        facility = sending_facility if sending_facility is not None else self._facility()
        w = "message header"
        self.put(msh, "MSH_3", self.esc(sending_application, f"{w} sending application"), w)
        self.put(msh, "MSH_4", self.esc(facility, f"{w} sending facility"), w)
        if receiving_application:
            self.put(msh, "MSH_5", self.esc(receiving_application, f"{w} receiver"), w)
        if receiving_facility:
            self.put(msh, "MSH_6", self.esc(receiving_facility, f"{w} receiving facility"), w)
        self.put(msh, "MSH_7", self.stamp, "now")
        self.put(msh, "MSH_9", tx.components(code, trigger, structure), w)
        self.put(msh, "MSH_10", self.esc(control_id, "control id"), "control id")
        self.put(msh, "MSH_11", "P", w)
        self.put(msh, "MSH_12", tx.VERSION, w)
        self.put(msh, "MSH_17", "CHN", w)
        self.put(msh, "MSH_18", tx.CHARSET, w)

    def _facility(self) -> str:
        encounter = self._encounter()
        if encounter is not None:
            org = self.index.resolve_ref(encounter.resource.get("serviceProvider"), encounter)
            if org is not None:
                for ident in org.resource.get("identifier") or []:
                    value = ident.get("value") if isinstance(ident, Mapping) else None
                    if isinstance(value, str) and 0 < len(value) <= 20:
                        return value
        return "MEDLEDGER"

    def _encounter(self) -> Entry | None:
        encounters = self.index.of_type("Encounter")
        if not encounters:
            return None

        def start(e: Entry) -> str:
            period = e.resource.get("period")
            return str(period.get("start", "")) if isinstance(period, Mapping) else ""

        # The most recent encounter is the one a continuity message is about.
        return sorted(encounters, key=start)[-1]

    def _evn(self, evn: Any, trigger: str) -> None:
        self.put(evn, "EVN_1", trigger, "event")
        self.put(evn, "EVN_2", self.stamp, "now")

    def _pid(self, pid: Any) -> None:
        entry = self.index.patient
        p = entry.resource
        w = entry.where
        self.put(pid, "PID_1", "1", w)
        ids = []
        for i, ident in enumerate(p.get("identifier") or []):
            if not isinstance(ident, Mapping) or not ident.get("value"):
                continue
            where = f"{w} identifier[{i}]"
            ids.append(tx.components(
                self.esc(ident["value"], f"{where}.value (PID-3.1)"), "", "",
                self._authority(ident.get("system"), f"{where}.system (PID-3.4)"),
                self.esc(_identifier_type(ident), f"{where}.type (PID-3.5)"),
            ))
        if not ids:
            raise AdaptError(f"{w} identifier: PID-3 needs at least one patient identifier")
        self.put(pid, "PID_3", ids, f"{w} identifier")
        names = [self._xpn(n, f"{w} name[{i}]", "PID-5")
                 for i, n in enumerate(p.get("name") or []) if isinstance(n, Mapping)]
        names = [n for n in names if n]
        if not names:
            raise AdaptError(f"{w} name: PID-5 needs a patient name")
        self.put(pid, "PID_5", names, f"{w} name")
        if p.get("birthDate"):
            self.put(pid, "PID_7", tx.date_only(p["birthDate"], f"{w} birthDate (PID-7)"),
                     f"{w} birthDate")
        if p.get("gender") in _GENDER:
            self.put(pid, "PID_8", _GENDER[p["gender"]], f"{w} gender")
        addresses = []
        for i, a in enumerate(p.get("address") or []):
            if isinstance(a, Mapping):
                addresses.append(self._xad(a, f"{w} address[{i}]"))
        self.put(pid, "PID_11", [a for a in addresses if a], f"{w} address")

    def _authority(self, system: Any, where: str) -> str:
        if not isinstance(system, str) or not system:
            return ""
        # HD: namespace (20 characters, too short for a URI) left empty, universal id = URI.
        return tx.subcomponents("", self.esc(system, where), "URI")

    def _xpn(self, name: Mapping[str, Any], where: str, field: str) -> str:
        given = [g for g in name.get("given") or [] if isinstance(g, str)]
        family = name.get("family") if isinstance(name.get("family"), str) else ""
        if not family and not given and isinstance(name.get("text"), str):
            family = name["text"]
        if not family and not given:
            return ""
        return tx.components(
            self.esc(family, f"{where}.family ({field}.1)"),
            self.esc(given[0] if given else "", f"{where}.given[0] ({field}.2)"),
            self.esc(" ".join(given[1:]), f"{where}.given[1:] ({field}.3)"),
            self.esc(" ".join(name.get("suffix") or []), f"{where}.suffix ({field}.4)"),
            self.esc(" ".join(name.get("prefix") or []), f"{where}.prefix ({field}.5)"),
            "",
            _NAME_USE.get(str(name.get("use")), ""),
        )

    def _xad(self, a: Mapping[str, Any], where: str) -> str:
        lines = [str(x) for x in a.get("line") or []]
        other = ", ".join(lines[1:] + ([str(a["district"])] if a.get("district") else []))
        country = str(a.get("country", ""))
        return tx.components(
            self.esc(lines[0] if lines else "", f"{where}.line[0] (PID-11.1)"),
            self.esc(other, f"{where}.line (PID-11.2)"),
            self.esc(a.get("city", ""), f"{where}.city (PID-11.3)"),
            self.esc(a.get("state", ""), f"{where}.state (PID-11.4)"),
            self.esc(a.get("postalCode", ""), f"{where}.postalCode (PID-11.5)"),
            self.esc(_COUNTRY_3.get(country.upper(), country), f"{where}.country (PID-11.6)"),
            {"home": "H", "work": "O", "temp": "C"}.get(str(a.get("use")), ""),
        )

    def _pv1(self, pv1: Any) -> None:
        encounter = self._encounter()
        self.put(pv1, "PV1_1", "1", "visit")
        if encounter is None:
            self.put(pv1, "PV1_2", "N", "visit")  # HL7 table 0004: not applicable
            return
        e = encounter.resource
        w = encounter.where
        klass = e.get("class") if isinstance(e.get("class"), Mapping) else {}
        self.put(pv1, "PV1_2", _PATIENT_CLASS.get(str(klass.get("code")), "U"), f"{w} class")
        doctor = self._attending(encounter)
        if doctor:
            self.put(pv1, "PV1_7", doctor, f"{w} participant")
        idents = [i for i in e.get("identifier") or [] if isinstance(i, Mapping) and i.get("value")]
        if idents:
            ident = idents[0]
            self.put(pv1, "PV1_19", tx.components(
                self.esc(ident["value"], f"{w} identifier[0].value (PV1-19.1)"), "", "",
                self._authority(ident.get("system"), f"{w} identifier[0].system (PV1-19.4)"),
                "VN",
            ), f"{w} identifier")
        period = e.get("period") if isinstance(e.get("period"), Mapping) else {}
        if period.get("start"):
            self.put(pv1, "PV1_44", tx.dtm(period["start"], f"{w} period.start (PV1-44)"),
                     f"{w} period.start")
        if period.get("end"):
            self.put(pv1, "PV1_45", tx.dtm(period["end"], f"{w} period.end (PV1-45)"),
                     f"{w} period.end")

    def _attending(self, encounter: Entry) -> str:
        participants = [p for p in encounter.resource.get("participant") or []
                        if isinstance(p, Mapping)]

        def is_attending(p: Mapping[str, Any]) -> bool:
            return any(c.get("code") == "ATND" for t in p.get("type") or [] for c in codings(t))

        participants.sort(key=lambda p: 0 if is_attending(p) else 1)
        for p in participants:
            doc = self.index.resolve_ref(p.get("individual"), encounter)
            if doc is None or doc.type != "Practitioner":
                continue
            names = [n for n in doc.resource.get("name") or [] if isinstance(n, Mapping)]
            # A reader abroad needs the romanised name when there is one.
            names.sort(key=lambda n: 0 if _latin(n) else 1)
            if not names:
                continue
            ident = next((i for i in doc.resource.get("identifier") or []
                          if isinstance(i, Mapping) and i.get("value")), {})
            w = doc.where
            xpn = self._xpn(names[0], f"{w} name", "PV1-7")
            parts = xpn.split("^") if xpn else []
            return tx.components(
                self.esc(ident.get("value", ""), f"{w} identifier (PV1-7.1)"), *parts[:5]
            )
        return ""

    # -- coded elements ---------------------------------------------------------------------

    def ce(self, concept: Any, where: str, field: str, *, enrich_codes: bool = True,
           prefer: str | None = None) -> str:
        """A CE: primary = a source coding (``prefer`` system first), alternate = next best."""
        if not isinstance(concept, Mapping):
            return ""
        if enrich_codes:
            concept, _ = enrich(concept, maps=self.maps)
        all_codings = [c for c in codings(concept) if c.get("code")]
        source = [c for c in all_codings if not is_derived(c)]
        derived = [c for c in all_codings if is_derived(c)]
        if prefer:
            source.sort(key=lambda c: 0 if c.get("system") == prefer else 1)
        text = concept_text(concept)
        if not source:
            return tx.components("", self.esc(text, f"{where}.text ({field}.2)"))
        primary = source[0]
        alternate = derived[0] if derived else (source[1] if len(source) > 1 else None)
        primary_text = primary.get("display") or text
        parts = [
            self.esc(primary["code"], f"{where} code ({field}.1)"),
            self.esc(primary_text, f"{where} display ({field}.2)"),
            self.esc(_v2_system(primary.get("system")), f"{where} system ({field}.3)"),
        ]
        if alternate is not None:
            parts += [
                self.esc(alternate["code"], f"{where} code ({field}.4)"),
                self.esc(alternate.get("display", ""), f"{where} display ({field}.5)"),
                self.esc(_v2_system(alternate.get("system")), f"{where} system ({field}.6)"),
            ]
        return tx.components(*parts)

    def units(self, quantity: Mapping[str, Any], where: str, field: str) -> str:
        code = quantity.get("code")
        unit = quantity.get("unit") or code or ""
        if quantity.get("system") == "http://unitsofmeasure.org" and code:
            return tx.components(self.esc(code, f"{where}.code ({field}.1)"),
                                 self.esc(unit, f"{where}.unit ({field}.2)"), "UCUM")
        return tx.components("", self.esc(unit, f"{where}.unit ({field}.2)"))

    # -- ADT^A08 ----------------------------------------------------------------------------

    def _adt_a08(self, msg: Any) -> None:
        self._evn(msg.add_segment("EVN"), "A08")
        self._pid(msg.add_segment("PID"))
        self._pv1(msg.add_segment("PV1"))
        for n, entry in enumerate(_active(self.index.of_type("AllergyIntolerance")), 1):
            al1 = msg.add_segment("AL1")
            self._al1(al1, n, entry)
        for n, entry in enumerate(_active(self.index.of_type("Condition")), 1):
            dg1 = msg.add_segment("DG1")
            self._dg1(dg1, n, entry)
        for n, entry in enumerate(_active(self.index.of_type("Procedure")), 1):
            group = msg.add_group("ADT_A01_PROCEDURE")
            self._pr1(group.add_segment("PR1"), n, entry)

    def _al1(self, al1: Any, n: int, entry: Entry) -> None:
        r, w = entry.resource, entry.where
        self.put(al1, "AL1_1", str(n), w)
        categories = r.get("category") or []
        if categories:
            self.put(al1, "AL1_2", _ALLERGEN_TYPE.get(str(categories[0]), "MA"), f"{w} category")
        allergen = self.ce(r.get("code"), f"{w} code", "AL1-3")
        if not allergen:
            raise AdaptError(f"{w} code: AL1-3 (allergen) is required")
        self.put(al1, "AL1_3", allergen, f"{w} code")
        severities = [str(x.get("severity")) for x in r.get("reaction") or []
                      if isinstance(x, Mapping) and x.get("severity") in _SEVERITY]
        if severities:
            worst = max(severities, key=["mild", "moderate", "severe"].index)
            self.put(al1, "AL1_4", _SEVERITY[worst], f"{w} reaction.severity")
        reactions = []
        for i, reaction in enumerate(r.get("reaction") or []):
            for j, m in enumerate(reaction.get("manifestation") or []):
                term = international_display(m) or concept_text(m)
                reactions.append(self.esc(term, f"{w} reaction[{i}].manifestation[{j}] (AL1-5)"))
        self.put(al1, "AL1_5", reactions, f"{w} reaction")
        when = r.get("onsetDateTime") or r.get("recordedDate")
        if when:
            self.put(al1, "AL1_6", tx.date_only(when, f"{w} onset (AL1-6)"), f"{w} onset")

    def _dg1(self, dg1: Any, n: int, entry: Entry) -> None:
        r, w = entry.resource, entry.where
        self.put(dg1, "DG1_1", str(n), w)
        self.put(dg1, "DG1_3", self.ce(r.get("code"), f"{w} code", "DG1-3"), f"{w} code")
        self.put(dg1, "DG1_4", self.esc(concept_text(r.get("code")), f"{w} code.text (DG1-4)"),
                 f"{w} code.text")
        when = r.get("recordedDate") or r.get("onsetDateTime")
        if when:
            self.put(dg1, "DG1_5", tx.dtm(when, f"{w} recordedDate (DG1-5)"), f"{w} date")
        verification = {c.get("code") for c in codings(r.get("verificationStatus"))}
        # HL7 table 0052: F final for confirmed diagnoses, W working otherwise.
        self.put(dg1, "DG1_6", "F" if "confirmed" in verification else "W", f"{w} status")

    def _pr1(self, pr1: Any, n: int, entry: Entry) -> None:
        r, w = entry.resource, entry.where
        self.put(pr1, "PR1_1", str(n), w)
        code = self.ce(r.get("code"), f"{w} code", "PR1-3")
        if not code:
            raise AdaptError(f"{w} code: PR1-3 (procedure code) is required")
        self.put(pr1, "PR1_3", code, f"{w} code")
        self.put(pr1, "PR1_4", self.esc(concept_text(r.get("code")), f"{w} code.text (PR1-4)"),
                 f"{w} code.text")
        performed = first_of(r, "performed")
        when = None
        if performed and performed[0] == "DateTime":
            when = performed[1]
        elif performed and performed[0] == "Period" and isinstance(performed[1], Mapping):
            when = performed[1].get("start")
        if not when:
            raise AdaptError(f"{w} performed[x]: PR1-5 (procedure date/time) is required")
        self.put(pr1, "PR1_5", tx.dtm(when, f"{w} performed (PR1-5)"), f"{w} performed")

    # -- ORU^R01 ----------------------------------------------------------------------------

    def _oru_r01(self, msg: Any) -> None:
        result = msg.add_group("ORU_R01_PATIENT_RESULT")
        patient = result.add_group("ORU_R01_PATIENT")
        self._pid(patient.add_segment("PID"))
        visit = patient.add_group("ORU_R01_VISIT")
        self._pv1(visit.add_segment("PV1"))
        orders = self._orders()
        if not orders:
            raise AdaptError("ORU_R01: no Observation or DiagnosticReport in the Bundles")
        for n, (head, members) in enumerate(orders, 1):
            group = result.add_group("ORU_R01_ORDER_OBSERVATION")
            self._order(group, n, head, members)

    def _orders(self) -> list[tuple[Entry, list[Entry]]]:
        """(order head, observations) pairs: reports and panels with their members, then singles."""
        reports = _active(self.index.of_type("DiagnosticReport"))
        observations = _active(self.index.of_type("Observation"))
        orders: list[tuple[Entry, list[Entry]]] = []
        grouped: set[str] = set()
        for head in reports + [o for o in observations if o.resource.get("hasMember")]:
            refs = head.resource.get("result") or head.resource.get("hasMember") or []
            members = []
            for ref in refs:
                target = self.index.resolve_ref(ref, head)
                if target is not None and target.type == "Observation" and _active([target]):
                    members.append(target)
                    grouped.add(target.key)
            orders.append((head, members))
        heads = {h.key for h, _ in orders}
        for obs in observations:
            if obs.key not in grouped and obs.key not in heads:
                orders.append((obs, [obs]))
        return orders

    def _order(self, group: Any, n: int, head: Entry, members: list[Entry]) -> None:
        r, w = head.resource, head.where
        filler = self._filler(head)
        orc = group.add_segment("ORC")
        self.put(orc, "ORC_1", "RE", w)  # HL7 table 0119: observations to follow
        self.put(orc, "ORC_3", filler, f"{w} identifier")
        when = r.get("issued") or _effective(r)
        if when:
            self.put(orc, "ORC_9", tx.dtm(when, f"{w} issued (ORC-9)"), f"{w} issued")
        obr = group.add_segment("OBR")
        self.put(obr, "OBR_1", str(n), w)
        self.put(obr, "OBR_3", filler, f"{w} identifier")
        self.put(obr, "OBR_4", self.ce(r.get("code"), f"{w} code", "OBR-4",
                                        prefer="http://loinc.org"), f"{w} code")
        effective = _effective(r)
        if effective:
            self.put(obr, "OBR_7", tx.dtm(effective, f"{w} effective (OBR-7)"), f"{w} effective")
        if r.get("issued"):
            self.put(obr, "OBR_22", tx.dtm(r["issued"], f"{w} issued (OBR-22)"), f"{w} issued")
        if r.get("status") in _RESULT_STATUS:
            self.put(obr, "OBR_25", _RESULT_STATUS[r["status"]], f"{w} status")
        if head.type == "DiagnosticReport" and isinstance(r.get("conclusion"), str):
            nte = group.add_segment("NTE")
            self._nte(nte, 1, r["conclusion"], f"{w} conclusion")
        set_id = 0
        for member in members:
            for value in self._obx_values(member):
                set_id += 1
                obs_group = group.add_group("ORU_R01_OBSERVATION")
                self._obx(obs_group.add_segment("OBX"), set_id, member, value)
                if value.get("notes"):
                    for k, (note, where) in enumerate(value["notes"], 1):
                        self._nte(obs_group.add_segment("NTE"), k, note, where)

    def _filler(self, entry: Entry) -> str:
        ident = next((i for i in entry.resource.get("identifier") or []
                      if isinstance(i, Mapping) and i.get("value")), None)
        if ident is not None:
            return self.esc(ident["value"], f"{entry.where} identifier[0].value (OBR-3)")
        return self.esc(entry.id or entry.key, f"{entry.where} id (OBR-3)")

    def _obx_values(self, entry: Entry) -> list[dict[str, Any]]:
        """One OBX per value: the observation's own, or one per component."""
        r, w = entry.resource, entry.where
        notes = [(n["text"], f"{w} note[{i}].text (NTE-3)")
                 for i, n in enumerate(r.get("note") or [])
                 if isinstance(n, Mapping) and isinstance(n.get("text"), str)]
        out = []
        if first_of(r, "value") is not None or not r.get("component"):
            out.append({"code": r.get("code"), "holder": r, "where": w, "notes": notes})
        else:
            for i, component in enumerate(r.get("component") or []):
                out.append({"code": component.get("code"), "holder": component,
                            "where": f"{w} component[{i}]", "notes": []})
            if out:
                out[-1]["notes"] = notes
        return out

    def _obx(self, obx: Any, set_id: int, entry: Entry, value: Mapping[str, Any]) -> None:
        r = entry.resource
        holder, w = value["holder"], value["where"]
        self.put(obx, "OBX_1", str(set_id), w)
        kind, er7, units = self._observation_value(holder, w)
        if kind:
            self.put(obx, "OBX_2", kind, w)
        self.put(obx, "OBX_3", self.ce(value["code"], f"{w} code", "OBX-3",
                                        prefer="http://loinc.org"), f"{w} code")
        if er7:
            self.put(obx, "OBX_5", er7, f"{w} value")
        if units:
            self.put(obx, "OBX_6", units, f"{w} value.unit")
        ranges = [_range_text(rng) for rng in holder.get("referenceRange") or []
                  if isinstance(rng, Mapping)]
        ranges = [x for x in ranges if x]
        if ranges:
            self.put(obx, "OBX_7", self.esc(ranges[0], f"{w} referenceRange (OBX-7)"),
                     f"{w} referenceRange")
        flags = [c["code"] for i in holder.get("interpretation") or []
                 for c in codings(i) if c.get("code")]
        if flags:
            self.put(obx, "OBX_8", [self.esc(f, f"{w} interpretation (OBX-8)") for f in flags],
                     f"{w} interpretation")
        status = _RESULT_STATUS.get(str(r.get("status")), "F")
        if not er7:
            status = "X"  # HL7 table 0085: results cannot be obtained for this observation
        self.put(obx, "OBX_11", status, f"{entry.where} status")
        effective = _effective(r)
        if effective:
            self.put(obx, "OBX_14", tx.dtm(effective, f"{entry.where} effective (OBX-14)"),
                     f"{entry.where} effective")
        performer = self._performer(entry)
        if performer:
            self.put(obx, "OBX_23", performer, f"{entry.where} performer")

    def _observation_value(self, holder: Mapping[str, Any], w: str) -> tuple[str, str, str]:
        """(OBX-2 value type, OBX-5 ER7, OBX-6 units) of ``value[x]`` (HL7 table 0125)."""
        found = first_of(holder, "value")
        if found is None:
            return "", "", ""
        kind, value = found
        where = f"{w} value{kind}"
        if kind == "Quantity" and isinstance(value, Mapping):
            number = _number(value.get("value"), f"{where}.value")
            units = self.units(value, where, "OBX-6")
            comparator = value.get("comparator")
            if comparator:
                return "SN", tx.components(self.esc(comparator, f"{where}.comparator"),
                                           number), units
            return "NM", number, units
        if kind == "CodeableConcept":
            return "CE", self.ce(value, where, "OBX-5"), ""
        if kind == "String" and isinstance(value, str):
            return "ST", self.esc(value, f"{where} (OBX-5)"), ""
        if kind == "Integer":
            return "NM", _number(value, where), ""
        if kind == "Boolean":
            return "ST", "true" if value else "false", ""
        if kind == "DateTime":
            return "TS", tx.dtm(value, f"{where} (OBX-5)"), ""
        if kind == "Range" and isinstance(value, Mapping):
            low, high = value.get("low") or {}, value.get("high") or {}
            units = self.units(low or high, where, "OBX-6")
            return "SN", tx.components("", _number(low.get("value"), f"{where}.low"), "-",
                                       _number(high.get("value"), f"{where}.high")), units
        raise AdaptError(f"{where}: value{kind} has no HL7 v2 OBX-5 form here")

    def _performer(self, entry: Entry) -> str:
        for ref in entry.resource.get("performer") or []:
            org = self.index.resolve_ref(ref, entry)
            if org is not None and org.type == "Organization":
                name = org.resource.get("name", "")
                ident = next((i.get("value") for i in org.resource.get("identifier") or []
                              if isinstance(i, Mapping) and i.get("value")), "")
                # XON-1 organization name, XON-10 organization identifier.
                return tx.components(self.esc(name, f"{org.where} name (OBX-23.1)"),
                                     "", "", "", "", "", "", "", "",
                                     self.esc(ident, f"{org.where} identifier (OBX-23.10)"))
        return ""

    def _nte(self, nte: Any, n: int, text: str, where: str) -> None:
        self.put(nte, "NTE_1", str(n), where)
        self.put(nte, "NTE_2", "L", where)  # HL7 table 0105: filler (the hospital) as source
        self.put(nte, "NTE_3", self.esc(text, where), where)

    # -- MDM^T02 ----------------------------------------------------------------------------

    def _mdm_t02(self, msg: Any) -> None:
        self._evn(msg.add_segment("EVN"), "T02")
        self._pid(msg.add_segment("PID"))
        self._pv1(msg.add_segment("PV1"))
        doc = self._document()
        txa = msg.add_segment("TXA")
        w = doc["where"]
        self.put(txa, "TXA_1", "1", w)
        self.put(txa, "TXA_2", DOCUMENT_TYPES_0270.get(doc["loinc"], "PR"), f"{w} type")
        self.put(txa, "TXA_3", "AP", w)  # HL7 table 0191: application data (Base64 below)
        self.put(txa, "TXA_4", doc["date"], f"{w} date")
        self.put(txa, "TXA_6", doc["date"], f"{w} date")
        self.put(txa, "TXA_12", self.esc(doc["number"], f"{w} identifier (TXA-12)"),
                 f"{w} identifier")
        self.put(txa, "TXA_17", doc["completion"], f"{w} status")
        self.put(txa, "TXA_19", "AV", w)  # HL7 table 0273: available for patient care
        group = msg.add_group("MDM_T02_OBXNTE_SUPPGRP")
        obx = group.add_segment("OBX")
        self.put(obx, "OBX_1", "1", w)
        self.put(obx, "OBX_2", "ED", w)
        self.put(obx, "OBX_3", tx.components(self.esc(doc["loinc"], f"{w} type"),
                                             self.esc(doc["title"], f"{w} type"), "LN"),
                 f"{w} type")
        data = base64.b64encode(doc["content"]).decode("ascii")
        if len(data) > _ENCAPSULATED_MAX:
            raise AdaptError(
                f"{w} (OBX-5.5): {len(data)} characters of Base64, more than the "
                f"{_ENCAPSULATED_MAX} HL7 v2.5.1 allows in ED data; send a reference instead"
            )
        self.put(obx, "OBX_5", tx.components("MEDLEDGER", doc["type"], doc["subtype"],
                                             "Base64", data), f"{w} content")
        self.put(obx, "OBX_11", "F", w)
        self.put(obx, "OBX_14", doc["date"], f"{w} date")

    def _document(self) -> dict[str, Any]:
        """The PDF of the first DocumentReference that holds one; else the IPS of the Bundles."""
        for entry in _active(self.index.of_type("DocumentReference")):
            r = entry.resource
            for i, content in enumerate(r.get("content") or []):
                attachment = content.get("attachment") if isinstance(content, Mapping) else None
                if not isinstance(attachment, Mapping):
                    continue
                if attachment.get("contentType") != "application/pdf" or not attachment.get(
                    "data"
                ):
                    continue
                where = f"{entry.where} content[{i}].attachment"
                try:
                    content_bytes = base64.b64decode(attachment["data"], validate=True)
                except (ValueError, TypeError):
                    raise AdaptError(f"{where}.data: not Base64") from None
                loinc = next((c.get("code") for c in codings(r.get("type"))
                              if c.get("system") == "http://loinc.org"), "")
                title = next((c.get("display") for c in codings(r.get("type"))
                              if c.get("system") == "http://loinc.org"), "") or "Document"
                number = next((i.get("value") for i in r.get("identifier") or []
                               if isinstance(i, Mapping) and i.get("value")), entry.id or "")
                date = r.get("date")
                return {
                    "where": where,
                    "loinc": loinc,
                    "title": title,
                    "type": "application",
                    "subtype": "pdf",
                    "content": content_bytes,
                    "number": number,
                    "date": tx.dtm(date, f"{entry.where} date (TXA-4)") if date else self.stamp,
                    "completion": "IP" if r.get("docStatus") == "preliminary" else "AU",
                }
        ips = build_ips(self._bundles(), now=self.now,
                        document_id=_fhir_id(self.control_id), maps=self.maps)
        return {
            "where": "International Patient Summary",
            "loinc": "60591-5",
            "title": "Patient summary Document",
            "type": "application",
            "subtype": "fhir+json",
            "content": dumps(ips, compact=True),
            "number": ips["identifier"]["value"],
            "date": self.stamp,
            "completion": "DO",  # HL7 table 0271: documented, assembled without authentication
        }

    def _bundles(self) -> list[dict[str, Any]]:
        # The IPS builder takes Bundles; the index already holds every entry once.
        return [{"resourceType": "Bundle", "type": "collection",
                 "entry": [{"fullUrl": e.full_url, "resource": copy.deepcopy(dict(e.resource))}
                           if e.full_url else {"resource": copy.deepcopy(dict(e.resource))}
                           for e in self.index.entries if e.bundle == b]}
                for b in sorted({e.bundle for e in self.index.entries})]

    # -- RDS^O13 ----------------------------------------------------------------------------

    def _rds_o13(self, msg: Any) -> None:
        patient = msg.add_group("RDS_O13_PATIENT")
        self._pid(patient.add_segment("PID"))
        visit = patient.add_group("RDS_O13_PATIENT_VISIT")
        self._pv1(visit.add_segment("PV1"))
        dispenses = _active(self.index.of_type("MedicationDispense"))
        if not dispenses:
            raise AdaptError("RDS_O13: no MedicationDispense in the Bundles")
        for entry in dispenses:
            self._dispense(msg.add_group("RDS_O13_ORDER"), entry)

    def _dispense(self, order: Any, entry: Entry) -> None:
        r, w = entry.resource, entry.where
        medication, med_entry = self._dispensed_medication(entry)
        placer = next((p.get("identifier", {}).get("value")
                       for p in r.get("authorizingPrescription") or []
                       if isinstance(p, Mapping) and isinstance(p.get("identifier"), Mapping)),
                      None)
        filler = next((i.get("value") for i in r.get("identifier") or []
                       if isinstance(i, Mapping) and i.get("value")), entry.id)
        orc = order.add_segment("ORC")
        self.put(orc, "ORC_1", "RE", w)
        if placer:
            self.put(orc, "ORC_2", self.esc(placer, f"{w} authorizingPrescription (ORC-2)"),
                     f"{w} authorizingPrescription")
        if filler:
            self.put(orc, "ORC_3", self.esc(filler, f"{w} identifier (ORC-3)"), f"{w} identifier")
        handed = r.get("whenHandedOver") or r.get("whenPrepared")
        if not handed:
            raise AdaptError(f"{w} whenHandedOver: RXD-3 (date dispensed) is required")
        self.put(orc, "ORC_9", tx.dtm(handed, f"{w} whenHandedOver (ORC-9)"), f"{w} when")

        rxd = order.add_segment("RXD")
        self.put(rxd, "RXD_1", "1", w)
        code_where = med_entry.where if med_entry else w
        give = self.ce(medication.get("code") if medication else r.get(
            "medicationCodeableConcept"), f"{code_where} code", "RXD-2")
        if not give:
            raise AdaptError(f"{w} medication[x]: RXD-2 (dispense/give code) is required")
        self.put(rxd, "RXD_2", give, f"{code_where} code")
        self.put(rxd, "RXD_3", tx.dtm(handed, f"{w} whenHandedOver (RXD-3)"), f"{w} when")
        quantity = r.get("quantity") if isinstance(r.get("quantity"), Mapping) else None
        if not quantity or "value" not in quantity:
            raise AdaptError(f"{w} quantity: RXD-4 (actual dispense amount) is required")
        self.put(rxd, "RXD_4", _number(quantity["value"], f"{w} quantity.value (RXD-4)"),
                 f"{w} quantity")
        self.put(rxd, "RXD_5", self.units(quantity, f"{w} quantity", "RXD-5"), f"{w} quantity")
        if medication and medication.get("form"):
            self.put(rxd, "RXD_6", self.ce(medication["form"], f"{code_where} form", "RXD-6",
                                            enrich_codes=False), f"{code_where} form")
        self.put(rxd, "RXD_7", self.esc(placer or filler, f"{w} prescription number (RXD-7)"),
                 f"{w} prescription")
        batch = medication.get("batch") if medication else None
        if isinstance(batch, Mapping):
            if batch.get("lotNumber"):
                self.put(rxd, "RXD_18", self.esc(batch["lotNumber"],
                                                 f"{code_where} batch.lotNumber (RXD-18)"),
                         f"{code_where} batch.lotNumber")
            if batch.get("expirationDate"):
                self.put(rxd, "RXD_19", tx.dtm(batch["expirationDate"],
                                               f"{code_where} batch.expirationDate (RXD-19)"),
                         f"{code_where} batch.expirationDate")
        maker = self._manufacturer(medication, med_entry)
        if maker:
            self.put(rxd, "RXD_20", maker, f"{code_where} manufacturer")
        for k, note in enumerate(n for n in r.get("note") or [] if isinstance(n, Mapping)):
            if isinstance(note.get("text"), str):
                self._nte(order.add_segment("NTE"), k + 1, note["text"],
                          f"{w} note[{k}].text (NTE-3)")
        self.put(order.add_segment("RXR"), "RXR_1", self._route(entry), f"{w} route")
        for n, (code, value, where) in enumerate(self._serials(medication, code_where), 1):
            group = order.add_group("RDS_O13_OBSERVATION")
            obx = group.add_segment("OBX")
            self.put(obx, "OBX_1", str(n), where)
            self.put(obx, "OBX_2", "ST", where)
            self.put(obx, "OBX_3", code, where)
            self.put(obx, "OBX_5", self.esc(value, f"{where} (OBX-5)"), where)
            self.put(obx, "OBX_11", "F", where)

    def _dispensed_medication(self, entry: Entry) -> tuple[Mapping[str, Any] | None, Entry | None]:
        target = self.index.resolve_ref(entry.resource.get("medicationReference"), entry)
        if target is not None and target.type == "Medication":
            return target.resource, target
        return None, None

    def _manufacturer(self, medication: Mapping[str, Any] | None, med: Entry | None) -> str:
        if not medication or med is None:
            return ""
        org = self.index.resolve_ref(medication.get("manufacturer"), med)
        if org is None:
            ref = medication.get("manufacturer")
            name = ref.get("display") if isinstance(ref, Mapping) else None
            return tx.components("", self.esc(name or "", f"{med.where} manufacturer (RXD-20)"))
        ident = next((i for i in org.resource.get("identifier") or []
                      if isinstance(i, Mapping) and i.get("value")), {})
        return tx.components(
            self.esc(ident.get("value", ""), f"{org.where} identifier (RXD-20.1)"),
            self.esc(org.resource.get("name", ""), f"{org.where} name (RXD-20.2)"),
            "L" if ident else "",  # HL7 table 0396: local code (the manufacturer's registry id)
        )

    def _route(self, entry: Entry) -> str:
        w = entry.where
        for i, dosage in enumerate(entry.resource.get("dosageInstruction") or []):
            route = dosage.get("route") if isinstance(dosage, Mapping) else None
            if not isinstance(route, Mapping):
                continue
            for coding in codings(route):
                if coding.get("system") == "http://snomed.info/sct" and \
                        coding.get("code") in ROUTES_0162:
                    code, text = ROUTES_0162[str(coding["code"])]
                    return tx.components(code, text, "HL70162")
            ce = self.ce(route, f"{w} dosageInstruction[{i}].route", "RXR-1", enrich_codes=False)
            if ce:
                return ce
        raise AdaptError(f"{w} dosageInstruction.route: RXR-1 (route) is required in RDS^O13")

    def _serials(self, medication: Mapping[str, Any] | None,
                 where: str) -> list[tuple[str, str, str]]:
        """GS1 serial numbers (AI 21) of the dispensed pack, as (OBX-3, value, where)."""
        if not medication:
            return []
        out: list[tuple[str, str, str]] = []
        for i, ident in enumerate(medication.get("identifier") or []):
            if not isinstance(ident, Mapping) or not isinstance(ident.get("value"), str):
                continue
            w = f"{where} identifier[{i}]"
            is_serial = any(c.get("code") == "SNO" for c in codings(ident.get("type")))
            if is_serial:
                out.append(("21^Serial number (GS1 AI 21)^99GS1AI", ident["value"], w))
            elif ident.get("system") == "https://www.gs1.org/element-string":
                m = _GS1_SERIAL.search(ident["value"])
                if m and not any(v == m.group(1) for _, v, _ in out):
                    out.append(("21^Serial number (GS1 AI 21)^99GS1AI", m.group(1), w))
        seen: set[str] = set()
        unique = []
        for item in out:
            if item[1] not in seen:
                seen.add(item[1])
                unique.append(item)
        return unique


# -- helpers -----------------------------------------------------------------------------------


def _segments(element: Any) -> list[Any]:
    out = []
    for child in element.children:
        if child.classname == "Segment":
            out.append(child)
        else:
            out.extend(_segments(child))
    return out


def _active(entries: list[Entry]) -> list[Entry]:
    out = []
    for e in entries:
        r = e.resource
        if r.get("status") in ("entered-in-error", "cancelled"):
            continue
        if "entered-in-error" in {c.get("code") for c in codings(r.get("verificationStatus"))}:
            continue
        out.append(e)
    return out


def _effective(resource: Mapping[str, Any]) -> str | None:
    found = first_of(resource, "effective")
    if not found:
        return None
    kind, value = found
    if kind == "DateTime" or kind == "Instant":
        return value if isinstance(value, str) else None
    if kind == "Period" and isinstance(value, Mapping):
        return value.get("start") or value.get("end")
    return None


def _number(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise AdaptError(f"{where}: not a number")
    if isinstance(value, Decimal):
        # NM has no exponent form: write the decimal out, keeping its stated precision.
        return format(value, "f")
    return str(value)


def _range_text(rng: Mapping[str, Any]) -> str:
    """OBX-7 in the forms of HL7 v2.5.1 §7.4.2.7: ``low-high``, ``>low``, ``<high``.

    FHIR bounds are inclusive; v2 writes a one-sided range with < or > and laboratories read
    it as "up to", so the form the receivers expect is kept.
    """
    low = rng.get("low", {}).get("value") if isinstance(rng.get("low"), Mapping) else None
    high = rng.get("high", {}).get("value") if isinstance(rng.get("high"), Mapping) else None
    if low is not None and high is not None:
        return f"{_number(low, 'range')}-{_number(high, 'range')}"
    if high is not None:
        return f"<{_number(high, 'range')}"
    if low is not None:
        return f">{_number(low, 'range')}"
    return str(rng.get("text", "")) if isinstance(rng.get("text"), str) else ""


def _v2_system(system: Any) -> str:
    if not isinstance(system, str):
        return ""
    return V2_SYSTEMS.get(system, "L")


def _identifier_type(ident: Mapping[str, Any]) -> str:
    for coding in codings(ident.get("type")):
        if coding.get("system") == "http://terminology.hl7.org/CodeSystem/v2-0203" and \
                coding.get("code"):
            return str(coding["code"])
    if str(ident.get("system", "")).startswith("http://hl7.org/fhir/sid/passport-"):
        return "PPN"
    return "PI"


def _latin(name: Mapping[str, Any]) -> bool:
    text = " ".join([str(name.get("family", ""))] + [str(g) for g in name.get("given") or []])
    return bool(text.strip()) and all(ord(ch) < 0x250 for ch in text)


def _fhir_id(value: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9\-.]", "-", value)[:60]
    return f"ips-{cleaned}" if cleaned else "ips"


def _short(e: Exception) -> str:
    text = str(e)
    return text if len(text) <= 120 else text[:117] + "..."
