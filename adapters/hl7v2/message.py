"""What every HL7 v2 message here shares: MSH, EVN, PID, PV1 and NTE, and STRICT validation.

A message is one :class:`MessageBuilder` subclass per message type (``adt``, ``oru``, ``mdm``,
``rds``); each fills the body of its structure with :meth:`MessageBuilder.body`, and
:meth:`MessageBuilder.build` frames it with the header, validates the whole message with
hl7apy at STRICT level and writes its text.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message
from hl7apy.exceptions import HL7apyException

from adapters.base import AdaptError
from adapters.hl7v2 import text as tx
from adapters.hl7v2.fields import FieldWriter
from adapters.ips_index import BundleIndex, Entry, codings, entered_in_error
from adapters.terminology import ConceptMapSet

_GENDER = {"male": "M", "female": "F", "other": "O", "unknown": "U"}
_NAME_USE = {
    "official": "L",
    "usual": "D",
    "nickname": "N",
    "anonymous": "S",
    "maiden": "M",
    "old": "U",
    "temp": "U",
}
_PATIENT_CLASS = {
    "IMP": "I",
    "ACUTE": "I",
    "NONAC": "I",
    "AMB": "O",
    "EMER": "E",
    "PRENC": "P",
    "OBSENC": "O",
    "HH": "O",
    "VR": "O",
    "SS": "O",
}
_COUNTRY_3 = {
    "CN": "CHN",
    "KR": "KOR",
    "RU": "RUS",
    "SA": "SAU",
    "TH": "THA",
    "US": "USA",
    "GB": "GBR",
    "JP": "JPN",
    "DE": "DEU",
    "FR": "FRA",
    "AE": "ARE",
    "KZ": "KAZ",
    "MN": "MNG",
    "VN": "VNM",
    "MY": "MYS",
    "SG": "SGP",
    "ID": "IDN",
    "PH": "PHL",
}


class MessageBuilder(FieldWriter, ABC):
    """One message from the records of one patient; subclasses write the body."""

    # MSH-9: message code, trigger event, message structure.
    MESSAGE: ClassVar[tuple[str, str, str]]

    def __init__(
        self, index: BundleIndex, now: datetime, maps: ConceptMapSet, control_id: str
    ) -> None:
        super().__init__(index, now, maps)
        self.control_id = control_id

    @classmethod
    def name(cls) -> str:
        """``ADT_A08``, ``ORU_R01``, ...: message code and trigger event."""
        return f"{cls.MESSAGE[0]}_{cls.MESSAGE[1]}"

    def build(self, **msh: str | None) -> str:
        """The message text, segments joined by CR; ``msh`` names the applications."""
        code, trigger, structure = self.MESSAGE
        msg = Message(
            structure,
            version=tx.VERSION,
            validation_level=VALIDATION_LEVEL.STRICT,
            reference=(tx.profile(structure) or {}).get(structure),
        )
        self._msh(msg.msh[0], code, trigger, structure, **msh)
        self.body(msg)
        try:
            msg.validate()
        except HL7apyException as e:
            raise AdaptError(f"{self.name()}: the message does not validate: {e}") from None
        return self.er7(msg)

    @abstractmethod
    def body(self, msg: Any) -> None:
        """Add the segments and groups after MSH."""

    # -- header -----------------------------------------------------------------------------

    def _msh(
        self,
        msh: Any,
        code: str,
        trigger: str,
        structure: str,
        sending_application: str | None,
        sending_facility: str | None,
        receiving_application: str | None,
        receiving_facility: str | None,
    ) -> None:
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
        self.put(msh, "MSH_10", self.esc(self.control_id, "control id"), "control id")
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

    # -- patient and visit ------------------------------------------------------------------

    def evn(self, evn: Any, trigger: str) -> None:
        self.put(evn, "EVN_1", trigger, "event")
        self.put(evn, "EVN_2", self.stamp, "now")

    def pid(self, pid: Any) -> None:
        entry = self.index.patient
        p = entry.resource
        w = entry.where
        self.put(pid, "PID_1", "1", w)
        ids = []
        for i, ident in enumerate(p.get("identifier") or []):
            if not isinstance(ident, Mapping) or not ident.get("value"):
                continue
            where = f"{w} identifier[{i}]"
            ids.append(
                tx.components(
                    self.esc(ident["value"], f"{where}.value (PID-3.1)"),
                    "",
                    "",
                    self._authority(ident.get("system"), f"{where}.system (PID-3.4)"),
                    self.esc(_identifier_type(ident), f"{where}.type (PID-3.5)"),
                )
            )
        if not ids:
            raise AdaptError(f"{w} identifier: PID-3 needs at least one patient identifier")
        self.put(pid, "PID_3", ids, f"{w} identifier")
        names = [
            self._xpn(n, f"{w} name[{i}]", "PID-5")
            for i, n in enumerate(p.get("name") or [])
            if isinstance(n, Mapping)
        ]
        names = [n for n in names if n]
        if not names:
            raise AdaptError(f"{w} name: PID-5 needs a patient name")
        self.put(pid, "PID_5", names, f"{w} name")
        if p.get("birthDate"):
            self.put(
                pid,
                "PID_7",
                tx.date_only(p["birthDate"], f"{w} birthDate (PID-7)"),
                f"{w} birthDate",
            )
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

    def pv1(self, pv1: Any) -> None:
        encounter = self._encounter()
        self.put(pv1, "PV1_1", "1", "visit")
        if encounter is None:
            self.put(pv1, "PV1_2", "N", "visit")  # HL7 table 0004: not applicable
            return
        e = encounter.resource
        w = encounter.where
        klass = c if isinstance(c := e.get("class"), Mapping) else {}
        self.put(pv1, "PV1_2", _PATIENT_CLASS.get(str(klass.get("code")), "U"), f"{w} class")
        doctor = self._attending(encounter)
        if doctor:
            self.put(pv1, "PV1_7", doctor, f"{w} participant")
        idents = [i for i in e.get("identifier") or [] if isinstance(i, Mapping) and i.get("value")]
        if idents:
            ident = idents[0]
            self.put(
                pv1,
                "PV1_19",
                tx.components(
                    self.esc(ident["value"], f"{w} identifier[0].value (PV1-19.1)"),
                    "",
                    "",
                    self._authority(ident.get("system"), f"{w} identifier[0].system (PV1-19.4)"),
                    "VN",
                ),
                f"{w} identifier",
            )
        period = p if isinstance(p := e.get("period"), Mapping) else {}
        if period.get("start"):
            self.put(
                pv1,
                "PV1_44",
                tx.dtm(period["start"], f"{w} period.start (PV1-44)"),
                f"{w} period.start",
            )
        if period.get("end"):
            self.put(
                pv1, "PV1_45", tx.dtm(period["end"], f"{w} period.end (PV1-45)"), f"{w} period.end"
            )

    def _attending(self, encounter: Entry) -> str:
        participants = [
            p for p in encounter.resource.get("participant") or [] if isinstance(p, Mapping)
        ]

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
            ident = next(
                (
                    i
                    for i in doc.resource.get("identifier") or []
                    if isinstance(i, Mapping) and i.get("value")
                ),
                {},
            )
            w = doc.where
            xpn = self._xpn(names[0], f"{w} name", "PV1-7")
            parts = xpn.split("^") if xpn else []
            return tx.components(
                self.esc(ident.get("value", ""), f"{w} identifier (PV1-7.1)"), *parts[:5]
            )
        return ""

    # -- notes ------------------------------------------------------------------------------

    def nte(self, nte: Any, n: int, text: str, where: str) -> None:
        self.put(nte, "NTE_1", str(n), where)
        self.put(nte, "NTE_2", "L", where)  # HL7 table 0105: filler (the hospital) as source
        self.put(nte, "NTE_3", self.esc(text, where), where)


def active(entries: list[Entry]) -> list[Entry]:
    """The entries that were not withdrawn as entered in error."""
    return [e for e in entries if not entered_in_error(e.resource)]


def _identifier_type(ident: Mapping[str, Any]) -> str:
    for coding in codings(ident.get("type")):
        if coding.get("system") == "http://terminology.hl7.org/CodeSystem/v2-0203" and coding.get(
            "code"
        ):
            return str(coding["code"])
    if str(ident.get("system", "")).startswith("http://hl7.org/fhir/sid/passport-"):
        return "PPN"
    return "PI"


def _latin(name: Mapping[str, Any]) -> bool:
    text = " ".join([str(name.get("family", ""))] + [str(g) for g in name.get("given") or []])
    return bool(text.strip()) and all(ord(ch) < 0x250 for ch in text)
