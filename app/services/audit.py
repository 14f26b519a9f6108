"""The audit trail (UU 27/2022 art. 31-32): group-committed, hash-chained records, verify, trail.

Every access to personal data writes one record before the response leaves. Records form a hash
chain: `hash = sha256(prev_hash || canonical_bytes(record))`, the first `prev_hash` being 32 zero
bytes, so altering, deleting, inserting or reordering a record breaks the chain at that record.
`canonical_bytes` is the fixed encoding below (version tag `tepat-audit-v1`); changing it
needs a new tag, never a silent edit, or every existing chain stops verifying.

Subjects are stored only as HMAC-SHA256 under `settings.audit_hmac_key`: a plain hash of a NIK
is reversible (its structure leaves ~10^12 candidates). A subject string carries its kind,
`nik:<16 digits>` or `kk:<16 digits>` (see `nik_subject`, `no_kk_subject`), because a No. KK and
an unrelated person's NIK can be the same 16 digits and a citizen's trail must not show
accesses to someone else's family.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import hashlib
import logging
import os
import struct
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import asyncpg
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.errors import AuditUnavailable
from app.repositories import audit as repo
from app.repositories.audit import AuditRecord
from app.services.receipts import Keyring

log = logging.getLogger("tepat.audit")

GENESIS = bytes(32)
HASH_TAG = b"tepat-audit-v1\x00"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_NULL = 0xFFFFFFFF
_SUBJECT_KINDS = ("nik:", "kk:")


# --- identifiers and hashes --------------------------------------------------------------------


def new_audit_id() -> str:
    """A time-ordered UUID (version 7 layout: 48-bit Unix ms, then 74 random bits).

    The caller makes it before rendering the response, so the body can carry it; time order
    keeps the unique index on audit_log.id append-mostly.
    """
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & (2**48 - 1)) << 80 | 0x7 << 76 | (rand >> 68 & 0xFFF) << 64
    value |= 0b10 << 62 | rand & (2**62 - 1)
    h = f"{value:032x}"  # str(uuid.UUID(int=value)), without building the object
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def nik_subject(nik: str) -> str:
    return "nik:" + nik


def no_kk_subject(no_kk: str) -> str:
    return "kk:" + no_kk


def subject_hash(key: bytes, subject: str) -> bytes:
    """HMAC-SHA256 of a subject (`nik:...` or `kk:...`): only the key holder can test a guess."""
    inner, outer = _keyed(key)
    h = inner.copy()
    h.update(subject.encode("utf-8"))
    o = outer.copy()
    o.update(h.digest())
    digest: bytes = o.digest()
    return digest


@functools.lru_cache(maxsize=8)
def _keyed(key: bytes) -> tuple[Any, Any]:
    """HMAC-SHA256 (RFC 2104) with the key's inner and outer pads hashed once: each subject then
    costs two copies and two short hashes, in C (a bulk chunk hashes 1,000 NIKs: ~0.5 us each,
    against ~0.85 through hmac.HMAC.copy). tests/audit checks it equals hmac.new."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
    return inner, outer


_BLOCK = 64  # SHA-256's block size


def response_digest(body: bytes) -> bytes:
    return hashlib.sha256(body).digest()


def _str(value: str | None) -> bytes:
    if value is None:
        return struct.pack(">I", _NULL)
    data = value.encode("utf-8")
    return struct.pack(">I", len(data)) + data


