"""Change lists between two releases: a small JSON request in, an NDJSON stream out."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import asyncpg
from fastapi import APIRouter, Request
from starlette.responses import Response

from app import db
from app.api import streams
from app.api.deps import CallerDep, State
from app.api.openapi import problems
from app.api.routes import jobs as job_routes
from app.api.routes.bulk import NDJSON, NdjsonStream
from app.errors import (
    AuditUnavailable,
    BulkNotGranted,
    DecisionsNotMaterialized,
    Forbidden,
    NoRuleSetInForce,
    QuotaExceeded,
    RateLimited,
    RuleSetNotFound,
    SnapshotNotFound,
    SnapshotRetired,
    TooManyStreams,
)
from app.http import limits
from app.http.bodies import JsonRoute
from app.http.state import AppState
from app.schemas.changes import ChangesRequest
from app.services import changes, jobs, worker
from app.services.lookup import Caller
from app.services.streams import ClientGone

log = logging.getLogger("tepat.changes")

router = APIRouter(tags=["changes"], route_class=JsonRoute)

_REQUEST_EXAMPLE = {"from": "2025-10-23", "to": "2026-01-23", "programs": ["PBI_JK"]}
_RESPONSE_EXAMPLE = (
    '{"nik":"6308014501900003","status":"stayed","changes":[{"program":"PBI_JK",'
    '"change":"lost","reasons":["not_excluded"]}],"decile":{"from":2,"to":2},'
    '"family":{"from":{"no_kk":"6308010101200007","relationship":1,"kode_wilayah":"6308010001"},'
    '"to":{"no_kk":"6308010101200007","relationship":1,"kode_wilayah":"6308010001"}}}\n'
    '{"nik":"6308015506880002","status":"left","changes":[{"program":"PBI_JK","change":"lost",'
    '"reasons":["left_registry"]}],"decile":{"from":1,"to":null},"family":{"from":'
    '{"no_kk":"6308010101200009","relationship":2,"kode_wilayah":"6308010002"},"to":null}}\n'
    '{"summary":{"listed":2,"status":{"stayed":1,"entered":0,"left":1},'
    '"programs":{"PBI_JK":{"gained":0,"lost":2,"benefit_changed":0,"level_changed":0}},'
    '"provinces":{"63":{"PBI_JK":{"gained":0,"lost":2,"benefit_changed":0,"level_changed":0}}},'
    '"from":{"snapshot":{"id":"2025-10-23","checksum":"sha256:91c2..."},'
    '"rule_set":{"id":"kepmensos-79-2025","checksum":"sha256:d951..."},'
    '"evaluation_date":"2025-10-23"},'
    '"to":{"snapshot":{"id":"2026-01-23","checksum":"sha256:6478..."},'
    '"rule_set":{"id":"kepmensos-79-2025","checksum":"sha256:d951..."},'
    '"evaluation_date":"2026-01-23"},"request_id":"0f5c8e2a9b1d4c7e",'
    '"audit_ids":["019a4f2c-7d1e-7a3b-9c2d-5e6f7a8b9c0d"],'
    '"receipts":["eyJhbGciOiJFZERTQSIsInR5cCI6InRlcGF0LXJlY2VpcHQrandzIiwia2lkIjoi..."]}}\n'
)

DESCRIPTION = f"""
Who gained and who lost eligibility between two releases, and why (docs/changes.md). Computed
from the stored decisions of both releases, joined on the NIK in the database and streamed:
memory is flat whatever the releases' sizes.

The answer is NDJSON, **one line per person with at least one change** of the kinds asked,
in no particular order:

`{{"nik", "status", "changes": [{{"program", "change", "reasons"}}], "decile"?, "family"?}}`

* `status`: `stayed` (in both releases), `entered` (only in `to`), `left` (only in `from`);
* `change`: `gained` (eligible in `to`, not eligible or absent in `from`), `lost` (the other
  way), `benefit_changed` (eligible in both, another benefit: PKH's yearly amount, or BPNT's and
  PBI JK's monthly amount when the two rule sets differ), `level_changed` (Sekolah Rakyat,
  eligible in both, another level). Family programs (PKH, BPNT) are listed on every member;
