"""Bulk jobs: an upload stored in PostgreSQL, answered by a worker chunk by chunk, downloaded later.

The stream (`POST /v1/bulk/eligibility`, app.services.bulk) asks its client to read while it
sends. A job does not: the upload is stored (`submit`), a worker answers it (`Runner`, queued
through pgqueuer: app.services.worker), and the client downloads the answers when it likes,
resuming a cut download by byte range or by chunk (`Download`).

The worker reads the input and starts chunks' lookups on one connection while a committer task
commits the answered chunks, in order, on another, so no lookup waits on a commit.
Every chunk of 1,000 lines is answered by the stream's own code (`bulk.Job.lookup`), and its
answer bytes, its audit record (appended to the chain in the same transaction: `append`), its
receipt and the job's committed progress are written in ONE transaction. So a job survives any
crash of its worker: the next one resumes at the first chunk not committed, no line is answered
twice or skipped, and no chunk has two audit records (a rolled-back chunk takes its record with
it). That transaction is usually ONE statement (`repo.commit_if_head`), chained to the audit
tip the worker wrote last; the head's row lock decides when another appender moved it.

A change list runs as a job of kind `changes` (`submit_changes`): the same resource, download
and worker pipeline; its chunks are made by `app.services.changes.ChangeList` in NIK order and
committed with the keyset cursor (the last person's NIK) and the summary's counts through them,
so it resumes after the last person committed. docs/bulk.md#bulk-jobs, docs/changes.md#as-a-job.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import dataclasses
import datetime as dt
import hashlib
import io
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import asyncpg
import orjson
import zstandard
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth.principal import ClientInfo, Principal
from app.db import read_connection
from app.eligibility import Program
from app.errors import (
    ClientSuspended,
    JobCancelled,
    JobNotFinished,
    JobNotFound,
    PayloadTooLarge,
    QuotaExceeded,
    RangeNotSatisfiable,
    TepatError,
    ValidationFailed,
)
from app.repositories import clients as clients_repo
from app.repositories import jobs as repo
from app.repositories.audit import AuditRecord
from app.repositories.jobs import JobRow
from app.resilience import DATABASE_ERRORS
from app.services import bulk, changes, eligibility
from app.services.audit.records import chain, new_audit_id
from app.services.audit.writer import AuditWriter, append
from app.services.catalog import Reads
from app.services.disclosure import CHANGE_GROUPS, change_fields
from app.services.lookup import Caller, Recorded, access_entry, receipt, view_for
from app.services.pinning import Pinned, pin

log = logging.getLogger("tepat.jobs")

ENTRYPOINT = "tepat.bulk_job"  # the queue's name for "run this job" (either kind)
QUEUE_SCHEMA = "tepat_queue"  # the schema the migration installs the queue's tables in
FORMATS = {"application/x-ndjson": "ndjson", "text/csv": "csv"}
STORE_BATCH = 8  # input chunks written (COPY) at once during an upload
# How a job's answers are stored (bulk_jobs.results_coding, 0003_change_jobs): compressed by the
# worker (zstd level 1: ~2 ms and a fourteenth of the bytes for a chunk of 1,000 answers), so
# a chunk's commit writes ~55 KB, not ~765 KB for PostgreSQL to compress under the commit.
IDENTITY: Final = "identity"
ZSTD: Final = "zstd"
ZSTD_LEVEL: Final = 1


def retention(days: float) -> dt.timedelta:
    return dt.timedelta(days=days)


# --- submission -----------------------------------------------------------------------------


async def submit(
    raw: asyncpg.Connection,
    reads: Reads,
    caller: Caller,
    options: bulk.Options,
    input_format: str,
    body: AsyncIterable[bytes],
    *,
    max_bytes: int,
    enqueue: Callable[[asyncpg.Connection, uuid.UUID], Awaitable[None]],
) -> JobRow:
    """Store an upload as a queued job, in ONE transaction: the job, its input in chunks and
    its place in the queue appear together at commit, or not at all (a refused or cut upload
    leaves nothing). The pin (snapshot, rule set), the programs and field groups are fixed
    here, before the first byte is read, so a refusal is a problem, not a failed job."""
    view = view_for(caller, options.programs, options.explain)
    pinned = await reads.pin(options.snapshot, options.rule_set)
    job_id = uuid.uuid4()
    digest = hashlib.sha256()
    size = 0
    chunker = bulk.Chunker()
    lines = bulk.CsvLines() if input_format == "csv" else None
    async with raw.transaction():
        await repo.insert_job(
            raw,
            id=job_id,
            client_id=caller.principal.client_id,
            purpose=caller.purpose,
            request_id=caller.request_id,
            snapshot_id=pinned.snapshot.id,
            rule_set_id=pinned.rule_set.id,
            programs=[p.value for p in view.programs],
            field_groups=sorted(view.groups),
            explain=view.explain,
            meta=orjson.dumps(pinned.meta(caller.request_id)).decode(),
            input_format=input_format,
            input_sha256=bytes(32),
            input_bytes=0,
            lines=0,
            blank=0,
            chunks=0,
            status="queued",
            results_coding=ZSTD,
        )
        pending: list[bulk.InputChunk] = []
        async for data in body:
            size += len(data)
            if size > max_bytes:
                raise PayloadTooLarge(f"a bulk job's upload may be at most {max_bytes:,} bytes")
            digest.update(data)
            pending += chunker.feed(lines.feed(data) if lines is not None else data)
            if len(pending) >= STORE_BATCH:
                await _store(raw, job_id, pending)
                pending = []
        if lines is not None:
            pending += chunker.feed(lines.end())
        pending += chunker.end()
        await _store(raw, job_id, pending)
        if chunker.items == 0:
            raise ValidationFailed(
                "the upload holds no line to answer: send one NIK a line"
                + (" (CSV: a row per NIK)" if lines is not None else ""),
                field="body",
            )
        await repo.finish_upload(
            raw,
            job_id,
            input_sha256=digest.digest(),
            input_bytes=size,
            lines=chunker.items,
            blank=chunker.blank,
            chunks=chunker.chunks,
        )
        await enqueue(raw, job_id)
        job = await repo.get(raw, job_id, caller.principal.client_id)
    assert job is not None
    return job


async def _store(raw: asyncpg.Connection, job_id: uuid.UUID, chunks: list[bulk.InputChunk]) -> None:
    if chunks:
        await repo.insert_input(raw, job_id, [(c.number, c.first_line, c.data) for c in chunks])


async def submit_changes(
    raw: asyncpg.Connection,
    engine: AsyncEngine,
    reads: Reads | None,
    caller: Caller,
    asked: changes.Asked,
    body: bytes,
    *,
    chunk: int,
    enqueue: Callable[[asyncpg.Connection, uuid.UUID], Awaitable[None]],
) -> JobRow:
    """Queue a change list as a job (`kind` 'changes'), in ONE transaction. Everything that can
    refuse it is checked first (`changes.plan`: a refusal is a problem, not a failed job), and
    what it answers is fixed now: both snapshots and both rule sets (a rule set coming into
    force before it runs changes nothing), the programs, kinds, region and the fields shown.
    Its input is the request (`body`, its SHA-256 and size in the status)."""
    plan = await changes.plan(engine, caller, asked, reads)
    before, after = plan.before, plan.after
    shown = [f for f, on in (("decile", plan.decile), ("family", plan.family)) if on]
    request = {
        "from": before.snapshot.id,
        "to": after.snapshot.id,
        "from_rule_set": before.rule_set.id,
        "to_rule_set": after.rule_set.id,
        "kinds": [k for k in changes.KINDS if k in plan.where.kinds],
        "kode_wilayah": asked.kode_wilayah,
        "effective_date": after.snapshot.cutoff_date.isoformat(),
        "chunk": chunk,  # people per chunk
    }
    snapshot_id, rule_set_id = plan.audit_names()
    job_id = uuid.uuid4()
    async with raw.transaction():
        await repo.insert_job(
            raw,
            id=job_id,
            client_id=caller.principal.client_id,
            purpose=caller.purpose,
            request_id=caller.request_id,
            snapshot_id=snapshot_id,
            rule_set_id=rule_set_id,
            programs=list(plan.where.programs),
            field_groups=sorted({"decision"}.union(*(CHANGE_GROUPS[f] for f in shown))),
            explain=False,
            meta=orjson.dumps(plan.meta()).decode(),
            input_format="json",
            input_sha256=hashlib.sha256(body).digest(),
            input_bytes=len(body),
            lines=0,
            blank=0,
            chunks=0,
            status="queued",
            kind="changes",
            request=orjson.dumps(request).decode(),
            results_coding=ZSTD,
        )
        await enqueue(raw, job_id)
        job = await repo.get(raw, job_id, caller.principal.client_id)
    assert job is not None
    return job


# --- what a client sees -----------------------------------------------------------------------


async def get(raw: asyncpg.Connection, job_id: uuid.UUID, client_id: str) -> JobRow:
    """The job, only for its own client: any other (or none) is 404, never 403."""
    job = await repo.get(raw, job_id, client_id)
    if job is None:
        raise JobNotFound("no bulk job with this id for this client")
    return job


def describe(job: JobRow, now: dt.datetime | None = None) -> dict[str, Any]:
    """The job's status document (GET /v1/bulk/jobs/{id})."""
    now = now or dt.datetime.now(dt.UTC)
    meta = orjson.loads(job.meta)
    rate: float | None = None
    left: float | None = None
    if job.started_at is not None:
        end = job.finished_at or now
        elapsed = (end - job.started_at).total_seconds()
        if elapsed > 0 and job.answered > 0:
            rate = round(job.answered / elapsed, 1)
            if job.status == "running" and job.kind == "bulk":  # a change list's end: unknown
                left = round((job.lines - job.answered) / (job.answered / elapsed), 1)
    out: dict[str, Any] = {
        "id": str(job.id),
        "kind": job.kind,
        "status": job.status,
        "created_at": job.created_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "expires_at": job.expires_at.isoformat() if job.expires_at else None,
        "input": {
            "format": job.input_format,
            "bytes": job.input_bytes,
            "sha256": job.input_sha256.hex(),
            "lines": job.lines,
            "blank": job.blank,
            "chunks": job.chunks,
        },
        "progress": {
            "lines_read": job.lines,
            "answered": job.answered,
            "found": job.found,
            "not_found": job.not_found,
            "errors": job.errors,
            "chunks_done": job.chunks_done,
            "chunks": job.chunks,
            "lines_per_second": rate,
            "seconds_left": left,
        },
        "purpose": job.purpose,
        "programs": job.programs,
        "explain": job.explain,
        **({"request": orjson.loads(job.request)} if job.request is not None else {}),
        "request_id": job.request_id,
        **meta,
        "error": (
            {"code": job.error_code, "message": job.error_message} if job.error_code else None
        ),
    }
    return out


