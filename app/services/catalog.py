"""The hot read path: pinning from an in-process catalog cache, data from a lean asyncpg pool.

Snapshots and rule sets never change once published, except a snapshot's retirement, so
pinning a request need not ask the database each time. The cache is correct because it is
dropped on every change: triggers NOTIFY `tepat_catalog` at commit (the initial migration) and a
dedicated listener connection clears the cache. While that listener is down (database
outage), nothing is cached and every request asks the database, so a change is never missed.

A plain lookup is then ONE statement on a pooled asyncpg connection: no BEGIN/ROLLBACK (a
single statement is atomic and the snapshot it reads is immutable), no pool reset query on
release (these connections only read and never change session state).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app import db
from app.config import Settings
from app.db import read_connection
from app.services import rule_sets
from app.services.coalesce import Coalescer
from app.services.nodes import PRIMARY_LSN, Nodes, close_nodes, open_nodes
from app.services.pinning import Pinned, pin

T = TypeVar("T")

log = logging.getLogger("tepat.catalog")
CHANNEL = "tepat_catalog"


class Catalog:
    """Pinned (snapshot, rule set) pairs, cached while a LISTEN connection guarantees freshness."""

    def __init__(
        self,
        settings: Settings,
        url: str,
        on_disconnect: Callable[[], object] | None = None,
        *,
        track_lsn: bool = False,
    ) -> None:
        self._settings = settings
        # With read replicas: the primary's WAL position when a pin was last read, which a
        # replica must have replayed before it serves a read (app.services.nodes).
        self._track_lsn = track_lsn
        self.lsn = 0
        self._on_disconnect = on_disconnect
        self._dsn = db.asyncpg_dsn(url)
        self._pins: dict[tuple[str | None, str | None], Pinned] = {}
        self._generation = 0
        self._listener: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def live(self) -> bool:
        return self._listener is not None and not self._listener.is_closed()

    def clear(self, *_: object) -> None:
        self._generation += 1
        self._pins.clear()
        rule_sets.forget_cached()

    async def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._keep_listening(), name="catalog-listener")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self._close_listener()

    async def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None and not listener.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(listener.close(), timeout=1)

    async def _keep_listening(self) -> None:
        while not self._stopping:
            if not self.live:
                self.clear()
                try:
                    listener = await asyncpg.connect(
                        self._dsn,
                        timeout=self._settings.db_connect_timeout,
                        server_settings={"application_name": "tepat-catalog"},
                    )
                    await listener.add_listener(CHANNEL, self.clear)
                    listener.add_termination_listener(self._lost)
                    self.clear()  # anything cached before LISTEN took effect is dropped
                    self._listener = listener
                except (OSError, asyncpg.PostgresError, TimeoutError) as e:
                    log.warning("catalog listener unavailable (%s); not caching", type(e).__name__)
                    await self._close_listener()
            await asyncio.sleep(1.0)

    def _lost(self, _: object) -> None:
        # The server went away: what we cached may be stale, and so may every idle pooled
        # connection (a restart leaves them dead): drop both, reconnect on demand.
        self.clear()
        if self._on_disconnect is not None:
            self._on_disconnect()

    async def pin(
        self, engine: AsyncEngine, snapshot_id: str | None, rule_set_id: str | None
    ) -> Pinned:
        key = (snapshot_id, rule_set_id)
        cached = self._pins.get(key) if self.live else None
        if cached is not None:
            return cached
        generation = self._generation
        async with read_connection(engine) as conn:
            pinned = await pin(conn, snapshot_id, rule_set_id)
            if self._track_lsn:
                # After the pin's reads: every commit they saw is at or before this position.
                self.lsn = max(self.lsn, (await conn.execute(text(PRIMARY_LSN))).scalar_one())
        # Store only if no change was notified meanwhile (it could concern what we just read).
        if self.live and generation == self._generation:
            self._pins[key] = pinned
        return pinned


@dataclass
class Reads:
    """What the data faces read through: the engine (catalog, misses), the read nodes (the
    primary's lean pool and any replicas, app.services.nodes), the cache."""

    engine: AsyncEngine
    nodes: Nodes
    catalog: Catalog
    acquire_timeout: float
    coalescer: Coalescer = field(init=False)

    def __post_init__(self) -> None:
        # Half the pool at most for merged small lookups; the rest stays for large ones.
        self.coalescer = Coalescer(self.run, max_running=max(1, self.pool.get_max_size() // 2))

    @property
    def pool(self) -> asyncpg.Pool:
        """The primary's lean pool."""
        return self.nodes.primary.pool

    async def pin(self, snapshot_id: str | None, rule_set_id: str | None) -> Pinned:
        return await self.catalog.pin(self.engine, snapshot_id, rule_set_id)

    async def run(self, read: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """`read` (idempotent) on the first node fit to answer it; again on the next node if
        that one fails as a node (gone, shutting down), the primary last."""
        return await self.nodes.run(read)

    def connection(self) -> contextlib.AbstractAsyncContextManager[asyncpg.Connection]:
        """A pooled connection of the first fit node, for reads that cannot be repeated."""
        return self.nodes.connection()

    def read_connection(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        """A read-only SQLAlchemy connection on the first fit node (GraphQL's loaders)."""
        return self.nodes.engine_connection()

    def stream_url(self) -> str:
        """The database URL a long read on a connection of its own should use."""
        return self.nodes.url_for_stream()


async def open_reads(settings: Settings, engine: AsyncEngine, url: str) -> Reads:
    catalog_box: list[Catalog] = []
    nodes = await open_nodes(settings, url, engine, lambda: catalog_box[0].lsn)
    pool = nodes.primary.pool

    expiring: set[asyncio.Task[None]] = set()  # kept until done, so none is collected mid-run

    def expire() -> None:
        task = asyncio.get_running_loop().create_task(pool.expire_connections())
        expiring.add(task)
        task.add_done_callback(expiring.discard)

    # The catalog listens on the primary: a hot standby refuses LISTEN (and NOTIFY is not
    # replicated); replicas are kept from serving what they have not replayed by the LSN.
    catalog = Catalog(
        settings, url, on_disconnect=expire, track_lsn=bool(settings.database_replica_urls)
    )
    catalog_box.append(catalog)
    await catalog.start()
    return Reads(engine, nodes, catalog, settings.db_pool_timeout)


async def close_reads(reads: Reads) -> None:
    await reads.catalog.stop()
    await close_nodes(reads.nodes)
