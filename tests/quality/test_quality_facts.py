"""Quality indicator facts from stored Bundles: each indicator's numerator and denominator on a
hand-built set of episodes, expected counts computed from the episode table in this file.

The episodes are described once (`EPISODES`, `COMPLAINTS`); `episode_bundles` turns them into
FHIR R4 Bundles a hospital submits over HTTP, and `expected_counts` counts each indicator from
the table directly, without the service's reading of the Bundles.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.quality import facts as qf
from exchange.quality.indicators import INDICATORS, counts, in_period
from tests.api_helpers import HOSPITAL_ORG, Api, open_api

LOINC = "http://loinc.org"
VAS = ("38214-3", None)
HBA1C = ("4548-4", "%")
HBA1C_IFCC = ("59261-8", "mmol/mol")
START, END = date(2026, 1, 1), date(2026, 12, 31)


@dataclass
class Episode:
    """One stay, as the hospital's records describe it."""

    key: str
    patient: str
    patient_lang: str | None
    start: str
    end: str | None
    record_langs: tuple[str, ...] = ()  # languages of Composition/DocumentReference
    claim: bool = False
    # (created, outcome) of the insurer's ClaimResponse to the claim
    response: tuple[str, str] | None = None
    # (code, value, unit, effective, with encounter reference?)
    observations: tuple[tuple[str, float, str | None, str, bool], ...] = ()
    satisfaction_qr: float | None = None  # a QuestionnaireResponse score
    # planned follow-ups: (code, planned date); done ones have an Observation sent later
    plan: tuple[tuple[str, str], ...] = ()
    followup_obs: tuple[tuple[str, str], ...] = ()  # (code, effective) without encounter
    resend_end: str | None = None  # the Encounter sent again later with this end


EPISODES = [
    Episode(
        "e1",
        "p1",
        "en",
        "2026-01-10T09:00:00Z",
        "2026-01-20T12:00:00Z",
        record_langs=("en",),
        claim=True,
        response=("2026-01-12T10:00:00Z", "complete"),
        observations=(
            ("38214-3", 8, None, "2026-01-10T10:00:00Z", True),
            ("4548-4", 6.5, "%", "2026-01-19T10:00:00Z", True),
        ),
        satisfaction_qr=95,
        plan=(("38214-3", "2026-02-20"), ("4548-4", "2026-04-20")),
        followup_obs=(("38214-3", "2026-02-25T09:00:00Z"),),
    ),
    Episode(
        "e2",
        "p2",
        "ru-RU",
        "2026-02-01T08:00:00+08:00",
        None,
        record_langs=("zh-CN", "en"),
        claim=True,
        response=("2026-02-06T08:00:00Z", "complete"),
        observations=(
            ("38214-3", 6, None, "2026-02-01T09:00:00Z", True),
            ("38214-3", 4, None, "2026-02-04T09:00:00Z", True),
            ("59261-8", 48, "mmol/mol", "2026-02-04T09:00:00Z", True),
            ("urn:medledger:quality|satisfaction", 88, None, "2026-02-05T09:00:00Z", True),
        ),
        resend_end="2026-02-05T17:00:00+08:00",
    ),
    Episode(
        "e3",
        "p3",
        "zh",
        "2026-03-01T08:00:00Z",
        None,
        claim=True,
        response=("2026-03-02T08:00:00Z", "complete"),
        observations=(("4548-4", 7.2, "%", "2026-03-02T08:00:00Z", True),),
        satisfaction_qr=90,
    ),
    Episode(
        "e4",
        "p5",
        "ar",
        "2026-04-01T08:00:00Z",
        "2026-04-03T08:00:00Z",
        record_langs=("ar-SA",),
        observations=(
            ("38214-3", 10, None, "2026-04-01T09:00:00Z", True),
            ("38214-3", 5, None, "2026-04-02T09:00:00Z", True),
        ),
        plan=(("38214-3", "2026-05-01"),),
        followup_obs=(("38214-3", "2026-05-10T09:00:00Z"),),
    ),
    Episode(  # outside the period: counted nowhere
        "e5",
        "p6",
        "en",
        "2025-12-01T08:00:00Z",
        "2025-12-05T08:00:00Z",
        claim=True,
        response=("2025-12-06T08:00:00Z", "complete"),
        observations=(("4548-4", 9.1, "%", "2025-12-02T08:00:00Z", True),),
        satisfaction_qr=10,
    ),
    Episode(
        "e6",
        "p4",
        None,
        "2026-06-01T08:00:00Z",
        "2026-06-03T08:00:00Z",
        claim=True,
        response=("2026-06-02T08:00:00Z", "error"),
        observations=(("38214-3", 0, None, "2026-06-01T09:00:00Z", True),),
        plan=(("4548-4", "2026-07-01"),),
    ),
]


