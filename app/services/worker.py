"""The bulk job worker: pgqueuer's queue manager over the service's own PostgreSQL.

Why pgqueuer: it runs on asyncpg, the driver the service already uses (procrastinate would
bring psycopg 3 and a second connection stack); a queued job is a row, enqueued in the same
transaction as the upload it names, so a job is queued exactly when its input is committed;
workers take jobs with `FOR UPDATE SKIP LOCKED`, wake on NOTIFY, and beat a heartbeat while a
job runs, so a job whose worker died (kill -9, a lost machine) is taken again by another once
its heartbeat is `TEPAT_JOBS_HEARTBEAT_TIMEOUT` old. Its tables live in the schema
`tepat_queue`, created by the migration (pinned to the library's schema; nothing to install).

What a job does is app.services.jobs.Runner; this module only feeds it jobs, retries a job that
met a database failure (it resumes at its last committed chunk), re-queues one that must wait
for its client's daily quota, and purges expired jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
from pgqueuer import QueueManager, RetryRequested
from pgqueuer.adapters.drivers.asyncpg import AsyncpgDriver
from pgqueuer.adapters.persistence.qb import (
    QueryBuilderEnvironment,
    QueryQueueBuilder,
    QuerySchedulerBuilder,
)
from pgqueuer.adapters.persistence.queries import Queries
from pgqueuer.domain.models import Job
from pgqueuer.domain.settings import DBSettings
from pgqueuer.domain.types import Channel
from sqlalchemy.ext.asyncio import AsyncEngine

from app import db
from app.auth.principal import Principal
from app.config import Settings
from app.errors import RateLimited
from app.repositories import jobs as repo
from app.resilience import DATABASE_ERRORS
from app.services import bulk, clients, dci
from app.services import dci_subscriptions as subscriptions
from app.services.allowance import Allowance
from app.services.audit.writer import AuditWriter
from app.services.catalog import CHANNEL as CATALOG
from app.services.catalog import Reads
from app.services.jobs import ENTRYPOINT, QUEUE_SCHEMA, Runner, Wait, retention
from app.services.lookup import Caller
from app.services.pinning import Pinned, pin

log = logging.getLogger("tepat.worker")

QUEUE = DBSettings(db_schema=QUEUE_SCHEMA)
RETRY_AFTER_FAILURE = dt.timedelta(seconds=5)


def queue_queries(raw: asyncpg.Connection) -> Queries:
    """pgqueuer's queries over one connection, on the migration's schema."""
    return Queries(
        AsyncpgDriver(raw),
        qbe=QueryBuilderEnvironment(QUEUE),
        qbq=QueryQueueBuilder(QUEUE),
        qbs=QuerySchedulerBuilder(QUEUE),
    )


async def enqueue_dci(raw: asyncpg.Connection, correlation_id: uuid.UUID) -> None:
    """Queue an async DCI request, in the caller's transaction (it appears with its row)."""
    await queue_queries(raw).enqueue(
        dci.CALLBACK, correlation_id.bytes, dedupe_key=f"dci:{correlation_id}"
    )


async def enqueue_notification(raw: asyncpg.Connection, pair: subscriptions.Pair) -> None:
    """Queue a DCI notification, in the caller's transaction (it appears with its row)."""
    await queue_queries(raw).enqueue(
        subscriptions.NOTIFY,
        pair.payload(),
        dedupe_key=f"dci-notify:{pair.subscription}:{pair.from_key}:{pair.to_key}",
    )


async def enqueue(raw: asyncpg.Connection, job_id: uuid.UUID) -> None:
    """Queue the job, in the caller's transaction (the upload's): it appears with its input."""
    await queue_queries(raw).enqueue(ENTRYPOINT, job_id.bytes, dedupe_key=str(job_id))


def pacer(allowance: Allowance) -> Callable[[Principal, int], Awaitable[None]]:
    """The client's NIK rate and daily quota, chunk by chunk, as for its streams: a job over
    the rate waits (it has no one to answer 429 to); over the quota it raises QuotaExceeded."""

    async def pace(principal: Principal, n: int) -> None:
        while True:
            try:
                await allowance.throttle(principal, n, max_wait=60.0)
                return
            except RateLimited as e:
                await asyncio.sleep(min(float(e.extra.get("retry_after", 1)), 60.0))

    return pace


