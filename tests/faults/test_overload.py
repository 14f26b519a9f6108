"""Overload: the per-client rate limit counts NIKs; past the concurrency limit, 503 at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.faults.conftest import (
    LOCK_WAIT,
    Server,
    World,
    auth,
    start_server,
    wait_for_backends,
)
from tests.faults.load import PROBLEM_JSON, send

pytestmark = pytest.mark.slow

RATE = 10  # NIKs a second: refills are negligible over the few seconds a test takes
BURST = 2000
CONCURRENCY = 4
PATH = "/v1/people/lookup"


@pytest.fixture(scope="module")
async def limited(world: World) -> AsyncIterator[Server]:
    server = await start_server(
        world,
        "limited",
        rate_limit_niks_per_second=RATE,
        rate_limit_burst=BURST,
        max_concurrency=CONCURRENCY,
    )
    yield server
    server.terminate()


async def test_rate_limit_counts_niks_not_requests(world: World, limited: Server) -> None:
    batch = {"niks": world.r1_niks[:1000]}
    one = {"niks": world.r1_niks[:1]}
    big, small = auth(await world.client_key("batches")), auth(await world.client_key("singles"))
    async with httpx.AsyncClient(base_url=limited.base_url, timeout=15) as http:
        # Three requests of 1,000 NIKs: the third is over the burst of 2,000.
        answers = [await send(http, PATH, batch, big) for _ in range(3)]
        assert [a.status for a in answers] == [200, 200, 429]
        refused = answers[2]
        assert refused.content_type.startswith(PROBLEM_JSON)
        assert refused.body is not None and refused.body["code"] == "rate_limited"
        assert refused.retry_after is not None
        # 1,000 NIKs over the tokens left, at 10 a second: ~100 s, not "1".
        assert 60 <= int(refused.retry_after) <= 101

        # Another client's 30 one-NIK requests pass (its own bucket; 30 NIKs, not 30 "requests")
        # then its 1,000-NIK batch passes (1,030 NIKs) and the next one does not (2,030).
        singles = [await send(http, PATH, one, small) for _ in range(30)]
        assert {s.status for s in singles} == {200}
        assert (await send(http, PATH, batch, small)).status == 200
        assert (await send(http, PATH, batch, small)).status == 429
        # Refused NIKs are not charged: a single NIK still fits what is left.
        assert (await send(http, PATH, one, small)).status == 200


async def test_excess_concurrency_is_shed_with_503_at_once(world: World, limited: Server) -> None:
    headers = auth(await world.client_key("shed"))
    body = {"niks": world.r1_niks[:2]}
    async with httpx.AsyncClient(base_url=limited.base_url, timeout=15) as http:
        assert (await send(http, PATH, body, headers)).status == 200  # the key is cached now
        blocker = await world.raw()
        try:
            tx = blocker.transaction()
            await tx.start()
            await blocker.execute("LOCK TABLE people, families, decisions IN ACCESS EXCLUSIVE MODE")
            held = [
                asyncio.create_task(send(http, PATH, body, headers)) for _ in range(CONCURRENCY)
            ]
            await wait_for_backends(world, LOCK_WAIT, CONCURRENCY)
            started = time.monotonic()
            shed = await asyncio.gather(*(send(http, PATH, body, headers) for _ in range(10)))
            elapsed = time.monotonic() - started
            health = await http.get("/healthz")
            await tx.rollback()
        finally:
            await blocker.close()
        assert {s.status for s in shed} == {503}
        assert all(s.retry_after == "1" and s.content_type.startswith(PROBLEM_JSON) for s in shed)
        assert max(s.seconds for s in shed) < 0.5 and elapsed < 1.0  # not queued
        assert health.status_code == 200  # probes are never shed
        assert [h.status for h in await asyncio.gather(*held)] == [200] * CONCURRENCY
