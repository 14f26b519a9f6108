"""Concurrent small lookups share statements (app.services.coalesce), on a real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from app import db
from app.config import Settings
from app.services.coalesce import Coalescer

# The key is the first column; the last parameter is the keys. `$1` multiplies, `$2` may sleep.
QUERY = "SELECT k, k * $1::int8, pg_sleep($2) FROM unnest($3::int8[]) AS k"


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(db.asyncpg_dsn(db.resolve_url(settings)), min_size=0, max_size=6)
    try:
        yield p
    finally:
        await p.close()


class Counting:
    """A run(read) that counts statements running at once."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.now = 0
        self.most = 0

    async def __call__(
        self, read: Callable[[asyncpg.Connection], Awaitable[list[asyncpg.Record]]]
    ) -> list[asyncpg.Record]:
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            async with self.pool.acquire() as conn:
                return await read(conn)
        finally:
            self.now -= 1


async def test_lookups_arriving_together_share_statements_and_get_their_own_rows(
    pool: asyncpg.Pool,
) -> None:
    connect = Counting(pool)
    c = Coalescer(connect, max_running=2)
    asks = [[i, i + 1000] for i in range(200)]
    answers = await asyncio.gather(*(c.rows(QUERY, (3, 0.0), keys) for keys in asks))
    for keys, rows in zip(asks, answers, strict=True):
        assert {k: rows[k][1] for k in keys} == {k: 3 * k for k in keys}
    assert c.stats.lookups == 200
    assert c.stats.statements < 20  # 200 lookups, a handful of statements
    assert connect.most <= 2


async def test_different_parameters_are_never_merged(pool: asyncpg.Pool) -> None:
    c = Coalescer(Counting(pool), max_running=4)
    by3, by5 = await asyncio.gather(c.rows(QUERY, (3, 0.0), [7]), c.rows(QUERY, (5, 0.0), [7]))
    assert (by3[7][1], by5[7][1]) == (21, 35)
    assert c.stats.statements == 2


async def test_batches_wait_for_a_free_slot_and_grow(pool: asyncpg.Pool) -> None:
    connect = Counting(pool)
    c = Coalescer(connect, max_running=1)
    first = asyncio.ensure_future(c.rows(QUERY, (1, 0.2), [1]))
    await asyncio.sleep(0.05)  # the first statement is running (0.2 s)
    later = [asyncio.ensure_future(c.rows(QUERY, (1, 0.2), [k])) for k in range(2, 30)]
    await asyncio.sleep(0)
    await asyncio.gather(first, *later)
    assert c.stats.statements == 2  # the 28 that came during the first share the second
    assert c.stats.largest == 28
    assert connect.most == 1


async def test_a_failed_statement_fails_every_waiter_and_the_next_batch_runs(
    pool: asyncpg.Pool,
) -> None:
    c = Coalescer(Counting(pool), max_running=2)
    bad = "SELECT k, 1 / ($1::int8 - 1), $2::float FROM unnest($3::int8[]) AS k"  # $1 = 1: error
    results = await asyncio.gather(
        *(c.rows(bad, (1, 0.0), [k]) for k in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, asyncpg.DivisionByZeroError) for r in results)
    rows = await c.rows(QUERY, (2, 0.0), [4])
    assert rows[4][1] == 8


async def test_a_cancelled_waiter_leaves_the_others_their_answer(pool: asyncpg.Pool) -> None:
    c = Coalescer(Counting(pool), max_running=1)
    waiters = [asyncio.ensure_future(c.rows(QUERY, (2, 0.1), [k])) for k in range(10)]
    await asyncio.sleep(0.02)
    waiters[3].cancel()
    done = await asyncio.gather(*waiters, return_exceptions=True)
    assert isinstance(done[3], asyncio.CancelledError)
    assert [d[k][1] for k, d in enumerate(done) if k != 3] == [2 * k for k in range(10) if k != 3]  # type: ignore[index]


async def test_a_full_batch_starts_and_a_new_one_opens(pool: asyncpg.Pool) -> None:
    c = Coalescer(Counting(pool), max_running=4, max_keys=10)
    answers = await asyncio.gather(*(c.rows(QUERY, (1, 0.0), [k, k + 100]) for k in range(20)))
    assert all(a[k][1] == k for k, a in enumerate(answers))
    assert c.stats.statements >= 4  # 40 keys, at most 10 a statement


async def test_full_batches_wait_for_the_cap_like_any_other(pool: asyncpg.Pool) -> None:
    connect = Counting(pool)
    c = Coalescer(connect, max_running=1, max_keys=4)
    # 40 keys arrive in one turn: ten full batches, yet never more than one statement at once.
    answers = await asyncio.gather(*(c.rows(QUERY, (1, 0.01), [k, k + 100]) for k in range(20)))
    assert all(a[k][1] == k for k, a in enumerate(answers))
    assert c.stats.statements >= 10
    assert connect.most == 1
    assert not c._tasks  # every statement's task is kept until it ends, then dropped