@dataclass
class Complaint:
    key: str
    as_task: bool
    created: str
    replies: tuple[str, ...] = field(default=())  # Communication.sent of each reply


def _complaints(now: datetime) -> list[Complaint]:
    return [
        Complaint("c1", False, "2026-01-15T10:00:00Z", ("2026-01-16T09:00:00Z",)),
        Complaint("c2", True, "2026-02-02T08:00:00+08:00", ("2026-02-05T08:00:00+08:00",)),
        Complaint("c3", False, "2026-03-01T08:00:00Z"),  # never answered: late
        Complaint("c4", False, (now - timedelta(hours=1)).isoformat()),  # open, not yet late
        Complaint(
            "c5", False, "2026-05-01T00:00:00Z", ("2026-05-04T00:00:00Z", "2026-05-02T23:00:00Z")
        ),
    ]


# --- the expected counts, straight from the table ------------------------------------------


def _hours(a: str, b: str) -> float:
    return (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds() / 3600


def _days_apart(a: str, b: str) -> float:
    return abs(
        (datetime.fromisoformat(a[:10]) - datetime.fromisoformat(b[:10])).total_seconds() / 86400
    )


FOLLOWUP_VALUE = {VAS[0]: 3, HBA1C[0]: 6.0}  # what a follow-up Observation measures


def _values_in_time_order(e: Episode) -> list[tuple[str, str, float]]:
    """(effective, code, value) of every Observation of the stay and its follow-ups."""
    found = [(at, code, value) for code, value, _, at, _ in e.observations]
    found += [(at, code, FOLLOWUP_VALUE[code]) for code, at in e.followup_obs]
    return sorted(found)


def _of(series: list[tuple[str, str, float]], code: str) -> list[float]:
    return [value for _, c, value in series if c == code]


def _within(text: str, start: date, end: date) -> bool:
    return start <= date.fromisoformat(text[:10]) <= end


def expected_counts(
    now: datetime, start: date = START, end: date = END
) -> dict[str, tuple[int, int]]:
    """Each indicator counted from the table, over the episodes and complaints that began
    within [start, end]."""
    eps = [e for e in EPISODES if _within(e.start, start, end)]
    out: dict[str, tuple[int, int]] = {}
    foreign = [e for e in eps if e.patient_lang and not e.patient_lang.startswith("zh")]
    out["language-service"] = (
        sum(any(r[:2] == e.patient_lang[:2] for r in e.record_langs) for e in foreign),  # type: ignore[index]
        len(foreign),
    )
    ended = {e.key: e.resend_end or e.end for e in eps}
    discharged = [e for e in eps if e.claim and ended[e.key]]
    out["direct-payment"] = (
        sum(
            e.response is not None
            and e.response[1] in ("complete", "partial")
            and _hours(e.response[0], ended[e.key]) >= 0  # type: ignore[arg-type]
            for e in discharged
        ),
        len(discharged),
    )
    answered = []
    for c in _complaints(now):
        if not _within(c.created, start, end):
            continue
        if c.replies:
            answered.append(min(_hours(c.created, r) for r in c.replies))
        elif _hours(c.created, now.isoformat()) > 48:
            answered.append(_hours(c.created, now.isoformat()))
    out["complaint-response"] = (sum(h <= 48 for h in answered), len(answered))
    planned = [e for e in eps if e.plan]
    out["rwd-followup"] = (
        sum(
            all(
                any(c == code and _days_apart(t, when) <= 14 for c, t in e.followup_obs)
                for code, when in e.plan
            )
            for e in planned
        ),
        len(planned),
    )
    series = {e.key: _values_in_time_order(e) for e in eps}
    pairs = [v for v in (_of(series[e.key], VAS[0]) for e in eps) if len(v) >= 2 and v[0] > 0]
    out["pain-vas-50"] = (sum(v[0] - v[-1] >= v[0] / 2 for v in pairs), len(pairs))
    hba1c = []
    for e in eps:
        percent = _of(series[e.key], HBA1C[0])
        ifcc = [0.09148 * v + 2.152 for v in _of(series[e.key], HBA1C_IFCC[0])]
        if percent or ifcc:
            hba1c.append((percent + ifcc)[-1])
    out["hba1c-7"] = (sum(v < 7 for v in hba1c), len(hba1c))
    scores = [
        e.satisfaction_qr
        if e.satisfaction_qr is not None
        else next((o[1] for o in e.observations if o[0].endswith("satisfaction")), None)
        for e in eps
    ]
    known = [s for s in scores if s is not None]
    out["satisfaction-90"] = (sum(s >= 90 for s in known), len(known))
    return out


# --- the Bundles a hospital sends ---------------------------------------------------------------


def _url(seed: str) -> str:
    return "urn:uuid:" + str(uuid.uuid5(uuid.NAMESPACE_URL, seed))


def _bundle(resources: list[dict[str, Any]], seed: str) -> bytes:
    entries = [{"fullUrl": _url(f"{seed}:{i}"), "resource": r} for i, r in enumerate(resources)]
    return json.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries}).encode()


