"""The audit trail's subject index leaves the request path.

The GIN index over `audit_log.subject_hashes` was updated inside every audit transaction: one
entry per NIK asked, ~2.5 us of database CPU each, and a pending-list merge now and then that
stalled every request waiting on that commit (P3 at 1 M people: 77 vs 112 lookups/s without it;
p99 360 ms). The record itself stays exactly as durable and chained as before. Which records
name a subject is now kept in `audit_subjects`, filled in bulk by `tepat audit index` (the
operator's role; cron it), and a trail scans only the records after `audit_index.indexed_upto`.
Records already written are indexed here, so trails stay fast across the upgrade.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-21 10:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLE = "tepat_service"


def upgrade() -> None:
    op.drop_index("ix_audit_log_subject_hashes", table_name="audit_log", postgresql_using="gin")
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
    # The service only reads them (default privileges gave SELECT); indexing is operator work.
    op.execute(
        f"REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON audit_subjects, audit_index FROM {ROLE}"
    )
    # What is already recorded, in one pass (the same statement `tepat audit index` runs).
    op.execute(
        "INSERT INTO audit_subjects (subject, seq) "
        "SELECT DISTINCT ('x' || encode(substr(h, 1, 8), 'hex'))::bit(64)::bigint, a.seq "
        "FROM audit_log a, unnest(a.subject_hashes) h"
    )
    op.execute(
        "UPDATE audit_index SET indexed_upto = (SELECT coalesce(max(seq), 0) FROM audit_log)"
    )


def downgrade() -> None:
    op.drop_table("audit_index")
    op.drop_table("audit_subjects")
    op.create_index(
        "ix_audit_log_subject_hashes",
        "audit_log",
        ["subject_hashes"],
        unique=False,
        postgresql_using="gin",
    )
