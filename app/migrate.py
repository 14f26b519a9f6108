"""Alembic, driven from code: `tepat db upgrade`, the demo and the tests use the same path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from app.errors import TepatError
from app.models import metadata

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


class SchemaDrift(TepatError):
    code = "schema_drift"
    title = "The database's schema differs from the one its migrations build"
    status = 503


def _ours(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    """Compare what the migrations build: the per-snapshot partitions (`people_3`,
    `decisions_3_1`) are made at run time by the importer and the materializer."""
    return not (
        type_ == "table"
        and reflected
        and compare_to is None
        and name is not None
        and name.rsplit("_", 1)[-1].isdigit()
    )


def _describe(change: Any) -> str:
    if isinstance(change, list):  # modify_* of one column: [(kind, schema, table, column, ...)]
        kind, _, table, column = change[0][:4]
        return f"{table}.{column} differs ({kind.removeprefix('modify_')})"
    kind, *rest = change
    what = {"add": "missing", "remove": "unexpected"}.get(kind.split("_", 1)[0], kind)
    thing = kind.split("_", 1)[-1]
    if thing == "column":
        return f"{what} column {rest[1]}.{rest[2].name}"
    target = rest[0]
    return f"{what} {thing} {getattr(target, 'name', target)}"


def drift(conn: Connection) -> list[str]:
    """How the connected database's schema differs from app.models (empty when it matches)."""
    from alembic.autogenerate import compare_metadata  # imported when used: it logs its setup

    ctx = MigrationContext.configure(conn, opts={"compare_type": True, "include_object": _ours})
    return [_describe(change) for change in compare_metadata(ctx, metadata)]


def refuse_drift(conn: Connection) -> None:
    """Raise SchemaDrift when a database at the newest revision lacks what that revision builds:
    before the first release 0001_initial is edited in place (docs/migrations.md), so a
    database made by an earlier edit says it is current while tables or columns are missing."""
    found = drift(conn)
    if found:
        listed = "; ".join(found[:5]) + ("; ..." if len(found) > 5 else "")
        raise SchemaDrift(
            f"the database is at the newest revision but its schema differs from the one the "
            f"migrations build ({len(found)} difference(s): {listed}); it was made by an "
            "earlier pre-release edit of 0001_initial: recreate the database (drop it and "
            "create it empty), then run `tepat db upgrade`"
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
        refuse_pre_release(MigrationContext.configure(conn).get_current_heads())
        cfg = alembic_config(connection=conn)
        if direction == "upgrade":
            command.upgrade(cfg, revision)
            if revision == "head":
                refuse_drift(conn)
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


async def recreate(engine: AsyncEngine) -> None:
    """Empty the database (the public schema and the queue's) and migrate it to the newest
    revision. Only for a database whose every row can be made again: the demo's own."""
    own = create_async_engine(engine.url, poolclass=NullPool, connect_args={"timeout": 30})
    try:
        async with own.begin() as conn:
            await conn.exec_driver_sql("DROP SCHEMA IF EXISTS tepat_queue CASCADE")
            await conn.exec_driver_sql("DROP SCHEMA public CASCADE")
            await conn.exec_driver_sql("CREATE SCHEMA public")
    finally:
        await own.dispose()
    await run(engine, "upgrade", "head")


async def current(engine: AsyncEngine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    def _get(conn: Connection) -> str | None:
        return MigrationContext.configure(conn).get_current_revision()

    async with engine.connect() as conn:
        return await conn.run_sync(_get)
