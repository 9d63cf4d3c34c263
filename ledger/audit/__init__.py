"""Whole-log audits, evidence of log misbehaviour, and step-by-step proof explanations.

An audit reads every entry of a log from a LogSource and re-derives, trusting the source for
nothing: each entry's canonical form (docs/ledger-format.md), the hash chain (`prev`), the
RFC 6962 tree (section 2.1), its root at every signed checkpoint the source keeps and at the
latest one, and, when the source has them, the stored interior hashes the server builds its
proofs from. Given the state of an earlier audit it resumes there and proves that the log only
grew (RFC 9162 section 2.1.4). Two validly signed checkpoints that cannot both be true become
an Evidence file that anyone can re-check with the log's verifier key.

One job a module:

  source       where an audit reads a log from (LogSource), and how reading fails
  errors       what the log's data shows wrong (AuditError names the first bad entry)
  checkpoints  opening signed checkpoints; the key lifetime rule over a log's history
  stream       the linear check of entries, chain, tree, stored hashes and checkpoints
  evidence     RootClaim, Evidence and verify_evidence: misbehaviour anyone can re-check
  driver       audit() and its AuditResult: resuming, consistency, forks and rollbacks
  explain      proof checks written out step by step
  state        the auditor's memory between runs (the audit state file)

Exit-code classes: SourceUnavailable (2), SourceMalformed, StateError and MalformedInput (3),
AuditError (4), Evidence (5), and under a witness policy an AuditResult "unwitnessed"
(ledger.policy.EXIT_NOT_WITNESSED, 6). Standard library and ``cryptography`` only; reading is
the source's job (exchange/audit_sources.py: a database, the log API; ledger/tiles/source.py:
C2SP tiles).
"""

from .checkpoints import CheckpointRejected, check_key_lifetimes, open_checkpoint
from .driver import AuditResult, audit
from .errors import AuditError, AuditUsageError, EvidenceError
from .evidence import (
    EVIDENCE_FORMAT,
    MAX_EVIDENCE_BYTES,
    Evidence,
    EvidenceReport,
    RootClaim,
    verify_evidence,
)
from .explain import explain_consistency, explain_inclusion
from .source import LogSource, SourceMalformed, SourceUnavailable
from .state import AuditState, StateError, atomic_write, load_state, parse_state, save_state

__all__ = [
    "EVIDENCE_FORMAT",
    "MAX_EVIDENCE_BYTES",
    "AuditError",
    "AuditResult",
    "AuditState",
    "AuditUsageError",
    "CheckpointRejected",
    "Evidence",
    "EvidenceError",
    "EvidenceReport",
    "LogSource",
    "RootClaim",
    "SourceMalformed",
    "SourceUnavailable",
    "StateError",
    "atomic_write",
    "audit",
    "check_key_lifetimes",
    "explain_consistency",
    "explain_inclusion",
    "load_state",
    "open_checkpoint",
    "parse_state",
    "save_state",
    "verify_evidence",
]
