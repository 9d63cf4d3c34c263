"""Sample Bundles of each kind (record, consent, rwd, settlement), as exact JSON text.

The Bundles are JSON text, not Python objects, so their lexemes (money `1200.00`, times
`.000Z`) are what the log commits to and what GET returns. They carry Bundle.identifier, so
seeding the same log twice appends nothing the second time. `medledger serve --demo` submits
them; intake warms its workers on them (exchange.intake.warmed), so this module imports
nothing.
"""

from __future__ import annotations

HOSPITAL_ORG = "boao-lecheng-intl"
INSURER_ORG = "global-health-insurer"

_PATIENT = """{
  "resourceType": "Patient",
  "identifier": [{"system": "https://boao-lecheng-intl.example/mrn", "value": "%(mrn)s"}],
  "name": [{"family": "%(family)s", "given": ["%(given)s"]}],
  "gender": "%(gender)s",
  "birthDate": "%(birth)s"
}"""


def _bundle(identifier: str, timestamp: str, patient: dict[str, str], *resources: str) -> bytes:
    entries = [(f"urn:uuid:{patient['uuid']}", _PATIENT % patient)]
    entries += [(f"urn:uuid:{identifier[:-4]}{i:04d}", r) for i, r in enumerate(resources, 1)]
    indent = "\n     "
    body = ",\n".join(
        f'    {{"fullUrl": "{url}",{indent}"resource": {r.replace(chr(10), indent)}}}'
        for url, r in entries
    )
    return (
        '{\n  "resourceType": "Bundle",\n'
        f'  "identifier": {{"system": "urn:ietf:rfc:3986", "value": "urn:uuid:{identifier}"}},\n'
        f'  "type": "collection",\n  "timestamp": "{timestamp}",\n  "entry": [\n{body}\n  ]\n}}\n'
    ).encode()


KIM_MRN = "KR-880412-0001"  # the sample patient whose claims the demo's insurer may read
_KIM = {
    "uuid": "3f0c6a52-6d1e-4f1b-9d55-0a4c1b7e0001",
    "mrn": KIM_MRN,
    "family": "Kim",
    "given": "Minji",
    "gender": "female",
    "birth": "1988-04-12",
}
_IVANOV = {
    "uuid": "3f0c6a52-6d1e-4f1b-9d55-0a4c1b7e0002",
    "mrn": "RU-790923-0002",
    "family": "Ivanov",
    "given": "Sergei",
    "gender": "male",
    "birth": "1979-09-23",
}
_KIM_REF = "urn:uuid:" + _KIM["uuid"]
_IVANOV_REF = "urn:uuid:" + _IVANOV["uuid"]

_ENCOUNTER = """{
  "resourceType": "Encounter",
  "status": "finished",
  "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "%s"},
  "subject": {"reference": "%s"},
  "period": {"start": "%s", "end": "%s"}
}"""

_OBSERVATION = """{
  "resourceType": "Observation",
  "status": "final",
  "code": {"coding": [{"system": "http://loinc.org", "code": "%s", "display": "%s"}]},
  "subject": {"reference": "%s"},
  "effectiveDateTime": "%s",
  "valueQuantity": {"value": %s, "unit": "%s", "system": "http://unitsofmeasure.org",
                    "code": "%s"}
}"""

_CONDITION = """{
  "resourceType": "Condition",
  "clinicalStatus": {"coding": [{"system":
    "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
  "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "%s",
                       "display": "%s"}]},
  "subject": {"reference": "%s"},
  "recordedDate": "%s"
}"""

_CONSENT = """{
  "resourceType": "Consent",
  "status": "active",
  "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                        "code": "patient-privacy"}]},
  "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
  "patient": {"reference": "%s"},
  "dateTime": "%s",
  "organization": [{"reference": "Organization/%s"}],
  "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                             "code": "OPTIN"}]},
  "provision": {
    "type": "permit",
    "period": {"start": "%s", "end": "%s"},
    "actor": [{"role": {"coding": [{"system":
      "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]},
      "reference": {"reference": "Organization/%s"}}],
    "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                 "code": "%s"}]
  }
}"""

_MED_ADMIN = """{
  "resourceType": "MedicationAdministration",
  "status": "completed",
  "medicationCodeableConcept": {"coding": [{"system": "http://www.whocc.no/atc",
    "code": "%s", "display": "%s"}], "text": "%s (special-import, Lecheng pilot zone)"},
  "subject": {"reference": "%s"},
  "effectiveDateTime": "%s",
  "dosage": {"route": {"text": "%s"}, "dose": {"value": %s, "unit": "mg",
    "system": "http://unitsofmeasure.org", "code": "mg"}}
}"""

_ADVERSE_EVENT = """{
  "resourceType": "AdverseEvent",
  "actuality": "actual",
  "event": {"text": "%s"},
  "subject": {"reference": "%s"},
  "date": "%s",
  "seriousness": {"coding": [{"system":
    "http://terminology.hl7.org/CodeSystem/adverse-event-seriousness", "code": "Non-serious"}]}
}"""

_CLAIM = """{
  "resourceType": "Claim",
  "status": "active",
  "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type",
                       "code": "institutional"}]},
  "use": "claim",
  "patient": {"reference": "%s"},
  "created": "%s",
  "insurer": {"reference": "Organization/%s"},
  "provider": {"reference": "Organization/%s"},
  "priority": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/processpriority",
                           "code": "normal"}]},
  "insurance": [{"sequence": 1, "focal": true, "coverage": {"display": "%s"}}],
  "item": [{"sequence": 1, "productOrService": {"text": "%s"},
            "unitPrice": {"value": %s, "currency": "CNY"},
            "net": {"value": %s, "currency": "CNY"}}],
  "total": {"value": %s, "currency": "CNY"}
}"""

