"""`--jobs N`: the files read, validated and COPYed by several processes give the same snapshot
(rows, line numbers, checksum) and the same refusal report as one process, and leave nothing
behind when refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from app.config import Settings
from app.ingest.importer import import_release
from app.ingest.parallel import plan
from app.repositories.imports import LOADING_SCHEMA
from app.synth.corrupt import corrupt_release
from app.synth.generate import generate_release
from tests.helpers import drop_release, visible_tables

RELEASE = "2020-03-31"  # older than any rule set: never "current"
GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(scope="module")
def base_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("jobs") / RELEASE
    generate_release(out, people=3000, seed=7, release=RELEASE)
    return out


async def _rows(raw: asyncpg.Connection, table: str, key: int) -> list[tuple[Any, ...]]:
    rows = await raw.fetch(f"SELECT * FROM {table} WHERE snapshot_key = $1 ORDER BY 2", key)
    return [tuple(r.values())[1:] for r in rows]  # the key differs between the two imports


async def _loading_tables(raw: asyncpg.Connection) -> list[str]:
    rows = await raw.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1", LOADING_SCHEMA)
    return [r["tablename"] for r in rows]


def test_a_plain_csv_file_is_cut_into_ranges_at_line_ends(base_release: Path) -> None:
    path = base_release / "anggota.csv"
    p = plan(path, 3)
    data = path.read_bytes()
    assert len(p.ranges) == 3
    assert p.ranges[0].start == data.index(b"\n") + 1
    assert p.ranges[-1].end == len(data)
    for a, b in zip(p.ranges, p.ranges[1:], strict=False):
        assert a.end == b.start
        assert data[b.start - 1 : b.start] == b"\n"
        assert b.first_line == data[: b.start].count(b"\n") + 1
    assert plan(path, 1).ranges == ()


async def test_jobs_2_loads_the_same_rows_and_checksum_as_jobs_1(
    raw: asyncpg.Connection, settings: Settings, base_release: Path
) -> None:
    loaded: dict[int, tuple[Any, ...]] = {}
    try:
        for jobs in (1, 2):
            result = await import_release(raw, base_release, jobs=jobs, settings=settings)
            assert result.published, result.report.to_dict()
            key = result.snapshot_key
            assert key is not None
            tables = {t: await _rows(raw, t, key) for t in ("families", "people")}
            loaded[jobs] = (result.checksum, result.counts, tables, result.report.to_dict())
            await drop_release(raw, RELEASE)
        assert loaded[2][0] == loaded[1][0]
        assert loaded[2][1] == loaded[1][1]
        assert loaded[2][2]["people"] == loaded[1][2]["people"]
        assert loaded[2][2]["families"] == loaded[1][2]["families"]
        assert len(loaded[2][2]["people"]) == loaded[1][1]["people"]
        assert loaded[2][3] == loaded[1][3]
        assert await _loading_tables(raw) == []
    finally:
        await drop_release(raw, RELEASE)


@pytest.mark.parametrize("case", ["all_row_rules", "missing_column", "file_rows"])
async def test_jobs_2_refuses_with_the_golden_report(
    raw: asyncpg.Connection, settings: Settings, tmp_path: Path, base_release: Path, case: str
) -> None:
    from tests.ingest.test_golden_reports import CASES, _normalised

    bad = tmp_path / RELEASE
    corrupt_release(base_release, bad, CASES[case], seed=11)
    before = await visible_tables(raw)
    result = await import_release(raw, bad, jobs=2, settings=settings)
    assert not result.published
    assert _normalised(result.report.to_dict(), bad) == json.loads(
        (GOLDEN / f"{case}.json").read_text()
    )
    assert await visible_tables(raw) == before
    assert await _loading_tables(raw) == []
    assert await raw.fetchval("SELECT count(*) FROM snapshots WHERE id = $1", RELEASE) == 0


async def test_jobs_2_dry_run_loads_nothing(
    raw: asyncpg.Connection, settings: Settings, base_release: Path
) -> None:
    before = await visible_tables(raw)
    result = await import_release(raw, base_release, dry_run=True, jobs=2, settings=settings)
    assert result.report.ok
    assert not result.published
    assert result.counts["people"] == 3000
    assert await visible_tables(raw) == before
    assert await _loading_tables(raw) == []
    assert await raw.fetchval("SELECT count(*) FROM snapshots WHERE id = $1", RELEASE) == 0