async def cancel(
    raw: asyncpg.Connection, job_id: uuid.UUID, client_id: str, keep: dt.timedelta
) -> str:
    """Cancel a queued or running job (its input and answers deleted at once; the worker stops
    at its next chunk), or delete a finished one. The status it had."""
    before = await repo.cancel(raw, job_id, client_id, keep)
    if before is None:
        raise JobNotFound("no bulk job with this id for this client")
    return before


# --- downloads ------------------------------------------------------------------------------


def pack(coding: str, data: bytes) -> bytes:
    """A chunk's answer bytes as a job stores them (`bulk_jobs.results_coding`)."""
    if coding == ZSTD:
        return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data)
    return data


def unpack(coding: str, stored: bytes) -> bytes:
    """The answer bytes, exactly as answered (what the receipts cover), from what is stored."""
    if coding == ZSTD:
        return zstandard.ZstdDecompressor().decompress(stored)
    return stored


async def _results(
    raw: asyncpg.Connection, job: JobRow, start: int, stop: int
) -> AsyncIterator[tuple[int, int, bytes, str | None]]:
    """`repo.results`, each chunk's bytes as answered."""
    async for number, at, stored, audit_id in repo.results(raw, job.id, start, stop):
        yield number, at, unpack(job.results_coding, stored), audit_id


