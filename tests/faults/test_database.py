"""Database faults under load: PostgreSQL stopped, frozen, a backend killed mid-request."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.faults.conftest import LOCK_WAIT, Server, World, auth, backends, wait_for_backends
from tests.faults.load import PROBLEM_JSON, Sample, hammer, send

pytestmark = pytest.mark.slow

DEADLINE = 4.0  # Settings.request_deadline's default, which the main server runs with
MARGIN = 1.0
OUTAGE = 10.0
RECOVERY = 2.0


def _body(niks: list[str]) -> Any:
    def make(i: int) -> dict[str, Any]:
        return {"niks": [niks[i % len(niks)], niks[(i * 7 + 3) % len(niks)]]}

    return make


def _assert_only_200_or_503(samples: list[Sample]) -> None:
    statuses = Counter(s.status for s in samples)
    assert set(statuses) <= {200, 503}, statuses
    for s in samples:
        if s.status == 503:
            assert s.retry_after is not None and int(s.retry_after) >= 1
            assert s.content_type.startswith(PROBLEM_JSON)
            assert s.body is not None and s.body["status"] == 503


async def _probe(base_url: str, path: str) -> int:
    async with httpx.AsyncClient(base_url=base_url, timeout=DEADLINE + 5) as http:
        try:
            return (await http.get(path)).status_code
        except httpx.HTTPError:
            return 0


async def test_outage_of_10_s_gets_503_then_recovers_without_restart(
    world: World, main_server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    key = await world.client_key("outage")
    stop = asyncio.Event()
    load = asyncio.create_task(
        hammer(
            main_server.base_url,
            auth(key),
            _body(world.r1_niks),
            workers=8,
            stop=stop,
            max_seconds=60,
            max_requests=200_000,
        )
    )
    await asyncio.sleep(1.5)
    down_at = time.monotonic()
    await asyncio.to_thread(world.cluster.stop, "fast")
    down = time.monotonic()
    ready: list[int] = []
    healthy: list[int] = []
    while time.monotonic() < down_at + OUTAGE:
        ready.append(await _probe(main_server.base_url, "/readyz"))
        healthy.append(await _probe(main_server.base_url, "/healthz"))
        await asyncio.sleep(0.5)
    up_at = time.monotonic()
    await asyncio.to_thread(world.cluster.start)
    up = time.monotonic()
    await asyncio.sleep(3)
    stop.set()
    samples = await load
    ready_after = await _probe(main_server.base_url, "/readyz")

    during = [s for s in samples if s.started >= down and s.ended <= up_at]
    unavailable = sum(s.status == 503 for s in during)
    other = len(during) - unavailable
    longest = max(s.seconds for s in samples)
    recovered = [s.ended for s in samples if s.status == 200 and s.started >= up]
    first_success = min(recovered) - up if recovered else float("inf")
    with capsys.disabled():
        print(
            f"\n[outage] {len(during)} requests sent during the {up_at - down:.1f} s outage: "
            f"{unavailable} got 503, {other} got anything else; longest response "
            f"{longest * 1000:.0f} ms (all {len(samples)} requests); first success "
            f"{first_success * 1000:.0f} ms after PostgreSQL was back; /readyz during: "
            f"{dict(Counter(ready))}, /healthz during: {dict(Counter(healthy))}"
        )
    _assert_only_200_or_503(samples)
    assert during and other == 0
    assert longest <= DEADLINE + MARGIN
    assert first_success <= RECOVERY
    assert set(ready) == {503} and set(healthy) == {200}
    assert ready_after == 200
    # The audit writer came back too: a success needs its audit record.
    assert sum(s.status == 200 for s in samples if s.started >= up) > 10


async def test_frozen_database_answers_503_within_the_deadline(
    world: World, main_server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    """Unreachable without being down (every PostgreSQL process stopped): nothing hangs."""
    key = await world.client_key("frozen")
    stop = asyncio.Event()
    load = asyncio.create_task(
        hammer(
            main_server.base_url,
            auth(key),
            _body(world.r1_niks),
            workers=8,
            stop=stop,
            max_seconds=40,
        )
    )
    await asyncio.sleep(1.0)
    frozen = time.monotonic()
    world.cluster.freeze()
    try:
        ready = await _probe(main_server.base_url, "/readyz")
        await asyncio.sleep(6.0)
    finally:
        world.cluster.thaw()
    thawed = time.monotonic()
    await asyncio.sleep(3)
    stop.set()
    samples = await load

    longest = max(s.seconds for s in samples)
    during = [s for s in samples if s.started >= frozen and s.ended <= thawed]
    recovered = [s.ended for s in samples if s.status == 200 and s.started >= thawed]
    first_success = min(recovered) - thawed if recovered else float("inf")
    with capsys.disabled():
        print(
            f"\n[frozen] {len(during)} requests during the freeze: "
            f"{dict(Counter(s.status for s in during))}; longest {longest * 1000:.0f} ms; "
            f"first success {first_success * 1000:.0f} ms after the thaw"
        )
    _assert_only_200_or_503(samples)
    assert ready == 503
    assert any(s.status == 503 for s in during)
    assert longest <= DEADLINE + MARGIN
    assert first_success <= RECOVERY


async def test_terminated_backend_fails_only_its_own_request(
    world: World, main_server: Server
) -> None:
    key = await world.client_key("terminate")
    headers = auth(key)
    body = {"niks": world.r1_niks[:3]}
    async with httpx.AsyncClient(base_url=main_server.base_url, timeout=15) as http:
        assert (await send(http, "/v1/people/lookup", body, headers)).status == 200
        # Hold every request in flight (waiting for a lock), then kill one of their backends.
        blocker = await world.raw()
        try:
            tx = blocker.transaction()
            await tx.start()
            # The data tables: pinning comes from the catalog cache, the rows from the registry.
            await blocker.execute("LOCK TABLE people, families, decisions IN ACCESS EXCLUSIVE MODE")
            flights = [
                asyncio.create_task(send(http, "/v1/people/lookup", body, headers))
                for _ in range(5)
            ]
            waiting = await wait_for_backends(world, LOCK_WAIT, 5)
            await blocker.execute("SELECT pg_terminate_backend($1)", waiting[0])
            await asyncio.sleep(0.2)
            await tx.rollback()
        finally:
            await blocker.close()
        answers = await asyncio.gather(*flights)
        assert sorted(a.status for a in answers) == [200, 200, 200, 200, 503]
        failed = next(a for a in answers if a.status == 503)
        assert failed.retry_after is not None and failed.content_type.startswith(PROBLEM_JSON)

        # Idle pooled connections killed between requests are replaced, never handed out.
        idle = await backends(world, "state = 'idle'")
        assert idle
        raw = await world.raw()
        try:
            for pid in idle:
                await raw.execute("SELECT pg_terminate_backend($1)", pid)
        finally:
            await raw.close()
        await asyncio.sleep(0.1)
        after = await asyncio.gather(
            *(send(http, "/v1/people/lookup", body, headers) for _ in range(20))
        )
        assert [a.status for a in after] == [200] * 20
