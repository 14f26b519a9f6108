"""Two server processes against one database: a client's daily quota and rate limit are shared,
not per process. Each request goes to the other server in turn; the NIKs accepted in total
stay within the one limit (per process, each server alone would have let as many through)."""

from __future__ import annotations

import contextlib
import csv
import time
from pathlib import Path

import httpx

from tests.server import running_server
from tests.support import MakeClient, auth

QUOTA = 150  # NIKs a day for the quota client
BURST = 200  # the bucket; refilled at 1 NIK a second
BATCH = 10  # NIKs a request
REQUESTS = 60  # 600 NIKs asked by each client: 4x the quota, 3x the bucket


async def _hammer(
    servers: list[httpx.AsyncClient], key: str, niks: list[str]
) -> tuple[list[int], set[str]]:
    """Alternate between the servers; NIKs accepted by each, and the refusal codes seen."""
    accepted = [0] * len(servers)
    codes: set[str] = set()
    for i in range(REQUESTS):
        which = i % len(servers)
        batch = niks[(i * BATCH) % (len(niks) - BATCH) :][:BATCH]
        r = await servers[which].post("/v1/people/lookup", json={"niks": batch}, headers=auth(key))
        if r.status_code == 200:
            accepted[which] += len(batch)
        else:
            assert r.status_code == 429, r.text
            codes.add(r.json()["code"])
    return accepted, codes


async def test_the_quota_and_the_rate_limit_hold_across_two_processes(
    database_url: str, published: Path, make_client: MakeClient, tmp_path: Path
) -> None:
    with (published / "anggota.csv").open() as f:
        niks = [r["nik"] for r in csv.DictReader(f)][:1000]
    quota_key = await make_client(daily_quota=QUOTA)
    rate_key = await make_client(daily_quota=0)  # no quota: only the bucket limits it
    env = {
        "TEPAT_RATE_LIMIT_NIKS_PER_SECOND": "1",
        "TEPAT_RATE_LIMIT_BURST": str(BURST),
    }
    with contextlib.ExitStack() as stack:
        first = stack.enter_context(running_server(database_url, tmp_path / "a.log", env))
        second = stack.enter_context(running_server(database_url, tmp_path / "b.log", env))
        async with (
            httpx.AsyncClient(base_url=first.base_url, timeout=15) as a,
            httpx.AsyncClient(base_url=second.base_url, timeout=15) as b,
        ):
            accepted, codes = await _hammer([a, b], quota_key, niks)
            assert sum(accepted) == QUOTA  # exactly: leases grant only what the day has left
            assert min(accepted) > 0  # both processes served the client
            assert codes == {"quota_exceeded"}

            started = time.monotonic()
            accepted, codes = await _hammer([a, b], rate_key, niks)
            elapsed = time.monotonic() - started
            assert sum(accepted) <= BURST + elapsed * 1 + BATCH
            assert sum(accepted) >= BURST - BATCH  # the bucket was spent, not refused early
            assert min(accepted) > 0
            assert codes == {"rate_limited"}
