"""SQL over bulk_jobs, bulk_job_input and bulk_job_results (asyncpg: bytea in bulk)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from app.models.jobs import bulk_job_input, bulk_job_results, bulk_jobs
from app.repositories import audit as audit_repo
from app.repositories.audit import AuditRecord

_JOB_COLUMNS = ", ".join(c.name for c in bulk_jobs.c if c.name != "worker")


@dataclass(frozen=True, slots=True)
class JobRow:
    """A job as its client sees it (never the worker's lease)."""

    id: uuid.UUID
    client_id: str
    purpose: str
    request_id: str
    snapshot_id: str
    rule_set_id: str
    programs: list[str]
    field_groups: list[str]
    explain: bool
    meta: str
    input_format: str
    input_sha256: bytes
    input_bytes: int
    lines: int
    blank: int
    chunks: int
    status: str
    chunks_done: int
    answered: int
    found: int
    not_found: int
    errors: int
    result_bytes: int
    error_code: str | None
    error_message: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    expires_at: dt.datetime | None
    kind: str  # "bulk" or "changes" (0003_change_jobs)
    request: str | None  # a change list's request, pinned (JSON)
    after_nik: int | None  # a change list's keyset cursor: the last person committed
    tally: str | None  # a change list's summary counts through its committed chunks (JSON)
    results_coding: str  # how its answers are stored: "zstd", or "identity" (as answered)


def _job(row: asyncpg.Record | None) -> JobRow | None:
    return JobRow(**dict(row)) if row is not None else None


async def insert_job(raw: asyncpg.Connection, **values: Any) -> None:
    """The job's row, inside the upload's transaction (its totals come at the end)."""
    names = list(values)
    await raw.execute(
        f"INSERT INTO {bulk_jobs.name} ({', '.join(names)}) "
        f"VALUES ({', '.join(f'${i}' for i in range(1, len(names) + 1))})",
        *values.values(),
    )


async def insert_input(
    raw: asyncpg.Connection, job_id: uuid.UUID, chunks: Sequence[tuple[int, int, bytes]]
) -> None:
    """Input chunks (number, first_line, data), by COPY."""
    await raw.copy_records_to_table(
        bulk_job_input.name,
        records=[(job_id, n, first, data) for n, first, data in chunks],
        columns=["job_id", "chunk", "first_line", "data"],
    )


async def finish_upload(raw: asyncpg.Connection, job_id: uuid.UUID, **totals: Any) -> None:
    sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(totals, start=2))
    await raw.execute(f"UPDATE bulk_jobs SET {sets} WHERE id = $1", job_id, *totals.values())


async def get(raw: asyncpg.Connection, job_id: uuid.UUID, client_id: str) -> JobRow | None:
    """The job, only for the client that created it."""
    return _job(
        await raw.fetchrow(
            f"SELECT {_JOB_COLUMNS} FROM bulk_jobs WHERE id = $1 AND client_id = $2",
            job_id,
            client_id,
        )
    )


async def cancel(
    raw: asyncpg.Connection, job_id: uuid.UUID, client_id: str, retention: dt.timedelta
) -> str | None:
    """A queued or running job is cancelled (kept, without input or answers, until its
    retention ends); a finished one is deleted. In one transaction. The job's status before,
    or None: not this client's job."""
    async with raw.transaction():
        before = await raw.fetchval(
            "SELECT status FROM bulk_jobs WHERE id = $1 AND client_id = $2 FOR UPDATE",
            job_id,
            client_id,
        )
        if before in ("queued", "running"):
            await raw.execute(
                "UPDATE bulk_jobs SET status = 'cancelled', finished_at = now(), "
                "expires_at = now() + $2, worker = NULL WHERE id = $1",
                job_id,
                retention,
            )
            await raw.execute("DELETE FROM bulk_job_input WHERE job_id = $1", job_id)
            await raw.execute("DELETE FROM bulk_job_results WHERE job_id = $1", job_id)
        elif before is not None:
            await raw.execute("DELETE FROM bulk_jobs WHERE id = $1", job_id)
    return str(before) if before is not None else None


# --- the worker -----------------------------------------------------------------------------


async def claim(raw: asyncpg.Connection, job_id: uuid.UUID, worker: uuid.UUID) -> JobRow | None:
    """Take the job over (queued, or running under a worker that died): None when it has
    ended, was cancelled or is gone."""
    return _job(
        await raw.fetchrow(
            "UPDATE bulk_jobs SET status = 'running', worker = $2, "
            "started_at = coalesce(started_at, now()), error_code = NULL, error_message = NULL "
            "WHERE id = $1 AND status IN ('queued', 'running') "
            f"RETURNING {_JOB_COLUMNS}",
            job_id,
            worker,
        )
    )


