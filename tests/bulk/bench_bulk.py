"""P4 benchmark: a bulk NDJSON job against a bare FastAPI + one ANY() query, side by side.

    TEPAT_DATABASE_URL=postgresql://... python -m tests.bulk.bench_bulk [--lines 1000000]

Creates the database `tepat_bench_bulk` on that server (dropped at the end), imports a synthetic
release, starts both servers (uvicorn, 1 worker each), sends the same NIKs to both (the bulk job
as one streamed request; the baseline as sequential 1,000-NIK POSTs) and prints NIK/s, their
ratio and the bulk server's peak RSS (sampled every 20 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import ORJSONResponse

from app import db, migrate
from app.config import Settings
from app.ingest.importer import import_release
from app.services import clients, rule_sets
from app.synth.generate import generate_release
from tests.bulk.conftest import found_and_absent
from tests.bulk.duplex import stream_job
from tests.bulk.test_bulk_memory import Sampler, free_port, job_body
from tests.support import PURPOSE, auth

ROOT = Path(__file__).resolve().parents[2]
BENCH_DB = "tepat_bench_bulk"
RELEASE = "2026-01-23"


def baseline_app() -> FastAPI:
    """The P3/P4 baseline: POST 1,000 NIKs, one `nik = ANY($1)` query, rows as ORJSON."""
    app = FastAPI()
    state: dict[str, Any] = {}

    @app.on_event("startup")
    async def start() -> None:
        dsn = db.asyncpg_dsn(os.environ["TEPAT_DATABASE_URL"])
        state["pool"] = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
        state["key"] = await state["pool"].fetchval(
            "SELECT key FROM snapshots WHERE id = $1", RELEASE
        )

    @app.post("/baseline")
    async def lookup(request: Request) -> ORJSONResponse:
        niks = [int(n) for n in orjson.loads(await request.body())["niks"]]
        rows = await state["pool"].fetch(
            "SELECT * FROM people WHERE snapshot_key = $1 AND nik = ANY($2::int8[])",
            state["key"],
            niks,
        )
        return ORJSONResponse([dict(r) for r in rows])

    return app


async def prepare(server: str, people: int) -> tuple[str, str, list[str]]:
    admin = await asyncpg.connect(db.asyncpg_dsn(server))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}"')
        await admin.execute(f'CREATE DATABASE "{BENCH_DB}"')
    finally:
        await admin.close()
    url = db.sqlalchemy_url(server).set(database=BENCH_DB).render_as_string(hide_password=False)
    settings = Settings(database_url=url, env="test")
    engine = db.create_engine(settings)
    folder = Path(tempfile.mkdtemp()) / RELEASE
    generate_release(folder, people=people, seed=5, release=RELEASE)
    try:
        await migrate.run(engine, "upgrade", "head")
        async with engine.begin() as conn:
            await rule_sets.ensure_shipped(conn)
            _, key = await clients.create_client(
                conn,
                name="bench",
                programs=["PKH", "BPNT", "PBI_JK", "SEKOLAH_RAKYAT"],
                field_groups=["decision", "decile", "membership"],
                purposes=[PURPOSE],
            )
        raw = await db.connect_raw(settings)
        try:
            assert (await import_release(raw, folder)).published
            niks = [str(r[0]) for r in await raw.fetch("SELECT nik FROM people")]
        finally:
            await raw.close()
    finally:
        await engine.dispose()
    return url, key, niks


def serve(app: str, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            app,
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=1)
            return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{app} did not start")


def run_bulk(port: int, key: str, niks: list[str], lines: int, pid: int) -> tuple[float, int, int]:
    count = 0

    def on_line(_: bytes) -> None:
        nonlocal count
        count += 1

    with Sampler(pid) as rss:
        started = time.perf_counter()
        status = stream_job(port, auth(key), job_body(niks, lines, batch=5000), on_line)
        seconds = time.perf_counter() - started
    assert status == 200 and count == lines + 1, (status, count)
    return lines / seconds, rss.peak, count


def run_baseline(port: int, niks: list[str], lines: int) -> float:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        started = time.perf_counter()
        for start in range(0, lines, 1000):
            batch = [niks[(start + i) % len(niks)] for i in range(min(1000, lines - start))]
            r = client.post("/baseline", content=orjson.dumps({"niks": batch}))
            r.raise_for_status()
        return lines / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--found-every", type=int, default=2, help="1 in N lines is found")
    args = parser.parse_args()
    server = os.environ["TEPAT_DATABASE_URL"]
    url, key, release = asyncio.run(prepare(server, args.people))
    niks = found_and_absent(release, 200_000, every=args.found_every)
    env = {
        **os.environ,
        "TEPAT_DATABASE_URL": url,
        "TEPAT_ENV": "test",
        "TEPAT_LOG_LEVEL": "WARNING",
    }
    bulk_port, base_port = free_port(), free_port()
    bulk = serve("app.main:create_app", bulk_port, env)
    base = serve("tests.bulk.bench_bulk:baseline_app", base_port, env)
    try:
        run_bulk(bulk_port, key, niks, 20_000, bulk.pid)  # warm-up
        run_baseline(base_port, niks, 20_000)
        idle = Sampler(bulk.pid).process.memory_info().rss
        rate, peak, _ = run_bulk(bulk_port, key, niks, args.lines, bulk.pid)
        base_rate = run_baseline(base_port, niks, args.lines)
    finally:
        for proc in (bulk, base):
            proc.terminate()
            proc.wait(timeout=15)
    print(
        orjson.dumps(
            {
                "target": "P4",
                "lines": args.lines,
                "found_share": 1 / args.found_every,
                "bulk_nik_per_s": round(rate),
                "baseline_nik_per_s": round(base_rate),
                "ratio": round(rate / base_rate, 3),
                "goal": ">= 0.5",
                "rss_idle_mb": round(idle / 2**20),
                "rss_peak_mb": round(peak / 2**20),
                "rss_goal_mb": 250,
            }
        ).decode()
    )

    async def drop() -> None:
        admin = await asyncpg.connect(db.asyncpg_dsn(server))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
        finally:
            await admin.close()

    asyncio.run(drop())


if __name__ == "__main__":
    main()
