"""Where reads run: the primary and any number of streaming read replicas (docs/architecture.md).

Everything that writes (the audit trail, clients, leases, jobs) and the catalog (pinning) use the
primary. Data reads (lookups, GraphQL, bulk, change lists) run on a replica when one is fit:

* **Never a snapshot the replica does not have yet.** Each pin is read from the primary together
  with the primary's WAL insert position at that moment (`Catalog.lsn`): everything the answer
  can depend on (the snapshot, its rule set, its stored decisions) committed before it. A replica
  is used only once it has replayed WAL up to that position (`pg_last_wal_replay_lsn()`); until
  then the read goes to another replica or to the primary, never refused. One answer is one
  statement (or one connection) on one node, so two snapshots never mix inside it.
* **Out of rotation while down or lagging.** A monitor asks each replica every
  `replica_check_interval` seconds for its replay position. A replica that does not answer, is no
  longer a standby, or has not replayed what the primary wrote `replica_max_lag` seconds ago is
  left out, and put back at the first check that finds it well.
* **No request fails that another node could answer.** A read that fails because its replica
  went away (connection lost, shut down, refused, a recovery conflict) is run again on the next
  node, the primary last; reads are idempotent.

With no replica configured, every read runs on the primary's pool exactly as before: no monitor,
no WAL position read, one attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app import db
from app.config import Settings

log = logging.getLogger("tepat.nodes")
T = TypeVar("T")

# Errors that mean "this node cannot answer now", not "this read is wrong": the read is run
# again elsewhere. Class 08 (connection exception), 57P01-57P03 (shutting down, crashed, not
# accepting connections yet), 40001 on a standby (canceled by a conflict with recovery), and
# the driver's own "the connection is gone" or "its protocol state is broken".
NODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # a connection whose protocol state a server's FATAL broke
    asyncpg.SerializationError,
)

_LSN = "pg_wal_lsn_diff({}, '0/0')::int8"
PRIMARY_LSN = f"SELECT {_LSN.format('pg_current_wal_insert_lsn()')}"
REPLICA_STATE = f"SELECT pg_is_in_recovery(), {_LSN.format('pg_last_wal_replay_lsn()')}"


def describe(url: str) -> str:
    """A node's host and port for the logs, never its credentials (/readyz, which anyone may
    call, names nodes only by their place: `primary`, `replica N`)."""
    u = make_url(url.replace("postgres://", "postgresql://", 1))

    def first(name: str) -> str | None:
        value = u.query.get(name)
        return value[0] if isinstance(value, tuple) else value

    return f"{u.host or first('host') or 'local'}:{u.port or first('port') or 5432}"


async def _no_reset(connection: asyncpg.Connection) -> None:
    """These connections only read and set nothing per request: no reset round trip."""


async def open_pool(settings: Settings, url: str, *, size: int | None = None) -> asyncpg.Pool:
    """The lean read pool of one node: one statement per read, no reset query on release."""
    server = db.server_settings(settings)
    if settings.db_role:
        server["role"] = settings.db_role
    pool: asyncpg.Pool = await asyncpg.create_pool(
        db.asyncpg_dsn(url),
        min_size=0,  # no connection at start-up: the app starts even while a node is down
        max_size=size or settings.db_pool_size,
        timeout=settings.db_connect_timeout,
        command_timeout=settings.db_statement_timeout + 5,
        server_settings=server,
        reset=_no_reset,
    )
    return pool


@dataclass(eq=False)
class Node:
    """One database server that can answer reads."""

    name: str  # `primary`, `replica N` (N: its place in TEPAT_DATABASE_REPLICA_URLS)
    url: str
    primary: bool
    pool: asyncpg.Pool
    engine: AsyncEngine
    up: bool = True
    replayed: int = 0  # WAL position replayed (a replica) or inserted (the primary)
    lag: float = 0.0  # seconds the replica is behind what the primary had written
    error: str | None = None  # why it is out of rotation
    reads: int = 0  # reads this process ran on it
    retried: int = 0  # reads that failed here and ran again elsewhere
    changed_at: float = field(default_factory=time.monotonic)

    def down(self, why: str) -> None:
        if self.up:
            log.warning("read node %s (%s) out of rotation: %s", self.name, describe(self.url), why)
            self.changed_at = time.monotonic()
            # Its idle connections may be dead: none is handed out again.
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().create_task(self.pool.expire_connections())
        self.up, self.error = False, why

    def well(self) -> None:
        if not self.up:
            log.warning("read node %s (%s) back in rotation", self.name, describe(self.url))
            self.changed_at = time.monotonic()
        self.up, self.error = True, None

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "role": "primary" if self.primary else "replica",
            "status": "up" if self.up else "down",
        }
        if not self.primary:
            out["lag_seconds"] = round(self.lag, 3)
        if self.error:
            out["error"] = self.error
        return out


class Nodes:
    """The primary and the replicas; picks where each read runs (see the module's docstring)."""

    def __init__(
        self,
        settings: Settings,
        primary: Node,
        replicas: Sequence[Node] = (),
        required: Callable[[], int] = lambda: 0,
    ) -> None:
        self.settings = settings
        self.primary = primary
        self.replicas = list(replicas)
        self.required = required  # the WAL position a node must have replayed (Catalog.lsn)
        self._turn = itertools.count()
        self._samples: deque[tuple[float, int]] = deque(maxlen=4096)  # (when, primary LSN)
        self._task: asyncio.Task[None] | None = None

    @property
    def all(self) -> list[Node]:
        return [self.primary, *self.replicas]

    def candidates(self) -> list[Node]:
        """Where a read may run, in order: the fit replicas (taking turns), then the primary."""
        if not self.replicas:
            return [self.primary]
        need = self.required()
        fit = [r for r in self.replicas if r.up and r.replayed >= need]
        if len(fit) > 1:
            start = next(self._turn) % len(fit)
            fit = fit[start:] + fit[:start]
        return [*fit, self.primary]

    async def run(self, read: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """`read` on a pooled connection of the first node that can answer it."""
        nodes = self.candidates()
        last = len(nodes) - 1
        for i, node in enumerate(nodes):
            try:
                conn = await node.pool.acquire(timeout=self.settings.db_pool_timeout)
            except TimeoutError:  # (an OSError too: before NODE_ERRORS)
                if i == last:
                    raise
                continue  # busy or unreachable: the next node, without judging this one
            except NODE_ERRORS as e:
                if i == last:
                    raise
                node.down(f"connect: {type(e).__name__}")
                node.retried += 1
                continue
            try:
                node.reads += 1
                if node.primary:
                    return await read(conn)
                # A replica that stops answering mid-read (frozen, cut off) must not hold the
                # request until its deadline: past this the read runs on the next node.
                async with asyncio.timeout(self.settings.replica_read_timeout):
                    return await read(conn)
            except NODE_ERRORS as e:  # TimeoutError included
                _terminate(conn)
                if i == last:
                    raise
                node.down(f"read: {type(e).__name__}")
                node.retried += 1
            except BaseException:
                # Failed or cancelled mid-statement (a deadline, a dead server): its protocol
                # state is unknown, so it is closed, never handed out again.
                _terminate(conn)
                raise
            finally:
                await node.pool.release(conn)
        raise AssertionError("unreachable: the primary is always the last candidate")

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection of the first node that gives one (for reads that cannot be
        repeated as a unit); a failure after it is handed out is the caller's."""
        nodes = self.candidates()
        for i, node in enumerate(nodes):
            try:
                conn = await node.pool.acquire(timeout=self.settings.db_pool_timeout)
            except NODE_ERRORS as e:  # TimeoutError included: busy, not judged
                if i == len(nodes) - 1:
                    raise
                if not isinstance(e, TimeoutError):
                    node.down(f"connect: {type(e).__name__}")
                continue
            node.reads += 1
            try:
                yield conn
            except BaseException:
                _terminate(conn)
                raise
            finally:
                await node.pool.release(conn)
            return

    @contextlib.asynccontextmanager
    async def engine_connection(self) -> AsyncIterator[AsyncConnection]:
        """A read-only REPEATABLE READ SQLAlchemy connection (GraphQL's loaders) on the first
        node that opens one."""
        nodes = self.candidates()
        for i, node in enumerate(nodes):
            stack = contextlib.AsyncExitStack()
            try:
                conn = await stack.enter_async_context(db.read_connection(node.engine))
            except Exception as e:
                await stack.aclose()
                if i == len(nodes) - 1 or not _is_node_error(e):
                    raise
                node.down(f"connect: {type(e).__name__}")
                continue
            node.reads += 1
            async with stack:
                yield conn
            return

    def url_for_stream(self) -> str:
        """The URL of the node a long read (a change list's cursor) should open its own
        connection to: the first candidate."""
        return self.candidates()[0].url

    # --- the monitor ---

    async def start(self) -> None:
        if self.replicas:
            await self.check()
            self._task = asyncio.create_task(self._monitor(), name="read-nodes-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _monitor(self) -> None:
        while True:
            await asyncio.sleep(self.settings.replica_check_interval)
            with contextlib.suppress(Exception):
                await self.check()

    async def check(self) -> None:
        """Ask the primary for its WAL position and each replica for its replay position."""
        within = min(1.0, self.settings.db_connect_timeout)
        now = time.monotonic()
        try:
            lsn = await asyncio.wait_for(self.primary.pool.fetchval(PRIMARY_LSN), within)
            self.primary.replayed = int(lsn)
            self.primary.well()
            if not self._samples or self._samples[-1][1] != self.primary.replayed:
                self._samples.append((now, self.primary.replayed))
        except NODE_ERRORS as e:  # TimeoutError is an OSError
            self.primary.down(f"check: {type(e).__name__}")
        await asyncio.gather(*(self._check_replica(r, now, within) for r in self.replicas))

    async def _check_replica(self, node: Node, now: float, within: float) -> None:
        try:
            row = await asyncio.wait_for(node.pool.fetchrow(REPLICA_STATE), within)
        except NODE_ERRORS as e:  # TimeoutError is an OSError
            node.down(f"check: {type(e).__name__}")
            return
        assert row is not None
        if not row[0]:
            node.down("not a standby (promoted?)")
            return
        node.replayed = int(row[1] or 0)
        node.lag = self._lag(node.replayed, now)
        if node.lag > self.settings.replica_max_lag:
            node.down(f"lagging {node.lag:.1f} s")
        else:
            node.well()

    def _lag(self, replayed: int, now: float) -> float:
        """Seconds since the primary first wrote past `replayed` (0 if nothing is missing)."""
        for when, lsn in self._samples:
            if lsn > replayed:
                return now - when
        return 0.0

    def report(self) -> list[dict[str, Any]]:
        return [n.report() for n in self.all]


def _terminate(conn: asyncpg.Connection) -> None:
    """Close a connection whose protocol state is unknown. One the server closed has already
    gone back to its pool (asyncpg releases it on close): nothing more to do then."""
    with contextlib.suppress(asyncpg.InterfaceError):
        conn.terminate()


def _is_node_error(e: BaseException) -> bool:
    """A node error, as raised directly or wrapped by SQLAlchemy (DBAPIError.orig chain)."""
    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, NODE_ERRORS):
            return True
        seen = seen.__cause__ or getattr(seen, "orig", None)
    return False


async def open_nodes(
    settings: Settings, primary_url: str, primary_engine: AsyncEngine, required: Callable[[], int]
) -> Nodes:
    primary = Node(
        "primary",
        primary_url,
        True,
        await open_pool(settings, primary_url),
        primary_engine,
    )
    replicas = []
    for i, url in enumerate(settings.database_replica_urls, 1):
        engine = db.create_engine(settings, url=url, role=settings.db_role)
        replicas.append(Node(f"replica {i}", url, False, await open_pool(settings, url), engine))
    nodes = Nodes(settings, primary, replicas, required)
    await nodes.start()
    return nodes


async def close_nodes(nodes: Nodes) -> None:
    await nodes.stop()
    for node in nodes.all:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(node.pool.close(), timeout=5)
    for node in nodes.replicas:
        with contextlib.suppress(Exception):
            await node.engine.dispose()
