"""MDM^T02 original document notification and content (HL7 v2.5.1 Chapter 9, §9.6.2).

TXA and one OBX of type ED carrying, Base64-encoded, the PDF of a DocumentReference when the
Bundles hold one, else the IPS of these Bundles (``adapters.ips``).
"""

from __future__ import annotations

import base64
import copy
import re
from collections.abc import Mapping
from typing import Any

from adapters.base import AdaptError
from adapters.hl7v2 import text as tx
from adapters.hl7v2.message import MessageBuilder, active
from adapters.ips import build_ips
from adapters.ips_index import codings
from adapters.ips_json import dumps

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

_ENCAPSULATED_MAX = 65536  # ED-5 data is TX: 65536 characters in HL7 v2.5.1


class MdmT02(MessageBuilder):
    MESSAGE = ("MDM", "T02", "MDM_T02")

    def body(self, msg: Any) -> None:
        self.evn(msg.add_segment("EVN"), "T02")
        self.pid(msg.add_segment("PID"))
        self.pv1(msg.add_segment("PV1"))
        doc = self._document()
        txa = msg.add_segment("TXA")
        w = doc["where"]
        self.put(txa, "TXA_1", "1", w)
        self.put(txa, "TXA_2", DOCUMENT_TYPES_0270.get(doc["loinc"], "PR"), f"{w} type")
        self.put(txa, "TXA_3", "AP", w)  # HL7 table 0191: application data (Base64 below)
        self.put(txa, "TXA_4", doc["date"], f"{w} date")
        self.put(txa, "TXA_6", doc["date"], f"{w} date")
        self.put(
            txa, "TXA_12", self.esc(doc["number"], f"{w} identifier (TXA-12)"), f"{w} identifier"
        )
        self.put(txa, "TXA_17", doc["completion"], f"{w} status")
        self.put(txa, "TXA_19", "AV", w)  # HL7 table 0273: available for patient care
        group = msg.add_group("MDM_T02_OBXNTE_SUPPGRP")
        obx = group.add_segment("OBX")
        self.put(obx, "OBX_1", "1", w)
        self.put(obx, "OBX_2", "ED", w)
        self.put(
            obx,
            "OBX_3",
            tx.components(
                self.esc(doc["loinc"], f"{w} type"), self.esc(doc["title"], f"{w} type"), "LN"
            ),
            f"{w} type",
        )
        data = base64.b64encode(doc["content"]).decode("ascii")
        if len(data) > _ENCAPSULATED_MAX:
            raise AdaptError(
                f"{w} (OBX-5.5): {len(data)} characters of Base64, more than the "
                f"{_ENCAPSULATED_MAX} HL7 v2.5.1 allows in ED data; send a reference instead"
            )
        self.put(
            obx,
            "OBX_5",
            tx.components("MEDLEDGER", doc["type"], doc["subtype"], "Base64", data),
            f"{w} content",
        )
        self.put(obx, "OBX_11", "F", w)
        self.put(obx, "OBX_14", doc["date"], f"{w} date")

    def _document(self) -> dict[str, Any]:
        """The PDF of the first DocumentReference that holds one; else the IPS of the Bundles."""
        for entry in active(self.index.of_type("DocumentReference")):
            r = entry.resource
            for i, content in enumerate(r.get("content") or []):
                attachment = content.get("attachment") if isinstance(content, Mapping) else None
                if not isinstance(attachment, Mapping):
                    continue
                if attachment.get("contentType") != "application/pdf" or not attachment.get("data"):
                    continue
                where = f"{entry.where} content[{i}].attachment"
                try:
                    content_bytes = base64.b64decode(attachment["data"], validate=True)
                except (ValueError, TypeError):
                    raise AdaptError(f"{where}.data: not Base64") from None
                loinc = next(
                    (
                        c.get("code")
                        for c in codings(r.get("type"))
                        if c.get("system") == "http://loinc.org"
                    ),
                    "",
                )
                title = (
                    next(
                        (
                            c.get("display")
                            for c in codings(r.get("type"))
                            if c.get("system") == "http://loinc.org"
                        ),
                        "",
                    )
                    or "Document"
                )
                number = next(
                    (
                        i.get("value")
                        for i in r.get("identifier") or []
                        if isinstance(i, Mapping) and i.get("value")
                    ),
                    entry.id or "",
                )
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
        ips = build_ips(
            self._bundles(), now=self.now, document_id=_fhir_id(self.control_id), maps=self.maps
        )
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
        return [
            {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [
                    {"fullUrl": e.full_url, "resource": copy.deepcopy(dict(e.resource))}
                    if e.full_url
                    else {"resource": copy.deepcopy(dict(e.resource))}
                    for e in self.index.entries
                    if e.bundle == b
                ],
            }
            for b in sorted({e.bundle for e in self.index.entries})
        ]


def _fhir_id(value: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9\-.]", "-", value)[:60]
    return f"ips-{cleaned}" if cleaned else "ips"
