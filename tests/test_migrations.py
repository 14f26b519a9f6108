"""The whole migration chain: base -> head -> base -> head, and the models match the schema."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from app import migrate
from app.models import metadata

TABLES = {
    "snapshots",
    "rule_sets",
    "people",
    "families",
    "decisions",
    "materializations",
    "api_clients",
    "audit_log",
    "audit_head",
}


async def _tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as c:
        rows = await c.exec_driver_sql("SELECT tablename FROM pg_tables WHERE schemaname='public'")
        parents = await c.exec_driver_sql(
            "SELECT relname FROM pg_class WHERE relkind = 'p' AND relnamespace = 'public'::regnamespace"
        )
        return {r[0] for r in rows} | {r[0] for r in parents}


async def test_upgrade_downgrade_upgrade(scratch: AsyncEngine) -> None:
    await migrate.run(scratch, "upgrade", "head")
    assert await _tables(scratch) >= TABLES
    assert await migrate.current(scratch) is not None
    await migrate.run(scratch, "downgrade", "base")
    assert not TABLES & await _tables(scratch)
    await migrate.run(scratch, "upgrade", "head")
    assert await _tables(scratch) >= TABLES


async def test_models_match_the_migrations(engine: AsyncEngine) -> None:
    def diff(conn: Connection) -> list[object]:
        ctx = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                # Per-snapshot partitions are the importer's, not the models'.
                "include_object": lambda obj, name, type_, reflected, compare_to: (
                    not (
                        type_ == "table"
                        and reflected
                        and compare_to is None
                        and name is not None
                        and name.rsplit("_", 1)[-1].isdigit()
                    )
                ),
            },
        )
        return list(compare_metadata(ctx, metadata))

    async with engine.connect() as c:
        assert await c.run_sync(diff) == []
