"""api clients, chained audit log, service role

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 07:00:00+00:00

Also creates the NOLOGIN role `tepat_service` the app's connections switch to (SET ROLE): it
reads the data tables, appends to the audit log and can never change or remove an audit record.
Roles are cluster-wide, so creation is idempotent and the downgrade drops the role only when no
other database still grants it anything.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLE = "tepat_service"

# A trigger, on top of the role's missing privileges: even the table owner's own tools fail
# loudly instead of editing the legal record by accident. A superuser can still
# `ALTER TABLE audit_log DISABLE TRIGGER ...`; the hash chain (and an external checkpoint of its
# head) is what detects that.
APPEND_ONLY_FUNCTION = """
CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$
"""

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

GRANTS = (
    f"GRANT USAGE ON SCHEMA public TO {ROLE}",
    # Reads through the partitioned parents need only the parents' privilege.
    f"GRANT SELECT ON snapshots, rule_sets, families, people TO {ROLE}",
    # Partitions the importer creates later (people_12 ...) stay readable directly too.
    f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {ROLE}",
    f"GRANT SELECT ON api_clients TO {ROLE}",
    f"GRANT SELECT, INSERT ON audit_log TO {ROLE}",
    f"GRANT SELECT, UPDATE ON audit_head TO {ROLE}",
    # Default privileges above already gave SELECT; say explicitly what must never be held.
    f"REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM {ROLE}",
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


def upgrade() -> None:
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
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_clients")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_clients_key_hash")),
    )
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
        sa.Column("prev_hash", sa.LargeBinary(), nullable=False),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
        sa.CheckConstraint("seq > 0", name=op.f("ck_audit_log_seq_positive")),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_log")),
        sa.UniqueConstraint("id", name=op.f("uq_audit_log_id")),
    )
    op.create_index(
        "ix_audit_log_subject_hashes",
        "audit_log",
        ["subject_hashes"],
        unique=False,
        postgresql_using="gin",
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

    op.execute(APPEND_ONLY_FUNCTION)
    op.execute(
        "CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON audit_log "
        "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()"
    )
    op.execute(
        "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()"
    )

    op.execute(CREATE_ROLE)
    for grant in GRANTS:
        op.execute(grant)


def downgrade() -> None:
    op.drop_table("audit_head")
    op.drop_index("ix_audit_log_subject_hashes", table_name="audit_log", postgresql_using="gin")
    op.drop_table("audit_log")  # its triggers go with it
    op.execute("DROP FUNCTION IF EXISTS audit_log_append_only()")
    op.drop_table("api_clients")
    op.execute(DROP_ROLE)