class Worker:
    """One worker process's queue consumer (in `tepat serve`'s processes, or `tepat worker`)."""

    def __init__(
        self,
        settings: Settings,
        url: str,
        engine: AsyncEngine,
        audit: AuditWriter,
        allowance: Allowance | None,
        on_suspended: Callable[[str], None] | None = None,
        reads: Reads | None = None,
    ) -> None:
        self.settings = settings
        self.url = url
        self.engine = engine
        self.audit = audit
        self.allowance = allowance
        self.on_suspended = on_suspended
        self.stop = asyncio.Event()
        self.runner = Runner(
            engine,
            audit,
            self._connect,
            retention(settings.bulk_job_retention_days),
            pace=pacer(allowance) if allowance is not None else None,
            guard=self._guard,
            stopping=self.stop,
            reads=reads,
        )
        self.jobs_run = 0
        self.running = 0  # jobs being run now (/metrics)
        self.reads = reads
        self.delivery = dci.Delivery(
            attempts=settings.dci_callback_attempts,
            backoff=settings.dci_callback_backoff,
            timeout=settings.dci_callback_timeout,
        )

    async def _connect(self) -> asyncpg.Connection:
        return await db.connect_raw(self.settings, self.url, role=self.settings.db_role)

    def _guard(self, caller: Caller) -> bulk.Guard:
        s = self.settings

        async def suspend(counts: bulk.Counts) -> None:
            reason = (
                f"{bulk.ENUMERATION}: bulk job (request {caller.request_id}) found "
                f"{counts.found:,} of {counts.found + counts.not_found:,} NIKs after "
                f"{counts.lines:,} lines"
            )
            await clients.suspend_client(
                self.engine,
                self.audit,
                caller.principal.client_id,
                reason,
                purpose=caller.purpose,
                request_id=caller.request_id,
            )
            if self.allowance is not None:
                self.allowance.suspended(caller.principal.client_id)
            if self.on_suspended is not None:
                self.on_suspended(caller.principal.client_id)

        return bulk.Guard(s.enumeration_min_lines, s.enumeration_min_found_rate, suspend)

    async def handle(self, job: Job) -> None:
        if job.payload is None or len(job.payload) != 16:
            log.warning("queue entry %s names no bulk job; dropped", job.id)
            return
        job_id = uuid.UUID(bytes=job.payload)
        self.running += 1
        try:
            await self.runner.run(job_id)
        except Wait as w:
            raise RetryRequested(dt.timedelta(seconds=w.seconds), "waits") from None
        except DATABASE_ERRORS as e:
            log.warning("bulk job %s: database failure (%s); retried", job_id, type(e).__name__)
            raise RetryRequested(RETRY_AFTER_FAILURE, "database failure") from None
        finally:
            self.running -= 1
            self.jobs_run += 1

    async def handle_dci(self, job: Job) -> None:
        """An async DCI request: answered once, then its callback delivered, retried with
        backoff while attempts remain (app.services.dci.run_async)."""
        if job.payload is None or len(job.payload) != 16:
            log.warning("queue entry %s names no DCI transaction; dropped", job.id)
            return
        correlation_id = uuid.UUID(bytes=job.payload)

        async def pinned(snapshot: str | None, rule_set: str | None) -> Pinned:
            if self.reads is not None:
                return await self.reads.pin(snapshot, rule_set)
            async with self.engine.connect() as conn:
                return await pin(conn, snapshot, rule_set)

        async def post(url: str, body: bytes) -> int:
            return await dci.post_json(url, body, self.delivery.timeout)

        try:
            outcome = await dci.run_async(
                correlation_id,
                connect=self._connect,
                engine=self.engine,
                audit=self.audit,
                pin=pinned,
                delivery=self.delivery,
                post=post,
            )
            log.info("DCI transaction %s: %s", correlation_id, outcome)
        except dci.RetryLater as r:
            raise RetryRequested(dt.timedelta(seconds=r.seconds), "callback failed") from None
        except DATABASE_ERRORS as e:
            log.warning("DCI transaction %s: database failure (%s); retried", correlation_id,
                        type(e).__name__)  # fmt: skip
            raise RetryRequested(RETRY_AFTER_FAILURE, "database failure") from None

    async def handle_notify(self, job: Job) -> None:
        """A DCI notification: its change list turned into `notify` callbacks, each stored and
        queued once (app.services.dci_subscriptions.run_notification)."""
        if job.payload is None or len(job.payload) != 20:
            log.warning("queue entry %s names no DCI notification; dropped", job.id)
            return
        pair = subscriptions.Pair.of(job.payload)
        pace = None
        if self.allowance is not None:
            pace = pacer(self.allowance)
        try:
            outcome = await subscriptions.run_notification(
                pair,
                connect=self._connect,
                engine=self.engine,
                audit=self.audit,
                reads=self.reads,
                enqueue=enqueue_dci,
                pace=pace,
                page_size=self.settings.dci_notify_page,
            )
            log.info("DCI notification %s: %s", pair.subscription, outcome)
        except subscriptions.NotifyLater as later:
            raise RetryRequested(dt.timedelta(seconds=later.seconds), str(later)) from None
        except DATABASE_ERRORS as e:
            log.warning("DCI notification %s: database failure (%s); retried", pair.subscription,
                        type(e).__name__)  # fmt: skip
            raise RetryRequested(RETRY_AFTER_FAILURE, "database failure") from None

    async def notifications_due(self) -> int:
        """Queue the DCI notifications owed (a release published, its decisions stored)."""
        conn = await self._connect()
        try:
            return await subscriptions.due(conn, self.engine, enqueue_notification)
        finally:
            await conn.close()

    async def _notify_loop(self) -> None:
        """Look for DCI notifications owed at start, whenever the catalog changes (NOTIFY
        `tepat_catalog`: a release published, decisions stored) and every
        `TEPAT_DCI_NOTIFY_INTERVAL` seconds in case a NOTIFY was missed."""
        changed = asyncio.Event()
        while not self.stop.is_set():
            listener = None
            try:
                listener = await self._connect()
                await listener.add_listener(CATALOG, lambda *_: changed.set())
                while not self.stop.is_set():
                    changed.clear()
                    n = await self.notifications_due()
                    if n:
                        log.info("queued %d DCI notification(s)", n)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(changed.wait(), self.settings.dci_notify_interval)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("DCI notifications: %s; looking again shortly", type(e).__name__)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), 5.0)
            finally:
                if listener is not None:
                    with contextlib.suppress(Exception):
                        await listener.close()

    async def run(self) -> None:
        """Consume the queue until `stop` is set; reconnect (with a pause) after a failure."""
        purge = asyncio.create_task(self._purge_loop(), name="bulk-job-purge")
        notify = asyncio.create_task(self._notify_loop(), name="dci-notify")
        try:
            while not self.stop.is_set():
                try:
                    await self._consume()
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    log.warning("job worker: %s; reconnecting", type(e).__name__)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stop.wait(), 5.0)
        finally:
            for task in (purge, notify):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _consume(self) -> None:
        conn = await self._connect()
        try:
            qm = QueueManager(queue_queries(conn), channel=Channel(QUEUE.channel))
            qm.entrypoint(ENTRYPOINT)(self.handle)
            qm.entrypoint(dci.CALLBACK)(self.handle_dci)
            qm.entrypoint(subscriptions.NOTIFY)(self.handle_notify)

            async def relay_stop() -> None:
                await self.stop.wait()
                qm.shutdown.set()

            relay = asyncio.create_task(relay_stop())
            try:
                await qm.run(
                    batch_size=1,
                    max_concurrent_tasks=max(2, self.settings.jobs_concurrency),
                    heartbeat_timeout=dt.timedelta(seconds=self.settings.jobs_heartbeat_timeout),
                    dequeue_timeout=dt.timedelta(seconds=10),
                )
            finally:
                relay.cancel()
        finally:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _purge_loop(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(Exception):
                await self.purge()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), self.settings.jobs_purge_interval)

    async def purge(self) -> int:
        """Delete the jobs past their retention; how many."""
        conn = await self._connect()
        try:
            n = await repo.purge(conn)
        finally:
            await conn.close()
        if n:
            log.info("purged %d expired bulk job(s)", n)
        return n