def _bytes(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


_LEN32 = struct.pack(">I", 32)


def _hashes(hashes: Sequence[bytes]) -> bytes:
    """Each hash as bytes (u32 length + the bytes), concatenated; in one join when all are 32
    bytes long, as every hash the writer makes is (a stored record may not be: verify)."""
    if set(map(len, hashes)) <= {32}:
        return _LEN32 + _LEN32.join(hashes) if hashes else b""
    return b"".join(_bytes(h) for h in hashes)


def canonical_bytes(r: AuditRecord, seq: int | None = None) -> bytes:
    """Every field but prev_hash and hash, in one fixed, unambiguous encoding.

    In order: HASH_TAG; seq as u64; id as str; at as i64 microseconds since 1970-01-01 UTC;
    client_id, purpose, operation as str; snapshot_id, rule_set_id as nullable str; the number of
    subject hashes as u32, then each as bytes; subject_count and found_count as i64;
    response_digest as bytes; request_id as str. All integers big-endian; str is u32 length +
    UTF-8 (length 0xFFFFFFFF for NULL); bytes is u32 length + the bytes. `seq` overrides the
    record's own (the writer hashes a record before placing it).
    """
    micros = (r.at - _EPOCH) // dt.timedelta(microseconds=1)
    parts = [
        HASH_TAG,
        struct.pack(">Q", r.seq if seq is None else seq),
        _str(r.id),
        struct.pack(">q", micros),
        _str(r.client_id),
        _str(r.purpose),
        _str(r.operation),
        _str(r.snapshot_id),
        _str(r.rule_set_id),
        struct.pack(">I", len(r.subject_hashes)),
        _hashes(r.subject_hashes),
        struct.pack(">qq", r.subject_count, r.found_count),
        _bytes(r.response_digest),
        _str(r.request_id),
    ]
    return b"".join(parts)


def record_hash(prev_hash: bytes, r: AuditRecord) -> bytes:
    return hashlib.sha256(prev_hash + canonical_bytes(r)).digest()


# --- writing -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """What a request reports about one access. `subjects` use nik_subject / no_kk_subject."""

    id: str
    client_id: str
    purpose: str
    operation: str
    snapshot_id: str | None
    rule_set_id: str | None
    subjects: Sequence[str]
    found: int
    response_digest: bytes
    request_id: str


def unchained_record(entry: AuditEntry, hmac_key: bytes, at: dt.datetime) -> AuditRecord:
    """The record an entry becomes, before the writer gives it a place in the chain."""
    for text in (entry.id, entry.client_id, entry.purpose, entry.operation, entry.request_id):
        if not text or "\x00" in text:
            raise ValueError("audit entry text fields must be non-empty and without NUL")
    if len(entry.response_digest) != 32:
        raise ValueError("response_digest must be a sha256 digest (32 bytes)")
    if entry.found < 0:
        raise ValueError("found must not be negative")
    hashes: dict[bytes, None] = {}  # distinct, in request order
    inner, outer = _keyed(hmac_key)
    for subject in entry.subjects:
        if not subject.startswith(_SUBJECT_KINDS):
            raise ValueError("audit subjects must be nik_subject(...) or no_kk_subject(...)")
        h = inner.copy()
        h.update(subject.encode())
        o = outer.copy()
        o.update(h.digest())
        hashes[o.digest()] = None
    return AuditRecord(
        seq=0,
        id=entry.id,
        at=at,
        client_id=entry.client_id,
        purpose=entry.purpose,
        operation=entry.operation,
        snapshot_id=entry.snapshot_id,
        rule_set_id=entry.rule_set_id,
        subject_hashes=tuple(hashes),
        subject_count=len(entry.subjects),
        found_count=entry.found,
        response_digest=entry.response_digest,
        request_id=entry.request_id,
        prev_hash=b"",
        hash=b"",
    )


async def append(raw: asyncpg.Connection, records: Sequence[AuditRecord]) -> list[AuditRecord]:
    """Chain and insert records inside the caller's transaction (an asyncpg connection).

    Locks audit_head first, so concurrent appenders (other processes) wait and chain after us.
    """
    seq, prev = await repo.lock_head(raw)
    chained = chain(seq, prev, records)
    if chained:
        await repo.insert_many(raw, chained)
        await repo.set_head(raw, chained[-1].seq, chained[-1].hash)
    return chained


def chain(seq: int, prev: bytes, records: Sequence[AuditRecord]) -> list[AuditRecord]:
    """`records` placed after the chain's tip (seq, hash): numbered, linked and hashed."""
    chained = []
    for r in records:
        seq += 1
        h = hashlib.sha256(prev + canonical_bytes(r, seq)).digest()
        placed = AuditRecord(
            seq, r.id, r.at, r.client_id, r.purpose, r.operation, r.snapshot_id,
            r.rule_set_id, r.subject_hashes, r.subject_count, r.found_count,
            r.response_digest, r.request_id, prev, h,
        )  # fmt: skip
        chained.append(placed)
        prev = h
    return chained


@dataclass(slots=True)
class _Pending:
    record: AuditRecord
    future: asyncio.Future[int]  # the record's seq once durable


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
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._engine = engine
        self._key = hmac_key
        # Receipts for the records written (app.services.receipts); None: no receipts.
        self.keyring = keyring
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
        self.stats = WriterStats()

    async def start(self) -> None:
        if self._task is None:
            self._closed = False
            self._task = asyncio.create_task(self._run(), name="audit-writer")

    async def stop(self) -> None:
        """Refuse new records, write everything already queued, then end the task."""
        if self._task is None:
            return
        self._closed = True
        await self._queue.put(_STOP)
        await self._task
        self._task = None
        await self._disconnect()

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

    async def record(self, entry: AuditEntry) -> int:
        """The record's seq (its place in the chain) once it is durable."""
        if self._task is None or self._closed:
            raise AuditUnavailable("the audit writer is not running")
        record = unchained_record(entry, self._key, dt.datetime.now(dt.UTC))
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_consume)
        try:
            self._queue.put_nowait(_Pending(record, future))
        except asyncio.QueueFull:
            # Backpressure: fail fast (503) instead of letting requests pile up behind the log.
            raise AuditUnavailable("the audit log is saturated; retry later") from None
        # No shield needed: the record is in the queue and gets written whatever happens to
        # this caller; a cancelled caller only cancels its own future, which the writer skips.
        # The timer fails the future if the record is not durable in time (a stuck database).
        handle = asyncio.get_running_loop().call_later(self._timeout, _expire, future)
        try:
            return await future
        finally:
            handle.cancel()

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
        try:
            async with asyncio.timeout(self._timeout):
                raw = await self._raw()
                # Usually one statement against the tip this writer left; if another process
                # appended since (or the tip is unknown), chain under the head's row lock.
                head = self._head
                written = head is not None and await repo.append_if_head(
                    raw, chained := chain(*head, records)
                )
                if not written:
                    async with raw.transaction():
                        chained = await append(raw, records)
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
        for p, placed in zip(batch, chained, strict=True):
            if not p.future.done():
                p.future.set_result(placed.seq)


