"""ADT^A08 "update patient information" in structure ADT_A01 (HL7 v2.5.1 Chapter 3, §3.3.8).

PID and PV1, then AL1 per allergy, DG1 per diagnosis and PR1 per procedure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.base import AdaptError
from adapters.hl7v2 import text as tx
from adapters.hl7v2.message import MessageBuilder, active
from adapters.ips_index import Entry, codings, concept_text, first_of, international_display

_ALLERGEN_TYPE = {"medication": "DA", "food": "FA", "environment": "EA", "biologic": "MA"}
_SEVERITY = {"severe": "SV", "moderate": "MO", "mild": "MI"}


class AdtA08(MessageBuilder):
    MESSAGE = ("ADT", "A08", "ADT_A01")

    def body(self, msg: Any) -> None:
        self.evn(msg.add_segment("EVN"), "A08")
        self.pid(msg.add_segment("PID"))
        self.pv1(msg.add_segment("PV1"))
        for n, entry in enumerate(active(self.index.of_type("AllergyIntolerance")), 1):
            al1 = msg.add_segment("AL1")
            self._al1(al1, n, entry)
        for n, entry in enumerate(active(self.index.of_type("Condition")), 1):
            dg1 = msg.add_segment("DG1")
            self._dg1(dg1, n, entry)
        for n, entry in enumerate(active(self.index.of_type("Procedure")), 1):
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
        severities = [
            str(x.get("severity"))
            for x in r.get("reaction") or []
            if isinstance(x, Mapping) and x.get("severity") in _SEVERITY
        ]
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
        self.put(
            dg1,
            "DG1_4",
            self.esc(concept_text(r.get("code")), f"{w} code.text (DG1-4)"),
            f"{w} code.text",
        )
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
        self.put(
            pr1,
            "PR1_4",
            self.esc(concept_text(r.get("code")), f"{w} code.text (PR1-4)"),
            f"{w} code.text",
        )
        performed = first_of(r, "performed")
        when = None
        if performed and performed[0] == "DateTime":
            when = performed[1]
        elif performed and performed[0] == "Period" and isinstance(performed[1], Mapping):
            when = performed[1].get("start")
        if not when:
            raise AdaptError(f"{w} performed[x]: PR1-5 (procedure date/time) is required")
        self.put(pr1, "PR1_5", tx.dtm(when, f"{w} performed (PR1-5)"), f"{w} performed")
