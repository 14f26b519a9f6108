"""The migration: base -> head -> base -> head, the models match the schema, and a database of
the pre-release chain is refused with a message, not a traceback."""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app import migrate
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
    # Empty again: only Alembic's own bookkeeping table is left.
    assert await _tables(scratch) == {"alembic_version"}
    async with scratch.connect() as c:
        left = await c.exec_driver_sql(
            "SELECT count(*) FROM pg_proc WHERE pronamespace = 'public'::regnamespace"
        )
        assert left.scalar() == 0
        left = await c.exec_driver_sql(
            "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace"
            " AND relname NOT LIKE 'alembic_version%'"
        )
        assert left.scalar() == 0
    await migrate.run(scratch, "upgrade", "head")
    assert await _tables(scratch) >= TABLES


async def _answers_storage(engine: AsyncEngine) -> tuple[str, str]:
    async with engine.connect() as c:
        row = (
            await c.execute(
                text(
                    "SELECT attstorage::text AS storage, attcompression::text AS compression "
                    "FROM pg_attribute "
                    "WHERE attrelid = 'bulk_job_results'::regclass AND attname = 'data'"
                )
            )
        ).one()
    return str(row.storage), str(row.compression)


async def test_0002_compresses_job_answers_with_lz4_and_downgrades(scratch: AsyncEngine) -> None:
    await migrate.run(scratch, "upgrade", "0001_initial")
    assert await _answers_storage(scratch) == ("e", "")  # external, uncompressed
    await migrate.run(scratch, "upgrade", "head")
    async with scratch.connect() as c:
        lz4 = (
            await c.exec_driver_sql(
                "SELECT 'lz4' = ANY(enumvals) FROM pg_settings "
                "WHERE name = 'default_toast_compression'"
            )
        ).scalar()
    # extended and lz4, where the server was built with it (the test server is)
    assert await _answers_storage(scratch) == (("x", "l") if lz4 else ("e", ""))
    await migrate.run(scratch, "downgrade", "0001_initial")
    assert await _answers_storage(scratch) == ("e", "")
    await migrate.run(scratch, "upgrade", "head")


async def test_models_match_the_migrations(engine: AsyncEngine) -> None:
    async with engine.connect() as c:
        assert await c.run_sync(migrate.drift) == []


async def _drifted(engine: AsyncEngine) -> None:
    """A database at head made by an earlier edit of 0001_initial: a column and a table short."""
    await migrate.run(engine, "upgrade", "head")
    async with engine.begin() as c:
        await c.exec_driver_sql("ALTER TABLE api_clients DROP COLUMN jwks")
        await c.exec_driver_sql("DROP TABLE oauth2_assertions")


async def test_a_database_at_head_missing_what_head_builds_is_refused(scratch: AsyncEngine) -> None:
    await _drifted(scratch)
    head = await migrate.current(scratch)
    with pytest.raises(migrate.SchemaDrift) as caught:
        await migrate.run(scratch, "upgrade", "head")
    message = caught.value.detail
    assert "missing column api_clients.jwks" in message
    assert "missing table oauth2_assertions" in message
    assert "recreate the database" in message
    assert await migrate.current(scratch) == head  # untouched


async def test_recreate_builds_the_schema_the_migrations_build(scratch: AsyncEngine) -> None:
    await _drifted(scratch)
    await migrate.recreate(scratch)
    async with scratch.connect() as c:
        assert await c.run_sync(migrate.drift) == []
    await migrate.run(scratch, "upgrade", "head")  # and it is current


def _initial() -> ModuleType:
    path = Path(__file__).parent.parent / "migrations" / "versions" / "0001_initial.py"
    spec = importlib.util.spec_from_file_location("revision_0001_initial", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_migration_computes_what_the_models_decode() -> None:
    """The migration's frozen SQL is the layout the decoder reads (a change needs a migration)."""
    initial = _initial()
    assert code_sql(PERSON_CODE, "integer") == initial.PERSON_CODE
    assert code_sql(DECISION_CODE, "bigint") == initial.DECISION_CODE


async def test_codes_are_computed_from_the_stored_columns(scratch: AsyncEngine) -> None:
    await migrate.run(scratch, "upgrade", "head")
    columns = {
        "nik": 3201014501990007, "no_kk": 3201010101010001, "region_code": 3201010001,
        "pkh_yearly": 2_700_000, "snapshot_key": 1, "rule_set_key": 1, "relationship": 1,
        "decile": 2, "sr_level": 3, "sr_priority": 2, "criteria": 0, "head": True, "pkh_eligible": True,
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
    async with scratch.connect() as c:
        person, decision = (
            await c.execute(text("SELECT person_code, decision_code FROM decisions"))
        ).one()
    assert decode(person, PERSON_CODE) == {n: columns[n] for n, _, _ in PERSON_CODE}
    assert decode(decision, DECISION_CODE) == {n: columns[n] for n, _, _ in DECISION_CODE}


async def _stamp(engine: AsyncEngine, revision: str) -> None:
    """Make `engine`'s database look like one the pre-release chain left at `revision`."""
    await migrate.run(engine, "upgrade", "head")
    async with engine.begin() as c:
        await c.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})


@pytest.mark.parametrize("revision", ["0009", "0001"])
async def test_a_pre_release_database_is_refused(scratch: AsyncEngine, revision: str) -> None:
    await _stamp(scratch, revision)
    for direction, target in (("upgrade", "head"), ("downgrade", "base")):
        with pytest.raises(migrate.PreReleaseSchema, match="pre-release migration chain"):
            await migrate.run(scratch, direction, target)
    assert await migrate.current(scratch) == revision  # untouched


def _tepat(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "TEPAT_DATABASE_URL": url, "COLUMNS": "200"},
        timeout=120,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.slow
@pytest.mark.parametrize("command", ["db upgrade", "demo"])
async def test_the_cli_on_a_drifted_database_says_recreate_it(
    scratch: AsyncEngine, command: str
) -> None:
    """A database given by TEPAT_DATABASE_URL is never emptied: the demo recreates only its own."""
    await _drifted(scratch)
    url = scratch.url.render_as_string(hide_password=False)
    args = command.split() + (["--port", str(_free_port())] if command == "demo" else [])
    out = _tepat(url, *args)
    assert out.returncode == 1, out.stderr
    message = " ".join(out.stderr.split())
    assert "missing column api_clients.jwks" in message
    assert "recreate the database" in message
    assert "Traceback" not in out.stderr + out.stdout
    async with scratch.connect() as c:
        assert "missing table oauth2_assertions" in await c.run_sync(migrate.drift)


@pytest.mark.slow
@pytest.mark.parametrize("command", ["db upgrade", "demo"])
async def test_the_cli_on_a_pre_release_database_says_recreate_it(
    scratch: AsyncEngine, command: str
) -> None:
    """`tepat db upgrade` and the demo name the cause and the remedy (exit 1), no traceback."""
    await _stamp(scratch, "0009")
    url = scratch.url.render_as_string(hide_password=False)
    args = command.split() + (["--port", str(_free_port())] if command == "demo" else [])
    out = _tepat(url, *args)
    assert out.returncode == 1, out.stderr
    message = " ".join(out.stderr.split())
    assert "created by the pre-release migration chain" in message
    assert "(it is at revision 0009)" in message
    assert "recreate the database" in message
    assert "Traceback" not in out.stderr + out.stdout
    assert await migrate.current(scratch) == "0009"