# --- verifying ---------------------------------------------------------------------------------

Problem = Literal["altered", "deleted", "inserted", "reordered"]


class VerifyResult(BaseModel):
    """The outcome of walking the whole chain. On failure, the FIRST bad record and why."""

    ok: bool
    checked: int
    head_seq: int
    head_hash: str
    problem: Problem | None = None
    seq: int | None = None
    audit_id: str | None = None
    reason: str | None = None


@dataclass(slots=True)
class _Finding:
    problem: Problem
    record: AuditRecord | None
    reason: str
    seq: int | None = None


def _check(
    before_prev: bytes | None,
    prev: AuditRecord | None,
    r: AuditRecord,
    nxt: AuditRecord | None,
) -> _Finding | None:
    """Judge record r, knowing the previous two and the next (for inserted vs reordered)."""
    expected_seq = prev.seq + 1 if prev else 1
    expected_prev = prev.hash if prev else GENESIS
    if r.seq != expected_seq:
        return _Finding(
            "deleted", r, f"records {expected_seq}..{r.seq - 1} are missing before this one"
        )
    if r.prev_hash != expected_prev:
        if prev is not None and before_prev is not None and r.prev_hash == before_prev:
            return _Finding(
                "inserted", prev, "not part of the chain: the next record links past it"
            )
        if nxt is not None and nxt.prev_hash == expected_prev:
            if r.prev_hash == nxt.hash:
                return _Finding(
                    "reordered",
                    r,
                    f"chained after record {r.prev_hash.hex()[:12]}, found before it",
                )
            return _Finding("inserted", r, "not part of the chain: the next record links past it")
        if prev is not None and record_hash(r.prev_hash, r) == r.hash:
            return _Finding(
                "altered",
                prev,
                "its hash was recomputed: the next record was chained to a different one",
            )
        return _Finding("altered", r, "its prev_hash is not the previous record's hash")
    if record_hash(r.prev_hash, r) != r.hash:
        return _Finding("altered", r, "its content does not match its hash")
    return None


