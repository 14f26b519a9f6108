"""SIGTERM under load: no new connections, every accepted request completes, audit flushed."""

from __future__ import annotations

import asyncio
import signal
import time

import httpx
import pytest

from tests.faults.conftest import LOCK_WAIT, World, auth, start_server, wait_for_backends
from tests.faults.load import send

pytestmark = pytest.mark.slow

IN_FLIGHT = 6
PATH = "/v1/people/lookup"


async def test_sigterm_lets_in_flight_requests_finish(world: World) -> None:
    server = await start_server(world, "sigterm", shutdown_timeout=20)
    headers = auth(await world.client_key("sigterm"))
    body = {"niks": world.r1_niks[:2]}
    try:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=15) as http:
            assert (await send(http, PATH, body, headers)).status == 200
            blocker = await world.raw()
            try:
                tx = blocker.transaction()
                await tx.start()
                await blocker.execute(
                    "LOCK TABLE people, families, decisions IN ACCESS EXCLUSIVE MODE"
                )
                flights = [
                    asyncio.create_task(send(http, PATH, body, headers)) for _ in range(IN_FLIGHT)
                ]
                await wait_for_backends(world, LOCK_WAIT, IN_FLIGHT)
                server.proc.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.5)
                # Stopped accepting: a new connection is refused while the old ones finish.
                async with httpx.AsyncClient(base_url=server.base_url, timeout=2) as fresh:
                    with pytest.raises(httpx.ConnectError):
                        await fresh.get("/healthz")
                assert server.proc.poll() is None
                await tx.rollback()
            finally:
                await blocker.close()
            answers = await asyncio.gather(*flights)
        started = time.monotonic()
        code = await asyncio.to_thread(server.proc.wait, 20)
        exit_seconds = time.monotonic() - started
    finally:
        server.terminate()

    assert [a.status for a in answers] == [200] * IN_FLIGHT
    assert code in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after a clean shutdown
    assert exit_seconds < 5
    log = server.log_text()
    assert "Traceback" not in log, log
    # The audit writer was flushed before the pools closed: every answer's record is durable.
    audit_ids = [a.body["meta"]["audit_id"] for a in answers if a.body]
    raw = await world.raw()
    try:
        stored = await raw.fetchval(
            "SELECT count(*) FROM audit_log WHERE id = ANY($1::text[])", audit_ids
        )
    finally:
        await raw.close()
    assert stored == IN_FLIGHT
