"""A dispute's case, gathered from the store for exchange.cases (docs/disputes.md).

    gather_case(vault, indexes, log, org, patient, period) -> Case     gather.py
    export_case(...) -> ExportedCase     the package, and the access entry that records it
    mediator_decision(...) -> Decision   may this mediator have the case, by consent, now

exchange.cases builds and verifies packages from ledger data alone; this package finds that
data for one patient of one hospital: every stored version of the patient's Bundles in the
period (exact bytes and salts, from the vault), the hospital's registry attestations, and the
patient's accounting of disclosures. A case is a disclosure like any other: the export is an
access entry about the patient.
"""

from .gather import (
    CaseRequest,
    ExportedCase,
    Period,
    export_case,
    gather_case,
    mediator_decision,
)

__all__ = [
    "CaseRequest",
    "ExportedCase",
    "Period",
    "export_case",
    "gather_case",
    "mediator_decision",
]
