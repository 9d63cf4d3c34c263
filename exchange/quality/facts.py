"""Quality indicator facts derived from the stored Bundles (docs/institutions.md, "Indicators").

A derived index (:mod:`exchange.derived`) keeps, for each stored Bundle, one row per fact an
indicator needs: Patients (communication language), Encounters (the episodes), record
languages, Claims and ClaimResponses, complaints and their replies, planned follow-ups and
Observations. :func:`assemble` turns a sender's rows into :class:`exchange.quality.EpisodeFacts`,
a pure function over what the rows hold, so the same rows always give the same indicators.

Episodes are the sender's Encounters: resources name them by reference (``Encounter/{id}``,
or the ``fullUrl`` of an Encounter in the same Bundle), so an Encounter keeps its logical id
across the sender's Bundles. A resource sent again (a later Bundle carrying the same
``Type/id``) replaces what the earlier one said. Each complaint is its own row of facts
(the complaint indicator counts complaints, not episodes).

Codes (FHIR R4; LOINC where LOINC has one):

- pain: LOINC 38214-3 "Pain severity [Score] Visual analog score" and 38208-5 "Pain severity
  - Reported" (0-10);
- HbA1c: LOINC 4548-4 and 17856-6 (percent, NGSP), 59261-8 (mmol/mol, IFCC: converted to
  percent by the IFCC-NGSP master equation, NGSP = 0.09148 * IFCC + 2.152);
- satisfaction (0-100): an Observation coded ``urn:medledger:quality|satisfaction``, or a
  QuestionnaireResponse to ``urn:medledger:questionnaire:satisfaction`` whose item ``score``
  holds the value;
- complaint: a Communication whose ``category`` or a Task whose ``code`` carries
  ``urn:medledger:quality|complaint``; its first response is the earliest Communication
  ``inResponseTo`` it, or for a Task its ``executionPeriod.start``;
- follow-up plan: CarePlan.activity.detail with a ``code`` and ``scheduledTiming.event``
  dateTimes, one planned follow-up per event; it is done by an Observation of the patient with
  the same code (system and code) within :data:`FOLLOWUP_WINDOW` of the event.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import (
    select,
)

from adapters.indicators import INDICATORS as STENT_INDICATORS
from adapters.indicators import bundle_facts, evaluate, parse_time, stent_episodes
from adapters.indicators import in_period as stent_in_period
from exchange import vault
from exchange.indexes.derived import DerivedIndex, StoredBundle
from exchange.quality.indicators import EpisodeFacts
from exchange.store.tables import quality_table

LOINC = "http://loinc.org"
QUALITY_SYSTEM = "urn:medledger:quality"
COMPLAINT = f"{QUALITY_SYSTEM}|complaint"
SATISFACTION = f"{QUALITY_SYSTEM}|satisfaction"
SATISFACTION_QUESTIONNAIRE = "urn:medledger:questionnaire:satisfaction"
SATISFACTION_ITEM = "score"
BCP47 = "urn:ietf:bcp:47"
VAS_CODES = frozenset({f"{LOINC}|38214-3", f"{LOINC}|38208-5"})
HBA1C_PERCENT = frozenset({f"{LOINC}|4548-4", f"{LOINC}|17856-6"})
HBA1C_IFCC = f"{LOINC}|59261-8"
# The language the institutions work in: a patient whose language is another needs the
# language service (interpretation, translated records).
LOCAL_LANGUAGE = "zh"
# How far from its planned date a follow-up may be and still count (either side).
FOLLOWUP_WINDOW = timedelta(days=14)
# A complaint still unanswered this long after it was made counts as answered late.
COMPLAINT_LIMIT = timedelta(hours=48)

# Kinds whose Bundles carry the facts (institution, access and key entries carry none).
KINDS = ("record", "rwd", "settlement", "consent")


# What a fact row says beyond its kind (see _row): sealed together, as JSON, in `data`.
PAYLOAD = ("key", "ref", "patient", "episode", "code", "at", "until", "value", "unit")
FACT_LABEL = b"medledger-quality/v1 facts"


FACTS = (
    "patient",
    "encounter",
    "lang",
    "claim",
    "claimresp",
    "complaint",
    "reply",
    "plan",
    "obs",
)
# The facts of the indicators after coronary stent placement (adapters.indicators.bundle_facts),
# kept beside the others in the same sealed rows; `void` is a resource that says none of them
# any more.
STENT_FACTS = frozenset({"stent", "lvef", "bp", "smoking", "death", "void"})

_REF = re.compile(r"(?:^|/)([A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")
_SKIPPED_STATUS = frozenset({"entered-in-error", "cancelled", "revoked"})


# --- reading one Bundle -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Refs:
    """Resolves references inside one Bundle (FHIR R4 section 2.36.0.1, resolving references
    in Bundles): a fullUrl names its resource; `Type/id` (relative or absolute) names it
    across the sender's Bundles."""

    bundle_id: str
    by_full_url: Mapping[str, str]

    def of(self, reference: Any) -> str | None:
        if not isinstance(reference, dict):
            return None
        text = reference.get("reference")
        if not isinstance(text, str) or text.startswith("#"):
            return None
        if text in self.by_full_url:
            return self.by_full_url[text]
        match = _REF.search(text)
        return match.group(1) if match else None

    def first(self, references: Any) -> str | None:
        for reference in references if isinstance(references, list) else [references]:
            found = self.of(reference)
            if found is not None:
                return found
        return None


