"""P7: materialize against COPY of the same pre-rendered decision rows, in one run on one server.

    python -m bench.materialize_bench [--people 1000000] [--jobs N] [--workdir .tepat/bench]

Service: `tepat eligibility materialize --jobs N` as a subprocess (stream the snapshot, evaluate
every family, COPY a row a person, publish), timed and its peak RSS (with its worker processes)
sampled every 50 ms; once with --jobs 1 and once with N (default: the number of cores).
Baseline: the rows it stored, dumped to a file, then COPYed by a subprocess from that file into
a fresh partition of `decisions` in the service's layout (the snapshot's partition by rule set and
the rule set's in it, its NIK index already there) in one transaction with ANALYZE, timed the
same way.
Prints a table and one JSON line per target.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from app import db
from app.config import Settings
from app.services.decide import COLUMNS
from bench import import_bench
from bench.common import emit, server_url


def sampled(cmd: list[str], env: dict[str, str]) -> tuple[bytes, float, int]:
    """Run `cmd`; its stdout, wall seconds and peak RSS (the process and its children)."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=errors)
        peak = 0
        ps = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                rss = ps.memory_info().rss
                for child in ps.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        rss += child.memory_info().rss
                peak = max(peak, rss)
            except psutil.Error:
                break
            time.sleep(0.05)
        out = proc.stdout.read() if proc.stdout else b""
        seconds = time.perf_counter() - started
        if proc.returncode:
            errors.seek(0)
            tail = errors.read()[-2000:].decode(errors="replace")
            raise RuntimeError(f"{' '.join(cmd[2:5])} failed ({proc.returncode}): {tail}")
    return out, seconds, peak


async def _forget(dsn: str, dump: Path | None = None) -> None:
    """Drop the release's stored decisions (after dumping them to `dump` when given)."""
    conn = await asyncpg.connect(dsn)
    try:
        key = await conn.fetchval("SELECT key FROM snapshots WHERE id = $1", import_bench.RELEASE)
        if dump is not None:
            with dump.open("wb") as f:
                await conn.copy_from_query(
                    f"SELECT {', '.join(COLUMNS)} FROM decisions_{key}", output=f, format="text"
                )
        await conn.execute("DELETE FROM materializations WHERE snapshot_key = $1", key)
        await conn.execute(f"DROP TABLE IF EXISTS decisions_{key}")
    finally:
        await conn.close()


async def baseline_copy(dsn: str, dump: Path) -> int:
    """The baseline's own process: a fresh partition in the service's layout (the snapshot's,
    by rule set, and the rule set's in it, with its NIK index), the dump COPYed in, ANALYZE, one
    commit."""
    conn = await asyncpg.connect(dsn)
    try:
        key = await conn.fetchval("SELECT key FROM snapshots WHERE id = $1", import_bench.RELEASE)
        rule_set_key = await conn.fetchval(
            "SELECT key FROM rule_sets ORDER BY effective_from DESC, key DESC LIMIT 1"
        )
        leaf = f"decisions_{int(key)}_{int(rule_set_key)}"
        await conn.execute(
            f"CREATE TABLE decisions_{int(key)} PARTITION OF decisions FOR VALUES IN ({int(key)}) "
            "PARTITION BY LIST (rule_set_key)"
        )
        await conn.execute(
            f"CREATE TABLE {leaf} PARTITION OF decisions_{int(key)} "
            f"FOR VALUES IN ({int(rule_set_key)})"
        )
        async with conn.transaction():
            with dump.open("rb") as f:
                status = await conn.copy_to_table(
                    leaf, source=f, columns=list(COLUMNS), format="text"
                )
            await conn.execute(f"ANALYZE {leaf}")
        return int(status.split()[-1])
    finally:
        await conn.close()