CSV_HEAD = ["line", "nik", "found", "decile"]
CSV_TAIL = ["error_code", "error_message", "chunk", "audit_id"]


@dataclass(frozen=True, slots=True)
class Download:
    """The answers of a finished job as one document: the chunks' exact bytes in order, then
    the summary (or, for a failed job, its error line), as the stream would have sent them."""

    job: JobRow
    tail: bytes

    @property
    def size(self) -> int:
        return self.job.result_bytes + len(self.tail)

    @property
    def etag(self) -> str:
        return f'"{self.job.id}-{self.size}"'


async def download(raw: asyncpg.Connection, job: JobRow, receipts: bool) -> Download:
    """What GET .../results serves: only once the job has ended (409 before, 410 cancelled)."""
    if job.status in ("queued", "running"):
        raise JobNotFinished(
            f"the job is {job.status}: {job.answered:,} of {job.lines:,} lines answered; "
            "poll GET /v1/bulk/jobs/{id} until it has ended",
            status_of_job=job.status,
        )
    if job.status == "cancelled":
        raise JobCancelled("the job was cancelled and its answers deleted")
    if job.status == "failed":
        tail = bulk.error_line(job.error_code or "internal", job.error_message or "failed")
    elif job.kind == "changes":
        recorded = await repo.receipts(raw, job.id)
        tail = changes.summary_line(
            changes.Tally.loads(job.tally),
            orjson.loads(job.meta),
            job.request_id,
            [a for a, _ in recorded],
            [r for _, r in recorded] if receipts else None,
        )
    else:
        recorded = await repo.receipts(raw, job.id)
        counts = bulk.Counts(
            lines=job.answered,
            found=job.found,
            not_found=job.not_found,
            errors=job.errors,
            blank=job.blank,
            audit_ids=[a for a, _ in recorded],
            receipts=[r for _, r in recorded],
        )
        tail = bulk.summary_line(counts, orjson.loads(job.meta), receipts)
    return Download(job, tail)


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """The one range of a `Range: bytes=...` header as [first, last], or None to serve the
    whole (a header we do not read: several ranges, another unit). 416 when unsatisfiable."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first_s, dash, last_s = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if first_s == "":  # the last N bytes
            n = int(last_s)
            if n <= 0:
                raise RangeNotSatisfiable(f"the answer is {size:,} bytes")
            return max(0, size - n), size - 1
        first = int(first_s)
        last = int(last_s) if last_s else size - 1
    except ValueError:
        return None
    if first < 0 or first >= size or last < first:
        raise RangeNotSatisfiable(f"the answer is {size:,} bytes; bytes {first}- are past it")
    return first, min(last, size - 1)


async def ndjson_bytes(
    raw: asyncpg.Connection, d: Download, first: int = 0, last: int | None = None
) -> AsyncIterator[bytes]:
    """Bytes first..last (inclusive) of the document, read a few chunks at a time."""
    last = d.size - 1 if last is None else last
    body_end = d.job.result_bytes  # where the tail starts
    if first < body_end:
        start = await repo.chunk_at(raw, d.job.id, first)
        async for _, at, data, _ in _results(raw, d.job, start, d.job.chunks_done):
            if at > last:
                return
            lo, hi = max(first - at, 0), min(last - at + 1, len(data))
            if lo < hi:
                yield data[lo:hi]
    if last >= body_end:
        yield d.tail[max(first - body_end, 0) : last - body_end + 1]


async def ndjson_after(raw: asyncpg.Connection, d: Download, after: int) -> AsyncIterator[bytes]:
    """Chunks after the first `after` (a client that holds them), then the tail."""
    async for _, _, data, _ in _results(raw, d.job, after, d.job.chunks_done):
        yield data
    yield d.tail


async def ndjson_follow(
    raw: asyncpg.Connection, job: JobRow, after: int, receipts: bool, poll: float = 0.05
) -> AsyncIterator[bytes]:
    """For a job still queued or running: its chunks as they are committed, then the tail
    (summary, or error line) once it has ended. A client may so read while the job runs."""
    start = after
    while True:
        async for number, _, data, _ in _results(raw, job, start, job.chunks_done):
            yield data
            start = number + 1
        if job.status not in ("queued", "running"):
            if job.status == "cancelled":
                yield bulk.error_line("job_cancelled", "the job was cancelled")
                return
            yield (await download(raw, job, receipts)).tail
            return
        await asyncio.sleep(poll)
        fresh = await repo.get(raw, job.id, job.client_id)
        if fresh is None:
            yield bulk.error_line("job_cancelled", "the job was deleted")
            return
        job = fresh


async def csv_rows(raw: asyncpg.Connection, d: Download, after: int = 0) -> AsyncIterator[bytes]:
    """The answers as CSV (a header, then a row per answer line): the decisions of the job's
    programs, each row naming its chunk and that chunk's audit record. Receipts cover the
    NDJSON bytes, so verification uses the NDJSON download."""
    if d.job.kind == "changes":
        async for data in _mutation_rows(raw, d, after):
            yield data
        return
    programs = d.job.programs
    columns = CSV_HEAD + [f"{p}_{f}" for p in programs for f in ("eligible", "recipient")]
    columns += CSV_TAIL
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    yield out.getvalue().encode()
    async for number, _, data, audit_id in _results(raw, d.job, after, d.job.chunks_done):
        out.seek(0)
        out.truncate()
        for line in data.splitlines():
            writer.writerow(_csv_row(orjson.loads(line), programs, number + 1, audit_id))
        yield out.getvalue().encode()
    if d.job.status == "failed":
        out.seek(0)
        out.truncate()
        writer.writerow(
            ["", "", "", ""] + [""] * (2 * len(programs))
            + [d.job.error_code, d.job.error_message, "", ""]
        )  # fmt: skip
        yield out.getvalue().encode()


async def _mutation_rows(raw: asyncpg.Connection, d: Download, after: int) -> AsyncIterator[bytes]:
    """A change list's CSV: the mutation list `tepat changes list --format csv` writes (a row
    per person and change: nik, program, change, reasons, effective date = the `to` release's
    cut-off). A failed job's ends with a row naming its error (no NIK, `change` "error")."""
    effective = orjson.loads(d.job.request or "{}").get("effective_date", "")
    yield (",".join(changes.CSV_COLUMNS) + "\n").encode()
    async for _, _, data, _ in _results(raw, d.job, after, d.job.chunks_done):
        yield changes.csv_rows(data, effective).encode()
    if d.job.status == "failed":
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerow(
            ["", "", "error", f"{d.job.error_code}: {d.job.error_message}", ""]
        )
        yield out.getvalue().encode()


