"""What `tepat audit checkpoint` and `tepat audit verify --checkpoints` cost on a long trail (run
by hand).

    python -m bench.checkpoint [--records 1000000] [--more 10000] [SERVER_URL]

Creates a scratch database on that server, migrates it, appends RECORDS chained audit records
(the writer's own `append`, 10,000 a transaction), then measures, in one run:

* baseline: one pass over the records as the checkpoint reads them (`records_from`, 20,000 a
  step) hashing each record's canonical bytes as a leaf: the least any checkpoint over these
  records must do;
* the first checkpoint: the whole Merkle tree built and stored, the root signed and published;
* the next checkpoint after MORE new records: what cron pays every few minutes;
* `verify --checkpoints` against both published checkpoints (a full rebuild of the tree).

Prints one JSON line per measure (seconds, records/s, ratio baseline/measure) and drops the
database. The audit tables' size on disk is reported too. Not a timed test (bench/README.md: ratios, never timed tests).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from app import db, migrate
from app.config import Settings
from app.repositories import tree as tree_repo
from app.services import audit, transparency
from tests.audit.conftest import make_entry

ORIGIN = "bench.tepat.local/audit-log"
KEY = b"bench-checkpoint-key"


async def fill(raw: asyncpg.Connection, n: int, batch: int = 10_000) -> None:
    now = dt.datetime.now(dt.UTC)
    done = 0
    while done < n:
        take = min(batch, n - done)
        records = [
            audit.unchained_record(make_entry(), KEY, now + dt.timedelta(microseconds=done + i))
            for i in range(take)
        ]
        async with raw.transaction():
            await audit.append(raw, records)
        done += take


async def read_and_hash(raw: asyncpg.Connection) -> int:
    seq, count = 1, 0
    while True:
        records = await tree_repo.records_from(raw, seq, transparency.BATCH)
        if not records:
            return count
        for r in records:
            transparency.leaf_of(r)
        count += len(records)
        seq += len(records)


def line(what: str, seconds: float, records: int, baseline: float | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "what": what,
        "records": records,
        "seconds": round(seconds, 2),
        "records_per_s": round(records / seconds) if seconds else None,
    }
    if baseline is not None:
        out["ratio_baseline_over_this"] = round(baseline / seconds, 3)
    print(json.dumps(out), flush=True)
    return out


async def main(server: str, records: int, more: int) -> None:
    name = f"tepat_bench_ckpt_{uuid.uuid4().hex[:6]}"
    admin = await asyncpg.connect(db.asyncpg_dsn(server))
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = db.sqlalchemy_url(server).set(database=name).render_as_string(hide_password=False)
    settings = Settings(database_url=url, env="test", db_pool_size=2)
    key = Ed25519PrivateKey.generate()
    try:
        engine = db.create_engine(settings)
        await migrate.run(engine, "upgrade", "head")
        await engine.dispose()
        raw = await asyncpg.connect(db.asyncpg_dsn(url))
        try:
            t = time.perf_counter()
            await fill(raw, records)
            line("fill: chained records appended (set-up)", time.perf_counter() - t, records, None)
            await raw.execute("VACUUM ANALYZE audit_log")

            t = time.perf_counter()
            await read_and_hash(raw)
            base = time.perf_counter() - t
            line("baseline: read every record and hash its leaf", base, records, base)

            with tempfile.TemporaryDirectory() as out:
                t = time.perf_counter()
                first = await transparency.make_checkpoint(raw, ORIGIN, key, Path(out))
                line("first checkpoint (whole tree)", time.perf_counter() - t, first.size, base)

                await fill(raw, more)
                t = time.perf_counter()
                second = await transparency.make_checkpoint(raw, ORIGIN, key, Path(out))
                seconds = time.perf_counter() - t
                line(f"next checkpoint after {more:,} new records", seconds, more, None)

                public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
                opener = transparency.opener(ORIGIN, [public])
                published = transparency.read_published(Path(out), opener)
                t = time.perf_counter()
                verdict = await transparency.verify_against(raw, published)
                seconds = time.perf_counter() - t
                if verdict.contradiction is not None or len(verdict.checked) != 2:
                    raise SystemExit(f"verify failed: {verdict}")
                line("verify --checkpoints (rebuild, 2 checkpoints)", seconds, second.size, base)
            sizes = await raw.fetchrow(
                "SELECT pg_total_relation_size('audit_log') AS log, "
                "pg_total_relation_size('audit_tree') AS tree"
            )
            assert sizes is not None
            print(
                json.dumps(
                    {
                        "what": "on disk, indexes included",
                        "audit_log_bytes_per_record": round(sizes["log"] / second.size),
                        "audit_tree_bytes_per_record": round(sizes["tree"] / second.size),
                    }
                )
            )
        finally:
            await raw.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--more", type=int, default=10_000)
    parser.add_argument(
        "server",
        nargs="?",
        default=os.environ.get(
            "TEPAT_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    args = parser.parse_args()
    asyncio.run(main(args.server, args.records, args.more))
