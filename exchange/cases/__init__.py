"""Case packages for disputes: the evidence of one patient's case as a ZIP that a mediation
committee or a court abroad checks offline, with only the log's verifier key.

A package holds the patient's stored Bundles (exact bytes, salts, receipts against one signed
checkpoint), a consistency proof to the newest checkpoint (with witness cosignatures), the
institution registry as it stood on each treatment date (signed attestations and their
entries), the accounting of disclosures (access entries' AuditEvents and receipts), a manifest
of SHA-256 hashes and a bilingual table of contents. docs/disputes.md says what it proves.

    build_package(Case(...), log) -> bytes                        package.py
    verify_package(zip_bytes_or_path, keys, policy) -> CaseReport  verify.py

This package depends on ledger/ only, so the service, the command line and a mediator's own
tools can all use it.
"""

from .errors import CaseBuildError, CaseError, CaseFailed, CaseMalformed
from .package import Case, Document, ProofSource, Recorded, build_package
from .verify import CaseReport, Finding, verify_package

__all__ = [
    "Case",
    "CaseBuildError",
    "CaseError",
    "CaseFailed",
    "CaseMalformed",
    "CaseReport",
    "Document",
    "Finding",
    "ProofSource",
    "Recorded",
    "build_package",
    "verify_package",
]