def _coded(code: str) -> dict[str, Any]:
    system, _, value = code.rpartition("|")
    return {"coding": [{"system": system or LOINC, "code": value}]}


def _observation(oid: str, patient: str, code: str, value: float, unit: str | None, at: str,
                 encounter: str | None) -> dict[str, Any]:  # fmt: skip
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": _coded(code),
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": at,
        "valueQuantity": {"value": value, **({"unit": unit, "code": unit} if unit else {})},
    }
    if unit:
        obs["valueQuantity"]["system"] = "http://unitsofmeasure.org"
    if encounter:
        obs["encounter"] = {"reference": f"Encounter/{encounter}"}
    return obs


def _patient(e: Episode) -> dict[str, Any]:
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "id": e.patient,
        "identifier": [{"system": "urn:example:mrn", "value": e.patient.upper()}],
    }
    if e.patient_lang:
        patient["communication"] = [
            {"language": {"coding": [{"system": qf.BCP47, "code": "zh"}]}},
            {
                "language": {"coding": [{"system": qf.BCP47, "code": e.patient_lang}]},
                "preferred": True,
            },
        ]
    return patient


def _encounter(e: Episode, end: str | None) -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "id": e.key,
        "status": "finished" if end else "in-progress",
        "class": {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
            "code": "IMP",
        },
        "subject": {"reference": f"Patient/{e.patient}"},
        "period": {"start": e.start, **({"end": end} if end else {})},
    }