def _key(resource: dict[str, Any], full_url: str | None, bundle_id: str) -> str | None:
    rid = resource.get("id")
    if isinstance(rid, str) and rid:
        return f"{resource['resourceType']}/{rid}"
    return f"{bundle_id}#{full_url}" if full_url else None


def _entries(doc: Any) -> Iterator[tuple[str | None, dict[str, Any]]]:
    entries = doc.get("entry") if isinstance(doc, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and isinstance(resource.get("resourceType"), str):
            full_url = entry.get("fullUrl")
            yield (full_url if isinstance(full_url, str) else None), resource


def codings(concepts: Any) -> list[str]:
    """`system|code` of every coding of a CodeableConcept (or a list of them)."""
    found = []
    for concept in concepts if isinstance(concepts, list) else [concepts]:
        if not isinstance(concept, dict):
            continue
        for coding in concept.get("coding") or []:
            if isinstance(coding, dict) and isinstance(coding.get("code"), str):
                found.append(f"{coding.get('system') or ''}|{coding['code']}")
    return found


def patient_language(patient: dict[str, Any]) -> str | None:
    """Patient.communication.language: the preferred one, else the first (R4 8.1 Patient)."""
    comms = [c for c in patient.get("communication") or [] if isinstance(c, dict)]
    comms.sort(key=lambda c: c.get("preferred") is not True)
    for comm in comms:
        for coding in (comm.get("language") or {}).get("coding") or []:
            if isinstance(coding, dict) and isinstance(code := coding.get("code"), str):
                return code
    return None


def record_languages(resource: dict[str, Any]) -> list[str]:
    """The languages a record is written in: Resource.language and attachment languages."""
    found = [resource["language"]] if isinstance(resource.get("language"), str) else []
    for content in resource.get("content") or []:  # DocumentReference.content.attachment
        attachment = content.get("attachment") if isinstance(content, dict) else None
        if isinstance(attachment, dict) and isinstance(attachment.get("language"), str):
            found.append(attachment["language"])
    return found


def _number(value: Any) -> str | None:
    # Kept as the decimal's text: an index row holds what was written, not a float of it.
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return None
    return str(value)


def _quantity(resource: dict[str, Any]) -> tuple[str | None, str | None]:
    q = resource.get("valueQuantity")
    if isinstance(q, dict):
        unit = q.get("code") if isinstance(q.get("code"), str) else q.get("unit")
        return _number(q.get("value")), unit if isinstance(unit, str) else None
    for name in ("valueInteger", "valueDecimal"):
        if name in resource:
            return _number(resource[name]), None
    return None, None


def _effective(resource: dict[str, Any]) -> str | None:
    for name in ("effectiveDateTime", "effectiveInstant", "issued"):
        if isinstance(resource.get(name), str):
            return str(resource[name])
    period = resource.get("effectivePeriod")
    if isinstance(period, dict) and isinstance(period.get("start"), str):
        return str(period["start"])
    return None


def _satisfaction_answer(items: Any) -> str | None:
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        if item.get("linkId") == SATISFACTION_ITEM:
            for answer in item.get("answer") or []:
                for name in ("valueInteger", "valueDecimal"):
                    if isinstance(answer, dict) and name in answer:
                        return _number(answer[name])
        nested = _satisfaction_answer(item.get("item"))
        if nested is not None:
            return nested
    return None


def bundle_rows(doc: Any, bundle_id: str) -> list[dict[str, object]]:
    """The fact rows of one Bundle (without idx/sender/bundle_id); lenient: what a resource
    does not say gives no row."""
    found = list(_entries(doc))
    by_url = {}
    for full_url, resource in found:
        key = _key(resource, full_url, bundle_id)
        if full_url and key:
            by_url[full_url] = key
    refs = _Refs(bundle_id, by_url)
    rows: list[dict[str, object]] = []
    for full_url, resource in found:
        key = _key(resource, full_url, bundle_id)
        if key is None or resource.get("status") in _SKIPPED_STATUS:
            continue
        rows.extend(_resource_rows(resource, key, refs))
    return rows


def _row(fact: str, key: str, **values: object) -> dict[str, object]:
    row: dict[str, object] = dict.fromkeys(
        ("ref", "patient", "episode", "code", "at", "until", "value", "unit")
    )
    row.update(fact=fact, key=key, **values)
    return row


def _resource_rows(r: dict[str, Any], key: str, refs: _Refs) -> list[dict[str, object]]:
    kind = r["resourceType"]
    rows: list[dict[str, object]] = []
    episode = refs.of(r.get("encounter"))
    if episode is None and isinstance(r.get("context"), dict):  # DocumentReference.context
        episode = refs.first(r["context"].get("encounter"))
    if episode is not None and kind != "Encounter":
        rows += [_row("lang", key, episode=episode, value=lang) for lang in record_languages(r)]
    if kind == "Patient":
        rows.append(_row("patient", key, value=patient_language(r)))
    elif kind == "Encounter":
        given = r.get("period")
        period: dict[str, Any] = given if isinstance(given, dict) else {}
        if isinstance(period.get("start"), str):
            rows.append(
                _row(
                    "encounter",
                    key,
                    patient=refs.of(r.get("subject")),
                    at=period["start"],
                    until=period.get("end") if isinstance(period.get("end"), str) else None,
                )
            )
    elif kind == "Claim":
        encounters = {
            e
            for item in r.get("item") or []
            if isinstance(item, dict)
            for e in (refs.of(x) for x in item.get("encounter") or [])
            if e is not None
        }
        insurer = refs.of(r.get("insurer"))
        rows += [_row("claim", key, episode=e, value=insurer) for e in sorted(encounters)]
    elif kind == "ClaimResponse":
        rows.append(
            _row(
                "claimresp",
                key,
                ref=refs.of(r.get("request")),
                code=r.get("use"),
                at=r.get("created"),
                value=r.get("outcome"),
            )
        )
    elif kind in ("Communication", "Task"):
        rows += _complaint_rows(r, key, refs, episode)
    elif kind == "CarePlan":
        rows += _plan_rows(r, key, refs, episode)
    elif kind == "Observation":
        value, unit = _quantity(r)
        patient, at = refs.of(r.get("subject")), _effective(r)
        rows += [
            _row(
                "obs", key, patient=patient, episode=episode, code=c, at=at, value=value, unit=unit
            )
            for c in dict.fromkeys(codings(r.get("code")))
        ]
    elif kind == "QuestionnaireResponse" and r.get("questionnaire") == SATISFACTION_QUESTIONNAIRE:
        score = _satisfaction_answer(r.get("item"))
        if score is not None:
            rows.append(
                _row(
                    "obs",
                    key,
                    patient=refs.of(r.get("subject")),
                    episode=episode,
                    code=SATISFACTION,
                    at=r.get("authored"),
                    value=score,
                )
            )
    return rows


def _complaint_rows(
    r: dict[str, Any], key: str, refs: _Refs, episode: str | None
) -> list[dict[str, object]]:
    rows = []
    is_task = r["resourceType"] == "Task"
    codes = codings(r.get("code")) if is_task else codings(r.get("category"))
    if COMPLAINT in codes:
        started = (r.get("executionPeriod") or {}).get("start") if is_task else None
        rows.append(
            _row(
                "complaint",
                key,
                patient=refs.of(r.get("for") if is_task else r.get("subject")),
                episode=episode,
                at=r.get("authoredOn") if is_task else r.get("sent"),
                until=started if isinstance(started, str) else None,
            )
        )
    if not is_task and isinstance(r.get("sent"), str):
        for answered in r.get("inResponseTo") or []:
            target = refs.of(answered)
            if target is not None:
                rows.append(_row("reply", key, ref=target, at=r["sent"]))
    return rows


def _plan_rows(
    r: dict[str, Any], key: str, refs: _Refs, episode: str | None
) -> list[dict[str, object]]:
    rows = []
    patient = refs.of(r.get("subject"))
    for activity in r.get("activity") or []:
        detail = activity.get("detail") if isinstance(activity, dict) else None
        if not isinstance(detail, dict) or detail.get("status") in _SKIPPED_STATUS:
            continue
        codes = codings(detail.get("code"))
        timing = detail.get("scheduledTiming")
        events = timing.get("event") if isinstance(timing, dict) else None
        if not codes or not isinstance(events, list):
            continue
        rows += [
            _row("plan", key, patient=patient, episode=episode, code=codes[0], at=event)
            for event in events
            if isinstance(event, str)
        ]
    return rows


def _aad(bundle_id: str, index: int, fact: str) -> bytes:
    return f"medledger-quality/v1\x00{bundle_id}\x00{index}\x00{fact}".encode()


def _rows_of(bundle: StoredBundle) -> list[dict[str, object]]:
    # Stored Bundles passed intake, so they are JSON; the reading is lenient by design.
    key = vault.joint_key([bundle.bundle_key], FACT_LABEL)
    out: list[dict[str, object]] = []
    doc = json.loads(bundle.data)
    for row in [*bundle_rows(doc, bundle.id), *bundle_facts(doc, bundle.id)]:
        payload = json.dumps({k: row[k] for k in PAYLOAD}, separators=(",", ":")).encode()
        fact = str(row["fact"])
        sealed = vault.seal_derived(key, payload, _aad(bundle.id, bundle.index, fact))
        out.append(
            {
                "idx": bundle.index,
                "sender": bundle.sender,
                "bundle_id": bundle.id,
                "fact": fact,
                "data": sealed,
            }
        )
    return out


QUALITY = DerivedIndex("quality", KINDS, quality_table, _rows_of)


def sender_rows(vault_: vault.Vault, sender: str) -> list[dict[str, object]]:
    """Every fact row of one sender's Bundles, in ledger order, opened (the rows of a Bundle
    whose key an erasure made unopenable are left out: they say nothing any more)."""
    t = quality_table
    with vault_.engine.connect() as conn:
        found = conn.execute(select(t).where(t.c.sender == sender).order_by(t.c.idx)).all()
        opened = vault_.bundle_keys(conn, {int(r.idx) for r in found})
    keys = {idx: vault.joint_key([key], FACT_LABEL) for idx, key in opened.items()}
    rows: list[dict[str, object]] = []
    for r in found:
        if int(r.idx) not in keys:
            continue
        aad = _aad(r.bundle_id, int(r.idx), r.fact)
        payload = json.loads(vault.unseal_derived(keys[int(r.idx)], bytes(r.data), aad))
        rows.append({"idx": r.idx, "sender": r.sender, "bundle_id": r.bundle_id,
                     "fact": r.fact, **payload})  # fmt: skip
    return rows


def episode_facts(vault_: vault.Vault, sender: str, as_of: datetime) -> list[EpisodeFacts]:
    """The sender's episodes and complaints as the indicators read them (index kept fresh by
    the caller: `Indexes.fresh(QUALITY)`)."""
    return assemble(sender_rows(vault_, sender), as_of)


def stent_groups(
    rows: Iterable[dict[str, object]], start: date, end: date, as_of: datetime
) -> list[dict[str, object]]:
    """The MeasureReport groups of the stent indicators (adapters.indicators) over one sender's
    rows: the placements of the period whose follow-up window has closed by `as_of`."""
    episodes = stent_episodes([r for r in rows if r["fact"] in STENT_FACTS], as_of)
    chosen = stent_in_period(episodes, start, end)
    return [evaluate(code, chosen).group() for code in STENT_INDICATORS]


# --- from rows to episodes --------------------------------------------------------------------


def local_day(text: object) -> date | None:
    """The calendar day a dateTime names where it was written (its own offset)."""
    parsed = parse_time(text)
    return None if parsed is None else parsed.date()


def primary_language(tag: str | None) -> str | None:
    """The primary language subtag of a BCP 47 tag (RFC 5646 section 2.2.1), lower case."""
    if not tag:
        return None
    return tag.replace("_", "-").split("-", 1)[0].lower() or None


def hba1c_percent(value: float, code: str, unit: str | None) -> float | None:
    """HbA1c in NGSP percent (IFCC mmol/mol converted by the master equation)."""
    if code in HBA1C_PERCENT and unit in (None, "%"):
        return value
    if code == HBA1C_IFCC or (code in HBA1C_PERCENT and unit == "mmol/mol"):
        return round(0.09148 * value + 2.152, 2)
    return None


def _latest(rows: Iterable[dict[str, object]]) -> list[dict[str, object]]:
    """Rows of each resource from its latest Bundle only: a resource sent again replaces
    what it said before."""
    rows = list(rows)
    newest: dict[tuple[object, object], int] = {}
    for row in rows:
        k = (row["fact"], row["key"])
        newest[k] = max(newest.get(k, -1), int(str(row["idx"])))
    return [r for r in rows if int(str(r["idx"])) == newest[(r["fact"], r["key"])]]


@dataclass(frozen=True)
class _Obs:
    code: str
    at: datetime
    value: float | None
    unit: str | None


@dataclass(frozen=True)
class _Episode:
    key: str
    patient: str | None
    start: datetime
    end: datetime | None
    day: date


def assemble(rows: Iterable[dict[str, object]], as_of: datetime) -> list[EpisodeFacts]:
    """EpisodeFacts of one sender: one per Encounter, then one per complaint (by key order)."""
    by_fact: dict[str, list[dict[str, object]]] = defaultdict(list)
    for row in _latest(rows):
        by_fact[str(row["fact"])].append(row)
    languages = {str(r["key"]): r["value"] for r in by_fact["patient"]}
    episodes = _episodes(by_fact["encounter"])
    observations = _observations_by_episode(episodes, by_fact["obs"])
    facts = [
        _episode_facts(e, languages, by_fact, observations.get(e.key, []), as_of)
        for e in sorted(episodes.values(), key=lambda e: (e.start, e.key))
    ]
    return facts + _complaints(by_fact["complaint"], by_fact["reply"], as_of)


def _episodes(rows: list[dict[str, object]]) -> dict[str, _Episode]:
    found = {}
    for row in rows:
        start, day = parse_time(row["at"]), local_day(row["at"])
        if start is None or day is None:
            continue
        key = str(row["key"])
        patient = None if row["patient"] is None else str(row["patient"])
        found[key] = _Episode(key, patient, start, parse_time(row["until"]), day)
    return found


def _observations_by_episode(
    episodes: Mapping[str, _Episode], rows: list[dict[str, object]]
) -> dict[str, list[_Obs]]:
    """An Observation belongs to the Encounter it names; one naming none, to its patient's
    episode that started last before it (follow-ups after discharge belong to that stay)."""
    per_patient: dict[str, list[_Episode]] = defaultdict(list)
    for e in episodes.values():
        if e.patient is not None:
            per_patient[e.patient].append(e)
    for stays in per_patient.values():
        stays.sort(key=lambda e: e.start)
    out: dict[str, list[_Obs]] = defaultdict(list)
    for row in rows:
        at = parse_time(row["at"])
        if at is None:
            continue
        obs = _Obs(str(row["code"]), at, _float(row["value"]), _str(row["unit"]))
        owner = _str(row["episode"])
        if owner is None or owner not in episodes:
            started = [e for e in per_patient.get(str(row["patient"]), []) if e.start <= at]
            owner = started[-1].key if started else None
        if owner is not None:
            out[owner].append(obs)
    for found in out.values():
        found.sort(key=lambda o: o.at)
    return out


def _float(value: object) -> float | None:
    try:
        return None if value is None else float(Decimal(str(value)))
    except (InvalidOperation, ValueError):
        return None


def _str(value: object) -> str | None:
    return None if value is None else str(value)


def _episode_facts(
    e: _Episode,
    languages: Mapping[str, object],
    by_fact: Mapping[str, list[dict[str, object]]],
    observations: list[_Obs],
    as_of: datetime,
) -> EpisodeFacts:
    needed, given = _language_service(e, languages, by_fact["lang"])
    insured, paid = _direct_payment(e, by_fact["claim"], by_fact["claimresp"])
    planned, done = _followups(e, by_fact["plan"], by_fact["obs"], as_of)
    vas = [o.value for o in observations if o.code in VAS_CODES and o.value is not None]
    hba1c = [
        v
        for o in observations
        if o.value is not None and (v := hba1c_percent(o.value, o.code, o.unit)) is not None
    ]
    satisfaction = [o.value for o in observations if o.code == SATISFACTION and o.value is not None]
    return EpisodeFacts(
        episode=e.key,
        day=e.day,
        needed_interpreter=needed,
        language_service_given=given,
        insured=insured,
        paid_before_discharge=paid,
        followups_planned=planned,
        followups_done=done,
        vas_before=vas[0] if len(vas) >= 2 else None,
        vas_after=vas[-1] if len(vas) >= 2 else None,
        hba1c_after=hba1c[-1] if hba1c else None,
        satisfaction=satisfaction[-1] if satisfaction else None,
    )


def _language_service(
    e: _Episode, languages: Mapping[str, object], lang_rows: list[dict[str, object]]
) -> tuple[bool | None, bool | None]:
    """(needs the service, got records in its language): a patient whose communication
    language is not the local one needs it; it is given when a record of the episode is
    written in the patient's language (same primary subtag)."""
    wanted = primary_language(_str(languages.get(e.patient or "")))
    if wanted is None:
        return None, None
    if wanted == LOCAL_LANGUAGE:
        return False, None
    written = {primary_language(_str(r["value"])) for r in lang_rows if r["episode"] == e.key}
    return True, wanted in written


def _direct_payment(
    e: _Episode, claims: list[dict[str, object]], responses: list[dict[str, object]]
) -> tuple[bool, bool | None]:
    """(insured, paid before discharge): insured when a Claim names the Encounter in an
    item; paid when a ClaimResponse to one of them (preauthorization = the guarantee of
    payment, or the claim itself) with outcome complete or partial was created no later than
    Encounter.period.end. Not yet discharged: the data does not say."""
    mine = {str(c["key"]) for c in claims if c["episode"] == e.key}
    if not mine:
        return False, None
    if e.end is None:
        return True, None
    for response in responses:
        created = parse_time(response["at"])
        if (
            response["ref"] in mine
            and response["value"] in ("complete", "partial")
            and created is not None
            and created <= e.end
        ):
            return True, True
    return True, False


def _followups(
    e: _Episode,
    plans: list[dict[str, object]],
    observations: list[dict[str, object]],
    as_of: datetime,
) -> tuple[int | None, int | None]:
    """(planned, done): planned follow-ups are the events of the episode's CarePlans whose
    window has closed by `as_of` (or that are already done); each is done by one Observation
    of the patient with the same code within FOLLOWUP_WINDOW of it (each used once)."""
    events = sorted(
        (t, str(p["code"]))
        for p in plans
        if p["episode"] == e.key and (t := parse_time(p["at"])) is not None
    )
    if not events:
        return None, None
    available = sorted(
        (t, str(o["code"]))
        for o in observations
        if o["patient"] == e.patient
        and e.patient is not None
        and (t := parse_time(o["at"])) is not None
    )
    used: set[int] = set()
    planned = done = 0
    for when, code in events:
        hit = next(
            (
                i
                for i, (t, c) in enumerate(available)
                if i not in used and c == code and abs(t - when) <= FOLLOWUP_WINDOW
            ),
            None,
        )
        if hit is not None:
            used.add(hit)
            planned, done = planned + 1, done + 1
        elif when + FOLLOWUP_WINDOW <= as_of:
            planned += 1
    return (planned, done) if planned else (None, None)


def _complaints(
    complaints: list[dict[str, object]], replies: list[dict[str, object]], as_of: datetime
) -> list[EpisodeFacts]:
    """One EpisodeFacts per complaint: hours from its creation to its first response. An
    unanswered complaint counts once COMPLAINT_LIMIT has passed (as late), not before."""
    first_reply: dict[str, datetime] = {}
    for reply in replies:
        at = parse_time(reply["at"])
        target = _str(reply["ref"])
        if at is not None and target is not None:
            first_reply[target] = min(at, first_reply.get(target, at))
    out = []
    for row in sorted(complaints, key=lambda r: str(r["key"])):
        created, day = parse_time(row["at"]), local_day(row["at"])
        if created is None or day is None:
            continue
        answers = [t for t in (parse_time(row["until"]), first_reply.get(str(row["key"]))) if t]
        if answers:
            hours: float | None = max(0.0, (min(answers) - created).total_seconds() / 3600)
        elif as_of - created > COMPLAINT_LIMIT:
            hours = (as_of - created).total_seconds() / 3600
        else:
            hours = None  # still open and within its limit: not yet decided
        if hours is not None:
            out.append(EpisodeFacts(str(row["key"]), day, complaint_hours_to_response=hours))
    return out