async def verify_chain(conn: AsyncConnection) -> VerifyResult:
    """Walk the chain by seq (server-side cursor, constant memory) and judge every record.

    Run it in a REPEATABLE READ transaction for one consistent view (the CLI does); under READ
    COMMITTED, records appended while it runs are told apart from forged ones by re-reading
    the head at the end.
    """
    head_seq, head_hash = await repo.read_head(conn)
    checked = 0
    before_prev: bytes | None = None
    prev: AuditRecord | None = None
    pending: AuditRecord | None = None
    finding: _Finding | None = None

    async for r in repo.stream_by_seq(conn):
        if pending is not None:
            finding = _check(before_prev, prev, pending, r)
            if finding:
                break
            before_prev = prev.hash if prev else GENESIS
            prev = pending
            checked += 1
        pending = r
    if finding is None and pending is not None:
        finding = _check(before_prev, prev, pending, None)
        if finding is None:
            prev = pending
            checked += 1
    if finding is None:
        finding = await _check_tail(conn, prev, head_seq, head_hash)
    if finding is None:
        return VerifyResult(ok=True, checked=checked, head_seq=head_seq, head_hash=head_hash.hex())
    record = finding.record
    return VerifyResult(
        ok=False,
        checked=checked,
        head_seq=head_seq,
        head_hash=head_hash.hex(),
        problem=finding.problem,
        seq=record.seq if record else finding.seq,
        audit_id=record.id if record else None,
        reason=finding.reason,
    )


async def _check_tail(
    conn: AsyncConnection, last: AuditRecord | None, head_seq: int, head_hash: bytes
) -> _Finding | None:
    """The last record must be the head: catches a deleted tail, an appended forgery, a rehash."""
    last_seq = last.seq if last else 0
    if last_seq < head_seq:
        return _Finding(
            "deleted",
            None,
            f"records {last_seq + 1}..{head_seq} are missing at the end",
            seq=last_seq + 1,
        )
    if last_seq > head_seq:
        # Appended after we read the head (READ COMMITTED), or forged past it?
        head_seq, head_hash = await repo.read_head(conn)
        if head_seq < last_seq:
            forged = await repo.get_by_seq(conn, head_seq + 1)
            return _Finding(
                "inserted", forged, "beyond the chain head: no writer appended it", seq=head_seq + 1
            )
        if head_seq > last_seq:
            return None
    if last is not None and last.hash != head_hash:
        return _Finding("altered", last, "its hash was recomputed: the chain head disagrees")
    return None


# --- the trail (art. 32) -----------------------------------------------------------------------


class TrailEntry(BaseModel):
    """One access to a data subject's record."""

    at: dt.datetime
    audit_id: str
    client_id: str
    client_name: str | None
    purpose: str
    operation: str
    snapshot_id: str | None
    rule_set_id: str | None


async def trail(conn: AsyncConnection, hmac_key: bytes, subject: str) -> list[TrailEntry]:
    """Every recorded access to one subject (`nik_subject(nik)` or `no_kk_subject(no_kk)`)."""
    if not subject.startswith(_SUBJECT_KINDS):
        raise ValueError("subject must be nik_subject(...) or no_kk_subject(...)")
    rows = await repo.trail(conn, subject_hash(hmac_key, subject))
    return [
        TrailEntry(
            at=r.at,
            audit_id=r.audit_id,
            client_id=r.client_id,
            client_name=r.client_name,
            purpose=r.purpose,
            operation=r.operation,
            snapshot_id=r.snapshot_id,
            rule_set_id=r.rule_set_id,
        )
        for r in rows
    ]


@dataclass(frozen=True, slots=True)
class Indexed:
    records: int  # records indexed by this run
    entries: int  # (subject, record) entries added
    indexed_upto: int  # every record up to this seq is indexed
    head: int  # the chain's last seq when the run ended


async def index_subjects(
    engine: AsyncEngine, *, batch: int = 2_000, progress: Callable[[int], None] | None = None
) -> Indexed:
    """Index every record not yet in audit_subjects (`tepat audit index`), `batch` records a
    transaction; safe to run while the service writes and beside another indexer."""
    if batch < 1:
        raise ValueError("batch must be at least 1")
    records = entries = 0
    async with engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        assert isinstance(raw, asyncpg.Connection)
        while True:
            _, done, added = await repo.index_step(raw, batch)
            records, entries = records + done, entries + added
            if progress is not None and done:
                progress(done)
            if done < batch:
                break
        upto, head = await repo.index_lag(conn)
    return Indexed(records, entries, upto, head)


@contextlib.asynccontextmanager
async def running(writer: AuditWriter) -> AsyncIterator[AuditWriter]:
    """`async with running(AuditWriter(...)) as writer:` for scripts and tests."""
    await writer.start()
    try:
        yield writer
    finally:
        await writer.stop()
