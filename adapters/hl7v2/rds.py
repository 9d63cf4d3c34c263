"""RDS^O13 pharmacy dispense (HL7 v2.5.1 Chapter 4A, §4A.3.9).

ORC + RXD per MedicationDispense with lot (RXD-18), expiry (RXD-19) and manufacturer
(RXD-20); the GS1 serial number (AI 21) goes in an OBX because RXD has no field for it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from adapters.base import AdaptError
from adapters.hl7v2 import text as tx
from adapters.hl7v2.fields import numeric
from adapters.hl7v2.message import MessageBuilder, active
from adapters.ips_index import Entry, codings

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

_GS1_SERIAL = re.compile(r"\(21\)([^()]+)")


class RdsO13(MessageBuilder):
    MESSAGE = ("RDS", "O13", "RDS_O13")

    def body(self, msg: Any) -> None:
        patient = msg.add_group("RDS_O13_PATIENT")
        self.pid(patient.add_segment("PID"))
        visit = patient.add_group("RDS_O13_PATIENT_VISIT")
        self.pv1(visit.add_segment("PV1"))
        dispenses = active(self.index.of_type("MedicationDispense"))
        if not dispenses:
            raise AdaptError("RDS_O13: no MedicationDispense in the Bundles")
        for entry in dispenses:
            self._dispense(msg.add_group("RDS_O13_ORDER"), entry)

    def _dispense(self, order: Any, entry: Entry) -> None:
        r, w = entry.resource, entry.where
        medication, med_entry = self._dispensed_medication(entry)
        placer = next(
            (
                p.get("identifier", {}).get("value")
                for p in r.get("authorizingPrescription") or []
                if isinstance(p, Mapping) and isinstance(p.get("identifier"), Mapping)
            ),
            None,
        )
        filler = next(
            (
                i.get("value")
                for i in r.get("identifier") or []
                if isinstance(i, Mapping) and i.get("value")
            ),
            entry.id,
        )
        orc = order.add_segment("ORC")
        self.put(orc, "ORC_1", "RE", w)
        if placer:
            self.put(
                orc,
                "ORC_2",
                self.esc(placer, f"{w} authorizingPrescription (ORC-2)"),
                f"{w} authorizingPrescription",
            )
        if filler:
            self.put(orc, "ORC_3", self.esc(filler, f"{w} identifier (ORC-3)"), f"{w} identifier")
        handed = r.get("whenHandedOver") or r.get("whenPrepared")
        if not handed:
            raise AdaptError(f"{w} whenHandedOver: RXD-3 (date dispensed) is required")
        self.put(orc, "ORC_9", tx.dtm(handed, f"{w} whenHandedOver (ORC-9)"), f"{w} when")

        rxd = order.add_segment("RXD")
        self.put(rxd, "RXD_1", "1", w)
        code_where = med_entry.where if med_entry else w
        give = self.ce(
            medication.get("code") if medication else r.get("medicationCodeableConcept"),
            f"{code_where} code",
            "RXD-2",
        )
        if not give:
            raise AdaptError(f"{w} medication[x]: RXD-2 (dispense/give code) is required")
        self.put(rxd, "RXD_2", give, f"{code_where} code")
        self.put(rxd, "RXD_3", tx.dtm(handed, f"{w} whenHandedOver (RXD-3)"), f"{w} when")
        quantity = r.get("quantity") if isinstance(r.get("quantity"), Mapping) else None
        if not quantity or "value" not in quantity:
            raise AdaptError(f"{w} quantity: RXD-4 (actual dispense amount) is required")
        self.put(
            rxd, "RXD_4", numeric(quantity["value"], f"{w} quantity.value (RXD-4)"), f"{w} quantity"
        )
        self.put(rxd, "RXD_5", self.units(quantity, f"{w} quantity", "RXD-5"), f"{w} quantity")
        if medication and medication.get("form"):
            self.put(
                rxd,
                "RXD_6",
                self.ce(medication["form"], f"{code_where} form", "RXD-6", enrich_codes=False),
                f"{code_where} form",
            )
        self.put(
            rxd,
            "RXD_7",
            self.esc(placer or filler, f"{w} prescription number (RXD-7)"),
            f"{w} prescription",
        )
        batch = medication.get("batch") if medication else None
        if isinstance(batch, Mapping):
            if batch.get("lotNumber"):
                self.put(
                    rxd,
                    "RXD_18",
                    self.esc(batch["lotNumber"], f"{code_where} batch.lotNumber (RXD-18)"),
                    f"{code_where} batch.lotNumber",
                )
            if batch.get("expirationDate"):
                self.put(
                    rxd,
                    "RXD_19",
                    tx.dtm(batch["expirationDate"], f"{code_where} batch.expirationDate (RXD-19)"),
                    f"{code_where} batch.expirationDate",
                )
        maker = self._manufacturer(medication, med_entry)
        if maker:
            self.put(rxd, "RXD_20", maker, f"{code_where} manufacturer")
        for k, note in enumerate(n for n in r.get("note") or [] if isinstance(n, Mapping)):
            if isinstance(note.get("text"), str):
                self.nte(
                    order.add_segment("NTE"), k + 1, note["text"], f"{w} note[{k}].text (NTE-3)"
                )
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
        ident = next(
            (
                i
                for i in org.resource.get("identifier") or []
                if isinstance(i, Mapping) and i.get("value")
            ),
            {},
        )
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
                if (
                    coding.get("system") == "http://snomed.info/sct"
                    and coding.get("code") in ROUTES_0162
                ):
                    code, text = ROUTES_0162[str(coding["code"])]
                    return tx.components(code, text, "HL70162")
            ce = self.ce(route, f"{w} dosageInstruction[{i}].route", "RXR-1", enrich_codes=False)
            if ce:
                return ce
        raise AdaptError(f"{w} dosageInstruction.route: RXR-1 (route) is required in RDS^O13")

    def _serials(
        self, medication: Mapping[str, Any] | None, where: str
    ) -> list[tuple[str, str, str]]:
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
