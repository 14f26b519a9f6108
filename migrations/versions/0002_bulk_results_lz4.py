"""Bulk job answers compressed with lz4 in TOAST.

Revision ID: 0002_bulk_results_lz4
Revises: 0001_initial
Create Date: 2026-12-04 20:15:00+00:00

A job writes every answer byte twice (WAL and the TOAST heap) in its chunks' transactions, and
that is what its worker waits on (bench/ P9). The answers are JSON lines that repeat the same
keys: lz4 (PostgreSQL's `COMPRESSION lz4`, fast enough to cost less than it saves, where pglz
cost more) writes a fraction of the bytes. The storage becomes EXTENDED (compressed, then out
of line) for the rows written from now on; rows already stored stay as they are and read the
same. A server built without lz4 keeps the answers uncompressed, as before.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002_bulk_results_lz4"
down_revision: str | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE = """
DO $$
BEGIN
    ALTER TABLE bulk_job_results
        ALTER COLUMN data SET STORAGE EXTENDED,
        ALTER COLUMN data SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'this PostgreSQL has no lz4: bulk job answers stay uncompressed';
END
$$
"""

DOWNGRADE = (
    "ALTER TABLE bulk_job_results ALTER COLUMN data SET STORAGE EXTERNAL, "
    "ALTER COLUMN data SET COMPRESSION DEFAULT"
)


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