def _csv_row(
    answer: dict[str, Any], programs: list[str], chunk: int, audit_id: str | None
) -> list[Any]:
    error = answer.get("error")
    if error is not None:
        return (
            [answer["line"], error.get("nik", ""), "", ""] + [""] * (2 * len(programs))
            + [error["code"], error["message"], chunk, audit_id or ""]
        )  # fmt: skip
    by_program = {d["program"]: d for d in answer.get("decisions", ())}
    row: list[Any] = [answer["line"], answer["nik"], _flag(answer["found"])]
    row.append(answer.get("decile", ""))
    for p in programs:
        decided = by_program.get(p, {})
        row += [_flag(decided.get("eligible")), _flag(decided.get("recipient"))]
    return [*row, "", "", chunk, audit_id or ""]


def _flag(value: object) -> str:
    return "" if value is None else ("true" if value else "false")


# --- the worker's side ----------------------------------------------------------------------


class Lost(Exception):
    """The job is no longer this worker's: cancelled, or taken over after a missed heartbeat."""


class Wait(Exception):
    """The job must wait (the client's daily quota): re-queued to run after `seconds`."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"wait {seconds:g} s")
        self.seconds = seconds


@dataclass
class Runner:
    """Runs jobs in a worker process: what every job needs, shared by the jobs it runs."""

    engine: AsyncEngine
    audit: AuditWriter
    connect: Callable[[], Awaitable[asyncpg.Connection]]  # as the service role
    keep: dt.timedelta  # how long a finished job is kept
    pace: Callable[[Principal, int], Awaitable[None]] | None = None  # the client's allowance
    guard: Callable[[Caller], bulk.Guard | None] | None = None  # enumeration detection
    ahead: int = bulk.AHEAD
    stopping: asyncio.Event | None = None  # set: stop at the next chunk, re-queue the job
    reads: Reads | None = None  # the API's lean pool, when the worker runs in a server process

    async def run(self, job_id: uuid.UUID) -> None:
        """Answer the job from its first chunk not committed to its last, then end it.

        Raises Wait (re-queue later) and lets database errors through (the queue retries).
        """
        me = uuid.uuid4()
        conn = await self.connect()
        try:
            job = await repo.claim(conn, job_id, me)
            if job is None:
                return  # cancelled, finished or gone: nothing to do
            try:
                if job.kind == "changes":
                    await self._answer_changes(conn, job, me)
                else:
                    await self._answer(conn, job, me)
            except Lost:
                log.info("bulk job %s: no longer this worker's (cancelled or taken over)", job_id)
                return
            except Wait:
                raise
            except TepatError as e:
                if isinstance(e, QuotaExceeded):
                    await repo.requeue(conn, job_id, me, (e.code, e.detail))
                    raise Wait(float(e.extra.get("retry_after", 3600))) from None
                log.warning("bulk job %s failed: %s", job_id, e.code)
                await repo.finish(conn, job_id, me, "failed", self.keep, (e.code, e.detail))
                return
            except DATABASE_ERRORS:
                raise  # the queue tries again; the job resumes at its last committed chunk
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.error("bulk job %s failed", job_id, exc_info=e)
                message = f"the job stopped; quote its id ({job_id}) when reporting it"
                await repo.finish(conn, job_id, me, "failed", self.keep, ("internal", message))
                return
            if not await repo.finish(conn, job_id, me, "succeeded", self.keep):
                log.info("bulk job %s: ended elsewhere (cancelled)", job_id)
        finally:
            await conn.close()

    async def _answer(self, conn: asyncpg.Connection, job: JobRow, me: uuid.UUID) -> None:
        caller = await self._caller(conn, job)
        if self.reads is not None:
            # Through the catalog: read replicas answer the job only once they hold its snapshot.
            pinned = await self.reads.pin(job.snapshot_id, job.rule_set_id)
        else:
            async with read_connection(self.engine) as read:
                pinned = await pin(read, job.snapshot_id, job.rule_set_id)
        view = eligibility.View(
            programs=tuple(Program(p) for p in job.programs),
            groups=frozenset(job.field_groups),
            explain=job.explain,
        )
        pace = self.pace

        async def paced(n: int) -> None:
            if pace is not None:
                await pace(caller.principal, n)

        stream = bulk.Job(
            self.engine, self.audit, caller, pinned, view, pace=paced, reads=self.reads
        )
        counts = bulk.Counts(
            lines=job.answered, found=job.found, not_found=job.not_found, errors=job.errors
        )
        guard = self.guard(caller) if self.guard is not None else None
        coding = job.results_coding
        reader = await self.connect()

        async def lookups() -> AsyncGenerator[_Ready, None]:
            # Each chunk's lookup starts as soon as it is read: up to `ahead` run at once.
            async for chunk in self._inputs(reader, job.id, job.chunks_done):
                lookup = stream.lookup(bulk.chunk_items(chunk), new_audit_id())
                yield chunk.number, asyncio.create_task(_packed(coding, lookup)), None

        try:
            sealing = _Sealing(bulk.OPERATION, pinned, None)
            await self._pipeline(conn, job, me, caller, sealing, lookups(), counts, guard)
        finally:
            await reader.close()

    async def _answer_changes(self, conn: asyncpg.Connection, job: JobRow, me: uuid.UUID) -> None:
        """A change list as a job: the list in NIK order from the person after the last one
        committed (`after_nik`), chunk by chunk, each chunk committed with its cursor and the
        summary's counts through it, so a worker killed mid-way resumes exactly there."""
        caller = await self._caller(conn, job)
        asked = orjson.loads(job.request or "{}")
        wanted = changes.Asked(
            asked["from"], asked["to"], None, job.programs, asked["kinds"], asked["kode_wilayah"]
        )
        plan = await changes.plan(
            self.engine,
            caller,
            wanted,
            self.reads,
            rule_sets=(asked["from_rule_set"], asked["to_rule_set"]),
        )
        # What the job was submitted to show (its client's grants may have widened since).
        shown = change_fields(job.field_groups)
        plan = dataclasses.replace(plan, decile="decile" in shown, family="family" in shown)
        listed = changes.ChangeList(
            plan,
            self.audit,
            caller,
            self._cursor_connection,
            ordered=True,
            after_nik=job.after_nik,
            tally=changes.Tally.loads(job.tally),
            chunk=int(asked["chunk"]),
        )
        pace = self.pace
        coding = job.results_coding

        async def made(chunk: bulk.Chunk) -> bulk.Chunk:
            return chunk

        async def chunks() -> AsyncGenerator[_Ready, None]:
            number = job.chunks_done
            async for chunk in listed.rendered():
                if pace is not None:  # the people listed, charged as a stream's are
                    await pace(caller.principal, chunk.niks)
                packing = asyncio.create_task(_packed(coding, made(chunk)))
                yield number, packing, (listed.last_nik, listed.tally.dumps())
                number += 1

        counts = bulk.Counts(lines=job.answered, found=job.found)
        sealing = _Sealing(changes.OPERATION, plan.after, plan.audit_names())
        await self._pipeline(conn, job, me, caller, sealing, chunks(), counts, None)

    @contextlib.asynccontextmanager
    async def _cursor_connection(self) -> AsyncIterator[asyncpg.Connection]:
        conn = await self.connect()
        try:
            yield conn
        finally:
            if conn.is_in_transaction():  # stopped mid-list: no round trip to end it
                conn.terminate()
            else:
                await conn.close()

    async def _pipeline(
        self,
        conn: asyncpg.Connection,
        job: JobRow,
        me: uuid.UUID,
        caller: Caller,
        sealing: _Sealing,
        produce: AsyncGenerator[_Ready, None],
        counts: bulk.Counts,
        guard: bulk.Guard | None,
    ) -> None:
        """Commit the chunks `produce` makes, in order, on `conn`, while it makes the next.

        Two halves: this coroutine takes each chunk being answered from `produce` (which reads
        on a connection of its own); the committer commits them in order on `conn`. So making
        chunk n+1 never waits on chunk n's commit; at most `ahead` chunks wait.
        """
        window: asyncio.Queue[_Ready | None] = asyncio.Queue(self.ahead)
        pending: list[asyncio.Future[_Answer]] = []  # every chunk started, for clean-up
        place = _Place(job.chunks_done, job.result_bytes)

        async def committer() -> None:
            while True:
                head = await window.get()
                if head is None:
                    return
                # The head, and those after it already answered (and the first one not yet:
                # it is next anyway, so it waits here rather than alone).
                ready = [head]
                while not window.empty():
                    nxt = window.get_nowait()
                    if nxt is None:
                        await self._commit(conn, job, me, caller, sealing, counts, ready, place)
                        await self._guarded(guard, counts)
                        return
                    ready.append(nxt)
                    if not nxt[1].done():
                        break
                await self._commit(conn, job, me, caller, sealing, counts, ready, place)
                await self._guarded(guard, counts)

        async def put(item: _Ready | None) -> None:
            """Queue a chunk (None: the end) unless the committer stopped: then raise why."""
            putting = asyncio.ensure_future(window.put(item))
            await asyncio.wait((putting, commits), return_when=asyncio.FIRST_COMPLETED)
            if not putting.done():
                putting.cancel()
                await commits  # raises why (Lost, Wait, an enumeration, a database error)
                raise Lost  # the committer returns only after the end was queued
            await putting

        commits = asyncio.create_task(committer())
        try:
            async for item in produce:
                pending.append(item[1])
                if self.stopping is not None and self.stopping.is_set():
                    raise Wait(0)
                await put(item)
                pending = [t for t in pending if not t.done()]
            await put(None)
            await commits
            log.info(
                "job %s: chunks up to %d committed in %d commits (%d under the audit head's "
                "lock), %.2f s committing",
                job.id, place.done, place.commits, place.locked, place.seconds,
            )  # fmt: skip
        finally:
            commits.cancel()
            for task in pending:
                task.cancel()
            # Their errors are not news: the job ended (or stops here).
            await asyncio.gather(commits, *pending, return_exceptions=True)
            await produce.aclose()

    @staticmethod
    async def _guarded(guard: bulk.Guard | None, counts: bulk.Counts) -> None:
        """After each chunk, as the stream before each: a job that looks like an enumeration of
        the registry is ended and its client suspended."""
        if guard is not None and guard.suspects(counts):
            await guard.act(counts)
            raise _enumeration(guard, counts)

    async def _inputs(
        self, conn: asyncpg.Connection, job_id: uuid.UUID, start: int
    ) -> AsyncIterator[bulk.InputChunk]:
        while True:
            rows = await repo.read_input(conn, job_id, start, self.ahead)
            if not rows:
                return
            for number, first, data in rows:
                yield bulk.InputChunk(number, first, data)
            start = rows[-1][0] + 1

    async def _caller(self, conn: asyncpg.Connection, job: JobRow) -> Caller:
        """The job's client as it is now: still there, not revoked, expired or suspended, and
        still granted what the job was submitted with (its view never changes mid-job)."""
        async with self.engine.connect() as c:
            info: ClientInfo | None = await clients_repo.get_by_id(c, job.client_id)
        now = dt.datetime.now(dt.UTC)
        if (
            info is None
            or info.revoked_at is not None
            or (info.expires_at is not None and info.expires_at <= now)
        ):
            raise _ClientGone("the client was revoked or its key expired; the job is ended")
        if info.suspended_at is not None:
            raise ClientSuspended("the client is suspended; the job is ended")
        principal = Principal.from_client(info)
        if not set(job.programs) <= principal.programs or not set(job.field_groups) <= set(
            principal.field_groups
        ):
            raise _GrantsChanged(
                "the client's programs or field groups were narrowed after the job was "
                "submitted; the job is ended (submit it again)"
            )
        return Caller(principal, job.purpose, job.request_id)

    async def _commit(
        self,
        conn: asyncpg.Connection,
        job: JobRow,
        me: uuid.UUID,
        caller: Caller,
        sealing: _Sealing,
        counts: bulk.Counts,
        ready: list[_Ready],
        place: _Place,
    ) -> None:
        """The next chunks' answers, audit records, receipts and the job's progress (and a
        change list's cursor): ONE transaction (for each chunk all of them, or none), under
        the job's row lock and only while this worker holds the job. Several chunks whose
        answers are ready go together.

        Usually ONE statement (`repo.commit_if_head`: a round trip, where the transaction
        below takes eight), chained to the audit tip this worker wrote last; when another
        process appended since (or at the job's first commit) the head's row lock decides."""
        answers = [(number, await task) for number, task, _ in ready]
        chunks = [(number, a.chunk) for number, a in answers]
        began = time.perf_counter()
        cursor = ready[-1][2] or (None, None)
        operation, pinned, names = sealing
        entries = {
            number: access_entry(
                caller, c.audit_id, operation, pinned, c.subjects, c.found, c.data, names
            )
            for number, c in chunks
            if c.audit_id is not None
        }
        unchained = [self.audit.unchained(e) for e in entries.values()]
        size = sum(len(c.data) for _, c in chunks)  # bytes as answered, whatever is stored
        sums = (
            sum(c.lines for _, c in chunks),
            sum(c.found for _, c in chunks),
            sum(c.niks - c.found for _, c in chunks),
            sum(c.lines - c.niks for _, c in chunks),
        )

        def stored(placed: list[AuditRecord], start: int) -> list[_Row]:
            seqs = dict(zip(entries, (p.seq for p in placed), strict=True))
            rows: list[_Row] = []
            for number, a in answers:
                c = a.chunk
                signed: str | None = None
                if c.audit_id is not None:
                    recorded = Recorded(c.audit_id, seqs[number], entries[number].response_digest)
                    signed = receipt(self.audit, pinned, recorded)
                rows.append((number, start, a.stored, c.audit_id, signed))
                start += len(c.data)  # offsets in the answer as sent, whatever is stored
            return rows

        placed: list[AuditRecord] | None = None
        if place.head is not None and unchained and place.done == chunks[0][0]:
            chained = chain(*place.head, unchained)
            held, moved = await repo.commit_if_head(
                conn, job.id, me, (place.done, place.offset), chained,
                stored(chained, place.offset), size, sums, cursor,
            )  # fmt: skip
            if not held:  # cancelled, taken over, or not where this worker left it
                raise Lost
            if moved:
                placed = chained
        if placed is None:
            async with conn.transaction():
                locked = await repo.lock_progress(conn, job.id, me)
                if locked is None:
                    raise Lost
                done, start = locked
                if done != chunks[0][0]:  # cannot happen under the lease; never store one twice
                    raise Lost
                # Chained under audit_head's row lock, in this transaction: the records are
                # durable exactly when their chunks are, and a rolled-back chunk leaves none.
                placed = await append(conn, unchained)
                rows = stored(placed, start)
                await repo.store_chunks(conn, job.id, rows, size, sums, cursor)
            place.offset = start
            place.locked += 1
        place.done = chunks[-1][0] + 1
        place.offset += size
        if placed:
            place.head = (placed[-1].seq, placed[-1].hash)
        place.commits += 1
        place.seconds += time.perf_counter() - began
        for _, c in chunks:
            counts.add(c)


