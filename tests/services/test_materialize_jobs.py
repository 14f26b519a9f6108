"""`materialize --jobs N`: ranges of No. KK decided side by side store exactly the rows of a
single range; each (snapshot, rule set) is published as a partition of its own, indexed, the lookup
still one index probe; a failing or killed run leaves nothing visible."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app import db
from app.config import Settings
from app.eligibility import RuleSet
from app.repositories.decisions import stored_query
from app.services import materialize, pinning, rule_sets
from app.services.decide import COLUMNS
from tests.helpers import imported_release

RELEASE = "2025-12-31"
PEOPLE = 12_000
GROUPS = ("decision", "decile", "membership", "identity", "attributes", "health")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
async def release(
    engine: AsyncEngine, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Path]:
    folder = tmp_path_factory.mktemp("jobs") / RELEASE
    async with imported_release(settings, engine, folder, RELEASE, people=PEOPLE, seed=47):
        yield folder


async def _run(settings: Settings, engine: AsyncEngine, jobs: int) -> materialize.Materialized:
    async with engine.connect() as conn:
        pinned = await pinning.pin(conn, RELEASE, None)
    return await materialize.materialize_jobs(settings, pinned.snapshot, pinned.rule_set, jobs=jobs)


async def _forget(settings: Settings) -> int:
    """Drop the stored decisions of the release (the test's own reset); its snapshot key."""
    raw = await db.connect_raw(settings)
    try:
        key: int = await raw.fetchval("SELECT key FROM snapshots WHERE id = $1", RELEASE)
        await raw.execute("DELETE FROM materializations WHERE snapshot_key = $1", key)
        await raw.execute(f"DROP TABLE IF EXISTS decisions_{key}")
        return key
    finally:
        await raw.close()


async def test_several_ranges_store_the_rows_of_one(
    engine: AsyncEngine, settings: Settings, release: Path
) -> None:
    key = await _forget(settings)
    one = await _run(settings, engine, 1)
    assert one.created and one.people == PEOPLE
    columns = ", ".join(COLUMNS)
    raw = await db.connect_raw(settings)
    try:
        await raw.execute("DROP TABLE IF EXISTS jobs_one")
        await raw.execute(f"CREATE TABLE jobs_one AS SELECT {columns} FROM decisions_{key}")
        await _forget(settings)
        three = await _run(settings, engine, 3)
        assert three.created
        assert (three.people, three.families) == (one.people, one.families)
        assert not (await _run(settings, engine, 3)).created  # stored once
        only_one = await raw.fetchval(
            f"SELECT count(*) FROM (SELECT {columns} FROM jobs_one "
            f"EXCEPT ALL SELECT {columns} FROM decisions_{key}) d"
        )
        only_three = await raw.fetchval(
            f"SELECT count(*) FROM (SELECT {columns} FROM decisions_{key} "
            f"EXCEPT ALL SELECT {columns} FROM jobs_one) d"
        )
        assert (only_one, only_three) == (0, 0)
        assert await raw.fetchval(f"SELECT count(*) FROM decisions_{key}") == PEOPLE
        assert (
            await raw.fetchval("SELECT people FROM materializations WHERE snapshot_key = $1", key)
            == PEOPLE
        )
        leftovers = await raw.fetchval(
            "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'decisions_staging_%'"
        )
        assert leftovers == 0
    finally:
        await raw.execute("DROP TABLE IF EXISTS jobs_one")
        await raw.close()


async def test_a_failing_range_fails_the_run_and_leaves_nothing_visible(
    engine: AsyncEngine, settings: Settings, release: Path
) -> None:
    key = await _forget(settings)
    raw = await db.connect_raw(settings)
    try:
        # A birth date past year 9999 in the last family: only the last range fails (the rules
        # cannot take it), after the others may have finished theirs.
        last = await raw.fetchval(f"SELECT max(no_kk) FROM families_{key}")
        before = await raw.fetchval(
            f"SELECT birth_date FROM people_{key} WHERE no_kk = $1 ORDER BY nik LIMIT 1", last
        )
        await raw.execute(
            f"UPDATE people_{key} SET birth_date = '10000-01-01' WHERE nik = "
            f"(SELECT min(nik) FROM people_{key} WHERE no_kk = $1)",
            last,
        )
        try:
            with pytest.raises(ValueError, match="year"):
                await _run(settings, engine, 3)
        finally:
            await raw.execute(
                f"UPDATE people_{key} SET birth_date = $2 WHERE nik = "
                f"(SELECT min(nik) FROM people_{key} WHERE no_kk = $1)",
                last,
                before,
            )
        assert (
            await raw.fetchval("SELECT count(*) FROM materializations WHERE snapshot_key = $1", key)
            == 0
        )
        assert await raw.fetchval(f"SELECT count(*) FROM decisions_{key}") == 0
        assert (
            await raw.fetchval(
                "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'decisions_staging_%'"
            )
            == 0
        )
        # And a clean run afterwards stores everything.
        assert (await _run(settings, engine, 2)).people == PEOPLE
    finally:
        await raw.close()


async def _lookup_plans(raw: asyncpg.Connection, key: int, rule_set_key: int) -> list[str]:
    """EXPLAIN of the stored-answers lookup for one NIK, as a custom and as a generic plan."""
    nik = await raw.fetchval(f"SELECT min(nik) FROM people_{key}")
    plans = []
    await raw.execute(f"PREPARE stored_lookup AS {stored_query(frozenset(GROUPS))}")
    try:
        for mode in ("force_custom_plan", "force_generic_plan"):
            await raw.execute(f"SET plan_cache_mode = {mode}")
            rows = await raw.fetch(
                f"EXPLAIN EXECUTE stored_lookup({key}, {rule_set_key}, ARRAY[{nik}]::int8[])"
            )
            plans.append("\n".join(r[0] for r in rows))
    finally:
        await raw.execute("RESET plan_cache_mode")
        await raw.execute("DEALLOCATE stored_lookup")
    return plans


@pytest.mark.parametrize("jobs", [1, 2])
async def test_a_rule_set_is_published_as_its_own_indexed_partition(
    engine: AsyncEngine, settings: Settings, release: Path, jobs: int
) -> None:
    key = await _forget(settings)
    done = await _run(settings, engine, jobs)
    raw = await db.connect_raw(settings)
    try:
        rule_set_key = await raw.fetchval("SELECT key FROM rule_sets WHERE id = $1", done.rule_set)
        leaf = f"decisions_{key}_{rule_set_key}"
        assert await raw.fetchval(
            "SELECT pg_get_partkeydef(to_regclass($1))", f"decisions_{key}"
        ) == ("LIST (rule_set_key)")
        assert await raw.fetchval(
            "SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE oid = to_regclass($1)", leaf
        ) == (f"FOR VALUES IN ('{rule_set_key}')")
        assert await raw.fetchval(f"SELECT count(*) FROM {leaf}") == PEOPLE
        # Its NIK index belongs to the parent's, the bound's CHECK is gone, nothing is staged.
        assert (
            await raw.fetchval(
                "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE c.relname = $1",
                f"{leaf}_nik_idx",
            )
            == 1
        )
        assert (
            await raw.fetchval(
                "SELECT count(*) FROM pg_constraint WHERE conrelid = to_regclass($1) AND contype = 'c'",
                leaf,
            )
            == 0
        )
        assert (
            await raw.fetchval(
                "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'decisions_staging_%'"
            )
            == 0
        )
        # The generated codes were computed on the way in (not NULL, not left to a later write).
        assert (
            await raw.fetchval(
                f"SELECT count(*) FROM {leaf} WHERE person_code IS NULL OR decision_code IS NULL"
            )
            == 0
        )
        # The lookup stays one index probe of that partition, planned either way.
        for plan in await _lookup_plans(raw, key, rule_set_key):
            assert f"{leaf}_nik_idx" in plan, plan
            assert "Seq Scan" not in plan, plan
    finally:
        await raw.close()


async def test_a_second_rule_set_of_the_snapshot_gets_a_partition_beside_the_first(
    engine: AsyncEngine, settings: Settings, release: Path
) -> None:
    key = await _forget(settings)
    first = await _run(settings, engine, 2)
    async with engine.connect() as conn:
        pinned = await pinning.pin(conn, RELEASE, None)
    # The same rules under another id: the same decisions, stored a second time under its key.
    other = RuleSet.model_validate(
        {**pinned.rule_set.model_dump(mode="json"), "id": "layout-test-2099"}
    )
    raw = await db.connect_raw(settings)
    try:
        async with engine.begin() as conn:
            assert await rule_sets.load(conn, other)
        second = await materialize.materialize_jobs(settings, pinned.snapshot, other, jobs=2)
        assert second.created and second.people == first.people == PEOPLE
        keys = [
            await raw.fetchval("SELECT key FROM rule_sets WHERE id = $1", r.rule_set)
            for r in (first, second)
        ]
        by_rule_set = await raw.fetch(
            f"SELECT rule_set_key, count(*) AS n FROM decisions WHERE snapshot_key = {key} "
            "GROUP BY 1 ORDER BY 1"
        )
        assert [(r["rule_set_key"], r["n"]) for r in by_rule_set] == [(k, PEOPLE) for k in keys]
        for k in keys:
            assert await raw.fetchval(f"SELECT count(*) FROM decisions_{key}_{k}") == PEOPLE
        columns = ", ".join(c for c in COLUMNS if c != "rule_set_key")
        differing = await raw.fetchval(
            f"SELECT count(*) FROM (SELECT {columns} FROM decisions_{key}_{keys[0]} "
            f"EXCEPT ALL SELECT {columns} FROM decisions_{key}_{keys[1]}) d"
        )
        assert differing == 0
    finally:
        await raw.execute(
            "DELETE FROM materializations WHERE rule_set_key = "
            "(SELECT key FROM rule_sets WHERE id = $1)",
            other.id,
        )
        await _forget(settings)
        await raw.execute("DELETE FROM rule_sets WHERE id = $1", other.id)
        rule_sets.forget_cached()
        await raw.close()


@pytest.mark.parametrize("jobs", [1, 2])
async def test_a_snapshot_partition_of_the_earlier_plain_layout_is_still_written(
    engine: AsyncEngine, settings: Settings, release: Path, jobs: int
) -> None:
    key = await _forget(settings)
    raw = await db.connect_raw(settings)
    try:
        # What earlier versions created: one plain partition for all of a snapshot's rule sets.
        await raw.execute(
            f"CREATE TABLE decisions_{key} PARTITION OF decisions FOR VALUES IN ({key})"
        )
        done = await _run(settings, engine, jobs)
        assert done.created and done.people == PEOPLE
        assert (
            await raw.fetchval(
                "SELECT relkind::text FROM pg_class WHERE oid = to_regclass($1)", f"decisions_{key}"
            )
            == "r"
        )
        assert await raw.fetchval(f"SELECT count(*) FROM decisions_{key}") == PEOPLE
        assert (
            await raw.fetchval(
                "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'decisions_staging_%'"
            )
            == 0
        )
    finally:
        await _forget(settings)
        await raw.close()


async def test_rows_a_killed_run_left_staged_are_never_published(
    engine: AsyncEngine, settings: Settings, release: Path
) -> None:
    key = await _forget(settings)
    async with engine.connect() as conn:
        pinned = await pinning.pin(conn, RELEASE, None)
    raw = await db.connect_raw(settings)
    try:
        rule_set_key = await raw.fetchval(
            "SELECT key FROM rule_sets WHERE id = $1", pinned.rule_set.id
        )
        # A killed run's staging table, one range's rows committed (here: a made-up person).
        staging = f"decisions_staging_{key}_{rule_set_key}"
        await raw.execute(
            f"CREATE TABLE {staging} (LIKE decisions INCLUDING DEFAULTS INCLUDING GENERATED)"
        )
        await raw.execute(
            f"INSERT INTO {staging} (nik, no_kk, region_code, pkh_yearly, snapshot_key, "
            "rule_set_key, relationship, criteria, head, pkh_eligible, bpnt_eligible, "
            "pbi_eligible, sr_eligible, sex, birth_date, name) "
            f"VALUES (1, 1, 1, 0, {key}, {rule_set_key}, 1, 0, true, false, false, false, false, "
            "1, '2000-01-01', 'staged')"
        )
        assert await raw.fetchval(f"SELECT count(*) FROM decisions WHERE snapshot_key = {key}") == 0
        done = await _run(settings, engine, 2)
        assert done.people == PEOPLE
        assert await raw.fetchval(f"SELECT count(*) FROM decisions_{key}") == PEOPLE
        assert await raw.fetchval(f"SELECT count(*) FROM decisions_{key} WHERE nik = 1") == 0
        assert (
            await raw.fetchval(
                "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'decisions_staging_%'"
            )
            == 0
        )
    finally:
        await raw.close()


async def _wait_for_staging_copy(raw: asyncpg.Connection, proc: subprocess.Popen[bytes]) -> bool:
    """Wait (bounded) until a range is COPYing into the staging table."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        seen = await raw.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND state = 'active' "
            "AND query ILIKE '%COPY%decisions_staging_%'"
        )
        if seen:
            return True
        await asyncio.sleep(0.005)
    return False


async def test_kill_9_mid_run_leaves_nothing_visible_and_a_rerun_stores_all(
    engine: AsyncEngine, settings: Settings, release: Path, database_url: str
) -> None:
    key = await _forget(settings)
    raw = await db.connect_raw(settings)
    try:
        env = {**os.environ, "TEPAT_DATABASE_URL": database_url}
        cmd = [sys.executable, "-m", "app.cli", "eligibility", "materialize", "--json"]
        proc = subprocess.Popen(
            [*cmd, "--snapshot", RELEASE, "--jobs", "2"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # the whole process group is killed
        )
        reached = await _wait_for_staging_copy(raw, proc)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert reached, "the run finished before its ranges were COPYing"
        assert await raw.fetchval(f"SELECT count(*) FROM decisions WHERE snapshot_key = {key}") == 0
        assert (
            await raw.fetchval("SELECT count(*) FROM materializations WHERE snapshot_key = $1", key)
            == 0
        )
        done = await _run(settings, engine, 2)
        assert done.created and done.people == PEOPLE
        assert await raw.fetchval(f"SELECT count(*) FROM decisions WHERE snapshot_key = {key}") == (
            PEOPLE
        )
        assert (
            await raw.fetchval(
                "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'decisions_staging_%'"
            )
            == 0
        )
    finally:
        await raw.close()
