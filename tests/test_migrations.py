"""The whole migration chain: base -> head -> base -> head, and the models match the schema."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from app import db, migrate
from app.config import Settings
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


@pytest.fixture
async def scratch(settings: Settings, database_url: str) -> AsyncIterator[AsyncEngine]:
    name = f"tepat_chain_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(db.asyncpg_dsn(database_url))
    await admin.execute(f'CREATE DATABASE "{name}"')
    engine = db.create_engine(
        settings, url=db.sqlalchemy_url(database_url).set(database=name).render_as_string(False)
    )
    try:
        yield engine
    finally:
        await engine.dispose()
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


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
