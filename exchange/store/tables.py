"""The exchange's schema: every table it keeps, on one MetaData, beside the ledger's own.

This is what the Alembic revisions (exchange/store/migrations) arrive at: a test compares a
database upgraded to head with it. Tables are grouped by the package that owns their rows;
the comments say what a row holds. The ledger's tables (ledger_entries, ledger_hashes, ...)
are the ledger's own (ledger/store.py) and are not declared here.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

# --- bundles.store ----------------------------------------

bundles_table = Table(
    "exchange_bundles",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("idx", BigInteger, nullable=False, unique=True),  # the ledger entry
    Column("sender", String(64), nullable=False),
    Column("client_id", String(64), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("media", String(64), nullable=False),
    Column("salt", LargeBinary, nullable=False),
    Column("digest", LargeBinary, nullable=False),  # SHA-256 of data
    Column("data", LargeBinary, nullable=False),
    Column("subject", LargeBinary),  # the patient's pseudonym, as in the entry
    # Bundle.identifier is indexed through a hash: its text is unbounded, index keys are not.
    Column("ident_hash", LargeBinary),
    Column("ident_system", Text),
    Column("ident_value", Text),
    Column("idempotency_key", String(256)),
    Column("received", String(32), nullable=False),
    Index("ix_exchange_bundles_ident", "sender", "ident_hash", "version", unique=True),
    Index("ix_exchange_bundles_subject", "sender", "subject"),
    # The newest Bundle of a kind (exchange.settlement.index.consents_generation), in one seek.
    Index("ix_exchange_bundles_kind", "kind", "idx"),
)


clients_table = Table(
    "exchange_clients",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("name", Text, nullable=False),
    Column("role", String(16), nullable=False),
    Column("org", String(64)),
    Column("token_hash", LargeBinary, nullable=False, unique=True),
    Column("created", String(32), nullable=False),
    # Added after the first databases were made: nullable, so create_schema can add them.
    Column("expires", BigInteger),  # unix seconds after which the token is refused; NULL never
    Column("revoked", String(32)),  # when the client was revoked (RFC 3339); NULL while active
)


credential_epoch_table = Table(
    "exchange_credential_epoch",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),  # always 1
    Column("epoch", BigInteger, nullable=False),
)


# SMART Backend Services (exchange.smart): each client's registered public JWKS, the `jti` of
# every accepted client assertion until it expires (replay refusal), and issued access tokens,
# kept as SHA-256 only, like the `mlt_` credentials.
smart_jwks_table = Table(
    "exchange_smart_jwks",
    metadata,
    Column("client_id", String(64), primary_key=True),
    # One of the two: the JWKS itself, or the https URL it is published at
    # (exchange.identity.jwks_url).
    Column("jwks", Text),
    Column("created", String(32), nullable=False),
    Column("jwks_url", String(2048)),
)


smart_jti_table = Table(
    "exchange_smart_jti",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("jti", String(256), primary_key=True),
    Column("expires", BigInteger, nullable=False),  # unix seconds
)


smart_tokens_table = Table(
    "exchange_smart_tokens",
    metadata,
    Column("token_hash", LargeBinary, primary_key=True),
    Column("client_id", String(64), nullable=False),
    Column("scopes", Text, nullable=False),  # space-separated, as granted
    Column("purpose", String(64)),
    Column("expires", BigInteger, nullable=False),  # unix seconds
)


secrets_table = Table(
    "exchange_secrets",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", LargeBinary, nullable=False),
)

# --- privacy.access ----------------------------------------

access_table = Table(
    "access_events",
    metadata,
    Column("idx", Integer, primary_key=True, autoincrement=False),  # the ledger index
    Column("client_id", String(64), nullable=False),
    Column("org", String(64)),
    Column("role", String(16), nullable=False),
    Column("action", String(16), nullable=False),
    Column("resource_type", String(64), nullable=False),
    Column("subject", LargeBinary, index=True),  # the patient's pseudonym, as in the entry
    Column("purpose", String(64)),
    Column("outcome", String(2), nullable=False),
    Column("recorded", DateTime(timezone=True), nullable=False),
    Column("salt", LargeBinary, nullable=False),
    Column("data", LargeBinary, nullable=False),  # the AuditEvent, as committed to
)


# The further patients an access entry is about, beyond its subject (a Bundle naming several).
access_subjects_table = Table(
    "access_event_subjects",
    metadata,
    Column("idx", Integer, primary_key=True, autoincrement=False),  # the access entry
    Column("subject", LargeBinary, primary_key=True),  # a patient's pseudonym
    Index("ix_access_event_subjects_subject", "subject"),
)

# --- vault.vault ----------------------------------------

keys_table = Table(
    "exchange_vault_keys",
    metadata,
    Column("key_id", String(64), primary_key=True),
    Column("sender", String(64), nullable=False),
    Column("lookup", LargeBinary),  # HMAC of sender and identifier; NULL for a Bundle's own key
    Column("pseudonym", LargeBinary),  # the patient's entry `subject`
    Column("master_id", String(32), nullable=False),
    Column("wrapped", LargeBinary, nullable=False),  # RFC 3394 AES-KW of the DEK
    Column("created", String(32), nullable=False),
    Index("ix_exchange_vault_keys_lookup", "sender", "lookup", unique=True),
)


# What is left of a destroyed key: which erasure destroyed it, so a read can say so (410).
erased_table = Table(
    "exchange_vault_erased",
    metadata,
    Column("key_id", String(64), primary_key=True),
    Column("request_id", String(64), nullable=False),
    Column("idx", BigInteger, nullable=False),  # the erasure's ledger entry
)


# Further key rows of one patient: before identifiers had one spelling, two spellings of one
# identifier could each get a key (exchange.store_upgrade). Such a key seals nothing any more,
# but its pseudonym is the subject of the older spelling's entries: the patient's accounting
# finds them through it, and the patient's erasure destroys it too.
aliases_table = Table(
    "exchange_vault_aliases",
    metadata,
    Column("key_id", String(64), primary_key=True),
    Column("sender", String(64), nullable=False),
    Column("lookup", LargeBinary, nullable=False),  # the patient's lookup tag
    Index("ix_exchange_vault_aliases_lookup", "sender", "lookup"),
)

# --- indexes.derived ----------------------------------------

state_table = Table(
    "exchange_derived_state",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("last_index", BigInteger, nullable=False),  # -1: nothing read yet
)


# Every index's table, by name: an erasure (exchange.erasure) deletes the rows derived from
# the erased Bundles from each, by their `idx` column.
tables_table = Table(
    "exchange_derived_tables",
    metadata,
    Column("name", String(64), primary_key=True),
)

# --- indexes.patients ----------------------------------------

patient_ids_table = Table(
    "exchange_patient_ids",
    metadata,
    Column("idx", BigInteger, nullable=False),
    Column("sender", String(64), nullable=False),
    Column("bundle_id", String(64), nullable=False),
    Column("ident", LargeBinary, nullable=False),  # pseudonym of one (system, value)
    Index("ix_exchange_patient_ids", "sender", "ident"),
)

# --- indexes.trace ----------------------------------------

trace_table = Table(
    "exchange_trace",
    metadata,
    Column("idx", BigInteger, nullable=False),  # the ledger entry that used the pack
    Column("sender", String(64), nullable=False),
    Column("bundle_id", String(64), nullable=False),
    Column("gtin", String(14)),  # None: a pack known by its approval or Chinese code only
    Column("lot", Text),
    Column("serial", Text),
    Column("expiry", String(10)),
    Column("cn_code", String(20)),
    Column("import_approval", Text),  # in adapters.trace_fhir.normalise_approval's form
    Index("ix_exchange_trace_gtin_lot", "gtin", "lot"),
    Index("ix_exchange_trace_gtin_serial", "gtin", "serial"),
    Index("ix_exchange_trace_idx", "idx"),
    Index("ix_exchange_trace_approval", "import_approval"),
    Index("ix_exchange_trace_cn_code", "cn_code"),
)

# --- settlement.index ----------------------------------------

settlement_table = Table(
    "exchange_settlement",
    metadata,
    Column("idx", BigInteger, nullable=False),  # the Bundle's ledger entry
    Column("pos", Integer, nullable=False),  # Bundle.entry[pos]
    Column("sender", String(64), nullable=False),
    Column("bundle_id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("resource_type", String(32), nullable=False),
    Column("resource_id", String(64)),
    Column("subject", LargeBinary),  # pseudonym of the patient's first identifier
    Column("insurer", String(64)),  # Organization id (or identifier value) of the payer
    Column("last_updated", String(32), nullable=False),  # UTC, fixed width: sorts as it reads
    Column("data_date", String(10)),
    Column("start", BigInteger, nullable=False),  # byte offset of the resource in the Bundle
    Column("length", BigInteger, nullable=False),
    Index("ix_exchange_settlement_insurer", "insurer", "resource_type", "idx"),
    Index("ix_exchange_settlement_sender", "sender", "resource_type", "idx"),
    Index("ix_exchange_settlement_subject", "sender", "subject"),
)


settlement_keys_table = Table(
    "exchange_settlement_keys",
    metadata,
    Column("idx", BigInteger, nullable=False),
    Column("pos", Integer, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("key", LargeBinary, nullable=False),
    Index("ix_exchange_settlement_keys", "kind", "key"),
)

# --- quality.facts ----------------------------------------

quality_table = Table(
    "exchange_quality_facts",
    metadata,
    Column("idx", BigInteger, nullable=False),
    Column("sender", String(64), nullable=False),
    Column("bundle_id", String(64), nullable=False),
    Column("fact", String(16), nullable=False),  # see FACTS
    # The resource, what it points at, patient, episode, code, times, value and unit (PAYLOAD):
    # patient data, so it lives in the vault like the Bundle it comes from, AES-256-GCM under
    # a key made from the Bundle key of the version at `idx` (vault.joint_key): an erasure of
    # any patient the Bundle names leaves these bytes unreadable wherever a copy survives (a
    # backup, a dead row version).
    Column("data", LargeBinary, nullable=False),
    Index("ix_exchange_quality_facts_sender", "sender", "fact"),
)

# --- settlement.bulk_export ----------------------------------------

jobs_table = Table(
    "exchange_export_jobs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("client_id", String(64), nullable=False),
    Column("org", String(64)),
    Column("role", String(16), nullable=False),
    Column("purpose", String(32)),
    Column("types", Text, nullable=False),  # comma-separated
    Column("since", String(32)),  # fixed-width UTC, exclusive
    Column("request", Text, nullable=False),  # the kick-off URL
    Column("transaction_time", String(40), nullable=False),
    Column("status", String(16), nullable=False),
    Column("progress", String(64), nullable=False),
    Column("owner", String(32), nullable=False),  # the process running it
    Column("updated", String(40), nullable=False),
    Column("error", Text),
)


files_table = Table(
    "exchange_export_files",
    metadata,
    Column("job_id", String(36), primary_key=True),
    Column("n", Integer, primary_key=True, autoincrement=False),
    Column("resource_type", String(32), nullable=False),
    Column("count", Integer, nullable=False),
    # The file's SHA-256, sealed (vault.seal_derived) under the joint key of the Bundle keys
    # of `bundles`; NULL when one of them could no longer be opened when the store was
    # upgraded to this format.
    Column("digest", LargeBinary),
    # JSON [ledger index, ...]: the Bundle versions of its lines, whose keys make the digest's.
    Column("bundles", Text, nullable=False),
    # JSON [[bundle_id, version, start, length], ...]: where each line's resource is stored.
    Column("refs", Text, nullable=False),
)

# --- consent.crossborder ----------------------------------------

transfers_table = Table(
    "exchange_crossborder_patients",
    metadata,
    Column("year", Integer, primary_key=True, autoincrement=False),
    Column("subject", LargeBinary, primary_key=True),  # the patient's pseudonym
    Column("first_recipient", String(64), nullable=False),
)


recipients_table = Table(
    "exchange_crossborder_recipients",
    metadata,
    Column("org", String(64), primary_key=True),  # Organization/<org> in consents and claims
    Column("country", String(2), nullable=False),  # ISO 3166-1 alpha-2
    Column("basis", String(32)),
    Column("reference", String(128)),
    # Where the recipient receives deliveries (exchange.outbox.endpoints): the URL, the HL7 v2
    # message of an mllp:// endpoint, and its credentials sealed under the vault's master key.
    Column("endpoint", String(512)),
    Column("endpoint_message", String(16)),
    Column("endpoint_secret", LargeBinary),
)

# --- identity.mllp ----------------------------------------

mllp_senders_table = Table(
    "exchange_mllp_senders",
    metadata,
    Column("kind", String(8), primary_key=True),  # peer (an IP address) | facility (MSH-4)
    Column("value", String(255), primary_key=True),
    Column("client_id", String(64), nullable=False),  # the hospital client it submits as
)

# --- outbox ----------------------------------------

deliveries_table = Table(
    "exchange_deliveries",
    metadata,
    Column("id", String(36), primary_key=True),  # also the IPS document id / MSH-10 seed
    Column("bundle_id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("bundle_idx", BigInteger, nullable=False),  # the delivered Bundle version's entry
    Column("sender", String(64), nullable=False),  # the hospital that submitted it
    Column("subject", LargeBinary),  # the patient's pseudonym (the entry's subject)
    Column("patient_tag", LargeBinary, nullable=False),  # lookup tag consents are found by
    Column("recipient", String(64), nullable=False),
    Column("transport", String(8), nullable=False),  # fhir | mllp
    Column("endpoint", String(512), nullable=False),  # the URL when queued, for the listing
    Column("status", String(16), nullable=False),  # pending | delivered | failed
    Column("queued", DateTime(timezone=True), nullable=False),  # also the payload's clock
    Column("attempts", Integer, nullable=False),
    Column("first_attempt", DateTime(timezone=True)),
    Column("next_at", DateTime(timezone=True), nullable=False),
    Column("claimed_until", DateTime(timezone=True)),  # a worker holds it until then
    Column("sent_digest", LargeBinary),  # SHA-256 of the bytes sent, fixed by the first attempt
    Column("last_error", String(1024)),
    Column("ledger_index", BigInteger),  # the kind=delivery entry of the final outcome
    Column("access_index", BigInteger),  # the access entry of the same outcome
    Column("salt", LargeBinary),  # the delivery entry's commitment: SHA-256(salt || record)
    Column("record", LargeBinary),
    Index("ix_exchange_deliveries_once", "bundle_idx", "recipient", unique=True),
    Index("ix_exchange_deliveries_due", "status", "next_at"),
    Index("ix_exchange_deliveries_sender", "sender"),
)

# --- privacy.erasure ----------------------------------------

requests_table = Table(
    "exchange_erasure_requests",
    metadata,
    Column("request_id", String(64), primary_key=True),
    Column("sender", String(64), nullable=False),
    # The patient's lookup tag while the request is pending; cleared when it is carried out.
    Column("lookup", LargeBinary),
    Column("requested_by", String(64), nullable=False),
    Column("requested", String(32), nullable=False),
    Column("confirmed_by", String(64)),
    Column("confirmed", String(32)),
    Column("idx", BigInteger),  # the erasure's ledger entry
    Column("salt", LargeBinary),  # the entry commits to SHA-256(salt || data)
    Column("data", LargeBinary),  # the erasure record (canonical JSON, no PHI)
)

# --- registry.institutions ----------------------------------------

admin_keys_table = Table(
    "institution_admin_keys",
    metadata,
    Column("admin", String(64), primary_key=True),
    Column("public_key", LargeBinary, nullable=False),
)


attestations_table = Table(
    "institution_attestations",
    metadata,
    Column("idx", Integer, primary_key=True, autoincrement=False),
    Column("org", String(64), nullable=False, index=True),
    Column("salt", LargeBinary, nullable=False),
    Column("data", LargeBinary, nullable=False),
)


institutions_table = Table(
    "institutions",
    metadata,
    Column("org", String(64), primary_key=True),
    Column("idx", Integer, nullable=False),
    Column("record", LargeBinary, nullable=False),  # canonical JSON of the Institution
)

# One signed licence attestation of a practitioner (exchange.registry.practitioners), by the
# ledger index of its `practitioner` entry; the latest per (practitioner, licence_number) is
# the licence's current state.
practitioner_licences_table = Table(
    "practitioner_licences",
    metadata,
    Column("idx", Integer, primary_key=True, autoincrement=False),
    Column("org", String(64), nullable=False, index=True),
    Column("practitioner", String(64), nullable=False, index=True),
    Column("licence_number", String(64), nullable=False, index=True),
    Column("salt", LargeBinary, nullable=False),
    Column("data", LargeBinary, nullable=False),
)

# --- keys.keyring ----------------------------------------

key_events_table = Table(
    "ledger_key_events",
    metadata,
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("note", Text, nullable=False),
    Column("salt", LargeBinary, nullable=False),
)

# --- inspections.draw ----------------------------------------

# The seed document of each `inspection` entry and its salt: what a re-draw reads beside the
# log (the entry commits to SHA-256(salt || data)). No patient data.
inspection_seeds_table = Table(
    "inspection_seeds",
    metadata,
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("seed", String(128), nullable=False, unique=True),
    Column("salt", LargeBinary, nullable=False),
    Column("data", LargeBinary, nullable=False),  # {"entries","institutions","seed","v"}
)

# --- sharing.links ----------------------------------------

# One SMART Health Link (exchange.sharing): what its public routes read. The patient key, the
# files' key and the label are sealed under the Bundle key of the summary the link shares,
# so erasing the patient leaves a row nothing can open and the link answers 404.
shl_links_table = Table(
    "exchange_shl_links",
    metadata,
    Column("id", String(43), primary_key=True),  # base64url of 32 random bytes
    Column("created_by", String(64), nullable=False),  # the hospital's org
    Column("ips_bundle", String(64), nullable=False),  # the summary's stored Bundle
    Column("ips_version", Integer, nullable=False),
    Column("ips_index", BigInteger, nullable=False),  # its ledger entry
    Column("flag", String(3), nullable=False),  # "", "P" or "U"
    Column("exp", BigInteger, nullable=False),  # epoch seconds
    Column("sealed", LargeBinary, nullable=False),  # {key, patient, label} (vault.seal_derived)
    Column("passcode_hash", String(160)),  # scrypt (exchange.shl.link.hash_passcode)
    Column("remaining_attempts", Integer),  # wrong passcodes left; 0: disabled for good
    Column("revoked_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_exchange_shl_links_created_by", "created_by"),
)
