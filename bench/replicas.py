"""`python -m bench.replicas [--people N] [--duration S] [--rounds R]`: what routing reads to a
replica costs.

Starts its own PostgreSQL primary and a streaming replica of it (`pg_basebackup -R`) on loopback,
prepares the bench release on the primary (as `python -m bench` does), then measures P1 (REST, one
NIK) and P3 (1,000 NIKs) for

* **one**: one API process, every read on the primary (no replica configured), and
* **two**: two API processes (uvicorn workers) reading from the primary and the replica
  (`TEPAT_DATABASE_REPLICA_URLS`), audit and catalog on the primary, and
* **two_primary** (control): two API processes, every read on the primary,

alternating, `--rounds` times each. Both run on this machine's two cores together with both
PostgreSQL servers and the load generator, so the ratio shows the overhead of routing, not the
scale a second machine would give. Prints one JSON line per round and target, then the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from app import db
from bench.prepare import log, prepare
from bench.suite import BATCH, CONNECTIONS_BATCH, CONNECTIONS_SMALL, MODES, Run
from tests.faults.cluster import Cluster


async def _caught_up(primary: str, replica: str) -> None:
    p = await asyncpg.connect(db.asyncpg_dsn(primary))
    r = await asyncpg.connect(db.asyncpg_dsn(replica))
    try:
        target = await p.fetchval("SELECT pg_current_wal_lsn()::text")
        until = time.monotonic() + 300
        while not await r.fetchval(f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn"):
            if time.monotonic() > until:
                raise SystemExit("the replica did not catch up in 300 s")
            await asyncio.sleep(0.2)
    finally:
        await p.close()
        await r.close()


def _on(cluster: Cluster, database: str) -> str:
    return db.sqlalchemy_url(cluster.url).set(database=database).render_as_string(False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replicas", description=__doc__)
    parser.add_argument("--people", type=int, default=MODES["quick"].people)
    parser.add_argument("--duration", type=float, default=MODES["quick"].duration)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path(".tepat/bench"))
    args = parser.parse_args(argv)

    mode = MODES["quick"]
    mode = dataclasses.replace(mode, people=args.people, duration=args.duration)
    primary, replica = Cluster(), Cluster()
    runs: list[Run] = []
    try:
        primary.init()
        with (primary.data / "postgresql.conf").open("a") as conf:
            conf.write("max_connections = 200\n")
        primary.start()
        asyncio.run(_create_database(primary.url))
        url = _on(primary, "tepat_bench")
        args.workdir.mkdir(parents=True, exist_ok=True)
        data = prepare(url, args.people, args.workdir)
        replica.standby_of(primary)
        replica.start()
        asyncio.run(_caught_up(url, _on(replica, "tepat_bench")))
        log(f"replica of {data.release} ready")

        one = Run(mode, 1, args.workdir / "replicas-one", url, data)
        two = Run(mode, 2, args.workdir / "replicas-two", url, data)
        # Control: two processes on the primary alone, so routing is told apart from the second
        # process sharing the cores.
        both = Run(mode, 2, args.workdir / "replicas-both", url, data)
        runs = [one, two, both]
        # The replica's URL as the service's own login (the role is replicated from the primary).
        login = make_url(two.service_login())
        replica_login = db.sqlalchemy_url(replica.url).set(
            database="tepat_bench", username=login.username, password=login.password
        )
        two.extra_env = {
            "TEPAT_DATABASE_REPLICA_URLS": replica_login.render_as_string(hide_password=False)
        }
        setups = (("one", one), ("two_primary", both), ("two", two))
        results: dict[str, dict[str, list[float]]] = {n: {"P1": [], "P3": []} for n, _ in setups}
        for round_ in range(args.rounds):
            for name, run in setups:
                run.cache.clear()
                p1 = run.rest_single().rps
                bodies = run.lookup_bodies(mode.bodies, BATCH)
                p3 = run.load(
                    "rest-1000", "service", "/v1/people/lookup", bodies, CONNECTIONS_BATCH
                )
                results[name]["P1"].append(p1)
                results[name]["P3"].append(p3.rps * BATCH)
                line: dict[str, Any] = {
                    "round": round_ + 1,
                    "setup": name,
                    "P1_req_s": round(p1, 1),
                    "P3_nik_s": round(p3.rps * BATCH),
                }
                print(json.dumps(line), flush=True)
        summary: dict[str, Any] = {"target": "P10", "people": args.people, "rounds": args.rounds}
        for target in ("P1", "P3"):
            a = statistics.median(results["one"][target])
            b = statistics.median(results["two"][target])
            c = statistics.median(results["two_primary"][target])
            summary[target] = {
                "one_primary": round(a, 1),
                "two_primary": round(c, 1),
                "two_with_replica": round(b, 1),
                "ratio": round(b / a, 3),  # the figure asked for: two with a replica / one
                "ratio_vs_two_primary": round(b / c, 3),  # routing's own cost
            }
        summary["connections"] = {"P1": CONNECTIONS_SMALL, "P3": CONNECTIONS_BATCH}
        print(json.dumps(summary), flush=True)
        log(
            f"two processes with a replica vs one on the primary: P1 {summary['P1']['ratio']}x, "
            f"P3 {summary['P3']['ratio']}x; vs two on the primary: "
            f"P1 {summary['P1']['ratio_vs_two_primary']}x, "
            f"P3 {summary['P3']['ratio_vs_two_primary']}x (medians)"
        )
        return 0
    finally:
        for run in runs:
            run.stop_all()
        replica.remove()
        primary.remove()


async def _create_database(url: str) -> None:
    conn = await asyncpg.connect(db.asyncpg_dsn(url))
    try:
        await conn.execute("CREATE DATABASE tepat_bench")
    finally:
        await conn.close()


if __name__ == "__main__":
    sys.exit(main())
