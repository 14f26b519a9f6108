"""The group-commit writer: every access to personal data is recorded before the response leaves.

One task drains a bounded queue and writes each batch in one transaction (or one statement);
`append` chains records under audit_head's row lock for any other caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.errors import AuditUnavailable
from app.repositories import audit as repo
from app.repositories.audit import AuditRecord
from app.services.audit.records import AuditEntry, chain, hmac_key_id, unchained_record
from app.services.receipts import Keyring, compact
from app.services.signer import Signer

log = logging.getLogger("tepat.audit")


async def append(
    raw: asyncpg.Connection,
    records: Sequence[AuditRecord],
    on_chained: Callable[[list[AuditRecord]], object] | None = None,
) -> list[AuditRecord]:
    """Chain and insert records inside the caller's transaction (an asyncpg connection).

    Locks audit_head first, so concurrent appenders (other processes) wait and chain after us.
    `on_chained` is told the records' places before they are written.
    """
    seq, prev = await repo.lock_head(raw)
    chained = chain(seq, prev, records)
    if on_chained is not None:
        on_chained(chained)
    if chained:
        await repo.insert_many(raw, chained)
        await repo.set_head(raw, chained[-1].seq, chained[-1].hash)
    return chained


@dataclass(slots=True)
class _Pending:
    record: AuditRecord
    future: asyncio.Future[int]  # the record's seq once durable
    # A receipt's claims to sign once the record's seq is known (app.services.receipts.claims),
    # and the receipt, set before the future.
    claims: dict[str, Any] | None = None
    receipt: str | None = None


@dataclass(slots=True)
class WriterStats:
    """Counters for tests and metrics: how many batches (= transactions) and records."""

    batches: int = 0
    records: int = 0
    failed_batches: int = 0
    failed_records: int = 0
    largest_batch: int = 0
    locked_batches: int = 0  # written under audit_head's row lock (first, or after another process)
    # The latest batch sizes only: a process lives for months.
    batch_sizes: deque[int] = field(default_factory=lambda: deque(maxlen=10_000), repr=False)
    commit_seconds: deque[float] = field(default_factory=lambda: deque(maxlen=10_000), repr=False)


_STOP = object()


def _expire(future: asyncio.Future[int]) -> None:
    if not future.done():
        future.set_exception(AuditUnavailable("the access could not be recorded in time"))


def _consume(future: asyncio.Future[int]) -> None:
    # A caller that timed out or was cancelled no longer awaits its future; reading the
    # exception here keeps asyncio from logging "exception was never retrieved".
    if not future.cancelled():
        future.exception()


class AuditWriter:
    """Group commit: one task drains a bounded queue and writes each batch in ONE transaction.

    A batch is whatever is queued, up to `max_batch`; a lone entry first waits at most
    `max_wait` seconds for others (entries that queued during the previous commit do not wait).
    `record()` returns only after its batch's COMMIT (synchronous_commit: durable), or raises
    AuditUnavailable: database down, `timeout` passed, queue full, writer not running. A failed
    batch fails only its own callers; the next batch tries again.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        hmac_key: bytes,
        *,
        max_batch: int = 512,
        max_wait: float = 0.002,
        queue_size: int = 10_000,
        timeout: float = 5.0,
        keyring: Keyring | None = None,
        sign_in_child: bool = True,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._engine = engine
        self._key = hmac_key
        self._key_id = hmac_key_id(hmac_key)
        # Receipts for the records written (app.services.receipts); None: no receipts.
        self.keyring = keyring
        # Receipts of `record_signed` are signed in a child process (app.services.signer)
        # while their batch commits; without one (sign_in_child=False), here.
        self.signer: Signer | None = None
        if keyring is not None and sign_in_child:
            self.signer = Signer(keyring.current.seed)
        self._max_batch = max_batch
        self._max_wait = max_wait
        self._timeout = timeout
        self._queue: asyncio.Queue[_Pending | object] = asyncio.Queue(maxsize=queue_size)
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._head: tuple[int, bytes] | None = None  # the tip this writer last wrote
        # The writer's own connection, kept between batches: a checkout and a return per batch
        # are two more waits for the event loop on the path every record waits on (bench/ P4:
        # ~8 of a batch's ~28 ms). Dropped after any failure; the next batch connects anew.
        self._conn: AsyncConnection | None = None
        self._deliveries: set[asyncio.Task[None]] = set()  # committed batches awaiting receipts
        self.stats = WriterStats()

    @property
    def queue_depth(self) -> int:
        """Records waiting for their batch (/metrics)."""
        return self._queue.qsize()

    async def start(self) -> None:
        if self._task is None:
            self._closed = False
            self._task = asyncio.create_task(self._run(), name="audit-writer")
            if self.signer is not None:
                await self.signer.start()

    async def stop(self) -> None:
        """Refuse new records, write everything already queued, then end the task."""
        if self._task is None:
            return
        self._closed = True
        await self._queue.put(_STOP)
        await self._task
        self._task = None
        await asyncio.gather(*self._deliveries)
        await self._disconnect()
        if self.signer is not None:
            await self.signer.stop()

    async def _raw(self) -> asyncpg.Connection:
        """The kept connection; one the server closed meanwhile (restart, termination) is
        replaced before use, as the pool's checkout hook replaces its own (app.db)."""
        for _ in range(2):
            if self._conn is None:
                self._conn = await self._engine.connect()
            raw = (await self._conn.get_raw_connection()).driver_connection
            if isinstance(raw, asyncpg.Connection) and not raw.is_closed():
                return raw
            await self._disconnect()
        raise ConnectionError("the audit writer could not get an open connection")

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.invalidate()  # its state is unknown: never back into the pool

    def unchained(self, entry: AuditEntry) -> AuditRecord:
        """The record `entry` becomes (subjects hashed under this writer's key), for a caller
        that appends it in its own transaction (`append`): a bulk job's chunk."""
        return unchained_record(entry, self._key, dt.datetime.now(dt.UTC))

    async def record(self, entry: AuditEntry) -> int:
        """The record's seq (its place in the chain) once it is durable."""
        return (await self._enqueue(entry, None)).future.result()

    async def record_signed(
        self, entry: AuditEntry, claims: dict[str, Any]
    ) -> tuple[int, str | None]:
        """The record's seq once it is durable, and the receipt of `claims` (their `seq` set
        to the record's) signed by the keyring's key; None for the receipt without a keyring."""
        pending = await self._enqueue(entry, claims if self.keyring is not None else None)
        return pending.future.result(), pending.receipt

    async def _enqueue(self, entry: AuditEntry, claims: dict[str, Any] | None) -> _Pending:
        """Queue the entry's record and wait until it is durable (and its receipt signed)."""
        if self._task is None or self._closed:
            raise AuditUnavailable("the audit writer is not running")
        record = unchained_record(entry, self._key, dt.datetime.now(dt.UTC), self._key_id)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_consume)
        pending = _Pending(record, future, claims)
        try:
            self._queue.put_nowait(pending)
        except asyncio.QueueFull:
            # Backpressure: fail fast (503) instead of letting requests pile up behind the log.
            raise AuditUnavailable("the audit log is saturated; retry later") from None
        # No shield needed: the record is in the queue and gets written whatever happens to
        # this caller; a cancelled caller only cancels its own future, which the writer skips.
        # The timer fails the future if the record is not durable in time (a stuck database).
        handle = asyncio.get_running_loop().call_later(self._timeout, _expire, future)
        try:
            await future
        finally:
            handle.cancel()
        return pending

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            first = await self._queue.get()
            batch: list[_Pending] = []
            stopping = self._take(first, batch)
            if not stopping:
                stopping = self._drain(batch)
                # A lone entry waits up to max_wait for company; entries that piled up during
                # the previous commit go at once (waiting would only add latency under load).
                if not stopping and len(batch) == 1 < self._max_batch and self._max_wait > 0:
                    await asyncio.sleep(self._max_wait)
                    stopping = self._drain(batch)
            if batch:
                await self._flush(batch)

    def _take(self, item: _Pending | object, batch: list[_Pending]) -> bool:
        if item is _STOP:
            return True
        assert isinstance(item, _Pending)
        batch.append(item)
        return False

    def _drain(self, batch: list[_Pending]) -> bool:
        """Move queued items into the batch (up to max_batch); True when the stop mark came."""
        while len(batch) < self._max_batch:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                return False
            if self._take(item, batch):
                return True
        return False

    async def _flush(self, batch: list[_Pending]) -> None:
        records = [p.record for p in batch]
        started = time.perf_counter()
        signed: asyncio.Task[list[str]] | None = None
        to_sign = [p for p in batch if p.claims is not None]
        try:
            async with asyncio.timeout(self._timeout):
                raw = await self._raw()
                # Usually one statement against the tip this writer left; if another process
                # appended since (or the tip is unknown), chain under the head's row lock.
                head = self._head
                # The receipts are signed (in the signer child) while the batch commits, and
                # handed out only if it does.
                if head is not None:
                    chained = chain(*head, records)
                    signed = self._signing(batch, chained, to_sign)
                written = head is not None and await repo.append_if_head(raw, chained)
                if not written:
                    # Placed elsewhere than `signed` says (if anything): signed anew. The stale
                    # task runs out unawaited (cancelling it would cost the signer child).
                    def sign_anew(chained: list[AuditRecord]) -> None:
                        nonlocal signed
                        signed = self._signing(batch, chained, to_sign)

                    async with raw.transaction():
                        chained = await append(raw, records, sign_anew)
                    self.stats.locked_batches += 1
                self._head = (chained[-1].seq, chained[-1].hash)
        except Exception as e:  # any failure: this batch's callers get 503, the writer lives on
            self._head = None  # unknown: read it under the lock next time
            await self._disconnect()
            self.stats.failed_batches += 1
            self.stats.failed_records += len(batch)
            log.warning("audit batch of %d not written: %s", len(batch), type(e).__name__)
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(AuditUnavailable())
            return
        self.stats.batches += 1
        self.stats.records += len(batch)
        self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
        self.stats.batch_sizes.append(len(batch))
        self.stats.commit_seconds.append(time.perf_counter() - started)
        if signed is None:
            _durable(batch, chained)
            return
        # The next batch need not wait for these receipts: its commit overlaps their signing.
        delivery = asyncio.create_task(_deliver(batch, chained, to_sign, signed))
        self._deliveries.add(delivery)
        delivery.add_done_callback(self._deliveries.discard)

    def _signing(
        self, batch: list[_Pending], chained: Sequence[AuditRecord], to_sign: list[_Pending]
    ) -> asyncio.Task[list[str]] | None:
        """Sign the receipts of the batch's records placed as `chained` (a task), if any."""
        if not to_sign or self.keyring is None:
            return None
        key = self.keyring.current
        inputs = []
        for p, placed in zip(batch, chained, strict=True):
            if p.claims is not None:
                p.claims["seq"] = placed.seq
                inputs.append(key.signing_input(orjson.dumps(p.claims)))
        task = asyncio.ensure_future(self._sign(inputs))
        task.add_done_callback(_consume_task)
        return task

    async def _sign(self, inputs: list[bytes]) -> list[str]:
        if self.signer is not None:
            signatures = await self.signer.sign_many(inputs)
        else:
            assert self.keyring is not None
            signer = self.keyring.current.signer
            signatures = [signer.sign(i).signature for i in inputs]
        return [compact(i, s) for i, s in zip(inputs, signatures, strict=True)]


