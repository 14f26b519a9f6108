"""Alembic, driven from code: `tepat db upgrade`, the demo and the tests use the same path."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from app.errors import TepatError

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"

# The revision ids of the migration chain that 0001_initial replaced before the first release
# (docs/migrations.md). No migration leads from them: such a database is recreated.
PRE_RELEASE_REVISIONS = frozenset(f"{n:04d}" for n in range(1, 10))


class PreReleaseSchema(TepatError):
    code = "pre_release_schema"
    title = "The database was created by the pre-release migration chain"
    status = 503


def refuse_pre_release(revisions: tuple[str, ...]) -> None:
    """Raise PreReleaseSchema when the database is stamped with a pre-release revision."""
    old = sorted(set(revisions) & PRE_RELEASE_REVISIONS)
    if old:
        raise PreReleaseSchema(
            f"the database was created by the pre-release migration chain (it is at revision "
            f"{old[-1]}), which the single migration 0001_initial replaced; no migration leads "
            "from it: recreate the database (drop it and create it empty), then run "
            "`tepat db upgrade`"
        )


def alembic_config(url: str | None = None, connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("file_template", "%%(rev)s")
    if url:
        cfg.attributes["url"] = url
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


async def run(engine: AsyncEngine, direction: str = "upgrade", revision: str = "head") -> None:
    def _go(conn: Connection) -> None:
        from alembic.runtime.migration import MigrationContext

        refuse_pre_release(MigrationContext.configure(conn).get_current_heads())
        cfg = alembic_config(connection=conn)
        if direction == "upgrade":
            command.upgrade(cfg, revision)
        else:
            command.downgrade(cfg, revision)

    # Schema changes may rewrite or backfill whole tables: the per-statement limits of the
    # service's engine (server statement_timeout, client command_timeout) are for requests, so
    # migrations run on a connection of their own without them.
    own = create_async_engine(engine.url, poolclass=NullPool, connect_args={"timeout": 30})
    try:
        async with own.begin() as conn:
            await conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
            await conn.run_sync(_go)
    finally:
        await own.dispose()


async def current(engine: AsyncEngine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    def _get(conn: Connection) -> str | None:
        return MigrationContext.configure(conn).get_current_revision()

    async with engine.connect() as conn:
        return await conn.run_sync(_get)
