"""What an audit finds wrong with a log's data, each error naming where and what to do.

AuditError (exit 4) names the first bad entry, a code for what failed and a next step (its
`hint`); EvidenceError (exit 4) says why an evidence file proves nothing; AuditUsageError (exit
1) is an impossible request.
"""

from __future__ import annotations

from ..verify import VerificationError


class AuditUsageError(ValueError):
    """The audit was asked for something impossible (e.g. --from beyond the log). Exit 1."""


_HINTS = {
    "malformed-entry": "the stored bytes of entry {i} are damaged: restore them from a backup "
    "or from the receipt the sender holds (its extra line is the signed entry), then audit again",
    "missing-entry": "entries are missing at {i}: restore them from a backup (a log never "
    "deletes entries); a server that withholds them should be reported to its operator",
    "inserted-entry": "an entry was added at {i} that the log never signed: restore the store "
    "from a backup and audit again",
    "altered-entry": "entry {i} is not the one the log signed: restore it from a backup or "
    "from its receipt, then audit again",
    "chain": "entry {i} does not chain to entry {i_1}: restore both from a backup and audit again",
    "stored-hash": "the stored tree hashes are damaged at entry {i}, so the server hands out "
    "wrong proofs: rebuild ledger_hashes from the entries (they verify) or restore it from a "
    "backup",
    "checkpoint": "a stored checkpoint is not the log's: restore ledger_checkpoints from a "
    "backup; if --key is not this log's verifier key, pass the right one (GET /v1/log/key)",
    "root": "entries 0..{i} do not have the signed root: restore the store from a backup and "
    "audit again; if a clean copy fails the same way, report the log to its operator",
    "extra-entry": "the store holds data beyond the signed checkpoint, added outside the log: "
    "restore it from a backup",
    "latest-checkpoint": "check that --key is this log's verifier key (GET /v1/log/key); if it "
    "is, the checkpoint the source hands out is damaged or forged: report it to the operator",
    "proof": "the server's proofs are wrong although its entries verify: its operator should run "
    "`medledger audit --db` on its database and rebuild the stored hashes",
    "key-rule": "that checkpoint's signatures contradict the log's own key entries (a retired "
    "key signed it, or an active key did not): if the log's operator did not sign it, a key is "
    "compromised; report it to the operator with the checkpoint",
    "tile": "the tiles for entry {i} are not those of the signed tree, so the host hands out "
    "wrong entries or proofs: write the tiles again from the log (`medledger tiles sync --out` "
    "into an empty directory) and audit again, or report the host to the log's operator",
    "unstable-source": "the source answered two reads of the same entries differently: retry; "
    "if it persists, report the server to its operator",
}


class AuditError(VerificationError):
    """The log's data does not verify. `index` is the first bad entry; `code` says what failed."""

    def __init__(
        self, message: str, index: int | None, code: str, *, checkpoint: int | None = None
    ) -> None:
        super().__init__(message, index)
        self.code = code
        self.checkpoint = checkpoint
        i = index if index is not None else 0
        self.hint = _HINTS[code].format(i=i, i_1=max(i - 1, 0))


class EvidenceError(VerificationError):
    """An evidence file's claims do not hold: it proves no misbehaviour. Exit 4."""
