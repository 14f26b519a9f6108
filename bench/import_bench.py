"""P5 and P6: the importer against raw COPY of the same files, in one run on the same server.

    python -m bench.import_bench [--people 1000000] [--workdir .tepat/bench]

Baseline: `COPY ... FROM STDIN (FORMAT csv, HEADER)` of keluarga.csv and anggota.csv into
plain typed tables with a primary key and one more index (the targets' "COPY with indexes"),
timed from the first byte to the last index. Service: `tepat snapshot import` as a subprocess
(validation, checksum, set checks, publish; `--jobs` processes, default half the cores),
with its peak RSS sampled every 50 ms: the importer and its worker processes together.
Prints a table and one JSON line per target.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from app import db
from app.config import Settings
from app.ingest.importer import default_jobs
from app.synth.generate import generate_release
from bench.common import emit, server_url

RELEASE = "2019-12-31"  # never the current snapshot of a shared database

BASELINE_DDL = """
DROP TABLE IF EXISTS bench_keluarga, bench_anggota;
CREATE TABLE bench_keluarga (no_kk int8 PRIMARY KEY, kode_wilayah int8, desil int2,
  asn_tni_polri int2, kepemilikan_rumah int2, luas_lantai_m2 int4, sumber_air_minum int2,
  fasilitas_bab int2, sumber_penerangan int2, daya_listrik_va int4, penerima_pkh int2,
  penerima_bpnt int2);
CREATE TABLE bench_anggota (nik int8 PRIMARY KEY, no_kk int8, nama text, hubungan_kk int2,
  jenis_kelamin int2, tanggal_lahir date, status_kawin int2, hamil int2, status_sekolah int2,
  jenjang_sekolah text, disabilitas int2, penyakit_kronis int2, bekerja int2, penerima_pbi int2);
CREATE INDEX ON bench_anggota (no_kk);
"""


async def raw_copy(dsn: str, folder: Path) -> tuple[int, float]:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(BASELINE_DDL)
        rows = 0
        started = time.perf_counter()
        async with conn.transaction():
            for name, table in (
                ("keluarga.csv", "bench_keluarga"),
                ("anggota.csv", "bench_anggota"),
            ):
                header = (folder / name).open().readline().strip().split(",")
                with (folder / name).open("rb") as f:
                    status = await conn.copy_to_table(
                        table, source=f, columns=header, format="csv", header=True
                    )
                rows += int(status.split()[-1])
        seconds = time.perf_counter() - started
        await conn.execute("DROP TABLE bench_keluarga, bench_anggota")
        return rows, seconds
    finally:
        await conn.close()


def tree_rss(ps: psutil.Process) -> int:
    """RSS of a process and its children (the importer's worker processes)."""
    total = ps.memory_info().rss
    for child in ps.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            continue
    return total


def children_cpu() -> float:
    """CPU seconds (user + system) of this process's waited-for children and theirs."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_importer(
    url: str, folder: Path, jobs: int | None = None
) -> tuple[dict[str, object], float, int]:
    """The importer's JSON report, its wall time and peak RSS; its CPU seconds (its worker
    processes included) in the report under `_cpu_seconds`."""
    env = {**os.environ, "TEPAT_DATABASE_URL": url}
    cpu_before = children_cpu()
    started = time.perf_counter()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "app.cli",
            "snapshot",
            "import",
            str(folder),
            "--json",
            "--no-decisions",
            *(["--jobs", str(jobs)] if jobs else []),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    peak = 0
    ps = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            peak = max(peak, tree_rss(ps))
        except psutil.Error:
            break
        time.sleep(0.05)
    out = proc.stdout.read() if proc.stdout else b""
    seconds = time.perf_counter() - started
    proc.wait()
    report = json.loads(out)
    report["_cpu_seconds"] = children_cpu() - cpu_before
    return report, seconds, peak


async def bytes_per_person(dsn: str) -> tuple[int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        key, people = await conn.fetchrow(
            "SELECT key, people_count FROM snapshots WHERE id = $1", RELEASE
        )
        size = await conn.fetchval(
            "SELECT pg_total_relation_size($1::regclass) + pg_total_relation_size($2::regclass)",
            f"people_{key}",
            f"families_{key}",
        )
        return size, people
    finally:
        await conn.close()


async def drop(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        key = await conn.fetchval("SELECT key FROM snapshots WHERE id = $1", RELEASE)
        if key is not None:
            await conn.execute(f"DROP TABLE IF EXISTS people_{key}, families_{key}")
            await conn.execute("DELETE FROM snapshots WHERE key = $1", key)
    finally:
        await conn.close()


def run(url: str, people: int, workdir: Path, jobs: int | None = None) -> list[dict[str, Any]]:
    """P5 and P6 on the server at `url` (a release of `people` generated once under `workdir`)."""
    dsn = db.asyncpg_dsn(url)
    folder = workdir / f"release-{people}"
    if not (folder / "manifest.json").exists():
        print(f"generating {people:,} people into {folder} ...", file=sys.stderr)
        generate_release(folder, people=people, seed=1, release=RELEASE)

    asyncio.run(drop(dsn))
    base_rows, base_seconds = asyncio.run(raw_copy(dsn, folder))
    report, seconds, peak = run_importer(url, folder, jobs)
    if not report.get("published"):
        raise SystemExit(f"import failed: {json.dumps(report)[:2000]}")
    counts = report["counts"]
    assert isinstance(counts, dict)
    rows = sum(int(v) for v in counts.values())
    size, stored = asyncio.run(bytes_per_person(dsn))
    asyncio.run(drop(dsn))

    service_rate, base_rate = rows / seconds, base_rows / base_seconds
    cpu = float(report["_cpu_seconds"])  # type: ignore[arg-type]
    peak_mb = peak / 2**20
    return [
        emit(
            "P5",
            "import rows/s (validated, published) vs raw COPY with indexes",
            service_rate,
            base_rate,
            0.6,
            unit="rows/s",
            extra={
                "jobs": jobs or default_jobs(),
                "rows_per_second_per_job": round(service_rate / (jobs or default_jobs())),
                # Per core: rows per CPU second of the importer's processes (the server's COPY
                # and set checks not counted), start-up included.
                "importer_cpu_seconds": round(cpu, 2),
                "rows_per_importer_cpu_second": round(rows / cpu) if cpu else None,
                "importer_peak_rss_mb": round(peak_mb, 1),
                "rss_goal_mb": 500,
                "rows": rows,
                "import_seconds": round(seconds, 2),
                "copy_seconds": round(base_seconds, 2),
            },
        ),
        emit(
            "P5-rss",
            f"importer peak RSS, {people:,} people",
            peak_mb,
            500,
            None,
            unit="MB",
            lower_is_better=True,
        ),
        emit(
            "P6",
            "bytes per person on disk (people + families + indexes)",
            size / stored,
            300,
            None,
            unit="bytes",
            lower_is_better=True,
            extra={
                "people": stored,
                "projected_289M_GB": round(size / stored * 289e6 / 1e9, 1),
            },
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=1_000_000)
    parser.add_argument("--workdir", type=Path, default=Path(".tepat/bench"))
    parser.add_argument("--jobs", type=int, default=None, help="default: the number of cores")
    args = parser.parse_args()
    run(server_url(Settings()), args.people, args.workdir, args.jobs)


if __name__ == "__main__":
    main()
