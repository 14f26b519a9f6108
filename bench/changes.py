"""P8's data and baseline: two quarters of one registry, and the bare join of their decisions.

The pair is a fresh release and its next quarter (`tepat generate --from`: births, deaths,
moves, re-ranking), both older than the release the other targets read (so the current one
stays current), imported and materialised once per database. The baseline is what the change
list cannot beat: `COPY (SELECT ... FULL OUTER JOIN ... USING (nik)) TO STDOUT` of the same
two decision partitions, the same columns, nothing filtered, read and thrown away.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from app import db
from app.config import Settings
from app.ingest.importer import import_release
from app.repositories import changes as changes_repo
from app.synth.generate import generate_release
from bench.prepare import log


@dataclass(frozen=True)
class Pair:
    before: str
    after: str
    keys: tuple[int, int, int, int]  # snapshot and rule set keys of both sides
    people: int  # rows of the full join: every NIK in either release


def pair_ids(people: int) -> tuple[str, str]:
    return f"2025-06-30-r{people}", f"2025-09-30-r{people}"


async def _imported(settings: Settings, folder: Path, release: str) -> None:
    conn = await db.connect_raw(settings)
    try:
        status = await conn.fetchval("SELECT status FROM snapshots WHERE id = $1", release)
        if status == "published":
            return
        if status is not None:
            raise SystemExit(f"snapshot {release} is {status}; drop it or use another database")
        log(f"importing {release} ...")
        started = time.perf_counter()
        result = await import_release(conn, folder)
        if not result.published:
            raise SystemExit(f"import of {release} refused")
        log(f"imported {release} in {time.perf_counter() - started:.1f} s")
    finally:
        await conn.close()


async def _pair(settings: Settings, before: str, after: str) -> Pair:
    conn = await db.connect_raw(settings)
    try:
        sql = (
            "SELECT s.key, m.rule_set_key FROM snapshots s JOIN materializations m "
            "ON m.snapshot_key = s.key WHERE s.id = $1 ORDER BY m.created_at LIMIT 1"
        )
        a = await conn.fetchrow(sql, before)
        b = await conn.fetchrow(sql, after)
        keys = (int(a[0]), int(a[1]), int(b[0]), int(b[1]))
        people = await conn.fetchval(
            "SELECT count(*) FROM (SELECT nik FROM decisions WHERE snapshot_key = $1 "
            "AND rule_set_key = $2 UNION SELECT nik FROM decisions WHERE snapshot_key = $3 "
            "AND rule_set_key = $4) u",
            *keys,
        )
    finally:
        await conn.close()
    return Pair(before, after, keys, int(people))


def prepare_pair(url: str, people: int, workdir: Path, seed: int = 3) -> Pair:
    """Generate, import and materialise both quarters (once per database and size)."""
    before, after = pair_ids(people)
    settings = Settings(database_url=url)
    first, second = workdir / f"release-{before}", workdir / f"release-{after}"
    if not (first / "manifest.json").exists():
        log(f"generating {people:,} people into {first} ...")
        generate_release(first, people=people, seed=seed, release=before)
    if not (second / "manifest.json").exists():
        log(f"generating the next quarter into {second} ...")
        generate_release(second, people=0, seed=seed + 1, release=after, from_dir=first)
    for folder, release in ((first, before), (second, after)):
        asyncio.run(_imported(settings, folder, release))
        done = subprocess.run(
            [sys.executable, "-m", "app.cli", "eligibility", "materialize", "--snapshot", release],
            env={**os.environ, "TEPAT_DATABASE_URL": url},
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"materialize {release} failed: {done.stderr[-2000:]}")
    return asyncio.run(_pair(settings, before, after))


async def _copy_join(url: str, keys: tuple[int, int, int, int]) -> tuple[float, int]:
    conn = await db.connect_raw(Settings(database_url=url))
    size = 0

    async def sink(data: bytes) -> None:
        nonlocal size
        size += len(data)

    try:
        # The session settings the change list's statement runs with (no JIT), so the two
        # differ only in what the service does beyond the join.
        began = time.perf_counter()
        async with conn.transaction(readonly=True):
            await conn.execute(changes_repo.SESSION)
            await conn.copy_from_query(changes_repo.baseline_query(keys), output=sink)
        return time.perf_counter() - began, size
    finally:
        await conn.close()


def baseline(url: str, pair: Pair) -> tuple[float, int]:
    """Seconds and bytes of the bare join copied out."""
    return asyncio.run(_copy_join(url, pair.keys))