* `reasons`: the ids of the program's criteria whose `passed` flipped (`decile_in_range`,
  `not_excluded`, `has_component`, `age_in_range`, `school_level`), or `entered_registry` /
  `left_registry`; empty for a benefit or level change that no criterion explains;
* `decile` (`{{"from", "to"}}`) only with the field group `decile`; `family` (`{{"from", "to"}}`,
  each `{{"no_kk", "relationship", "kode_wilayah"}}` or null) only with `membership`. Only the
  client's granted programs are considered.

Last, `{{"summary": {{"listed", "status", "programs", "provinces", "from", "to", "request_id",
"audit_ids", "receipts"}}}}`: counts per program and change, the same per province (the
province in `to`, or in `from` for people who left), both pins, and one audit record per chunk
of {changes.CHUNK:,} answer lines with its signed receipt over that chunk's exact bytes, as in
`/v1/bulk/eligibility`. **A list is complete only if its last line is the summary**; a failure
after the answer started ends it with an `{{"error": ...}}` line.

A change list names many people, so it needs the bulk grant (`tepat client create --bulk`) and
the field group `decision`; the NIKs listed are charged to the client's rate and daily quota
chunk by chunk, as a bulk stream's are, and it takes one of the client's bulk stream slots.
Errors (problem+json, before the stream starts): an unknown snapshot, 404 naming `from` or
`to`; `from` equal to `to`, an unknown program, kind or a bad `kode_wilayah`, 422 naming the
field; a program not granted, 403; decisions not stored for a release and rule set, 409 naming
them and the command that stores them (`tepat eligibility materialize`).
"""


def _connect(state: AppState) -> changes.Connect:
    """A connection of its own for the list's cursor (held while it streams, so it takes no
    place in the lookups' pools), as the service role; no statement time-out, as a bulk job's."""
    settings = state.settings

    @contextlib.asynccontextmanager
    async def connect() -> AsyncIterator[asyncpg.Connection]:
        # A replica holding both snapshots when one is fit, else the primary.
        conn = await db.connect_raw(settings, state.reads.stream_url(), role=settings.db_role)
        try:
            yield conn
        finally:
            if conn.is_in_transaction():  # cut mid-stream: no round trip to end it
                conn.terminate()
            else:
                await conn.close()

    return connect


def _asked(body: ChangesRequest, caller: Caller) -> changes.Asked:
    """What a change list request asks, streamed or as a job: both need the bulk grant."""
    if not caller.principal.bulk:
        raise BulkNotGranted(
            "a change list names many people: it needs the bulk grant (tepat client create --bulk)"
        )
    return changes.Asked(
        body.from_snapshot,
        body.to_snapshot,
        body.rule_set,
        list(body.programs) if body.programs else None,
        list(body.kinds) if body.kinds else None,
        body.kode_wilayah,
    )


@router.post(
    "/changes",
    summary="Who gained and lost eligibility between two releases, and why: NDJSON, streamed",
    description=DESCRIPTION,
    response_class=NdjsonStream,
    status_code=200,
    openapi_extra={"requestBody": {"content": {"application/json": {"example": _REQUEST_EXAMPLE}}}},
    responses={
        **problems(
            Forbidden,
            BulkNotGranted,
            SnapshotNotFound(
                "from: no snapshot '2019-01-01' is loaded", field="from", snapshot="2019-01-01"
            ),
            RuleSetNotFound,
            SnapshotRetired,
            NoRuleSetInForce,
            DecisionsNotMaterialized(
                "to: the decisions of snapshot 2026-01-23 under rule set kepmensos-79-2025 are "
                "not stored; run `tepat eligibility materialize --snapshot 2026-01-23 "
                "--rule-set kepmensos-79-2025`",
                field="to",
                snapshot="2026-01-23",
                rule_set="kepmensos-79-2025",
            ),
            RateLimited,
            QuotaExceeded,
            TooManyStreams,
            AuditUnavailable,
        ),
        200: {
            "description": "One line per person whose decisions changed, then the summary",
            "content": {NDJSON: {"schema": {"type": "string"}, "example": _RESPONSE_EXAMPLE}},
        },
    },
)
async def list_changes(
    body: ChangesRequest, request: Request, state: State, caller: CallerDep
) -> Response:
    asked = _asked(body, caller)

    async def pace(n: int) -> None:
        await limits.throttle(request.scope, caller.principal, n)

    listed = await changes.open_changes(
        state.engine, state.audit, caller, asked, _connect(state), reads=state.reads, pace=pace
    )
    slot = await streams.slots_of(request.app).acquire(caller.principal.client_id)
    watch = streams.Body(request.receive, state.settings.bulk_idle_timeout)
    watch.watch()
    lines = listed.stream()
    try:
        # The first chunk is audited before the status line: an early failure is a problem.
        first = await anext(lines)
    except ClientGone:
        watch.close()
        await slot.release()
        return streams.GoneResponse()
    except BaseException:
        watch.close()
        await slot.release()
        await lines.aclose()
        raise
    return NdjsonStream(first, lines, watch, slot)


JOB_DESCRIPTION = f"""
The change list as a **job**, for clients that would rather not hold a stream open (a list of
millions of people, a network that may cut): the same body as `POST /v1/changes`, answered
`202` with the job's id and its `Location`, a bulk job of kind `changes` (docs/changes.md#jobs).
Poll `GET /v1/bulk/jobs/{{id}}` (progress: people listed so far, chunks committed), download
`GET /v1/bulk/jobs/{{id}}/results` (NDJSON: the same lines and summary as the stream, in NIK
order; or CSV, `Accept: text/csv` or `?format=csv`: the mutation list of `tepat changes list
--format csv`, a row per person and change with the `to` release's cut-off as effective date),
resume a cut download with `Range` or `?after_chunk=N`, cancel with `DELETE`, as any bulk job.
Only the client that created it sees it.

Everything that can refuse the list is checked now (the same problems as the stream), and what
it answers is fixed now: both snapshots and both rule sets, the programs, the kinds, the region
and the fields shown. A worker computes the list in chunks of `request.chunk` people (the deployment's
`TEPAT_CHANGES_JOB_CHUNK`, default {changes.CHUNK:,}), each
committed with its audit record, its receipt and the job's progress in one transaction: a job
whose worker is stopped or killed resumes after the last person committed (in NIK order), no
one listed twice, no one skipped. It needs the bulk grant and the field group `decision`; the
people listed are charged to the client's rate and daily quota chunk by chunk.
"""


@router.post(
    "/changes/jobs",
    summary="Submit a change list as a job: poll it, download it later (resumable)",
    description=JOB_DESCRIPTION,
    status_code=202,
    openapi_extra={"requestBody": {"content": {"application/json": {"example": _REQUEST_EXAMPLE}}}},
    responses={
        **problems(
            Forbidden,
            BulkNotGranted,
            SnapshotNotFound(
                "from: no snapshot '2019-01-01' is loaded", field="from", snapshot="2019-01-01"
            ),
            RuleSetNotFound,
            SnapshotRetired,
            NoRuleSetInForce,
            DecisionsNotMaterialized,
        ),
        202: {
            "description": "Queued; poll the `Location` (a bulk job of kind `changes`)",
            "content": {"application/json": {"example": job_routes.CHANGES_JOB_EXAMPLE}},
        },
    },
)
async def submit_change_job(
    body: ChangesRequest, request: Request, state: State, caller: CallerDep
) -> Response:
    asked = _asked(body, caller)
    conn = await job_routes.connect(state)
    try:
        job = await jobs.submit_changes(
            conn,
            state.engine,
            state.reads,
            caller,
            asked,
            await request.body(),
            chunk=state.settings.changes_job_chunk,
            enqueue=worker.enqueue,
        )
    finally:
        await conn.close()
    return job_routes.as_json(jobs.describe(job), 202, {"location": f"/v1/bulk/jobs/{job.id}"})
