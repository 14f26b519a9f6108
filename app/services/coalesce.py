"""Concurrent small lookups merged into one statement.

Ministries' systems ask about one person at a time, many at once. Each such lookup is one index
probe, but a statement's fixed cost (a pool checkout, a round trip, the protocol work in the
driver) is several times the probe's. Lookups that arrive together and run the same query with
the same parameters are answered by one `... = ANY($n)` statement over all their keys:

* a lookup joins the batch that is waiting for its query; the batch runs on the next turn of
  the event loop, so everything that arrived in the same turn shares it;
* at most `max_running` statements run at once; batches that arrive meanwhile wait and grow, so
  under load the statements get larger instead of more numerous, and with no load a lookup
  waits only one loop turn;
* every waiter gets the batch's rows by key and takes its own; a failed statement fails each
  waiter with the same error (a 503 each, as if it had run alone); a waiter cancelled by its
  deadline leaves the others unaffected.

Only immutable data goes through here (stored decisions of a published snapshot), so merging
cannot mix versions: the snapshot and rule set are parameters of the query and part of the key.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg

Rows = Mapping[int, asyncpg.Record]
# Runs a read on a pooled connection (app.services.catalog.Reads.run: the node it picks, and
# the next one if that node fails).
Run = Callable[
    [Callable[[asyncpg.Connection], Awaitable[list[asyncpg.Record]]]],
    Awaitable[list[asyncpg.Record]],
]


@dataclass(slots=True)
class _Batch:
    query: str
    args: tuple[Any, ...]
    keys: set[int] = field(default_factory=set)
    waiters: list[asyncio.Future[Rows]] = field(default_factory=list)


@dataclass(slots=True)
class CoalesceStats:
    lookups: int = 0
    statements: int = 0
    largest: int = 0  # most lookups answered by one statement


class Coalescer:
    def __init__(self, run: Run, *, max_running: int = 4, max_keys: int = 2000) -> None:
        self._run_read = run
        self.max_running = max(1, max_running)
        self.max_keys = max_keys
        self._open: dict[tuple[str, tuple[Any, ...]], _Batch] = {}  # batches still taking keys
        self._queue: deque[_Batch] = deque()  # batches waiting to run, oldest first
        self._running = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()  # kept so none is collected mid-run
        self.stats = CoalesceStats()

    async def rows(self, query: str, args: tuple[Any, ...], keys: list[int]) -> Rows:
        """Rows of `query` (its last parameter the int8[] of keys, its first column the key)."""
        key = (query, args)
        batch = self._open.get(key)
        if batch is None or len(batch.keys) + len(keys) > self.max_keys:
            # None, or full: a full batch stays queued as it is (it runs within the cap like
            # any other) and a new one starts taking keys behind it.
            batch = self._open[key] = _Batch(query, args)
            self._queue.append(batch)
        batch.keys.update(keys)
        future: asyncio.Future[Rows] = asyncio.get_running_loop().create_future()
        batch.waiters.append(future)
        self.stats.lookups += 1
        self._schedule()
        return await future

    def _schedule(self) -> None:
        if not self._scheduled and self._queue and self._running < self.max_running:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._dispatch)

    def _dispatch(self) -> None:
        self._scheduled = False
        while self._queue and self._running < self.max_running:
            batch = self._queue.popleft()
            key = (batch.query, batch.args)
            if self._open.get(key) is batch:
                del self._open[key]
            self._start(batch)

    def _start(self, batch: _Batch) -> None:
        self._running += 1
        self.stats.statements += 1
        self.stats.largest = max(self.stats.largest, len(batch.waiters))
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: _Batch) -> None:
        try:
            keys = list(batch.keys)
            records = await self._run_read(lambda conn: conn.fetch(batch.query, *batch.args, keys))
            rows = {r[0]: r for r in records}
            for waiter in batch.waiters:
                if not waiter.done():
                    waiter.set_result(rows)
        except BaseException as e:
            for waiter in batch.waiters:
                if not waiter.done():
                    if isinstance(e, asyncio.CancelledError):
                        waiter.cancel()
                    else:
                        waiter.set_exception(e)
            if not isinstance(e, Exception):
                raise
        finally:
            self._running -= 1
            self._schedule()
