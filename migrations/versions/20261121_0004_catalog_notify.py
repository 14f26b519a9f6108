"""Catalog change notifications: NOTIFY tepat_catalog on any change of snapshots, rule sets or
stored decisions, so API processes can cache them and drop their caches at once.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21 07:00:00+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("snapshots", "rule_sets", "materializations")


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION tepat_catalog_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            -- Delivered at commit: listeners never see a change before it is visible.
            PERFORM pg_notify('tepat_catalog', TG_TABLE_NAME);
            RETURN NULL;
        END $$
        """
    )
    for table in TABLES:
        op.execute(
            f"CREATE TRIGGER {table}_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE "
            f"ON {table} FOR EACH STATEMENT EXECUTE FUNCTION tepat_catalog_notify()"
        )


def downgrade() -> None:
    for table in TABLES:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_notify ON {table}")
    op.execute("DROP FUNCTION IF EXISTS tepat_catalog_notify()")
