"""The HL7 v3 XML pieces an ICSR is made of: elements, ICH-coded observations, times."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from datetime import datetime

HL7 = "urn:hl7-org:v3"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
ICH = "2.16.840.1.113883.3.989.2.1"
ISO3166 = "1.0.3166.1.2.2"


def el(
    parent: ET.Element, tag: str, attrs: Mapping[str, str] | None = None, **more: str
) -> ET.Element:
    return ET.SubElement(parent, tag, {**(attrs or {}), **more})


def observation(parent: ET.Element, code: str) -> ET.Element:
    obs = el(parent, "observation", classCode="OBS", moodCode="EVN")
    el(obs, "code", code=code, codeSystem=f"{ICH}.1.19")
    return obs


def ts(moment: datetime) -> str:
    """HL7 TS with seconds and offset, CCYYMMDDhhmmss+ZZzz (ICH IG appendix II)."""
    offset = moment.strftime("%z") or "+0000"
    return moment.strftime("%Y%m%d%H%M%S") + offset


def ts_date(value: str | None, *, keep_time: bool = False) -> str | None:
    """A FHIR date/dateTime as HL7 TS: date only, or with time and offset when asked."""
    if not value:
        return None
    if keep_time and "T" in value:
        try:
            return ts(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            pass
    digits = re.sub(r"[^0-9]", "", value[:10])
    return digits or None