@dataclass(slots=True)
class _Place:
    """Where a job's committed answers end, as its worker last committed them (chunks, bytes),
    and the audit chain's tip it wrote last (None: unknown, read under the head's lock)."""

    done: int
    offset: int
    head: tuple[int, bytes] | None = None
    # What this run's commits cost (logged when it ends): commits, those made under the head's
    # row lock, and the seconds spent in them.
    commits: int = 0
    locked: int = 0
    seconds: float = 0.0


# A chunk's row in bulk_job_results: number, start byte, answer bytes, audit id, receipt.
_Row = tuple[int, int, bytes, str | None, str | None]


# A chunk being answered: its number, its answer (a lookup running, or a change list's chunk
# made) packed for storage, and for a change list the cursor committed with it (after_nik,
# tally as JSON).
_Ready = tuple[int, "asyncio.Future[_Answer]", tuple[int | None, str] | None]


class _Answer(NamedTuple):
    """A chunk answered, and its bytes as stored (`results_coding`: zstd, or as they are)."""

    chunk: bulk.Chunk
    stored: bytes


async def _packed(coding: str, answer: Awaitable[bulk.Chunk]) -> _Answer:
    """The chunk once answered, with its bytes packed for storage (compressed in a worker
    thread: zstd releases the GIL, so the next chunks are answered meanwhile)."""
    chunk = await answer
    if coding == IDENTITY:
        return _Answer(chunk, chunk.data)
    return _Answer(chunk, await asyncio.to_thread(pack, coding, chunk.data))