def episode_bundles(e: Episode) -> list[bytes]:
    """The record Bundle of a stay, its settlement Bundle, its follow-up Bundle and the
    Encounter sent again, in the order a hospital sends them."""
    enc = {"reference": f"Encounter/{e.key}"}
    subject = {"reference": f"Patient/{e.patient}"}
    record: list[dict[str, Any]] = [_patient(e), _encounter(e, e.end)]
    for i, lang in enumerate(e.record_langs):
        if i % 2 == 0:
            record.append({
                "resourceType": "Composition", "id": f"{e.key}-comp{i}", "language": lang,
                "status": "final", "type": _coded("18842-5"), "subject": subject,
                "encounter": enc, "date": e.start, "author": [{"display": "ward"}],
                "title": "Discharge summary",
            })  # fmt: skip
        else:
            record.append({
                "resourceType": "DocumentReference", "id": f"{e.key}-doc{i}", "status": "current",
                "subject": subject, "context": {"encounter": [enc]},
                "content": [{"attachment": {"contentType": "application/pdf", "language": lang}}],
            })  # fmt: skip
    for i, (code, value, unit, at, with_enc) in enumerate(e.observations):
        record.append(
            _observation(f"{e.key}-o{i}", e.patient, code, value, unit, at,
                         e.key if with_enc else None)
        )  # fmt: skip
    if e.satisfaction_qr is not None:
        record.append({
            "resourceType": "QuestionnaireResponse", "id": f"{e.key}-qr",
            "questionnaire": qf.SATISFACTION_QUESTIONNAIRE, "status": "completed",
            "subject": subject, "encounter": enc, "authored": e.start,
            "item": [{"linkId": "overall", "item": [
                {"linkId": "score", "answer": [{"valueInteger": int(e.satisfaction_qr)}]}]}],
        })  # fmt: skip
    if e.plan:
        record.append({
            "resourceType": "CarePlan", "id": f"{e.key}-plan", "status": "active",
            "intent": "plan", "subject": subject, "encounter": enc,
            "activity": [
                {"detail": {"status": "scheduled", "code": _coded(code),
                            "scheduledTiming": {"event": [when]}}}
                for code, when in e.plan
            ],
        })  # fmt: skip
    bundles = [_bundle(record, f"{e.key}:record")]
    if e.claim:
        claim_type = {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "institutional"
        }]}  # fmt: skip
        settlement: list[dict[str, Any]] = [
            _patient(e),
            {
                "resourceType": "Claim", "id": f"{e.key}-claim", "status": "active",
                "type": claim_type, "use": "preauthorization", "patient": subject,
                "created": e.start, "insurer": {"reference": "Organization/insurer-a"},
                "provider": {"reference": f"Organization/{HOSPITAL_ORG}"},
                "priority": {"coding": [{"code": "normal"}]},
                "insurance": [{"sequence": 1, "focal": True, "coverage": {"display": "policy"}}],
                "item": [{"sequence": 1, "productOrService": {"text": "stay"},
                          "encounter": [enc]}],
            },
        ]  # fmt: skip
        if e.response is not None:
            settlement.append({
                "resourceType": "ClaimResponse", "id": f"{e.key}-gop", "status": "active",
                "type": claim_type, "use": "preauthorization", "patient": subject,
                "created": e.response[0], "insurer": {"reference": "Organization/insurer-a"},
                "outcome": e.response[1],
                "request": {"reference": f"Claim/{e.key}-claim"},
            })  # fmt: skip
        bundles.append(_bundle(settlement, f"{e.key}:settlement"))
    if e.followup_obs:
        bundles.append(
            _bundle(
                [
                    _observation(f"{e.key}-f{i}", e.patient, code,
                                 FOLLOWUP_VALUE[code], None, at, None)
                    for i, (code, at) in enumerate(e.followup_obs)
                ],
                f"{e.key}:followup",
            )
        )  # fmt: skip
    if e.resend_end:
        bundles.append(_bundle([_encounter(e, e.resend_end)], f"{e.key}:discharge"))
    return bundles


def complaint_bundle(complaints: list[Complaint]) -> bytes:
    resources: list[dict[str, Any]] = []
    code = {"coding": [{"system": qf.QUALITY_SYSTEM, "code": "complaint"}]}
    for c in complaints:
        if c.as_task:
            task: dict[str, Any] = {
                "resourceType": "Task", "id": c.key, "status": "completed", "intent": "order",
                "code": code, "authoredOn": c.created,
            }  # fmt: skip
            if c.replies:
                task["executionPeriod"] = {"start": min(c.replies)}
            resources.append(task)
            continue
        resources.append({
            "resourceType": "Communication", "id": c.key, "status": "completed",
            "category": [code], "sent": c.created,
        })  # fmt: skip
        resources += [
            {
                "resourceType": "Communication",
                "id": f"{c.key}-r{i}",
                "status": "completed",
                "inResponseTo": [{"reference": f"Communication/{c.key}"}],
                "sent": sent,
            }  # fmt: skip
            for i, sent in enumerate(c.replies)
        ]
    return _bundle(resources, "complaints")


def submit_all(api: Api, headers: dict[str, str], now: datetime) -> None:
    bodies = [b for e in EPISODES for b in episode_bundles(e)]
    bodies.append(complaint_bundle(_complaints(now)))
    for body in bodies:
        answer = api.post(body, headers)
        assert answer.status_code == 201, answer.text


