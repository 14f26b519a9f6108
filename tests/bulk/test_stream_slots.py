"""Stream slots (app.services.streams) against the test database: per client, shared by every
holder of the database (two StreamSlots are two processes), freed on release, and counted in
the process when the database cannot be reached."""

from __future__ import annotations

import secrets

import httpx
import pytest

from app import db
from app.errors import TooManyStreams
from app.services.streams import StreamSlots, slot_key
from tests.bulk.conftest import post_bulk
from tests.support import MakeClient


def client() -> str:
    return f"slots-{secrets.token_hex(4)}"


@pytest.fixture
def dsn(database_url: str) -> str:
    return db.asyncpg_dsn(database_url)


async def test_slots_are_per_client_and_shared_by_processes(dsn: str) -> None:
    one, two = StreamSlots(2, dsn=dsn), StreamSlots(2, dsn=dsn)
    a, b = client(), client()
    first = await one.acquire(a)
    second = await two.acquire(a)
    try:
        for slots in (one, two):
            with pytest.raises(TooManyStreams) as refused:
                await slots.acquire(a)
            assert refused.value.status == 429
            assert refused.value.extra["retry_after"] >= 1
        other = await one.acquire(b)  # another client has slots of its own
        await other.release()
        await first.release()
        await first.release()  # twice is once
        third = await two.acquire(a)  # the freed slot, taken through the other process
        await third.release()
    finally:
        await first.release()
        await second.release()
    assert not one.held and not two.held


async def test_without_the_database_slots_are_counted_in_the_process() -> None:
    # Nothing listens on port 1: the connection fails at once.
    slots = StreamSlots(2, dsn="postgresql://postgres@127.0.0.1:1/postgres", connect_timeout=2)
    a = client()
    held = [await slots.acquire(a), await slots.acquire(a)]
    with pytest.raises(TooManyStreams):
        await slots.acquire(a)
    await held[0].release()
    held[0] = await slots.acquire(a)
    for slot in held:
        await slot.release()
    assert not slots.held


async def test_zero_means_no_limit(dsn: str) -> None:
    slots = StreamSlots(0, dsn=dsn)
    held = [await slots.acquire("anyone") for _ in range(5)]
    for slot in held:
        await slot.release()
    assert not slots.held


def test_slot_keys_differ_per_client_and_slot() -> None:
    keys = {slot_key(c, n) for c in ("a", "b", "ab") for n in range(4)}
    assert len(keys) == 12
    assert all(-(2**31) <= k < 2**31 for k in keys)


async def test_bulk_answers_are_not_cached_and_free_their_slot(
    http: httpx.AsyncClient, make_client: MakeClient
) -> None:
    key = await make_client(bulk=True)
    for _ in range(3):  # more jobs in a row than a client has slots: each freed its own
        r = await post_bulk(http, key, b"3201014501150001\n")
        assert r.status_code == 200
        assert r.headers["cache-control"] == "no-store"
