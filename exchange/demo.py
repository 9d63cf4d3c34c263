"""`medledger serve --demo`: sample clients and Bundles of each kind, and what to try.

The Bundles are exchange.samples'; seeding the same log twice appends nothing the second time.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from exchange.bootstrap import Services
from exchange.bundles.submit import Stored, SubmitRequest, submit_blocking
from exchange.consent import crossborder
from exchange.identity.clients import Client, register_client
from exchange.intake.samples import (
    HOSPITAL_ORG,
    INSURER_ORG,
    KIM_MRN,
    sample_bundles,
    try_me_bundle,
)
from exchange.intake.worker import check
from exchange.registry import institutions


@dataclass(frozen=True)
class Demo:
    clients: list[tuple[Client, str]]
    stored: list[Stored]
    files: Path


def seed(services: Services, files: Path) -> Demo:
    """Registers a hospital, an insurer and an auditor, and submits the sample Bundles as the
    hospital. The Bundles are also written to `files`, to POST again with curl."""
    engine = services.engine
    clients = [
        register_client(engine, "demo hospital", "hospital", HOSPITAL_ORG),
        register_client(engine, "demo insurer", "insurer", INSURER_ORG),
        register_client(engine, "demo auditor", "auditor", None),
    ]
    # The registry must know the hospital before it submits (strict deployments refuse others).
    institutions.register_demo_institution(services.log, HOSPITAL_ORG, date.today())
    hospital = clients[0][0]
    stored = []
    files.mkdir(parents=True, exist_ok=True)
    kinds = ["record", "record", "consent", "consent", "rwd", "rwd", "settlement", "settlement"]
    for n, (kind, body) in enumerate(zip(kinds, sample_bundles(), strict=True)):
        checked = check(body, "application/fhir+json", services.limits)
        stored.append(
            submit_blocking(services.log, services.vault, SubmitRequest(hospital, body, checked))
        )
        (files / f"{kind}-{n % 2 + 1}.json").write_bytes(body)
    (files / "try-me.json").write_bytes(try_me_bundle())
    # The insurer is a domestic recipient: settlement pull needs its country on record.
    crossborder.set_recipient(engine, crossborder.Recipient(INSURER_ORG, "CN", None))
    return Demo(clients, stored, files)


def instructions(demo: Demo, base_url: str, vkey: str) -> str:
    """What to print after seeding: the credentials and commands to copy."""
    (hospital, h_token), (insurer, i_token), (auditor, a_token) = demo.clients
    q = shlex.quote
    files = demo.files
    first = demo.stored[0]
    lines = [
        "medledger demo: sample clients (credentials are shown only now) and Bundles",
        "",
        f"  hospital  {hospital.client_id}  org {hospital.org}",
        f"  insurer   {insurer.client_id}  org {insurer.org}",
        f"  auditor   {auditor.client_id}",
        "",
        f"export HOSPITAL_TOKEN={h_token}",
        f"export INSURER_TOKEN={i_token}",
        f"export AUDITOR_TOKEN={a_token}",
        "",
        "Stored: " + ", ".join(f"{s.kind} #{s.index}" for s in demo.stored),
        f"Log key: {vkey}",
        "",
        "Try:",
        f"  curl -s {base_url}/fhir/metadata",
        f'  curl -s -i -X POST {base_url}/fhir/Bundle -H "Authorization: Bearer '
        f"$HOSPITAL_TOKEN\" -H 'Content-Type: application/fhir+json' --data-binary "
        f"@{q(str(files / 'try-me.json'))}",
        "  # the same seeded Bundle again is a retry: 200 with the original Location",
        f'  curl -s -i -X POST {base_url}/fhir/Bundle -H "Authorization: Bearer '
        f"$HOSPITAL_TOKEN\" -H 'Content-Type: application/fhir+json' --data-binary "
        f"@{q(str(files / 'settlement-1.json'))}",
        f'  curl -s {base_url}/fhir/Bundle/{first.id} -H "Authorization: Bearer $HOSPITAL_TOKEN"',
        "  # the exact bytes it was submitted as, which its receipt commits to",
        f'  curl -s {base_url}/fhir/Binary/{first.id} -H "Authorization: Bearer $HOSPITAL_TOKEN"',
        f"  curl -s {base_url}/v1/log/checkpoint",
        f"  curl -s {base_url}/v1/log/key > log.vkey",
        f"  curl -s {base_url}/v1/log/entries/{first.index}/receipt > entry.tlog-proof",
        "  medledger verify entry.tlog-proof --key log.vkey",
        f"  medledger audit --url {base_url} --key log.vkey",
        "  # the insurer's settlement pull, under the patient's consent",
        f"  curl -s -G {base_url}/fhir/Claim --data-urlencode "
        f"'patient.identifier=https://boao-lecheng-intl.example/mrn|{KIM_MRN}' "
        "-H \"Authorization: Bearer $INSURER_TOKEN\" -H 'X-Purpose-Of-Use: HPAYMT'",
    ]
    return "\n".join(lines) + "\n"
