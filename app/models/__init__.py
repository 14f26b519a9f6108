"""SQLAlchemy tables (Core): the schema Alembic migrates and the repositories query."""

from app.models.tables import (
    SNAPSHOT_STATUSES,
    families,
    metadata,
    people,
    rule_sets,
    snapshots,
)

__all__ = ["SNAPSHOT_STATUSES", "families", "metadata", "people", "rule_sets", "snapshots"]
