"""Audit writer throughput: group commit vs one transaction per record (run by hand).

    python -m bench.audit_writer [postgresql://postgres@127.0.0.1:5432/postgres]

Creates a scratch database on that server, migrates it, records N entries from C concurrent
tasks (each waits for its record to be durable, as a request does) with each configuration,
prints records/s, batches and latency, and drops the database. Not a timed test (bench/README.md: ratios, never timed tests).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
import uuid

import asyncpg

from app import db, migrate
from app.config import Settings
from app.services import audit
from tests.audit.conftest import make_entry

RECORDS = 5_000
TASKS = 64


async def run(settings: Settings, url: str, label: str, **kw: float) -> dict[str, float]:
    engine = db.create_engine(settings, url=url)
    writer = audit.AuditWriter(engine, b"bench-key", **kw)  # type: ignore[arg-type]
    latencies: list[float] = []
    per_task = RECORDS // TASKS

    async def client(i: int) -> None:
        client_id = f"bench-{i}"
        for _ in range(per_task):
            t = time.perf_counter()
            await writer.record(make_entry(client_id))
            latencies.append(time.perf_counter() - t)

    async with audit.running(writer):
        await writer.record(make_entry("warm-up"))
        started = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(TASKS)))
        seconds = time.perf_counter() - started
    await engine.dispose()
    latencies.sort()
    n = len(latencies)
    result = {
        "records": n,
        "seconds": round(seconds, 3),
        "records_per_s": round(n / seconds),
        "batches": writer.stats.batches - 1,
        "mean_batch": round(n / max(1, writer.stats.batches - 1), 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(latencies[int(n * 0.99) - 1] * 1000, 2),
    }
    print(f"{label:>28}: {result}")
    return result


async def main(server: str) -> None:
    name = f"tepat_bench_audit_{uuid.uuid4().hex[:6]}"
    admin = await asyncpg.connect(db.asyncpg_dsn(server))
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = db.sqlalchemy_url(server).set(database=name).render_as_string(hide_password=False)
    settings = Settings(database_url=url, env="test", db_pool_size=4)
    try:
        engine = db.create_engine(settings)
        await migrate.run(engine, "upgrade", "head")
        await engine.dispose()
        print(f"{RECORDS:,} records from {TASKS} concurrent tasks, each awaiting its commit")
        group = await run(settings, url, "group commit (512, 2 ms)")
        single = await run(settings, url, "one commit per record", max_batch=1, max_wait=0)
        print(f"ratio group/single: {group['records_per_s'] / single['records_per_s']:.1f}x")
        check = db.create_engine(settings)
        async with check.connect() as conn:
            print("chain:", (await audit.verify_chain(conn)).model_dump(include={"ok", "checked"}))
        await check.dispose()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    default = os.environ.get(
        "TEPAT_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else default))
