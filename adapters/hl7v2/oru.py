"""ORU^R01 unsolicited observation results (HL7 v2.5.1 Chapter 7, §7.3.1).

One OBR per DiagnosticReport or panel (or per single Observation), OBX with LOINC codes and
UCUM units, NTE for notes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.base import AdaptError
from adapters.hl7v2 import text as tx
from adapters.hl7v2.fields import numeric
from adapters.hl7v2.message import MessageBuilder, active
from adapters.ips_index import Entry, codings, first_of

_RESULT_STATUS = {
    "registered": "I",
    "preliminary": "P",
    "partial": "P",
    "final": "F",
    "amended": "C",
    "corrected": "C",
    "appended": "C",
    "cancelled": "X",
}


class OruR01(MessageBuilder):
    MESSAGE = ("ORU", "R01", "ORU_R01")

    def body(self, msg: Any) -> None:
        result = msg.add_group("ORU_R01_PATIENT_RESULT")
        patient = result.add_group("ORU_R01_PATIENT")
        self.pid(patient.add_segment("PID"))
        visit = patient.add_group("ORU_R01_VISIT")
        self.pv1(visit.add_segment("PV1"))
        orders = self._orders()
        if not orders:
            raise AdaptError("ORU_R01: no Observation or DiagnosticReport in the Bundles")
        for n, (head, members) in enumerate(orders, 1):
            group = result.add_group("ORU_R01_ORDER_OBSERVATION")
            self._order(group, n, head, members)

    def _orders(self) -> list[tuple[Entry, list[Entry]]]:
        """(order head, observations) pairs: reports and panels with their members, then singles."""
        reports = active(self.index.of_type("DiagnosticReport"))
        observations = active(self.index.of_type("Observation"))
        orders: list[tuple[Entry, list[Entry]]] = []
        grouped: set[str] = set()
        for head in reports + [o for o in observations if o.resource.get("hasMember")]:
            refs = head.resource.get("result") or head.resource.get("hasMember") or []
            members = []
            for ref in refs:
                target = self.index.resolve_ref(ref, head)
                if target is not None and target.type == "Observation" and active([target]):
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
        self.put(
            obr,
            "OBR_4",
            self.ce(r.get("code"), f"{w} code", "OBR-4", prefer="http://loinc.org"),
            f"{w} code",
        )
        effective = _effective(r)
        if effective:
            self.put(obr, "OBR_7", tx.dtm(effective, f"{w} effective (OBR-7)"), f"{w} effective")
        if r.get("issued"):
            self.put(obr, "OBR_22", tx.dtm(r["issued"], f"{w} issued (OBR-22)"), f"{w} issued")
        if r.get("status") in _RESULT_STATUS:
            self.put(obr, "OBR_25", _RESULT_STATUS[r["status"]], f"{w} status")
        if head.type == "DiagnosticReport" and isinstance(r.get("conclusion"), str):
            nte = group.add_segment("NTE")
            self.nte(nte, 1, r["conclusion"], f"{w} conclusion")
        set_id = 0
        for member in members:
            for value in self._obx_values(member):
                set_id += 1
                obs_group = group.add_group("ORU_R01_OBSERVATION")
                self._obx(obs_group.add_segment("OBX"), set_id, member, value)
                if value.get("notes"):
                    for k, (note, where) in enumerate(value["notes"], 1):
                        self.nte(obs_group.add_segment("NTE"), k, note, where)

    def _filler(self, entry: Entry) -> str:
        ident = next(
            (
                i
                for i in entry.resource.get("identifier") or []
                if isinstance(i, Mapping) and i.get("value")
            ),
            None,
        )
        if ident is not None:
            return self.esc(ident["value"], f"{entry.where} identifier[0].value (OBR-3)")
        return self.esc(entry.id or entry.key, f"{entry.where} id (OBR-3)")

    def _obx_values(self, entry: Entry) -> list[dict[str, Any]]:
        """One OBX per value: the observation's own, or one per component."""
        r, w = entry.resource, entry.where
        notes = [
            (n["text"], f"{w} note[{i}].text (NTE-3)")
            for i, n in enumerate(r.get("note") or [])
            if isinstance(n, Mapping) and isinstance(n.get("text"), str)
        ]
        out = []
        if first_of(r, "value") is not None or not r.get("component"):
            out.append({"code": r.get("code"), "holder": r, "where": w, "notes": notes})
        else:
            for i, component in enumerate(r.get("component") or []):
                out.append(
                    {
                        "code": component.get("code"),
                        "holder": component,
                        "where": f"{w} component[{i}]",
                        "notes": [],
                    }
                )
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
        self.put(
            obx,
            "OBX_3",
            self.ce(value["code"], f"{w} code", "OBX-3", prefer="http://loinc.org"),
            f"{w} code",
        )
        if er7:
            self.put(obx, "OBX_5", er7, f"{w} value")
        if units:
            self.put(obx, "OBX_6", units, f"{w} value.unit")
        ranges = [
            _range_text(rng)
            for rng in holder.get("referenceRange") or []
            if isinstance(rng, Mapping)
        ]
        ranges = [x for x in ranges if x]
        if ranges:
            self.put(
                obx,
                "OBX_7",
                self.esc(ranges[0], f"{w} referenceRange (OBX-7)"),
                f"{w} referenceRange",
            )
        flags = [
            c["code"]
            for i in holder.get("interpretation") or []
            for c in codings(i)
            if c.get("code")
        ]
        if flags:
            self.put(
                obx,
                "OBX_8",
                [self.esc(f, f"{w} interpretation (OBX-8)") for f in flags],
                f"{w} interpretation",
            )
        status = _RESULT_STATUS.get(str(r.get("status")), "F")
        if not er7:
            status = "X"  # HL7 table 0085: results cannot be obtained for this observation
        self.put(obx, "OBX_11", status, f"{entry.where} status")
        effective = _effective(r)
        if effective:
            self.put(
                obx,
                "OBX_14",
                tx.dtm(effective, f"{entry.where} effective (OBX-14)"),
                f"{entry.where} effective",
            )
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
            number = numeric(value.get("value"), f"{where}.value")
            units = self.units(value, where, "OBX-6")
            comparator = value.get("comparator")
            if comparator:
                return (
                    "SN",
                    tx.components(self.esc(comparator, f"{where}.comparator"), number),
                    units,
                )
            return "NM", number, units
        if kind == "CodeableConcept":
            return "CE", self.ce(value, where, "OBX-5"), ""
        if kind == "String" and isinstance(value, str):
            return "ST", self.esc(value, f"{where} (OBX-5)"), ""
        if kind == "Integer":
            return "NM", numeric(value, where), ""
        if kind == "Boolean":
            return "ST", "true" if value else "false", ""
        if kind == "DateTime":
            return "TS", tx.dtm(value, f"{where} (OBX-5)"), ""
        if kind == "Range" and isinstance(value, Mapping):
            low, high = value.get("low") or {}, value.get("high") or {}
            units = self.units(low or high, where, "OBX-6")
            return (
                "SN",
                tx.components(
                    "",
                    numeric(low.get("value"), f"{where}.low"),
                    "-",
                    numeric(high.get("value"), f"{where}.high"),
                ),
                units,
            )
        raise AdaptError(f"{where}: value{kind} has no HL7 v2 OBX-5 form here")

    def _performer(self, entry: Entry) -> str:
        for ref in entry.resource.get("performer") or []:
            org = self.index.resolve_ref(ref, entry)
            if org is not None and org.type == "Organization":
                name = org.resource.get("name", "")
                ident = next(
                    (
                        i.get("value")
                        for i in org.resource.get("identifier") or []
                        if isinstance(i, Mapping) and i.get("value")
                    ),
                    "",
                )
                # XON-1 organization name, XON-10 organization identifier.
                return tx.components(
                    self.esc(name, f"{org.where} name (OBX-23.1)"),
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    self.esc(ident, f"{org.where} identifier (OBX-23.10)"),
                )
        return ""


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


def _range_text(rng: Mapping[str, Any]) -> str:
    """OBX-7 in the forms of HL7 v2.5.1 §7.4.2.7: ``low-high``, ``>low``, ``<high``.

    FHIR bounds are inclusive; v2 writes a one-sided range with < or > and laboratories read
    it as "up to", so the form the receivers expect is kept.
    """
    low = rng.get("low", {}).get("value") if isinstance(rng.get("low"), Mapping) else None
    high = rng.get("high", {}).get("value") if isinstance(rng.get("high"), Mapping) else None
    if low is not None and high is not None:
        return f"{numeric(low, 'range')}-{numeric(high, 'range')}"
    if high is not None:
        return f"<{numeric(high, 'range')}"
    if low is not None:
        return f">{numeric(low, 'range')}"
    return str(rng.get("text", "")) if isinstance(rng.get("text"), str) else ""