async def read_input(
    raw: asyncpg.Connection, job_id: uuid.UUID, start: int, limit: int
) -> list[tuple[int, int, bytes]]:
    rows = await raw.fetch(
        "SELECT chunk, first_line, data FROM bulk_job_input "
        "WHERE job_id = $1 AND chunk >= $2 ORDER BY chunk LIMIT $3",
        job_id,
        start,
        limit,
    )
    return [(r["chunk"], r["first_line"], r["data"]) for r in rows]


async def lock_progress(
    raw: asyncpg.Connection, job_id: uuid.UUID, worker: uuid.UUID
) -> tuple[int, int] | None:
    """(chunks_done, result_bytes) under the job's row lock, if `worker` still holds the job
    running; None: it was cancelled, or another worker took it over."""
    row = await raw.fetchrow(
        "SELECT chunks_done, result_bytes FROM bulk_jobs "
        "WHERE id = $1 AND status = 'running' AND worker = $2 FOR UPDATE",
        job_id,
        worker,
    )
    return (row["chunks_done"], row["result_bytes"]) if row is not None else None


async def store_chunks(
    raw: asyncpg.Connection,
    job_id: uuid.UUID,
    rows: Sequence[tuple[int, int, bytes, str | None, str | None]],
    size: int,
    counts: tuple[int, int, int, int],
    cursor: tuple[int | None, str | None] = (None, None),
) -> None:
    """Chunks' answers (number, start byte, data as stored, audit id, receipt), their size as
    answered (`size` bytes: result_bytes counts the answer as sent), and the job's committed
    progress past them (in the caller's transaction, after `lock_progress`). A change list
    also commits its cursor (after_nik, tally), and grows its lines and chunks as it goes
    (unknown until its end; a bulk job's are known at upload, so this leaves them)."""
    await raw.copy_records_to_table(
        bulk_job_results.name,
        records=[(job_id, *row) for row in rows],
        columns=["job_id", "chunk", "start", "data", "audit_id", "receipt"],
    )
    await raw.execute(
        "UPDATE bulk_jobs SET chunks_done = chunks_done + $2, result_bytes = result_bytes + $3, "
        "answered = answered + $4, found = found + $5, not_found = not_found + $6, "
        "errors = errors + $7, chunks = greatest(chunks, chunks_done + $2), "
        "lines = greatest(lines, answered + $4), after_nik = coalesce($8, after_nik), "
        "tally = coalesce($9, tally) WHERE id = $1",
        job_id,
        len(rows),
        size,
        *counts,
        *cursor,
    )


# A chunk commit in ONE statement (one round trip, its own implicit transaction) when the
# worker knows the audit chain's tip (it wrote it last): the job's row is locked and must still
# be this worker's, running, at the progress the worker expects (`held`); the head moves from
# that tip to the chunks' last record (compare-and-set, `moved`); then, only if both hold, the
# records, the answers and the progress (and a change list's cursor) go in. Anything else
# writes nothing and says which did not hold: the worker takes the job as lost, or chains again
# under the head's row lock (`lock_progress`, `append`, `store_chunks` in one transaction).
_COMMIT_IF_HEAD = f"""
WITH held AS (
    SELECT 1 FROM bulk_jobs
    WHERE id = $1 AND status = 'running' AND worker = $2 AND chunks_done = $3
      AND result_bytes = $4
    FOR UPDATE
), moved AS (
    UPDATE audit_head SET seq = $7, hash = $8
    WHERE id = 1 AND seq = $5 AND hash = $6 AND EXISTS (SELECT FROM held)
    RETURNING 1
), records AS (
    {audit_repo.insert_records_sql(9, "moved")}
), answers AS (
    INSERT INTO bulk_job_results (job_id, chunk, start, data, audit_id, receipt)
    SELECT $1, u.chunk, u.start, u.data, u.audit_id, u.receipt
    FROM unnest($25::int4[], $26::int8[], $27::bytea[], $28::text[], $29::text[])
         AS u(chunk, start, data, audit_id, receipt)
    WHERE EXISTS (SELECT FROM moved)
), progress AS (
    UPDATE bulk_jobs SET chunks_done = chunks_done + $30, result_bytes = result_bytes + $31,
        answered = answered + $32, found = found + $33, not_found = not_found + $34,
        errors = errors + $35, chunks = greatest(chunks, chunks_done + $30),
        lines = greatest(lines, answered + $32), after_nik = coalesce($36, after_nik),
        tally = coalesce($37, tally)
    WHERE id = $1 AND EXISTS (SELECT FROM moved)
)
SELECT EXISTS (SELECT FROM held) AS held, EXISTS (SELECT FROM moved) AS moved
"""


