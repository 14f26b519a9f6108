"""The whole migration chain: base -> head -> base -> head, and the models match the schema."""

from __future__ import annotations

import datetime as dt
import importlib.util
from pathlib import Path
from types import ModuleType

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from app import migrate
from app.models import metadata
from app.models.tables import DECISION_CODE, PERSON_CODE, code_sql
from app.repositories.decisions import decode

TABLES = {
    "snapshots",
    "rule_sets",
    "people",
    "families",
    "decisions",
    "materializations",
    "api_clients",
    "client_usage",
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


def _revision(name: str) -> ModuleType:
    path = next(Path(__file__).parent.parent.joinpath("migrations", "versions").glob(f"*_{name}_*"))
    spec = importlib.util.spec_from_file_location(f"revision_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_codes_migration_computes_what_the_models_decode() -> None:
    """0007's frozen SQL is the layout the decoder reads (a change needs a new migration)."""
    codes = _revision("0007")
    assert code_sql(PERSON_CODE, "integer") == codes.PERSON_CODE
    assert code_sql(DECISION_CODE, "bigint") == codes.DECISION_CODE


async def test_codes_are_filled_for_decisions_stored_before_the_upgrade(
    scratch: AsyncEngine,
) -> None:
    await migrate.run(scratch, "upgrade", "0006")
    columns = {
        "nik": 3201014501990007, "no_kk": 3201010101010001, "region_code": 3201010001,
        "pkh_yearly": 2_700_000, "snapshot_key": 1, "rule_set_key": 1, "relationship": 1,
        "decile": 2, "sr_level": 3, "sr_priority": 2, "head": True, "pkh_eligible": True,
        "bpnt_eligible": False, "pbi_eligible": True, "sr_eligible": True,
        "pkh_recipient": None, "bpnt_recipient": True, "pbi_recipient": False, "sex": 2,
        "marital_status": 4, "school_status": 0, "school_level": None, "disability": 2,
        "pregnant": None, "chronic_illness": True, "working": False,
        "birth_date": dt.date(1990, 1, 5), "name": "Siti",
    }  # fmt: skip
    async with scratch.begin() as c:
        await c.exec_driver_sql("CREATE TABLE decisions_1 PARTITION OF decisions FOR VALUES IN (1)")
        await c.execute(
            text(
                f"INSERT INTO decisions ({', '.join(columns)}) "
                f"VALUES ({', '.join(':' + n for n in columns)})"
            ),
            columns,
        )
    await migrate.run(scratch, "upgrade", "head")
    async with scratch.connect() as c:
        person, decision = (
            await c.execute(text("SELECT person_code, decision_code FROM decisions"))
        ).one()
    assert decode(person, PERSON_CODE) == {n: columns[n] for n, _, _ in PERSON_CODE}
    assert decode(decision, DECISION_CODE) == {n: columns[n] for n, _, _ in DECISION_CODE}
