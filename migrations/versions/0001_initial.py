"""The initial schema: snapshots, people and families, rule sets, stored decisions, API clients
and their allowance, the chained audit log, the catalog notifications and the service role.

Revision ID: 0001_initial
Revises:
Create Date: 2026-12-04 00:00:00+00:00

Until the first production release this is the only migration: a schema change edits it (and
every database is recreated); from that release on, migrations are only ever added, never
edited (docs/migrations.md). Databases made by the pre-release chain (revisions 0001 to 0009)
are refused by app.migrate with a message saying so.

What it builds, besides the tables of app.models:

* The NOLOGIN role `tepat_service` the app's connections switch to (SET ROLE): it reads the
  data tables, appends to the audit log and can never change or remove an audit record. Roles
  are cluster-wide, so creation is idempotent and the downgrade drops the role only when no
  other database still grants it anything.
* `audit_log` is append-only twice over: the role lacks UPDATE, DELETE and TRUNCATE, and a
  trigger refuses them even to the table owner's own tools. The chain starts at `audit_head`
  (seq 0, 32 zero bytes). Which records name a subject is kept in `audit_subjects`, filled in
  bulk by `tepat audit index` (operator work, never on the request path) up to
  `audit_index.indexed_upto`. The log's Merkle tree (`audit_tree`, RFC 9162) and its signed
  checkpoints (`audit_checkpoints`) are the operator's to extend; the service only reads them.
* `people`, `families` and `decisions` are LIST-partitioned by snapshot; the importer and the
  materializer create the partitions. Stored decisions carry the person's own answer fields and
  two packed codes (STORED generated columns) so a plain lookup is one index probe on the NIK.
* NOTIFY `tepat_catalog` at commit on any change of snapshots, rule sets or materialisations,
  so API processes can cache the catalog and drop their caches at once.
* `client_usage` and `client_lease(...)`: per client, the day's NIK count (the day in WIB) and
  the rate limiter's token bucket, leased by every process in one atomic statement
  (docs/quotas.md). The service role may update client_usage and only the suspension columns
  of api_clients.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001_initial"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLE = "tepat_service"

CREATE_ROLE = f"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') THEN
        BEGIN
            CREATE ROLE {ROLE} NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- another database's migration created it at the same moment
        END;
    END IF;
    -- A non-superuser migrator must be a member to SET ROLE to it (a superuser always can).
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
       AND NOT pg_has_role(current_user, '{ROLE}', 'MEMBER') THEN
        EXECUTE format('GRANT {ROLE} TO %I', current_user);
    END IF;
END
$$
"""

# Everything the service role holds, and what it must never hold.
GRANTS = (
    f"GRANT USAGE ON SCHEMA public TO {ROLE}",
    # Reads through the partitioned parents need only the parents' privilege.
    f"GRANT SELECT ON snapshots, rule_sets, families, people, decisions, materializations TO {ROLE}",
    # Partitions the importer and the materializer create later (people_12 ...) stay readable
    # directly too.
    f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {ROLE}",
    f"GRANT SELECT ON api_clients TO {ROLE}",
    f"GRANT UPDATE (suspended_at, suspended_reason) ON api_clients TO {ROLE}",
    f"GRANT SELECT, INSERT, UPDATE ON client_usage TO {ROLE}",
    f"GRANT SELECT, INSERT ON audit_log TO {ROLE}",
    f"GRANT SELECT, UPDATE ON audit_head TO {ROLE}",
    # Indexing the trail is the operator's work: the service only reads these.
    f"GRANT SELECT ON audit_subjects, audit_index TO {ROLE}",
    # The Merkle tree and its checkpoints are the operator's (`tepat audit checkpoint`): the
    # service reads them to answer proofs and the latest checkpoint.
    f"GRANT SELECT ON audit_tree, audit_checkpoints TO {ROLE}",
    f"REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM {ROLE}",
    f"REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON audit_subjects, audit_index FROM {ROLE}",
    f"REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON audit_tree, audit_checkpoints FROM {ROLE}",
)

DROP_ROLE = f"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') THEN
        RETURN;
    END IF;
    EXECUTE 'ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON TABLES FROM {ROLE}';
    EXECUTE 'REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {ROLE}';
    EXECUTE 'REVOKE ALL ON SCHEMA public FROM {ROLE}';
    BEGIN
        DROP ROLE {ROLE};
    EXCEPTION WHEN dependent_objects_still_exist OR object_in_use THEN
        RAISE NOTICE '{ROLE} is still used by another database; kept';
    END;
