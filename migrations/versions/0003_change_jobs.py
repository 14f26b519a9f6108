"""Change lists as bulk jobs: a job `kind`, the change list asked, its keyset cursor and counts.

Revision ID: 0003_change_jobs
Revises: 0002_bulk_results_lz4
Create Date: 2026-12-04 22:00:00+00:00

A change list (`POST /v1/changes/jobs`) runs as a bulk job (`kind` 'changes'): the same row,
results, receipts, status, download and cancel. What it adds: the change list asked, pinned at
submission (`request`, JSON: both snapshots and both rule sets, the kinds, the region prefix);
the NIK of the last person in its committed chunks (`after_nik`), the keyset cursor a worker
resumes after, in NIK order; and the summary's counts through the committed chunks (`tally`,
JSON), committed with them. Its input is the JSON request (`input_format` 'json').

And every job's answers are stored as the worker compressed them (`results_coding` 'zstd',
level 1): a chunk's commit writes ~55 KB where it wrote ~765 KB for PostgreSQL to compress
with lz4 under the commit (bench/ P9). Jobs submitted before keep 'identity' (answers stored
as answered) and read as before.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_change_jobs"
down_revision: str | None = "0002_bulk_results_lz4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "bulk_jobs", sa.Column("kind", sa.Text(), server_default=sa.text("'bulk'"), nullable=False)
    )
    op.add_column("bulk_jobs", sa.Column("request", sa.Text(), nullable=True))
    op.add_column("bulk_jobs", sa.Column("after_nik", sa.BigInteger(), nullable=True))
    op.add_column("bulk_jobs", sa.Column("tally", sa.Text(), nullable=True))
    op.add_column(
        "bulk_jobs",
        sa.Column(
            "results_coding", sa.Text(), server_default=sa.text("'identity'"), nullable=False
        ),
    )
    op.create_check_constraint(
        op.f("ck_bulk_jobs_results_coding"), "bulk_jobs", "results_coding IN ('identity', 'zstd')"
    )
    op.create_check_constraint(
        op.f("ck_bulk_jobs_kind"), "bulk_jobs", "kind IN ('bulk', 'changes')"
    )
    op.drop_constraint(op.f("ck_bulk_jobs_input_format"), "bulk_jobs", type_="check")
    op.create_check_constraint(
        op.f("ck_bulk_jobs_input_format"), "bulk_jobs", "input_format IN ('ndjson', 'csv', 'json')"
    )


def downgrade() -> None:
    op.execute("DELETE FROM bulk_jobs WHERE kind <> 'bulk'")
    op.drop_constraint(op.f("ck_bulk_jobs_input_format"), "bulk_jobs", type_="check")
    op.create_check_constraint(
        op.f("ck_bulk_jobs_input_format"), "bulk_jobs", "input_format IN ('ndjson', 'csv')"
    )
    # Answers stored compressed would not read as answers under 0002: those jobs go too.
    op.execute("DELETE FROM bulk_jobs WHERE results_coding <> 'identity'")
    op.drop_constraint(op.f("ck_bulk_jobs_results_coding"), "bulk_jobs", type_="check")
    op.drop_constraint(op.f("ck_bulk_jobs_kind"), "bulk_jobs", type_="check")
    for column in ("results_coding", "tally", "after_nik", "request", "kind"):
        op.drop_column("bulk_jobs", column)
