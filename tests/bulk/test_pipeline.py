"""The job's pipeline: answers leave in input order, a slow chunk at the head does not hold up
the lookups behind it, and what is started is bounded (no database: `answer` is replaced)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

import pytest

from app.services import bulk

NIKS = [f"32010145019{n:05d}" for n in range(1, 41)]
AHEAD = 3


class Recorded(bulk.Job):
    """Chunks of one NIK; the first waits for `release`; every start and finish is logged."""

    def __init__(self, fail_at: int | None = None) -> None:
        none = cast(Any, None)
        super().__init__(none, none, none, none, none, chunk=1, ahead=AHEAD)
        self.release = asyncio.Event()
        self.started: list[int] = []
        self.running = 0
        self.most_running = 0
        self.fail_at = fail_at
        self.cancelled: list[int] = []

    async def answer(self, items: Sequence[bulk.Item]) -> bytes:
        line = items[0].line
        self.started.append(line)
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            if line == 1:
                await self.release.wait()
            else:
                await asyncio.sleep(0)
            if line == self.fail_at:
                raise RuntimeError("this chunk fails")
            return b"%d\n" % line
        except asyncio.CancelledError:
            self.cancelled.append(line)
            raise
        finally:
            self.running -= 1

    def summary(self) -> bytes:
        return b"summary\n"


async def body() -> AsyncIterator[bytes]:
    for nik in NIKS:
        yield nik.encode() + b"\n"


async def test_a_slow_first_chunk_does_not_hold_up_the_next_lookups() -> None:
    job = Recorded()
    out = job._chunks(body())
    first = asyncio.ensure_future(anext(out))
    for _ in range(50):
        await asyncio.sleep(0)
    assert not first.done()
    # While line 1 waits, the lookups behind it ran and finished (more than `ahead` of them),
    # but no more than `ahead` running plus `ahead` answered and queued were ever started.
    assert AHEAD < len(job.started) <= 2 * AHEAD + 1
    assert job.most_running <= AHEAD
    job.release.set()
    sent = [await first] + [line async for line in out]
    assert sent == [b"%d\n" % n for n in range(1, len(NIKS) + 1)] + [b"summary\n"]


async def test_a_failed_chunk_stops_the_job_and_cancels_what_is_left() -> None:
    job = Recorded(fail_at=5)
    job.release.set()
    out = job._chunks(body())
    sent: list[bytes] = []

    async def take() -> None:
        async for line in out:
            sent.append(line)

    with pytest.raises(RuntimeError, match="this chunk fails"):
        await take()
    assert sent == [b"%d\n" % n for n in range(1, 5)]  # in order, up to the failed one
    await asyncio.sleep(0.01)
    assert job.running == 0  # nothing left running after the job ended
    assert max(job.started) <= 5 + 2 * AHEAD  # the reader stopped too


async def test_a_client_that_goes_away_leaves_nothing_running() -> None:
    job = Recorded()
    out = job._chunks(body())
    first = asyncio.ensure_future(anext(out))
    for _ in range(20):
        await asyncio.sleep(0)
    first.cancel()  # the transport's send failed: the stream is closed where it waited
    with contextlib.suppress(asyncio.CancelledError):
        await first
    await out.aclose()
    await asyncio.sleep(0.01)
    assert job.running == 0
    assert 1 in job.cancelled