END
$$
"""

# On top of the role's missing privileges: even the table owner's own tools fail loudly instead
# of editing the legal record by accident. A superuser can still `ALTER TABLE audit_log DISABLE
# TRIGGER ...`; the hash chain (and an external checkpoint of its head) is what detects that.
APPEND_ONLY_FUNCTION = """
CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$
"""

CATALOG_NOTIFY_FUNCTION = """
        CREATE FUNCTION tepat_catalog_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            -- Delivered at commit: listeners never see a change before it is visible.
            PERFORM pg_notify('tepat_catalog', TG_TABLE_NAME);
            RETURN NULL;
        END $$
        """
CATALOG_TABLES = ("snapshots", "rule_sets", "materializations")

# Frozen copies of app.models.tables.code_sql(PERSON_CODE / DECISION_CODE): each field is
# value + 1 (0 for NULL, booleans 1/2) in a fixed number of bits, the first lowest
# (app.repositories.decisions decodes them; tests/test_migrations.py checks they agree).
PERSON_CODE = (
    "(COALESCE(marital_status::integer + 1, 0) << 0) "
    "| (COALESCE(school_status::integer + 1, 0) << 4) "
    "| (COALESCE(school_level::integer + 1, 0) << 8) "
    "| (COALESCE(disability::integer + 1, 0) << 12) "
    "| (COALESCE(pregnant::integer + 1, 0) << 16) "
    "| (COALESCE(chronic_illness::integer + 1, 0) << 18) "
    "| (COALESCE(working::integer + 1, 0) << 20)"
)
DECISION_CODE = (
    "(COALESCE(sr_level::integer::bigint + 1, 0) << 0) "
    "| (COALESCE(sr_priority::integer::bigint + 1, 0) << 4) "
    "| (COALESCE(pkh_eligible::integer::bigint + 1, 0) << 8) "
    "| (COALESCE(bpnt_eligible::integer::bigint + 1, 0) << 10) "
    "| (COALESCE(pbi_eligible::integer::bigint + 1, 0) << 12) "
    "| (COALESCE(sr_eligible::integer::bigint + 1, 0) << 14) "
    "| (COALESCE(pkh_recipient::integer::bigint + 1, 0) << 16) "
    "| (COALESCE(bpnt_recipient::integer::bigint + 1, 0) << 18) "
    "| (COALESCE(pbi_recipient::integer::bigint + 1, 0) << 20) "
    "| (COALESCE(pkh_yearly::integer::bigint + 1, 0) << 22)"
)

# One lease, atomically (the row is locked for the statement): settle what the caller gives
# back (`p_returned` permits it did not spend, negative for a debt it ran up after the fact),
# refill the bucket, then grant between p_need and p_want permits if both the bucket and the
# day's quota have them, else none. Returns what was granted and, when nothing was, why and how
# long to wait. The day is the database's, in WIB (Asia/Jakarta, UTC+7): every process agrees.
LEASE_FUNCTION = """
CREATE OR REPLACE FUNCTION client_lease(
    p_client text, p_rate double precision, p_burst double precision, p_quota bigint,
    p_need bigint, p_want bigint, p_returned double precision, p_returned_day date
) RETURNS TABLE (
    granted bigint, wait double precision, today date, used bigint, over_quota boolean,
    suspended boolean
)
LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := now();
    v_today date := (now() AT TIME ZONE 'Asia/Jakarta')::date;
    v_row client_usage%ROWTYPE;
    v_tokens double precision;
    v_used bigint;
    v_grant bigint := 0;
    v_floor double precision;