def _consume_task(task: asyncio.Task[list[str]]) -> None:
    if not task.cancelled():
        task.exception()


def _durable(batch: list[_Pending], chained: Sequence[AuditRecord]) -> None:
    """Tell a committed batch's callers their records' seqs."""
    for p, placed in zip(batch, chained, strict=True):
        if not p.future.done():
            p.future.set_result(placed.seq)


async def _deliver(
    batch: list[_Pending],
    chained: Sequence[AuditRecord],
    to_sign: list[_Pending],
    signed: asyncio.Task[list[str]],
) -> None:
    """A committed batch's receipts once signed, then its callers told (never one without)."""
    try:
        receipts = await signed
    except Exception as e:  # the signer signs here when its child fails: not expected
        log.error("receipts of a batch of %d not signed: %s", len(batch), type(e).__name__)
        for p in batch:
            if not p.future.done():
                p.future.set_exception(AuditUnavailable("the answer could not be signed"))
        return
    for p, receipt in zip(to_sign, receipts, strict=True):
        p.receipt = receipt
    _durable(batch, chained)


@contextlib.asynccontextmanager
async def running(writer: AuditWriter) -> AsyncIterator[AuditWriter]:
    """`async with running(AuditWriter(...)) as writer:` for scripts and tests."""
    await writer.start()
    try:
        yield writer
    finally:
        await writer.stop()
