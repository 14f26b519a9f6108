"""The audit tables: down and up again, repeatedly, in one database; the schema matches the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from app import migrate
from app.models import metadata

MINE = {"api_clients", "audit_log", "audit_head", "audit_subjects", "audit_index"}


async def _tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as c:
        rows = await c.exec_driver_sql("SELECT tablename FROM pg_tables WHERE schemaname='public'")
        return {r[0] for r in rows}


async def test_downgrade_and_upgrade_repeatedly(scratch: AsyncEngine, engine: AsyncEngine) -> None:
    # `engine` (the session database) is migrated too, so tepat_service has grants elsewhere:
    # the downgrade here must keep the cluster-wide role, and the upgrade must accept it.
    for _ in range(2):
        await migrate.run(scratch, "upgrade", "head")
        assert await _tables(scratch) >= MINE
        await migrate.run(scratch, "downgrade", "base")
        assert not MINE & await _tables(scratch)
        async with scratch.connect() as c:
            fn = await c.exec_driver_sql(
                "SELECT count(*) FROM pg_proc WHERE proname = 'audit_log_append_only'"
            )
            assert fn.scalar() == 0
            grants = await c.exec_driver_sql(
                "SELECT count(*) FROM information_schema.role_table_grants"
                " WHERE grantee = 'tepat_service'"
            )
            assert grants.scalar() == 0
            kept = await c.exec_driver_sql(
                "SELECT count(*) FROM pg_roles WHERE rolname = 'tepat_service'"
            )
            assert kept.scalar() == 1
    await migrate.run(scratch, "upgrade", "head")
    async with scratch.connect() as c:
        head = await c.exec_driver_sql("SELECT seq, hash FROM audit_head")
        assert head.one() == (0, bytes(32))


async def test_models_match_the_migration(engine: AsyncEngine) -> None:
    def diff(conn: Connection) -> list[object]:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return [d for d in compare_metadata(ctx, metadata) if any(name in repr(d) for name in MINE)]

    async with engine.connect() as c:
        assert await c.run_sync(diff) == []
