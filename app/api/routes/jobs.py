"""Bulk jobs as resources: upload, poll, download (resumable), cancel (app.services.jobs)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import asyncpg
import orjson
from fastapi import APIRouter, Header, Path, Query, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from app import db
from app.api import streams
from app.api.deps import CallerDep, ClientDep, State
from app.api.openapi import DATA_ERRORS, problems
from app.api.routes.bulk import _REQUEST_EXAMPLE, _RESPONSE_EXAMPLE, NDJSON
from app.errors import (
    BulkNotGranted,
    IdleTimeout,
    JobCancelled,
    JobNotFinished,
    JobNotFound,
    PayloadTooLarge,
    RangeNotSatisfiable,
    TooManyStreams,
    UnsupportedMediaType,
    ValidationFailed,
)
from app.http.state import AppState
from app.identifiers import RULE_SET_ID_PATTERN, SNAPSHOT_ID_PATTERN
from app.schemas.lookup import EXPLAIN, ProgramsParam
from app.services import bulk, jobs, worker
from app.services.streams import ClientGone

log = logging.getLogger("tepat.jobs")

router = APIRouter(tags=["bulk jobs"])

CSV = "text/csv"
JOB_ID = Path(description="The job's id, as `POST /v1/bulk/jobs` answered it (a random UUID).")

_JOB_EXAMPLE: dict[str, Any] = {
    "id": "6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f",
    "kind": "bulk",
    "status": "running",
    "created_at": "2026-02-02T01:00:00+00:00",
    "started_at": "2026-02-02T01:00:01+00:00",
    "finished_at": None,
    "expires_at": None,
    "input": {
        "format": "ndjson",
        "bytes": 27000000,
        "sha256": "9f2c...",
        "lines": 1000000,
        "blank": 0,
        "chunks": 1000,
    },
    "progress": {
        "lines_read": 1000000,
        "answered": 412000,
        "found": 403760,
        "not_found": 8240,
        "errors": 0,
        "chunks_done": 412,
        "chunks": 1000,
        "lines_per_second": 51500.0,
        "seconds_left": 11.4,
    },
    "purpose": "pbi-verification",
    "programs": ["PKH", "BPNT", "PBI_JK", "SEKOLAH_RAKYAT"],
    "explain": False,
    "snapshot": {"id": "2026-01-23", "checksum": "sha256:6478..."},
    "rule_set": {"id": "kepmensos-79-2025", "checksum": "sha256:d951..."},
    "evaluation_date": "2026-01-23",
    "request_id": "0f5c8e2a9b1d4c7e",
    "error": None,
}

# A change list's job (POST /v1/changes/jobs): the same resource, kind `changes`.
CHANGES_JOB_EXAMPLE: dict[str, Any] = {
    **{k: v for k, v in _JOB_EXAMPLE.items() if k not in ("snapshot", "rule_set")},
    "kind": "changes",
    "status": "queued",
    "started_at": None,
    "input": {
        "format": "json",
        "bytes": 58,
        "sha256": "3b1f...",
        "lines": 0,
        "blank": 0,
        "chunks": 0,
    },
    "progress": {
        "lines_read": 0,
        "answered": 0,
        "found": 0,
        "not_found": 0,
        "errors": 0,
        "chunks_done": 0,
        "chunks": 0,
        "lines_per_second": None,
        "seconds_left": None,
    },
    "programs": ["PBI_JK"],
    "request": {
        "from": "2025-10-23",
        "to": "2026-01-23",
        "from_rule_set": "kepmensos-79-2025",
        "to_rule_set": "kepmensos-79-2025",
        "kinds": ["gained", "lost", "benefit_changed", "level_changed"],
        "kode_wilayah": None,
        "effective_date": "2026-01-23",
        "chunk": 1000,
    },
    "from": {
        "snapshot": {"id": "2025-10-23", "checksum": "sha256:91c2..."},
        "rule_set": {"id": "kepmensos-79-2025", "checksum": "sha256:d951..."},
        "evaluation_date": "2025-10-23",
    },
    "to": {
        "snapshot": {"id": "2026-01-23", "checksum": "sha256:6478..."},
        "rule_set": {"id": "kepmensos-79-2025", "checksum": "sha256:d951..."},
        "evaluation_date": "2026-01-23",
    },
}

_CSV_EXAMPLE = (
    "line,nik,found,decile,PBI_JK_eligible,PBI_JK_recipient,error_code,error_message,chunk,"
    "audit_id\r\n"
    "1,3201014501150001,true,3,true,false,,,1,019a4f2c-7d1e-7a3b-9c2d-5e6f7a8b9c0d\r\n"
    "2,3201015506880001,false,,,,,,1,019a4f2c-7d1e-7a3b-9c2d-5e6f7a8b9c0d\r\n"
)

SUBMIT = f"""
The bulk job for clients that cannot read while they send (most HTTP libraries: `requests`,
`httpx`): upload the whole file, get `202` and the job's `Location`, poll it, download the
answers when it has ended. Same lines and same answers as `POST /v1/bulk/eligibility`.