class _Sealing(NamedTuple):
    """What a chunk's audit record names: the operation, the pin its receipt names, and the
    (snapshot, rule set) names of the record when they are not the pin's (a change list's)."""

    operation: str
    pinned: Pinned
    names: tuple[str, str] | None


class _ClientGone(TepatError):
    code = "client_revoked"
    title = "The client was revoked"
    status = 403


class _GrantsChanged(TepatError):
    code = "grants_changed"
    title = "The client's grants changed"
    status = 403


def _enumeration(guard: bulk.Guard, counts: bulk.Counts) -> TepatError:
    class Enumeration(TepatError):
        code = bulk.ENUMERATION
        status = 403

    return Enumeration(
        f"under {guard.min_found_rate:.0%} of the NIKs were found after {counts.lines:,} "
        "lines: the job is ended and the client suspended until an operator reinstates it"
    )


__all__ = [
    "ENTRYPOINT",
    "FORMATS",
    "QUEUE_SCHEMA",
    "Download",
    "Lost",
    "Runner",
    "Wait",
    "byte_range",
    "cancel",
    "csv_rows",
    "describe",
    "download",
    "get",
    "ndjson_after",
    "ndjson_bytes",
    "ndjson_follow",
    "retention",
    "submit",
    "submit_changes",
]
