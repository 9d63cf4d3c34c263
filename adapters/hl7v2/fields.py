"""HL7 v2 field values: each assignment checked by hl7apy, CE and units built, ER7 written.

A value reaches a field already escaped (``adapters.hl7v2.text``) and hl7apy checks it against
the field's datatype and length as it is assigned (STRICT). What was assigned is also kept,
field by field, because the message text is written from it rather than from hl7apy's own
serialisation (see :meth:`FieldWriter.er7`).

Coded elements (CE) carry the source coding in the primary triplet and, in the alternate
triplet, a second source coding or a coding derived by ``adapters.terminology``: v2 has no flag
for "derived", so a derived code never takes the primary place. Code systems are named with
HL7 table 0396 identifiers; those outside the table get a ``99``-prefixed local name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from hl7apy.exceptions import HL7apyException, MaxLengthReached

from adapters.base import AdaptError
from adapters.hl7v2 import text as tx
from adapters.ips_index import BundleIndex, codings, concept_text
from adapters.terminology import (
    GBT_14396,
    GBT_15657_TCM,
    NHSA_ICD10,
    ConceptMapSet,
    enrich,
    is_derived,
)

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
    GBT_14396: "99GBT14396",
    NHSA_ICD10: "99NHSAICD10",
    GBT_15657_TCM: "99GBT15657",
    "http://terminology.hl7.org/CodeSystem/v2-0162": "HL70162",
}


class FieldWriter:
    """The field values of one message, over the records of one patient."""

    def __init__(self, index: BundleIndex, now: datetime, maps: ConceptMapSet) -> None:
        self.index = index
        self.now = now
        self.maps = maps
        self.stamp = tx.dtm_now(now)
        # Field values as assigned, per segment: id(segment) -> field number -> repetitions.
        self.assigned: dict[int, dict[int, list[str]]] = {}

    def er7(self, msg: Any) -> str:
        """The message text: hl7apy's segment order, the field values exactly as assigned.

        hl7apy's own ``to_er7`` escapes every backslash that does not open one of the
        sequences it knows (F S T R E H N), which would turn a ``\\Xhh\\`` escape into
        literal text; the values assigned here are already escaped, so they are written as is.
        """
        lines = []
        for segment in tx.segments(msg):
            fields = self.assigned.get(id(segment), {})
            last = max(fields, default=0)
            if segment.name == "MSH":
                values = ["~".join(fields.get(i, [])) for i in range(3, last + 1)]
                lines.append("|".join(["MSH", "^~\\&", *values]))
            else:
                values = ["~".join(fields.get(i, [])) for i in range(1, last + 1)]
                lines.append("|".join([segment.name, *values]))
        return "\r".join(lines)

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

    def ce(
        self,
        concept: Any,
        where: str,
        field: str,
        *,
        enrich_codes: bool = True,
        prefer: str | None = None,
    ) -> str:
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
            return tx.components(
                self.esc(code, f"{where}.code ({field}.1)"),
                self.esc(unit, f"{where}.unit ({field}.2)"),
                "UCUM",
            )
        return tx.components("", self.esc(unit, f"{where}.unit ({field}.2)"))


def numeric(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise AdaptError(f"{where}: not a number")
    if isinstance(value, Decimal):
        # NM has no exponent form: write the decimal out, keeping its stated precision.
        return format(value, "f")
    return str(value)


def _v2_system(system: Any) -> str:
    if not isinstance(system, str):
        return ""
    return V2_SYSTEMS.get(system, "L")


def _short(e: Exception) -> str:
    text = str(e)
    return text if len(text) <= 120 else text[:117] + "..."
