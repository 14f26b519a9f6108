"""The allowance against the real database: the shared bucket, the daily quota, settling
leases, debts, suspension, and the WIB day. Two Allowance objects stand for two processes."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from sqlalchemy import delete, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth.principal import Principal
from app.errors import ClientSuspended, QuotaExceeded, RateLimited
from app.models import api_clients
from app.repositories import allowance as repo
from app.services import clients
from app.services.allowance import Allowance, seconds_until_midnight_wib


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


NewPrincipal = Callable[..., Awaitable[Principal]]


@pytest.fixture
async def principal(engine: AsyncEngine) -> AsyncIterator[NewPrincipal]:
    made: list[str] = []

    async def make(*, bulk: bool = False, daily_quota: int | None = None) -> Principal:
        async with engine.begin() as conn:
            info, _ = await clients.create_client(
                conn,
                name="allowance test",
                programs=["PBI_JK"],
                field_groups=["decision"],
                purposes=["test"],
                bulk=bulk,
                daily_quota=daily_quota,
            )
        made.append(info.id)
        return Principal.from_client(info)

    yield make
    async with engine.begin() as conn:
        await conn.execute(delete(api_clients).where(api_clients.c.id.in_(made)))


async def _used(engine: AsyncEngine, client_id: str) -> int:
    async with engine.connect() as conn:
        return (await repo.usage_today(conn, client_id))[1]


async def test_the_bucket_counts_niks_and_says_when_to_retry(
    engine: AsyncEngine, principal: NewPrincipal
) -> None:
    who, other = await principal(), await principal()
    limits = Allowance(engine, rate=1, burst=1000, lease_seconds=60)
    await limits.charge(who, 600)
    await limits.charge(who, 400)
    with pytest.raises(RateLimited) as refused:
        await limits.charge(who, 200)
    # 200 tokens at 1 a second (a second or two of refill while the test runs)
    assert 190 <= refused.value.extra["retry_after"] <= 200
    await limits.charge(other, 1000)  # buckets are per client


async def test_two_processes_share_one_bucket(engine: AsyncEngine, principal: NewPrincipal) -> None:
    who = await principal()
    clock = Clock()
    # Slices of 100 (10 a second, leased 10 s at a time) from one bucket of 1,000.
    a = Allowance(engine, rate=10, burst=1000, lease_seconds=10, clock=clock)
    b = Allowance(engine, rate=10, burst=1000, lease_seconds=10, clock=clock)
    accepted = 0
    started = dt.datetime.now(dt.UTC)
    for i in range(3000):
        try:
            await (a if i % 2 else b).charge(who, 1)
            accepted += 1
        except RateLimited:
            pass
    elapsed = (dt.datetime.now(dt.UTC) - started).total_seconds()
    assert accepted <= 1000 + 10 * (elapsed + 1)
    assert accepted >= 900  # and the bucket is really spent, not refused early
    # Most charges were local: one statement per slice, not per charge.
    assert a.leases_taken + b.leases_taken < 100


async def test_the_daily_quota_holds_across_processes_and_retries_at_midnight_wib(
    engine: AsyncEngine, principal: NewPrincipal
) -> None:
    who = await principal(daily_quota=50)
    clock = Clock()
    a = Allowance(engine, rate=0, burst=1, lease_seconds=1, clock=clock)
    b = Allowance(engine, rate=0, burst=1, lease_seconds=1, clock=clock)
    accepted = 0
    for _ in range(4):
        for i in range(40):
            try:
                await (a if i % 2 else b).charge(who, 1)
                accepted += 1
            except QuotaExceeded as e:
                retry = e.extra["retry_after"]
                assert abs(retry - seconds_until_midnight_wib()) <= 5
        clock.now += 2  # leases expire: the unspent rest goes back, others may lease it
    assert accepted == 50
    assert await _used(engine, who.client_id) == 50


async def test_the_quota_defaults_by_kind_and_zero_is_none(
    engine: AsyncEngine, principal: NewPrincipal
) -> None:
    plain, bulk, own = await principal(), await principal(bulk=True), await principal(daily_quota=7)
    limits = Allowance(engine, rate=0, burst=1, quota=3, quota_bulk=5)
    assert (limits.quota_of(plain), limits.quota_of(bulk), limits.quota_of(own)) == (3, 5, 7)
    await limits.charge(plain, 3)
    with pytest.raises(QuotaExceeded):
        await limits.charge(plain, 1)
    await limits.charge(bulk, 5)
    off = Allowance(engine, rate=0, burst=1, quota=0)
    await off.charge(plain, 10**9)  # no rate, no quota: nothing to count
    assert off.leases_taken == 0


async def test_an_expired_lease_is_settled_and_the_unspent_rest_returned(
    engine: AsyncEngine, principal: NewPrincipal
) -> None:
    who = await principal(daily_quota=1_000_000)
    clock = Clock()
    limits = Allowance(engine, rate=100, burst=1000, lease_seconds=1, clock=clock)
    await limits.charge(who, 10)  # leases a slice of 100 (a second's worth)
    assert await _used(engine, who.client_id) == 100
    await limits.charge(who, 10)  # from the slice: no statement
    assert limits.leases_taken == 1
    clock.now += 1.5
    await limits.charge(who, 10)  # expired: the 80 left go back, a new slice of 100 is leased
    assert limits.leases_taken == 2
    assert await _used(engine, who.client_id) == 20 + 100


async def test_a_debt_is_paid_at_the_next_lease(
    engine: AsyncEngine, principal: NewPrincipal
) -> None:
    who = await principal(daily_quota=100)
    clock = Clock()
    limits = Allowance(engine, rate=0, burst=1, lease_seconds=1, clock=clock)
    await limits.charge(who, 1)  # a slice of the whole quota (100), 99 left here
    limits.debit(who, 149)  # the answer disclosed more than was charged: 50 in debt
    clock.now += 2
    with pytest.raises(QuotaExceeded):
        await limits.charge(who, 1)
    assert await _used(engine, who.client_id) == 150  # the debt is counted, nothing more granted


async def test_a_suspended_client_is_refused_at_its_next_lease(
    engine: AsyncEngine, principal: NewPrincipal
) -> None:
    who = await principal()
    noted: list[str] = []
    clock = Clock()
    limits = Allowance(
        engine, rate=100, burst=1000, lease_seconds=1, clock=clock, on_suspended=noted.append
    )
    await limits.charge(who, 1)
    async with engine.begin() as conn:  # another process suspends it
        await conn.execute(
            text(
                "UPDATE api_clients SET suspended_at = now(), suspended_reason = 'x' WHERE id = :c"
            ),
            {"c": who.client_id},
        )
    await limits.charge(who, 1)  # within the lease: this process does not know yet
    clock.now += 1.5
    with pytest.raises(ClientSuspended):
        await limits.charge(who, 1)
    assert noted == [who.client_id]
    assert not limits.try_spend(who, 1)


def test_midnight_wib_is_17_00_utc() -> None:
    assert seconds_until_midnight_wib(dt.datetime(2026, 1, 1, 16, 59, 59, tzinfo=dt.UTC)) == 1
    assert seconds_until_midnight_wib(dt.datetime(2026, 1, 1, 17, 0, 0, tzinfo=dt.UTC)) == 86400
    assert seconds_until_midnight_wib(dt.datetime(2026, 1, 1, 5, 0, 0, tzinfo=dt.UTC)) == 12 * 3600


async def test_the_database_counts_days_in_wib(
    engine: AsyncEngine, principal: NewPrincipal
) -> None:
    who = await principal()
    async with engine.begin() as conn:
        got = await repo.lease(
            conn, who.client_id, rate=0, burst=1, quota=10, need=1, want=1, returned=0,
            returned_day=None,
        )  # fmt: skip
        utc_now = (await conn.execute(text("SELECT now()"))).scalar_one()
    assert got.today == (utc_now + dt.timedelta(hours=7)).date()
    # Yesterday's row: the count starts again at zero today.
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE client_usage SET day = day - 1, niks = 10 WHERE client_id = :c"),
            {"c": who.client_id},
        )
        again = await repo.lease(
            conn, who.client_id, rate=0, burst=1, quota=10, need=3, want=3, returned=0,
            returned_day=None,
        )  # fmt: skip
    assert (again.granted, again.used, again.over_quota) == (3, 3, False)


async def test_a_busy_process_leases_its_demand_not_a_slice_per_moment(
    engine: AsyncEngine, principal: NewPrincipal
) -> None:
    who = await principal(daily_quota=10**9)
    clock = Clock()
    limits = Allowance(engine, rate=0, burst=1, lease_seconds=1, clock=clock)
    await limits.charge(who, 10_000)  # the first slice: 10,000 (no rate: the quota's slice)
    clock.now += 0.1  # spent in a tenth of a second: 100,000 a second
    await limits.charge(who, 1)
    assert await _used(engine, who.client_id) == 10_000 + 100_000
    for _ in range(99):
        await limits.charge(who, 1_000)  # a second's worth at that pace: no more leases
    assert limits.leases_taken == 2