_INVOICE = """{
  "resourceType": "Invoice",
  "status": "issued",
  "subject": {"reference": "%s"},
  "date": "%s",
  "issuer": {"reference": "Organization/%s"},
  "totalNet": {"value": %s, "currency": "CNY"},
  "totalGross": {"value": %s, "currency": "CNY"}
}"""


def sample_bundles() -> list[bytes]:
    """Two Bundles of each kind: record, consent, rwd, settlement (in that order)."""
    h, i = HOSPITAL_ORG, INSURER_ORG
    return [
        _bundle(
            "6b3d1c8e-2f0a-4c61-9e57-5d1a7c3b1001",
            "2026-03-02T09:30:00.000Z",
            _KIM,
            _ENCOUNTER % ("AMB", _KIM_REF, "2026-03-02T08:00:00.000Z", "2026-03-02T09:15:00.000Z"),
            _OBSERVATION
            % (
                "8310-5",
                "Body temperature",
                _KIM_REF,
                "2026-03-02T08:20:00.000Z",
                "37.50",
                "Cel",
                "Cel",
            ),
        ),
        _bundle(
            "6b3d1c8e-2f0a-4c61-9e57-5d1a7c3b1002",
            "2026-03-05T14:00:00.000Z",
            _IVANOV,
            _CONDITION
            % (
                "E11.9",
                "Type 2 diabetes mellitus without complications",
                _IVANOV_REF,
                "2026-03-05T13:40:00.000Z",
            ),
            _OBSERVATION
            % (
                "4548-4",
                "Hemoglobin A1c",
                _IVANOV_REF,
                "2026-03-05T13:10:00.000Z",
                "7.20",
                "%",
                "%",
            ),
        ),
        _bundle(
            "6b3d1c8e-2f0a-4c61-9e57-5d1a7c3b2001",
            "2026-03-02T09:40:00.000Z",
            _KIM,
            _CONSENT
            % (_KIM_REF, "2026-03-02T09:35:00.000Z", h, "2026-03-02", "2026-12-31", i, "HPAYMT"),
        ),
        _bundle(
            "6b3d1c8e-2f0a-4c61-9e57-5d1a7c3b2002",
            "2026-03-05T14:10:00.000Z",
            _IVANOV,
            _CONSENT
            % (_IVANOV_REF, "2026-03-05T14:05:00.000Z", h, "2026-03-05", "2027-03-04", i, "HPAYMT"),
        ),
        _bundle(
            "6b3d1c8e-2f0a-4c61-9e57-5d1a7c3b3001",
            "2026-03-03T10:00:00.000Z",
            _KIM,
            _MED_ADMIN
            % (
                "L04AC10",
                "secukinumab",
                "Secukinumab",
                _KIM_REF,
                "2026-03-03T09:30:00.000Z",
                "subcutaneous",
                "150.00",
            ),
        ),
        _bundle(
            "6b3d1c8e-2f0a-4c61-9e57-5d1a7c3b3002",
            "2026-03-06T11:00:00.000Z",
            _IVANOV,
            _MED_ADMIN
            % (
                "A10BJ06",
                "semaglutide",
                "Semaglutide",
                _IVANOV_REF,
                "2026-03-05T15:00:00.000Z",
                "subcutaneous",
                "0.25",
            ),
            _ADVERSE_EVENT
            % ("Nausea after the first dose", _IVANOV_REF, "2026-03-06T08:00:00.000Z"),
        ),
        _bundle(
            "6b3d1c8e-2f0a-4c61-9e57-5d1a7c3b4001",
            "2026-03-03T16:00:00.000Z",
            _KIM,
            _CLAIM
            % (
                _KIM_REF,
                "2026-03-03T16:00:00.000Z",
                i,
                h,
                "Policy GHI-7731",
                "Secukinumab 150 mg, administration",
                "1200.00",
                "1200.00",
                "1200.00",
            ),
            _INVOICE % (_KIM_REF, "2026-03-03T16:00:00.000Z", h, "1200.00", "1200.00"),
        ),
        _bundle(
            "6b3d1c8e-2f0a-4c61-9e57-5d1a7c3b4002",
            "2026-03-06T17:00:00.000Z",
            _IVANOV,
            _CLAIM
            % (
                _IVANOV_REF,
                "2026-03-06T17:00:00.000Z",
                i,
                h,
                "Policy GHI-9012",
                "Outpatient consultation",
                "850.50",
                "850.50",
                "850.50",
            ),
        ),
    ]


def try_me_bundle() -> bytes:
    """A record Bundle with no identifier: each POST of it is a new submission (201)."""
    return (
        b'{"resourceType": "Bundle", "type": "collection", "timestamp": '
        b'"2026-03-07T08:00:00.000Z", "entry": [{"fullUrl": "urn:uuid:'
        b'9a7e5b1c-0d2f-4e3a-8b6c-7d9e0f1a2b3c", "resource": {"resourceType": "Observation", '
        b'"status": "final", "code": {"coding": [{"system": "http://loinc.org", "code": '
        b'"8867-4", "display": "Heart rate"}]}, "valueQuantity": {"value": 72.0, "unit": '
        b'"/min", "system": "http://unitsofmeasure.org", "code": "/min"}}}]}\n'
    )