def indicator_counts(facts: list[Any]) -> dict[str, tuple[int, int]]:
    chosen = in_period(facts, START, END)
    return {code: counts(rule, chosen) for code, (_, rule) in INDICATORS.items()}


# --- tests ---------------------------------------------------------------------------------------


def test_each_indicator_from_stored_bundles(tmp_path: Path, db_url: str) -> None:
    now = datetime.now(UTC)
    with open_api(tmp_path, db_url) as api:
        submit_all(api, api.credential(), now)
        indexes = api.services.indexes
        indexes.fresh(qf.QUALITY)
        facts = qf.episode_facts(api.services.vault, HOSPITAL_ORG, now)
        assert indicator_counts(facts) == expected_counts(now)
        # Another sender's Bundles are not this sender's episodes.
        assert qf.episode_facts(api.services.vault, "someone-else", now) == []
        # Caught up twice: no row is indexed twice, the counts stay the same.
        indexes.fresh(qf.QUALITY)
        again = qf.episode_facts(api.services.vault, HOSPITAL_ORG, now)
        assert indicator_counts(again) == expected_counts(now)


def test_expected_counts_are_the_ones_worked_by_hand() -> None:
    # The table above, read by a person: guards the independent counting itself.
    assert expected_counts(datetime(2026, 11, 29, tzinfo=UTC)) == {
        "language-service": (2, 3),  # e1 en: en record; e2 ru: zh+en only; e4 ar: ar-SA
        "direct-payment": (1, 3),  # e1 GOP before discharge; e2 after; e6 outcome error
        "complaint-response": (2, 4),  # c1 23 h, c2 72 h, c3 unanswered, c5 47 h
        "rwd-followup": (1, 3),  # e1 1 of 2, e4 1 of 1, e6 0 of 1
        "pain-vas-50": (2, 3),  # e1 8 -> 3, e2 6 -> 4, e4 10 -> 3 (follow-up); e6 has one value
        "hba1c-7": (2, 3),  # e1 6.5 %, e2 48 mmol/mol = 6.54 %, e3 7.2 %
        "satisfaction-90": (2, 3),  # e1 95, e2 88, e3 90
    }


def test_references_by_full_url_and_the_latest_resource_wins() -> None:
    patient_url, enc_url = "urn:uuid:p", "urn:uuid:e"
    first = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": patient_url, "resource": {
                "resourceType": "Patient",
                "communication": [{"language": {"coding": [{"code": "de"}]}}]}},
            {"fullUrl": enc_url, "resource": {
                "resourceType": "Encounter", "id": "x", "subject": {"reference": patient_url},
                "period": {"start": "2026-05-01"}}},
            {"fullUrl": "urn:uuid:c", "resource": {
                "resourceType": "Composition", "language": "de-CH",
                "encounter": {"reference": enc_url}}},
        ],
    }  # fmt: skip
    rows = [{"idx": 1, **r} for r in qf.bundle_rows(first, "b1")]
    assert {(r["fact"], r["key"]) for r in rows} == {
        ("patient", "b1#urn:uuid:p"),
        ("encounter", "Encounter/x"),
        ("lang", "b1#urn:uuid:c"),
    }
    (fact,) = qf.assemble(rows, datetime(2026, 6, 1, tzinfo=UTC))
    assert (fact.needed_interpreter, fact.language_service_given) == (True, True)
    later = {"idx": 2, **rows[1], "at": "2026-07-01"}
    (moved,) = qf.assemble([*rows, later], datetime(2026, 8, 1, tzinfo=UTC))
    assert moved.day == date(2026, 7, 1)


def test_hba1c_units_and_language_subtags() -> None:
    assert qf.hba1c_percent(53, f"{LOINC}|59261-8", "mmol/mol") == 7.0
    assert qf.hba1c_percent(6.9, f"{LOINC}|4548-4", "%") == 6.9
    assert qf.hba1c_percent(6.9, f"{LOINC}|4548-4", "mg/dL") is None
    assert qf.primary_language("EN_us") == "en"
    assert qf.primary_language("") is None


