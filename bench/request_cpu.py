"""CPU per request in one server process: REST `people/lookup` against DCI `sync/search`.

    TEPAT_DATABASE_URL=... python -m bench.request_cpu [--rounds 3] [--requests 60]

A diagnosis beside P11, not a target: on a shared 2-core machine P11's throughput ratio swings
with whatever else runs, while the CPU one process spends per request does not. The app runs
in this process (lifespan, audit writer and receipt signer child as `tepat serve` has them;
receipts on), driven through httpx's ASGI transport by 32 concurrent callers, one NIK a
request, the two faces alternating round by round. Printed: this process's CPU microseconds
per request (the client's share included, the same for both: `Accept-Encoding: identity`, as
the P11 load sends), per round, and the ratio of the medians. Needs a database the bench has
prepared (a published release) and its signing key (`.tepat/bench/audit-signing-key.pem`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from pathlib import Path

import asyncpg
import httpx
import orjson

PURPOSE = "pbi-verification"


async def _measure(rounds: int, requests: int) -> None:
    from app import db
    from app.config import Settings
    from app.main import create_app
    from app.services import clients

    settings = Settings()
    dsn = db.asyncpg_dsn(db.resolve_url(settings))
    conn = await asyncpg.connect(dsn)
    try:
        release, key = await conn.fetchrow(
            "SELECT id, key FROM snapshots WHERE status = 'published' ORDER BY key DESC LIMIT 1"
        )
        niks = [
            f"{r[0]:016d}" for r in await conn.fetch(f"SELECT nik FROM people_{key} LIMIT 2000")
        ]
    finally:
        await conn.close()
    engine = db.create_engine(settings)
    async with engine.begin() as c:
        _, api_key = await clients.create_client(
            c,
            name="bench request_cpu",
            programs=["PKH", "BPNT", "PBI_JK", "SEKOLAH_RAKYAT"],
            field_groups=["decision", "decile", "membership", "identity", "attributes", "health"],
            purposes=[PURPOSE],
        )
    await engine.dispose()
    rest = [orjson.dumps({"niks": [n]}) for n in niks]
    dci = []
    for n in niks:
        item = {
            "reference_id": "r1",
            "timestamp": "2026-03-01T09:30:00+07:00",
            "search_criteria": {"query_type": "idtype-value", "query": {"type": "NIK", "value": n}},
        }
        header = {
            "message_id": "m1",
            "message_ts": "2026-03-01T09:30:00+07:00",
            "action": "search",
            "sender_id": "bench",
            "total_count": 1,
            "meta": {"snapshot": release},
        }
        message = {"transaction_id": "t1", "search_request": [item]}
        dci.append(orjson.dumps({"header": header, "message": message}))
    headers = {
        "Authorization": f"Bearer {api_key}",
        "Content-Type": "application/json",
        "Accept-Encoding": "identity",
        "X-Purpose": PURPOSE,
    }
    app = create_app(settings)
    faces = {"REST": ("/v1/people/lookup", rest), "DCI": ("/dci/registry/sync/search", dci)}
    cpu: dict[str, list[float]] = {"REST": [], "DCI": []}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:

            async def run(path: str, bodies: list[bytes]) -> float:
                async def caller(i: int) -> None:
                    for j in range(requests):
                        body = bodies[(i * requests + j) % len(bodies)]
                        r = await client.post(path, content=body, headers=headers)
                        if r.status_code != 200:
                            raise SystemExit(f"{path}: {r.status_code} {r.text[:300]}")

                started = time.process_time()
                await asyncio.gather(*(caller(i) for i in range(32)))
                return (time.process_time() - started) / (32 * requests) * 1e6

            for path, bodies in faces.values():  # warm up both
                await client.post(path, content=bodies[0], headers=headers)
            for done in range(rounds):
                for face, (path, bodies) in faces.items():
                    cpu[face].append(await run(path, bodies))
                print(
                    f"round {done + 1}: REST {cpu['REST'][-1]:.0f} us, DCI {cpu['DCI'][-1]:.0f} us"
                )
    rest_cpu, dci_cpu = statistics.median(cpu["REST"]), statistics.median(cpu["DCI"])
    print(
        f"median CPU per request: REST {rest_cpu:.0f} us, DCI {dci_cpu:.0f} us; "
        f"REST/DCI {rest_cpu / dci_cpu:.3f} (load average {os.getloadavg()[0]:.2f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=60, help="per caller, 32 callers")
    parser.add_argument(
        "--signing-key", type=Path, default=Path(".tepat/bench/audit-signing-key.pem")
    )
    args = parser.parse_args()
    os.environ.setdefault("TEPAT_AUDIT_SIGNING_KEY", str(args.signing_key.resolve()))
    os.environ.setdefault("TEPAT_AUDIT_HMAC_KEY", "bench-only-audit-key-not-a-secret")
    os.environ.setdefault("TEPAT_RATE_LIMIT_NIKS_PER_SECOND", "0")
    os.environ.setdefault("TEPAT_AUDIT_RECEIPTS", "true")
    os.environ.setdefault("TEPAT_JOBS_WORKER", "false")
    asyncio.run(_measure(args.rounds, args.requests))


if __name__ == "__main__":
    main()