BEGIN
    INSERT INTO client_usage (client_id, day, niks, tokens, refilled_at)
    VALUES (p_client, v_today, 0, p_burst, v_now)
    ON CONFLICT (client_id) DO NOTHING;
    SELECT * INTO v_row FROM client_usage WHERE client_id = p_client FOR UPDATE;

    suspended := EXISTS (
        SELECT FROM api_clients WHERE id = p_client AND suspended_at IS NOT NULL
    );
    -- The bucket: refilled for the time since it was last touched, then what comes back.
    IF p_rate > 0 THEN
        v_tokens := least(
            p_burst,
            v_row.tokens + extract(epoch FROM v_now - v_row.refilled_at) * p_rate
        );
        v_tokens := least(p_burst, v_tokens + p_returned);
    ELSE
        v_tokens := 'Infinity';
    END IF;
    -- The day's count: a new day starts at zero; what comes back is uncounted only on its day.
    IF v_row.day = v_today THEN
        v_used := v_row.niks;
        IF p_returned_day = v_today THEN
            v_used := greatest(0, v_used - p_returned::bigint);
        END IF;
    ELSE
        v_used := 0;
    END IF;

    over_quota := p_quota > 0 AND v_used + p_need > p_quota;
    wait := 0;
    IF NOT suspended AND NOT over_quota THEN
        -- A request larger than the whole bucket passes when the bucket is full (and leaves a
        -- debt), as a single request always could.
        v_floor := least(p_need::double precision, p_burst);
        IF p_rate <= 0 OR v_tokens >= v_floor THEN
            v_grant := p_want;
            IF p_rate > 0 THEN
                v_grant := least(v_grant, greatest(p_need, floor(v_tokens)::bigint));
            END IF;
            IF p_quota > 0 THEN
                v_grant := least(v_grant, p_quota - v_used);
            END IF;
            v_grant := greatest(v_grant, p_need);
        ELSE
            wait := (v_floor - v_tokens) / p_rate;
        END IF;
    END IF;

    IF p_rate > 0 THEN
        v_tokens := v_tokens - v_grant;
    ELSE
        v_tokens := p_burst;
    END IF;
    v_used := v_used + v_grant;
    UPDATE client_usage
       SET day = v_today, niks = v_used, tokens = v_tokens, refilled_at = v_now
     WHERE client_id = p_client;
    granted := v_grant;
    today := v_today;
    used := v_used;
    RETURN NEXT;