_times = st.datetimes(
    min_value=datetime(2026, 1, 1), max_value=datetime(2026, 12, 1), timezones=st.just(UTC)
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(_times, st.lists(st.integers(0, 200), max_size=3), st.booleans()),
        max_size=12,
    )
)
def test_complaint_hours_are_the_first_response(cases: list[Any]) -> None:
    """For any complaints and replies: one fact per decided complaint, hours to its first reply
    (Communication) or executionPeriod.start (Task); unanswered ones only after 48 h."""
    now = datetime(2026, 12, 2, tzinfo=UTC)
    complaints = [
        Complaint(f"k{i}", task, created.isoformat(),
                  tuple((created + timedelta(hours=h)).isoformat() for h in replies))
        for i, (created, replies, task) in enumerate(cases)
    ]  # fmt: skip
    doc = json.loads(complaint_bundle(complaints))
    rows = [{"idx": 1, **r} for r in qf.bundle_rows(doc, "b")]
    got = {f.episode: f.complaint_hours_to_response for f in qf.assemble(rows, now)}
    want = {}
    for c, (created, replies, _) in zip(complaints, cases, strict=True):
        key = f"{'Task' if c.as_task else 'Communication'}/{c.key}"
        if replies:
            want[key] = float(min(replies))
        elif now - created > timedelta(hours=48):
            want[key] = (now - created).total_seconds() / 3600
    assert got == want


def _plan_rows(as_of_days: list[int], done_days: list[int]) -> list[dict[str, object]]:
    """Rows of one stay (2026-01-01) with follow-ups planned `as_of_days` after it and
    Observations of the same code `done_days` after it."""
    base = datetime(2026, 1, 1, tzinfo=UTC)
    stay = Episode("s", "p", "en", base.isoformat(), (base + timedelta(days=2)).isoformat(),
                   plan=tuple((f"{LOINC}|4548-4", (base + timedelta(days=d)).date().isoformat())
                              for d in as_of_days),
                   followup_obs=tuple((HBA1C[0], (base + timedelta(days=d)).isoformat())
                                      for d in done_days))  # fmt: skip
    rows: list[dict[str, object]] = []
    for i, body in enumerate(episode_bundles(stay)):
        rows += [{"idx": i, **r} for r in qf.bundle_rows(json.loads(body), f"b{i}")]
    return rows


def test_a_follow_up_counts_once_due_or_done() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    # Planned at +30 and +90 days; one Observation at +35.
    rows = _plan_rows([30, 90], [35])
    at = {days: qf.assemble(rows, start + timedelta(days=days))[0] for days in (20, 50, 200)}
    assert (at[20].followups_planned, at[20].followups_done) == (1, 1)  # +90 not yet due
    assert (at[50].followups_planned, at[50].followups_done) == (1, 1)
    assert (at[200].followups_planned, at[200].followups_done) == (2, 1)  # +90 window closed
    # One Observation fulfils one planned follow-up only; outside 14 days it fulfils none.
    twice = qf.assemble(_plan_rows([30, 31], [30]), start + timedelta(days=100))[0]
    assert (twice.followups_planned, twice.followups_done) == (2, 1)
    late = qf.assemble(_plan_rows([30], [45]), start + timedelta(days=100))[0]
    assert (late.followups_planned, late.followups_done) == (1, 0)


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(["en", "zh", "zh-Hans-CN", "ru-RU", "ar", None]),
    st.lists(st.sampled_from(["en-GB", "zh-CN", "ru", "ar-SA", "fr"]), max_size=3),
)
def test_language_service_for_any_languages(patient: str | None, records: list[str]) -> None:
    """Needs the service exactly when the patient's language is known and not Chinese; given
    exactly when a record of the stay shares its primary subtag."""
    stay = Episode("s", "p", patient, "2026-03-01T00:00:00Z", None, record_langs=tuple(records))
    rows = [{"idx": 0, **r} for r in qf.bundle_rows(json.loads(episode_bundles(stay)[0]), "b")]
    (fact,) = qf.assemble(rows, datetime(2026, 4, 1, tzinfo=UTC))
    primary = patient.split("-")[0] if patient else None
    assert fact.needed_interpreter == (None if primary is None else primary != "zh")
    if fact.needed_interpreter:
        assert fact.language_service_given == any(r.split("-")[0] == primary for r in records)
    else:
        assert fact.language_service_given is None