async def commit_if_head(
    raw: asyncpg.Connection,
    job_id: uuid.UUID,
    worker: uuid.UUID,
    expected: tuple[int, int],
    records: Sequence[AuditRecord],
    rows: Sequence[tuple[int, int, bytes, str | None, str | None]],
    size: int,
    counts: tuple[int, int, int, int],
    cursor: tuple[int | None, str | None] = (None, None),
) -> tuple[bool, bool]:
    """Chunks' answers, their chained audit `records` (at least one) and the job's progress in
    one statement, if the job is still this worker's at `expected` (chunks_done, result_bytes)
    and the chain's head is still the record the first one links to. (held, moved): nothing
    was written unless both are true."""
    first, last = records[0], records[-1]
    row = await raw.fetchrow(
        _COMMIT_IF_HEAD,
        job_id,
        worker,
        *expected,
        first.seq - 1,
        first.prev_hash,
        last.seq,
        last.hash,
        *audit_repo.record_arrays(records),
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
        [r[3] for r in rows],
        [r[4] for r in rows],
        len(rows),
        size,
        *counts,
        *cursor,
    )
    assert row is not None
    return bool(row["held"]), bool(row["moved"])


async def finish(
    raw: asyncpg.Connection,
    job_id: uuid.UUID,
    worker: uuid.UUID,
    status: str,
    retention: dt.timedelta,
    error: tuple[str, str] | None = None,
) -> bool:
    """End the job (succeeded or failed) if `worker` still holds it; its input is deleted."""
    async with raw.transaction():
        done = await raw.fetchval(
            "UPDATE bulk_jobs SET status = $3, finished_at = now(), expires_at = now() + $4, "
            "worker = NULL, error_code = $5, error_message = $6 "
            "WHERE id = $1 AND worker = $2 AND status = 'running' RETURNING true",
            job_id,
            worker,
            status,
            retention,
            error[0] if error else None,
            error[1] if error else None,
        )
        if done:
            await raw.execute("DELETE FROM bulk_job_input WHERE job_id = $1", job_id)
    return bool(done)


async def requeue(
    raw: asyncpg.Connection, job_id: uuid.UUID, worker: uuid.UUID, error: tuple[str, str]
) -> bool:
    """Back to queued (it waits: the daily quota), saying why."""
    done = await raw.fetchval(
        "UPDATE bulk_jobs SET status = 'queued', worker = NULL, error_code = $3, "
        "error_message = $4 WHERE id = $1 AND worker = $2 AND status = 'running' RETURNING true",
        job_id,
        worker,
        *error,
    )
    return bool(done)


async def purge(raw: asyncpg.Connection) -> int:
    """Delete the jobs past their retention (input and answers go with them)."""
    rows = await raw.fetch("DELETE FROM bulk_jobs WHERE expires_at < now() RETURNING id")
    return len(rows)


# --- answers --------------------------------------------------------------------------------


async def receipts(raw: asyncpg.Connection, job_id: uuid.UUID) -> list[tuple[str, str | None]]:
    """(audit id, receipt) of every recorded chunk, in chunk order."""
    rows = await raw.fetch(
        "SELECT audit_id, receipt FROM bulk_job_results "
        "WHERE job_id = $1 AND audit_id IS NOT NULL ORDER BY chunk",
        job_id,
    )
    return [(r["audit_id"], r["receipt"]) for r in rows]


async def chunk_at(raw: asyncpg.Connection, job_id: uuid.UUID, offset: int) -> int:
    """The number of the chunk holding byte `offset` of the answer (0 when before any)."""
    found = await raw.fetchval(
        "SELECT chunk FROM bulk_job_results WHERE job_id = $1 AND start <= $2 "
        "ORDER BY chunk DESC LIMIT 1",
        job_id,
        offset,
    )
    return int(found) if found is not None else 0


async def results(
    raw: asyncpg.Connection, job_id: uuid.UUID, start: int, stop: int, batch: int = 16
) -> AsyncIterator[tuple[int, int, bytes, str | None]]:
    """Chunks start .. stop-1 in order, `batch` at a time: (chunk, start byte, data, audit id)."""
    while start < stop:
        rows = await raw.fetch(
            "SELECT chunk, start, data, audit_id FROM bulk_job_results "
            "WHERE job_id = $1 AND chunk >= $2 AND chunk < $3 ORDER BY chunk LIMIT $4",
            job_id,
            start,
            stop,
            batch,
        )
        if not rows:
            return
        for r in rows:
            yield r["chunk"], r["start"], r["data"], r["audit_id"]
        start = rows[-1]["chunk"] + 1