async def _latest_rule_set(dsn: str) -> str:
    """The newest stored rule set (none is in force on the bench release's old date)."""
    conn = await asyncpg.connect(dsn)
    try:
        found: str = await conn.fetchval(
            "SELECT id FROM rule_sets ORDER BY effective_from DESC, key DESC LIMIT 1"
        )
        return found
    finally:
        await conn.close()


def materialize(url: str, jobs: int) -> tuple[dict[str, Any], float, int]:
    env = {**os.environ, "TEPAT_DATABASE_URL": url}
    rule_set = asyncio.run(_latest_rule_set(db.asyncpg_dsn(url)))
    cmd = [sys.executable, "-m", "app.cli", "eligibility", "materialize", "--json"]
    cmd += ["--snapshot", import_bench.RELEASE, "--rule-set", rule_set, "--jobs", str(jobs)]
    out, seconds, peak = sampled(cmd, env)
    return json.loads(out), seconds, peak


def run(url: str, people: int, workdir: Path, jobs: int | None = None) -> list[dict[str, Any]]:
    """P7 on the server at `url` (the P5 release of `people`, imported here and dropped after)."""
    jobs = jobs or os.cpu_count() or 1
    dsn = db.asyncpg_dsn(url)
    folder = workdir / f"release-{people}"
    if not (folder / "manifest.json").exists():
        from app.synth.generate import generate_release

        print(f"generating {people:,} people into {folder} ...", file=sys.stderr)
        generate_release(folder, people=people, seed=1, release=import_bench.RELEASE)
    asyncio.run(import_bench.drop(dsn))
    report, _, _ = import_bench.run_importer(url, folder)
    if not report.get("published"):
        raise SystemExit(f"import failed: {json.dumps(report)[:2000]}")
    dump = workdir / "p7-decisions.copy"
    try:
        one, one_seconds, one_peak = materialize(url, 1)
        asyncio.run(_forget(dsn))
        many, many_seconds, many_peak = materialize(url, jobs)
        asyncio.run(_forget(dsn, dump))
        env = {**os.environ, "TEPAT_DATABASE_URL": url}
        cmd = [sys.executable, "-m", "bench.materialize_bench", "--baseline-copy", str(dump)]
        out, base_seconds, base_peak = sampled(cmd, env)
        base_rows = int(out)
        asyncio.run(_forget(dsn))
    finally:
        dump.unlink(missing_ok=True)
        asyncio.run(import_bench.drop(dsn))
    assert one["people"] == many["people"] == base_rows
    one_rate, many_rate = one["people"] / one_seconds, many["people"] / many_seconds
    base_rate = base_rows / base_seconds
    mb = 2**20
    return [
        emit(
            "P7",
            f"materialize people/s, --jobs {jobs}, vs COPY of the same rows",
            many_rate,
            base_rate,
            0.5,
            unit="people/s",
            extra={
                "jobs": jobs,
                "people": many["people"],
                "materialize_seconds": round(many_seconds, 2),
                "copy_seconds": round(base_seconds, 2),
                "jobs1_people_per_s": round(one_rate, 1),
                "jobs1_ratio": round(one_rate / base_rate, 3),
                "jobs1_seconds": round(one_seconds, 2),
                "jobs1_peak_rss_mb": round(one_peak / mb, 1),
                "copy_peak_rss_mb": round(base_peak / mb, 1),
            },
        ),
        emit(
            "P7-rss",
            f"materialize peak RSS, all {jobs} processes, {many['people']:,} people",
            many_peak / mb,
            500,
            None,
            unit="MB",
            lower_is_better=True,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--people", type=int, default=1_000_000)
    parser.add_argument("--jobs", type=int, default=0, help="default: the number of cores")
    parser.add_argument("--workdir", type=Path, default=Path(".tepat/bench"))
    parser.add_argument("--baseline-copy", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    url = server_url(Settings())
    if args.baseline_copy:
        print(asyncio.run(baseline_copy(db.asyncpg_dsn(url), args.baseline_copy)))
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    run(url, args.people, args.workdir, args.jobs or None)


if __name__ == "__main__":
    main()
