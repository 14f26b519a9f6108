"""The pieces without a server: the deadline watchdog, error classification (the rate limit and
quota: tests/services/test_allowance.py)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import pytest
from sqlalchemy import exc as sa_exc

from app.http.limits import Overload
from app.resilience import is_unavailable


def _scope(path: str = "/v1/people/lookup") -> dict[str, Any]:
    return {"type": "http", "path": path, "method": "POST", "headers": [], "state": {}}


async def test_deadline_answers_503_without_waiting_for_a_stuck_cleanup() -> None:
    """The request's clean-up outlives its cancellation (as a connection close on a frozen
    server does): the client still gets its 503 at the deadline, and nothing leaks out."""
    cleaned = asyncio.Event()

    async def stuck(scope: Any, receive: Any, send: Any) -> None:
        try:
            await asyncio.sleep(10)
        finally:
            await asyncio.shield(asyncio.sleep(0.5))
            cleaned.set()

    sent: list[tuple[float, dict[str, Any]]] = []

    async def send(message: Any) -> None:
        sent.append((time.monotonic(), message))

    async def receive() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    mw = Overload(stuck, max_concurrency=10, deadline=0.2)
    started = time.monotonic()
    await mw(_scope(), receive, send)
    assert cleaned.is_set()
    assert [m["type"] for _, m in sent] == ["http.response.start", "http.response.body"]
    assert sent[0][1]["status"] == 503
    assert (b"retry-after", b"1") in sent[0][1]["headers"]
    assert sent[0][0] - started < 0.4  # at the deadline, not after the 0.5 s clean-up
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    assert mw.in_flight == 0 and mw.expired == 1


async def test_shedding_answers_at_once_and_spares_the_probes() -> None:
    release = asyncio.Event()

    async def slow(scope: Any, receive: Any, send: Any) -> None:
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    statuses: list[int] = []

    async def send(message: Any) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def receive() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    mw = Overload(slow, max_concurrency=2, deadline=5)
    held = [asyncio.create_task(mw(_scope(), receive, send)) for _ in range(2)]
    await asyncio.sleep(0.01)
    await asyncio.wait_for(mw(_scope(), receive, send), 0.1)
    assert statuses == [503]
    probe = asyncio.create_task(mw(_scope("/readyz"), receive, send))
    await asyncio.sleep(0.01)
    release.set()
    await asyncio.wait_for(asyncio.gather(*held, probe), 1)
    assert sorted(statuses) == [200, 200, 200, 503]


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connection refused"),
        TimeoutError(),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.AdminShutdownError("terminating connection"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
        asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout"),
        sa_exc.TimeoutError("QueuePool limit of size 10 overflow 0 reached"),
        sa_exc.OperationalError("SELECT 1", {}, ConnectionResetError()),
        sa_exc.DBAPIError("SELECT 1", {}, Exception("x"), connection_invalidated=True),
    ],
)
def test_outages_are_unavailable(error: BaseException) -> None:
    assert is_unavailable(error)


@pytest.mark.parametrize(
    "error",
    [
        ValueError("bad"),
        FileNotFoundError(2, "No such file", "/x"),
        asyncpg.exceptions.UndefinedTableError('relation "x" does not exist'),
        asyncpg.exceptions.DataError("invalid input for query argument"),
        sa_exc.ProgrammingError("SELECT x", {}, Exception("syntax")),
    ],
)
def test_bugs_stay_internal_errors(error: BaseException) -> None:
    assert not is_unavailable(error)


def test_a_wrapped_asyncpg_error_is_found_through_its_causes() -> None:
    wrapped = sa_exc.DBAPIError("SELECT 1", {}, Exception("wrapped"))
    wrapped.__cause__ = asyncpg.exceptions.CannotConnectNowError("shutting down")
    assert is_unavailable(wrapped)