END
$$
"""

LEASE_SIGNATURE = (
    "client_lease(text, double precision, double precision, bigint, bigint, bigint,"
    " double precision, date)"
)


def _catalog() -> None:
    op.create_table(
        "snapshots",
        sa.Column("key", sa.SmallInteger(), autoincrement=True, nullable=False),
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("cutoff_date", sa.Date(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("family_count", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("people_count", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("checksum", sa.Text(), nullable=True),
        sa.Column("manifest", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("import_report", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "(status = 'loading') = (checksum IS NULL)",
            name=op.f("ck_snapshots_checksum_when_loaded"),
        ),
        sa.CheckConstraint(
            "status IN ('loading', 'published', 'retired')", name=op.f("ck_snapshots_status")
        ),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_snapshots")),
        sa.UniqueConstraint("id", name=op.f("uq_snapshots_id")),
    )
    op.create_table(
        "rule_sets",
        sa.Column("key", sa.SmallInteger(), autoincrement=True, nullable=False),
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("effective_from", sa.Date(), nullable=False),
        sa.Column("checksum", sa.Text(), nullable=False),
        sa.Column("parameters", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "loaded_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_rule_sets")),
        sa.UniqueConstraint("id", name=op.f("uq_rule_sets_id")),
    )


def _snapshot_data() -> None:
    op.create_table(
        "families",
        sa.Column("snapshot_key", sa.SmallInteger(), nullable=False),
        sa.Column("no_kk", sa.BigInteger(), nullable=False),
        sa.Column("region_code", sa.BigInteger(), nullable=False),
        sa.Column("source_line", sa.Integer(), nullable=False),
        sa.Column("floor_area_m2", sa.Integer(), nullable=True),
        sa.Column("power_va", sa.Integer(), nullable=True),
        sa.Column("decile", sa.SmallInteger(), nullable=True),
        sa.Column("home_ownership", sa.SmallInteger(), nullable=True),
        sa.Column("drinking_water", sa.SmallInteger(), nullable=True),
        sa.Column("toilet", sa.SmallInteger(), nullable=True),
        sa.Column("lighting", sa.SmallInteger(), nullable=True),
        sa.Column("asn_tni_polri", sa.Boolean(), nullable=False),
        sa.Column("pkh_recipient", sa.Boolean(), nullable=True),
        sa.Column("bpnt_recipient", sa.Boolean(), nullable=True),
        postgresql_partition_by="LIST (snapshot_key)",
    )
    op.create_table(
        "people",
        sa.Column("snapshot_key", sa.SmallInteger(), nullable=False),
        sa.Column("nik", sa.BigInteger(), nullable=False),
        sa.Column("no_kk", sa.BigInteger(), nullable=False),
        sa.Column("birth_date", sa.Date(), nullable=False),
        sa.Column("source_line", sa.Integer(), nullable=False),
        sa.Column("relationship", sa.SmallInteger(), nullable=False),
        sa.Column("sex", sa.SmallInteger(), nullable=False),
        sa.Column("marital_status", sa.SmallInteger(), nullable=True),
        sa.Column("school_status", sa.SmallInteger(), nullable=True),
        sa.Column("school_level", sa.SmallInteger(), nullable=True),
        sa.Column("disability", sa.SmallInteger(), nullable=True),
        sa.Column("pregnant", sa.Boolean(), nullable=True),
        sa.Column("chronic_illness", sa.Boolean(), nullable=True),
        sa.Column("working", sa.Boolean(), nullable=True),
        sa.Column("pbi_recipient", sa.Boolean(), nullable=True),
        sa.Column("name", sa.Text(), nullable=False),
        postgresql_partition_by="LIST (snapshot_key)",
    )


def _decisions() -> None:
    # Widest columns first (no alignment padding), then the person's own answer fields, then
    # the two packed codes (STORED spelled out: PostgreSQL 18 would otherwise make them
    # virtual, computed at every read).
    op.create_table(
        "decisions",
        sa.Column("nik", sa.BigInteger(), nullable=False),
        sa.Column("no_kk", sa.BigInteger(), nullable=False),
        sa.Column("region_code", sa.BigInteger(), nullable=False),
        sa.Column("pkh_yearly", sa.Integer(), nullable=False),
        sa.Column("snapshot_key", sa.SmallInteger(), nullable=False),
        sa.Column("rule_set_key", sa.SmallInteger(), nullable=False),
        sa.Column("relationship", sa.SmallInteger(), nullable=False),
        sa.Column("decile", sa.SmallInteger(), nullable=True),
        sa.Column("sr_level", sa.SmallInteger(), nullable=True),
        sa.Column("sr_priority", sa.SmallInteger(), nullable=True),
        sa.Column("head", sa.Boolean(), nullable=False),
        sa.Column("pkh_eligible", sa.Boolean(), nullable=False),
        sa.Column("bpnt_eligible", sa.Boolean(), nullable=False),
        sa.Column("pbi_eligible", sa.Boolean(), nullable=False),
        sa.Column("sr_eligible", sa.Boolean(), nullable=False),
        sa.Column("pkh_recipient", sa.Boolean(), nullable=True),
        sa.Column("bpnt_recipient", sa.Boolean(), nullable=True),
        sa.Column("pbi_recipient", sa.Boolean(), nullable=True),
        sa.Column("sex", sa.SmallInteger(), nullable=False),
        sa.Column("marital_status", sa.SmallInteger(), nullable=True),
        sa.Column("school_status", sa.SmallInteger(), nullable=True),
        sa.Column("school_level", sa.SmallInteger(), nullable=True),
        sa.Column("disability", sa.SmallInteger(), nullable=True),
        sa.Column("pregnant", sa.Boolean(), nullable=True),
        sa.Column("chronic_illness", sa.Boolean(), nullable=True),
        sa.Column("working", sa.Boolean(), nullable=True),
        sa.Column("birth_date", sa.Date(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("person_code", sa.Integer(), sa.Computed(PERSON_CODE, persisted=True)),
        sa.Column("decision_code", sa.BigInteger(), sa.Computed(DECISION_CODE, persisted=True)),
        postgresql_partition_by="LIST (snapshot_key)",
    )
    # On the NIK alone: a snapshot's other materialised rule sets, if any, are filtered on the
    # row the lookup reads anyway. Each partition gets its own copy.
    op.create_index("ix_decisions_nik", "decisions", ["nik"])
    op.create_table(
        "materializations",
        sa.Column("snapshot_key", sa.SmallInteger(), nullable=False),
        sa.Column("rule_set_key", sa.SmallInteger(), nullable=False),
        sa.Column("people", sa.BigInteger(), nullable=False),
        sa.Column("families", sa.BigInteger(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["rule_set_key"],
            ["rule_sets.key"],
            name=op.f("fk_materializations_rule_set_key_rule_sets"),
        ),
        sa.ForeignKeyConstraint(
            ["snapshot_key"],
            ["snapshots.key"],
            name=op.f("fk_materializations_snapshot_key_snapshots"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("snapshot_key", "rule_set_key", name=op.f("pk_materializations")),
    )


def _clients() -> None:
    op.create_table(
        "api_clients",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("programs", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("field_groups", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("purposes", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("key_hash", sa.LargeBinary(), nullable=False),
        sa.Column("key_prefix", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        # May call /v1/bulk/eligibility; NIKs a day (NULL: the default for its kind); suspended
        # (every request refused until `tepat client reinstate`) since when and why.
        sa.Column("bulk", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("daily_quota", sa.BigInteger(), nullable=True),
        sa.Column("suspended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("suspended_reason", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "octet_length(key_hash) = 32", name=op.f("ck_api_clients_key_hash_sha256")
        ),
        sa.CheckConstraint(
            "programs <@ ARRAY['PKH', 'BPNT', 'PBI_JK', 'SEKOLAH_RAKYAT']::text[]",
            name=op.f("ck_api_clients_programs"),
        ),
        sa.CheckConstraint(
            "field_groups <@ ARRAY['decision', 'decile', 'membership', 'identity', 'attributes',"
            " 'health']::text[]",
            name=op.f("ck_api_clients_field_groups"),
        ),
        sa.CheckConstraint(
            "daily_quota IS NULL OR daily_quota >= 0",
            name=op.f("ck_api_clients_daily_quota_positive"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_clients")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_clients_key_hash")),
    )
    op.create_table(
        "client_usage",
        sa.Column("client_id", sa.Text(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("niks", sa.BigInteger(), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("refilled_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["api_clients.id"],
            name=op.f("fk_client_usage_client_id_api_clients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("client_id", name=op.f("pk_client_usage")),
    )
    op.execute(LEASE_FUNCTION)


def _audit() -> None:
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("client_id", sa.Text(), nullable=False),
        sa.Column("purpose", sa.Text(), nullable=False),
        sa.Column("operation", sa.Text(), nullable=False),
        sa.Column("snapshot_id", sa.Text(), nullable=True),
        sa.Column("rule_set_id", sa.Text(), nullable=True),
        sa.Column("subject_hashes", postgresql.ARRAY(sa.LargeBinary()), nullable=False),
        sa.Column("subject_count", sa.Integer(), nullable=False),
        sa.Column("found_count", sa.Integer(), nullable=False),
        sa.Column("response_digest", sa.LargeBinary(), nullable=False),
        sa.Column("request_id", sa.Text(), nullable=False),
        sa.Column("hmac_key_id", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.LargeBinary(), nullable=False),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
        sa.CheckConstraint("seq > 0", name=op.f("ck_audit_log_seq_positive")),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_log")),
        sa.UniqueConstraint("id", name=op.f("uq_audit_log_id")),
    )
    op.create_table(
        "audit_head",
        sa.Column("id", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_audit_head_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_head")),
    )
    # Genesis: the first record's prev_hash is 32 zero bytes.
    op.execute(
        "INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'))"
    )
    op.create_table(
        "audit_subjects",
        sa.Column("subject", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.PrimaryKeyConstraint("subject", "seq", name=op.f("pk_audit_subjects")),
    )
    op.create_table(
        "audit_index",
        sa.Column("id", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("indexed_upto", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_audit_index_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_index")),
    )
    op.execute("INSERT INTO audit_index (id, indexed_upto) VALUES (1, 0)")
    op.create_table(
        "audit_tree",
        sa.Column("level", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
        sa.CheckConstraint(
            "level >= 0 AND level < 64 AND idx >= 0", name=op.f("ck_audit_tree_node_in_range")
        ),
        sa.PrimaryKeyConstraint("level", "idx", name=op.f("pk_audit_tree")),
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column("size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("root", sa.LargeBinary(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column(
            "made_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint("size > 0", name=op.f("ck_audit_checkpoints_size_positive")),
        sa.PrimaryKeyConstraint("size", name=op.f("pk_audit_checkpoints")),
    )
    op.execute(APPEND_ONLY_FUNCTION)
    op.execute(
        "CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON audit_log "
        "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()"
    )
    op.execute(
        "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()"
    )


def _catalog_notify() -> None:
    op.execute(CATALOG_NOTIFY_FUNCTION)
    for table in CATALOG_TABLES:
        op.execute(
            f"CREATE TRIGGER {table}_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE "
            f"ON {table} FOR EACH STATEMENT EXECUTE FUNCTION tepat_catalog_notify()"
        )


def upgrade() -> None:
    _catalog()
    _snapshot_data()
    _decisions()
    _clients()
    _audit()
    _catalog_notify()
    op.execute(CREATE_ROLE)
    for grant in GRANTS:
        op.execute(grant)


def downgrade() -> None:
    # Triggers go with their tables, sequences with their columns, partitions with their parents.
    for table in (
        "audit_checkpoints",
        "audit_tree",
        "audit_index",
        "audit_subjects",
        "audit_head",
        "audit_log",
        "client_usage",
        "api_clients",
        "materializations",
        "decisions",
        "people",
        "families",
        "rule_sets",
        "snapshots",
    ):
        op.drop_table(table)
    op.execute(f"DROP FUNCTION IF EXISTS {LEASE_SIGNATURE}")
    op.execute("DROP FUNCTION IF EXISTS audit_log_append_only()")
    op.execute("DROP FUNCTION IF EXISTS tepat_catalog_notify()")
    op.execute(DROP_ROLE)
