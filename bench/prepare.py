"""The data every HTTP target shares: a migrated database, a published release, a client, NIKs."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text

from app import db, migrate
from app.config import Settings
from app.ingest.importer import import_release
from app.services import clients, rule_sets
from app.synth.generate import generate_release

PURPOSE = "bench"
PROGRAMS = ["PKH", "BPNT", "PBI_JK", "SEKOLAH_RAKYAT"]
FIELD_GROUPS = ["decision", "decile", "membership", "identity", "attributes", "health"]
NOT_FOUND_SHARE = 0.02  # real callers ask for some NIKs a release does not have

# The bench client's NIKs a day: in force (its leases are in the measured path), never reached.
BENCH_DAILY_QUOTA = 10**12


@dataclass(frozen=True)
class Prepared:
    release: str
    snapshot_key: int
    people: int
    api_key: str
    found: list[str]  # NIKs of the release, in random order
    missing: list[str]  # well-formed NIKs the release does not have


def release_id(people: int) -> str:
    """One release per size in the same database (a `-rN` reissue id names the size)."""
    return f"2025-12-31-r{people}"


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


async def _snapshot(settings: Settings, release: str) -> tuple[int, str] | None:
    conn = await db.connect_raw(settings)
    try:
        row = await conn.fetchrow("SELECT key, status FROM snapshots WHERE id = $1", release)
        return None if row is None else (int(row["key"]), str(row["status"]))
    finally:
        await conn.close()


async def _database(settings: Settings, folder: Path, release: str) -> tuple[int, str]:
    engine = db.create_engine(settings)
    try:
        await migrate.run(engine, "upgrade", "head")
        async with engine.begin() as conn:
            await rule_sets.ensure_shipped(conn)
        found = await _snapshot(settings, release)
        if found is None or found[1] != "published":
            if found is not None:
                raise SystemExit(
                    f"snapshot {release} is {found[1]}; drop it or use another database"
                )
            log(f"importing {release} ...")
            started = time.perf_counter()
            raw = await db.connect_raw(settings)
            try:
                result = await import_release(raw, folder)
            finally:
                await raw.close()
            if not result.published:
                raise SystemExit(f"import refused: {json.dumps(result.to_dict())[:2000]}")
            log(f"imported in {time.perf_counter() - started:.1f} s")
        # A fresh client every run: its key is shown only once, at creation.
        async with engine.begin() as conn:
            info, key = await clients.create_client(
                conn,
                name="bench",
                programs=PROGRAMS,
                field_groups=FIELD_GROUPS,
                purposes=[PURPOSE],
                bulk=True,
                # Huge, not off: the benchmarks measure capacity, with the quota's leases in
                # the path as in production (one statement per slice, none per request).
                daily_quota=BENCH_DAILY_QUOTA,
            )
            await conn.execute(
                text(
                    "UPDATE api_clients SET revoked_at = now() WHERE name = 'bench' AND id <> :id "
                    "AND revoked_at IS NULL"
                ),
                {"id": info.id},
            )
        snap = await _snapshot(settings, release)
        assert snap is not None
        return snap[0], key
    finally:
        await engine.dispose()


async def _warn_unanalysed(settings: Settings, snapshot_key: int) -> None:
    """Name the snapshot's tables PostgreSQL has no statistics for (it is measured as is).

    Without them the generic plan of a prepared `nik = ANY($n)` lookup may scan the whole
    partition (measured: 9 ms instead of 0.1 ms for one NIK on 20,000 rows) until autovacuum
    analyses it; `tepat eligibility materialize` does not analyse what it writes.
    """
    conn = await db.connect_raw(settings)
    try:
        names = await conn.fetch(
            "SELECT relname FROM pg_class WHERE relkind = 'r' AND reltuples < 0 "
            "AND relname = ANY($1::text[]) ORDER BY 1",
            [f"{t}_{snapshot_key}" for t in ("people", "families", "decisions")],
        )
    finally:
        await conn.close()
    if names:
        log(f"warning: never analysed: {', '.join(r['relname'] for r in names)}")


def _niks(folder: Path, seed: int) -> tuple[list[str], list[str]]:
    with (folder / "anggota.csv").open(newline="") as f:
        reader = csv.reader(f)
        column = next(reader).index("nik")
        niks = [row[column] for row in reader]
    rng = random.Random(seed)
    rng.shuffle(niks)
    have = set(niks)
    missing: list[str] = []
    for nik in niks:
        # Same region and birth date, a serial from the top of the range: well formed, absent.
        candidate = f"{nik[:12]}{rng.randrange(9000, 10000):04d}"
        if candidate not in have:
            missing.append(candidate)
        if len(missing) >= max(50, int(len(niks) * NOT_FOUND_SHARE)):
            break
    return niks, missing


def prepare(url: str, people: int, workdir: Path, seed: int = 1) -> Prepared:
    """Generate, import and materialise the release (once per database), make a client."""
    release = release_id(people)
    folder = workdir / f"release-{release}"
    if not (folder / "manifest.json").exists():
        log(f"generating {people:,} people into {folder} ...")
        generate_release(folder, people=people, seed=seed, release=release)
    settings = Settings(database_url=url)
    snapshot_key, key = asyncio.run(_database(settings, folder, release))
    # The CLI, as an operator would run it; idempotent (already stored: returns at once).
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "eligibility", "materialize", "--snapshot", release],
        env={**os.environ, "TEPAT_DATABASE_URL": url},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"materialize failed: {done.stderr[-2000:]}")
    asyncio.run(_warn_unanalysed(settings, snapshot_key))
    found, missing = _niks(folder, seed)
    return Prepared(release, snapshot_key, people, key, found, missing)
