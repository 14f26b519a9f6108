"""Tables for API clients and the chained, append-only audit trail (migration 0001_initial)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    SmallInteger,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from app.models.tables import metadata

api_clients = Table(
    "api_clients",
    metadata,
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("programs", ARRAY(Text), nullable=False),
    Column("field_groups", ARRAY(Text), nullable=False),
    Column("purposes", ARRAY(Text), nullable=False),
    # sha256 of the whole key: keys carry ~178 random bits, so a fast hash is enough.
    Column("key_hash", LargeBinary, nullable=False, unique=True),
    Column("key_prefix", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("expires_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
    # May call /v1/bulk/eligibility; NIKs a day (NULL: the default for its kind);
    # suspended (every request refused) since when and why, until an operator reinstates it.
    Column("bulk", Boolean, nullable=False, server_default=text("false")),
    Column("daily_quota", BigInteger),
    # Its DCI requests must be signed (an unsigned one is refused).
    Column("signatures_required", Boolean, nullable=False, server_default=text("false")),
    Column("suspended_at", DateTime(timezone=True)),
    Column("suspended_reason", Text),
    # Where DCI callbacks may go (app.services.dci): a sender_uri outside it is refused.
    Column("callback_url_prefix", Text),
    # The client's public keys (a JWKS): its OAuth2 client assertions (app.services.oauth2)
    # and its signed DCI messages (app.services.signatures) are verified with them.
    Column("jwks", JSONB),
    CheckConstraint("octet_length(key_hash) = 32", name="key_hash_sha256"),
    CheckConstraint("daily_quota IS NULL OR daily_quota >= 0", name="daily_quota_positive"),
    CheckConstraint(
        "programs <@ ARRAY['PKH', 'BPNT', 'PBI_JK', 'SEKOLAH_RAKYAT']::text[]", name="programs"
    ),
    CheckConstraint(
        "field_groups <@ ARRAY['decision', 'decile', 'membership', 'identity', 'attributes',"
        " 'health']::text[]",
        name="field_groups",
    ),
)

# Per client: the day's NIK count (the day in WIB) and the rate limit's token bucket, leased
# slice by slice by every process through the `client_lease` function (migration 0001_initial,
# app.repositories.allowance).
client_usage = Table(
    "client_usage",
    metadata,
    Column("client_id", Text, ForeignKey("api_clients.id", ondelete="CASCADE"), primary_key=True),
    Column("day", Date, nullable=False),
    Column("niks", BigInteger, nullable=False),
    Column("tokens", Float, nullable=False),
    Column("refilled_at", DateTime(timezone=True), nullable=False),
)

# One row per access to personal data. Append-only: a trigger refuses UPDATE, DELETE and
# TRUNCATE, and the service role holds only SELECT and INSERT (migration 0001_initial).
audit_log = Table(
    "audit_log",
    metadata,
    # Position in the hash chain, assigned by the writer under the audit_head row lock.
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("id", Text, nullable=False, unique=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("client_id", Text, nullable=False),
    Column("purpose", Text, nullable=False),
    Column("operation", Text, nullable=False),
    Column("snapshot_id", Text),
    Column("rule_set_id", Text),
    # HMAC-SHA256 (settings.audit_hmac_key) of each distinct subject asked, never a plain hash.
    Column("subject_hashes", ARRAY(LargeBinary), nullable=False),
    Column("subject_count", Integer, nullable=False),
    Column("found_count", Integer, nullable=False),
    Column("response_digest", LargeBinary, nullable=False),
    Column("request_id", Text, nullable=False),
    # Which subject key hashed subject_hashes (app.services.audit.hmac_key_id): keys rotate.
    Column("hmac_key_id", Text, nullable=False),
    Column("prev_hash", LargeBinary, nullable=False),
    Column("hash", LargeBinary, nullable=False),
    CheckConstraint("seq > 0", name="seq_positive"),
)

# Which records name a subject: the first 8 bytes of each subject hash (as a signed bigint) and
# the record's seq, filled after the fact by `tepat audit index` (app.services.audit.trails.
# index_subjects), never on the request path: an index entry per subject costs database CPU,
# and inside the request it made a 1,000-NIK lookup wait for a GIN update and its pending-list
# merges (measured: bench/RESULTS.md). A trail reads
# this index up to `audit_index.indexed_upto` and scans only the records after it, so it is
# complete however far indexing lags. Prefix matches are confirmed against the full hash.
audit_subjects = Table(
    "audit_subjects",
    metadata,
    Column("subject", BigInteger, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
)

# How far audit_subjects covers audit_log: every record with seq <= indexed_upto is indexed.
# Seqs commit in order (assigned under audit_head's row lock), so this never skips a record.
audit_index = Table(
    "audit_index",
    metadata,
    Column("id", SmallInteger, primary_key=True, autoincrement=False),
    Column("indexed_upto", BigInteger, nullable=False),
    CheckConstraint("id = 1", name="single_row"),
)

# The chain's tip: one row, locked FOR UPDATE by every batch, so writers in any number of
# processes append one after another.
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", SmallInteger, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", LargeBinary, nullable=False),
    CheckConstraint("id = 1", name="single_row"),
)

# The audit log's Merkle tree (RFC 9162; app.services.transparency): the hash of every complete
# subtree, node (level, idx) covering leaves [idx * 2^level, (idx + 1) * 2^level); leaf i is the
# record of seq i + 1. Appended by `tepat audit checkpoint`, never changed; the service reads it.
audit_tree = Table(
    "audit_tree",
    metadata,
    Column("level", SmallInteger, primary_key=True, autoincrement=False),
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", LargeBinary, nullable=False),
    CheckConstraint("level >= 0 AND level < 64 AND idx >= 0", name="node_in_range"),
)

# Every checkpoint `tepat audit checkpoint` signed (C2SP tlog-checkpoint notes), also written
# out where the database's administrators cannot write; GET /v1/audit/checkpoint serves the last.
audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("size", BigInteger, primary_key=True, autoincrement=False),
    Column("root", LargeBinary, nullable=False),
    Column("note", Text, nullable=False),
    Column("made_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("size > 0", name="size_positive"),
)

# OAuth2 client assertions already used (RFC 7523 3: a `jti` is accepted once), kept until they
# expire (app.services.oauth2).
oauth2_assertions = Table(
    "oauth2_assertions",
    metadata,
    Column("client_id", Text, ForeignKey("api_clients.id", ondelete="CASCADE"), primary_key=True),
    Column("jti", Text, primary_key=True),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)
