"""`materialize --jobs N`: ranges of No. KK in several processes store exactly the rows of one
process, and a failing range leaves nothing visible."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app import db
from app.config import Settings
from app.services import materialize, pinning
from app.services.materialize import COLUMNS
from tests.helpers import imported_release

RELEASE = "2025-12-31"
PEOPLE = 12_000

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


async def test_several_processes_store_the_rows_of_one(
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
        # A birth date past year 9999 in the last family: only the last range's worker fails
        # (its stream cannot decode it), after the others may have finished theirs.
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