The body is `application/x-ndjson` (one NIK a line: `{{"nik": "..."}}`, a JSON string or a bare
NIK) or `text/csv` (a row per NIK: the `nik` column if the first row names one, else the first
column; the header row counts as a blank line so `line` is the row number). Any other
Content-Type: 415. An upload with no line to answer: 422. Larger than the deployment's
`TEPAT_BULK_JOB_MAX_BYTES` (default 4 GB): 413, and nothing is kept.

The upload streams into the database (its SHA-256 computed on the way, shown in the job's
status) in chunks of {bulk.CHUNK:,} lines; nothing of it is visible until it is complete.
The snapshot, rule set, programs and field groups are fixed now: every line is answered from
them. Options are query parameters, as for the stream. Bulk must be granted (`--bulk`).
"""

STATUS = """
Status (`queued`, `running`, `succeeded`, `failed`, `cancelled`) and progress: lines read,
answered, found, not found, errors, chunks, lines per second and an estimate of the seconds
left, the timestamps, the input's size and SHA-256, the pin. Only the client that created the
job sees it: for any other, and for an id that does not exist, 404 (never 403).

`kind` is `bulk` (`POST /v1/bulk/jobs`) or `changes` (a change list, `POST /v1/changes/jobs`:
its `request` as pinned, `from` and `to`; `answered` counts the people listed so far, and
`lines` and `chunks` grow with it, since a list's length is known only at its end).
"""

RESULTS = f"""
The answers of a job that has ended, as one document: **NDJSON** exactly as the stream sends
it (one line per non-blank input line, in input order, then the `summary` with `audit_ids` and
`receipts`: one per chunk of {bulk.CHUNK:,} lines, each receipt over that chunk's exact bytes),
or **CSV** (`Accept: text/csv` or `?format=csv`: the decisions per program, each row naming its
chunk and the chunk's audit id; verify receipts on the NDJSON).

A change list's job (`kind` `changes`) gives its lines in NIK order then its summary, as
`POST /v1/changes` would (NDJSON), or the mutation list (CSV: `nik,program,change,reasons,
effective_date`, a row per person and change; a failed job's last row has `change` `error`).

A failed job gives the chunks it committed and then, instead of the summary, its error line. A
queued or running job: 409 `job_not_finished`, unless `?wait=true`: then its chunks are sent
as they are committed and the summary when it ends (read while it runs). A cancelled job: 410.

**Resume a cut download** with HTTP `Range: bytes=N-` (NDJSON; `206 Partial Content`, the
`ETag` stays the same for the whole life of the answers) or with the cursor `?after_chunk=N`:
the answers after the first N chunks (a client that kept K whole lines has the first
K // {bulk.CHUNK:,} chunks), then the summary. Answers are kept `TEPAT_BULK_JOB_RETENTION_DAYS`
(default 7) after the job ended, then deleted.
"""


def as_json(
    doc: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps(doc),
        status_code=status,
        media_type="application/json",
        headers={"cache-control": "no-store", **(headers or {})},
    )


def _format(content_type: str | None) -> str:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    found = jobs.FORMATS.get(media)
    if found is None:
        raise UnsupportedMediaType(
            "a bulk job's body is application/x-ndjson (one NIK a line) or text/csv; "
            f"got {media or 'no Content-Type'}",
            field="Content-Type",
        )
    return found


async def connect(state: AppState) -> asyncpg.Connection:
    settings = state.settings
    return await db.connect_raw(settings, db.resolve_url(settings), role=settings.db_role)


class _Stream(Response):
    """Bytes from an async iterator that holds a database connection, closed at the end."""

    def __init__(
        self,
        body: AsyncIterator[bytes],
        conn: asyncpg.Connection,
        status: int,
        media_type: str,
        headers: dict[str, str],
    ) -> None:
        self.body_iter = body
        self.conn = conn
        self.status_code = status
        self.media_type = media_type
        self.background = None
        self.init_headers({"cache-control": "no-store", **headers})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send(
                {"type": "http.response.start", "status": self.status_code,
                 "headers": self.raw_headers}
            )  # fmt: skip
            async for data in self.body_iter:
                if data:
                    await send({"type": "http.response.body", "body": data, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            streams.mark_gone(scope)
            log.info("bulk job download: the client went away")
        finally:
            await self.conn.close()


@router.post(
    "/bulk/jobs",
    summary="Submit a bulk job: upload NDJSON or CSV, answered later by a worker",
    description=SUBMIT,
    status_code=202,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                NDJSON: {"schema": {"type": "string"}, "example": _REQUEST_EXAMPLE},
                CSV: {"schema": {"type": "string"}, "example": "nik\n3201014501150001\n"},
            },
        }
    },
    responses={
        **problems(
            *DATA_ERRORS,
            IdleTimeout,
            BulkNotGranted,
            TooManyStreams,
            UnsupportedMediaType(
                "a bulk job's body is application/x-ndjson (one NIK a line) or text/csv; "
                "got text/plain"
            ),
            PayloadTooLarge("a bulk job's upload may be at most 4,000,000,000 bytes"),
            ValidationFailed("the upload holds no line to answer: send one NIK a line"),
        ),
        202: {
            "description": "Stored and queued; poll the `Location`",
            "content": {"application/json": {"example": {**_JOB_EXAMPLE, "status": "queued"}}},
        },
    },
)
async def submit_bulk_job(
    request: Request,
    state: State,
    caller: CallerDep,
    snapshot: Annotated[
        str | None,
        Query(pattern=SNAPSHOT_ID_PATTERN, description="Pin a snapshot. Default: current."),
    ] = None,
    rule_set: Annotated[
        str | None,
        Query(pattern=RULE_SET_ID_PATTERN, description="Pin a rule set. Default: in force."),
    ] = None,
    programs: Annotated[
        list[ProgramsParam] | None,
        Query(description="Only these programs (repeat or comma-separate). Default: granted."),
    ] = None,
    explain: Annotated[bool, Query(description="Full decisions. " + EXPLAIN)] = False,
) -> Response:
    if not caller.principal.bulk:
        raise BulkNotGranted(
            "bulk eligibility is not granted to this client (tepat client create --bulk)"
        )
    input_format = _format(request.headers.get("content-type"))
    settings = state.settings
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > settings.bulk_job_max_bytes:
        raise PayloadTooLarge(
            f"a bulk job's upload may be at most {settings.bulk_job_max_bytes:,} bytes"
        )
    asked = [p.strip() for v in programs or () for p in v.split(",") if p.strip()] or None
    options = bulk.Options(snapshot, rule_set, asked, explain)
    # An upload holds a connection and a transaction: it takes one of the client's stream
    # slots (429 too_many_streams past them), as a stream does.
    slot = await streams.slots_of(request.app).acquire(caller.principal.client_id)
    body = streams.Body(request.receive, settings.bulk_idle_timeout, settings.bulk_min_body_rate)
    try:
        conn = await connect(state)
        try:
            job = await jobs.submit(
                conn,
                state.reads,
                caller,
                options,
                input_format,
                body.chunks(),
                max_bytes=settings.bulk_job_max_bytes,
                enqueue=worker.enqueue,
            )
        finally:
            await conn.close()
    except ClientGone:  # the upload was cut: its transaction rolled back, nothing is kept
        log.info("bulk job upload %s: the client went away", caller.request_id)
        return streams.GoneResponse()
    finally:
        body.close()
        await slot.release()
    location = f"/v1/bulk/jobs/{job.id}"
    return as_json(jobs.describe(job), 202, {"location": location})


@router.get(
    "/bulk/jobs/{job_id}",
    summary="A bulk job's status and progress",
    description=STATUS,
    responses={
        **problems(JobNotFound),
        200: {"content": {"application/json": {"example": _JOB_EXAMPLE}}},
    },
)
async def get_bulk_job(
    state: State, client: ClientDep, job_id: Annotated[uuid.UUID, JOB_ID]
) -> Response:
    conn = await connect(state)
    try:
        job = await jobs.get(conn, job_id, client.client_id)
    finally:
        await conn.close()
    headers = {"retry-after": "2"} if job.status in ("queued", "running") else {}
    return as_json(jobs.describe(job), headers=headers)


@router.get(
    "/bulk/jobs/{job_id}/results",
    summary="Download a bulk job's answers (NDJSON or CSV), resumable",
    description=RESULTS,
    response_class=Response,
    responses={
        **problems(JobNotFound, JobNotFinished, JobCancelled, RangeNotSatisfiable),
        200: {
            "description": "The answers, then the summary",
            "content": {
                NDJSON: {"schema": {"type": "string"}, "example": _RESPONSE_EXAMPLE},
                CSV: {"schema": {"type": "string"}, "example": _CSV_EXAMPLE},
            },
        },
        206: {"description": "The bytes of the `Range` asked, NDJSON"},
    },
)
async def get_bulk_job_results(
    request: Request,
    state: State,
    caller: CallerDep,
    job_id: Annotated[uuid.UUID, JOB_ID],
    format: Annotated[
        Literal["ndjson", "csv"] | None,
        Query(description="`csv` or `ndjson`; overrides `Accept`."),
    ] = None,
    after_chunk: Annotated[
        int | None,
        Query(ge=0, description="Resume: skip the first N chunks (the client holds them)."),
    ] = None,
    wait: Annotated[
        bool,
        Query(
            description="NDJSON of a job still queued or running: send its chunks as they "
            "are committed and the summary when it ends, instead of 409."
        ),
    ] = False,
    range_: Annotated[
        str | None,
        Header(alias="Range", description="Resume: `bytes=N-` (NDJSON only)."),
    ] = None,
) -> Response:
    wanted = format or ("csv" if CSV in request.headers.get("accept", "").lower() else "ndjson")
    conn = await connect(state)
    try:
        job = await jobs.get(conn, job_id, caller.principal.client_id)
        signed = state.audit.keyring is not None
        if wait and wanted == "ndjson" and job.status in ("queued", "running"):
            after = min(after_chunk or 0, job.chunks)
            body = jobs.ndjson_follow(conn, job, after, signed)
            return _Stream(body, conn, 200, NDJSON, {})
        d = await jobs.download(conn, job, signed)
        after = min(after_chunk or 0, job.chunks_done)
        if wanted == "csv":
            headers = {"content-disposition": f'attachment; filename="{job.id}.csv"'}
            return _Stream(jobs.csv_rows(conn, d, after), conn, 200, CSV, headers)
        headers = {"etag": d.etag, "accept-ranges": "bytes"}
        if after_chunk is not None:
            return _Stream(jobs.ndjson_after(conn, d, after), conn, 200, NDJSON, headers)
        asked = jobs.byte_range(range_, d.size) if range_ else None
        if asked is None:
            headers["content-length"] = str(d.size)
            return _Stream(jobs.ndjson_bytes(conn, d), conn, 200, NDJSON, headers)
        first, last = asked
        headers["content-range"] = f"bytes {first}-{last}/{d.size}"
        headers["content-length"] = str(last - first + 1)
        return _Stream(jobs.ndjson_bytes(conn, d, first, last), conn, 206, NDJSON, headers)
    except BaseException:
        await conn.close()
        raise


@router.delete(
    "/bulk/jobs/{job_id}",
    summary="Cancel a bulk job (or delete a finished one) and its answers",
    description="A queued or running job is cancelled: its worker stops at its next chunk, "
    "its input and answers are deleted at once, and its status stays readable (`cancelled`) "
    "until its retention ends. A job that has ended is deleted with its answers (then 404).",
    status_code=204,
    response_class=Response,
    responses=problems(JobNotFound),
)
async def cancel_bulk_job(
    state: State, client: ClientDep, job_id: Annotated[uuid.UUID, JOB_ID]
) -> Response:
    conn = await connect(state)
    try:
        await jobs.cancel(
            conn, job_id, client.client_id, jobs.retention(state.settings.bulk_job_retention_days)
        )
    finally:
        await conn.close()
    return Response(status_code=204, headers={"cache-control": "no-store"})
