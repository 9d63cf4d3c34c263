"""The regulator's RWD export: one product's Lecheng RWD Bundles, under each patient's consent.

Lecheng's real-world data on medicines and devices used under the special-import licence feeds
NMPA's approvals. Giving a patient's data to the regulator is providing it to another handler
(PIPL art. 23): it needs the patient's separate consent naming the regulator, for research
(v3-ActReason HRESCH, or CLINTRCH). Each Bundle that used the product (the recall index,
exchange/trace.py) is disclosed only when its patient's newest consent from the submitting
hospital permits this regulator that purpose now, evaluated by exchange/consent.py as an
insurer's request is (the current Consents: those of the latest version of each consent
Bundle); a Bundle naming no patient has no consent to permit it. The export is answered at
once, so consent is decided at the moment the data leaves; each patient disclosed gets an
access entry of their own (exchange/routers/rwd_export.py). The lines are
adapters/trace_export.rwd_export's: the stored bytes with insignificant whitespace removed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from adapters.trace_export import rwd_export
from adapters.trace_index import RecallQuery
from exchange.bundles.read import bundle_by_id, patients_of, subjects_by_index
from exchange.consent import rules as consent_rules
from exchange.indexes import trace
from exchange.intake.kind import patient_identifiers
from exchange.settlement import index as settlement
from exchange.vault import Erased, Vault, lookup_tag


@dataclass(frozen=True)
class Export:
    ndjson: bytes
    disclosed: int  # Bundles in the export
    withheld: int  # Bundles that used the product but no consent let through (or erased)
    # Each patient an access entry names (the subject of a disclosed Bundle) -> the further
    # patients those Bundles name (exchange.db.patients_of), and -> its Bundles.
    patients: dict[bytes, list[bytes]] = field(default_factory=dict)
    bundles: dict[bytes, int] = field(default_factory=dict)


def consents_about(vault_: Vault, sender: str, doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The Consents `sender` submitted about the Bundle's patient, in submission order."""
    engine, key = vault_.engine, vault_.lookup_key
    reader = settlement.BundleBytes(vault_)
    rows = {
        (r.index, r.pos): r
        for patient in patient_identifiers(doc)
        for r in settlement.consents_of(engine, sender, lookup_tag(key, sender, patient))
    }
    return [json.loads(reader.resource(rows[k])) for k in sorted(rows)]


def research_permits(
    vault_: Vault, sender: str, doc: dict[str, Any], org: str, purpose: str, now: datetime
) -> bool:
    """Whether the newest consent `sender` holds from the Bundle's patient lets regulator
    `org` have it for `purpose` (research) at `now`; the settlement index must be fresh."""
    consents = consents_about(vault_, sender, doc)
    req = consent_rules.Request(org=org, purpose=purpose, resource_type="Bundle", now=now)
    return bool(consents) and consent_rules.evaluate(consents, req, consent_rules.RESEARCH).permit


def export_product(
    vault_: Vault, query: RecallQuery, org: str, purpose: str, now: datetime
) -> Export:
    """The NDJSON export of `query`'s product for regulator `org`; the recall and settlement
    indexes must be fresh."""
    engine = vault_.engine
    permitted: list[tuple[int, bytes]] = []
    named: list[list[bytes]] = []
    withheld = 0
    for bundle_id in dict.fromkeys(h.bundle_id for h in trace.recall(engine, query, None)):
        try:
            row = bundle_by_id(vault_, bundle_id)
        except Erased:
            withheld += 1
            continue
        if row is None:
            continue
        if research_permits(vault_, row.sender, json.loads(row.data), org, purpose, now):
            permitted.append((row.index, row.data))
            named.append(subjects_by_index(vault_, [row.index]).get(row.index, []))
        else:
            withheld += 1
    permitted.sort()
    data = rwd_export(permitted, query)
    bundles: dict[bytes, int] = {}
    for subjects in named:
        if subjects:
            bundles[subjects[0]] = bundles.get(subjects[0], 0) + 1
    return Export(data, data.count(b"\n"), withheld, patients_of(named), bundles)
