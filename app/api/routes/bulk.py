"""Bulk eligibility over NDJSON: the request body streams in, the answer streams out."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from app.api import streams
from app.api.deps import CallerDep, State
from app.api.openapi import DATA_ERRORS, problems
from app.api.streams import Body
from app.errors import BulkNotGranted, IdleTimeout, TooManyStreams
from app.http import limits
from app.http.request_ids import request_id_of
from app.http.state import AppState
from app.identifiers import RULE_SET_ID_PATTERN, SNAPSHOT_ID_PATTERN
from app.schemas.lookup import EXPLAIN, ProgramsParam
from app.services import bulk, clients
from app.services.lookup import Caller
from app.services.streams import ClientGone, Slot

log = logging.getLogger("tepat.bulk")

router = APIRouter(tags=["bulk"])

NDJSON = "application/x-ndjson"

_REQUEST_EXAMPLE = '{"nik": "3201014501150001"}\n3201015506880001\n{"nik": "32010145011500"}\n'
_RESPONSE_EXAMPLE = (
    '{"line":1,"nik":"3201014501150001","found":true,"decile":3,"decisions":[{"program":"PBI_JK",'
    '"unit":"person","eligible":true,"recipient":false,"benefit":{"monthly_rupiah":42000}}]}\n'
    '{"line":2,"nik":"3201015506880001","found":false}\n'
    '{"line":3,"error":{"code":"nik_format","message":"NIK must be 16 digits",'
    '"nik":"3201******1500"}}\n'
    '{"summary":{"lines":3,"found":1,"not_found":1,"errors":1,"blank":0,'
    '"snapshot":{"id":"2026-01-23","checksum":"sha256:6478..."},'
    '"rule_set":{"id":"kepmensos-79-2025","checksum":"sha256:d951..."},'
    '"evaluation_date":"2026-01-23","request_id":"0f5c8e2a9b1d4c7e",'
    '"audit_ids":["019a4f2c-7d1e-7a3b-9c2d-5e6f7a8b9c0d"],'
    '"receipts":["eyJhbGciOiJFZERTQSIsInR5cCI6InRlcGF0LXJlY2VpcHQrandzIiwia2lkIjoi..."]}}\n'
)

DESCRIPTION = f"""
For batch jobs (BPJS: millions of NIKs against each release). The body is NDJSON, one NIK a
line: `{{"nik": "..."}}`, a JSON string or a bare NIK. The answer is NDJSON, streamed in input
order, **one line per non-blank input line** with its 1-based `line` number in the body (blank
lines are skipped but counted, so `line` is the line of the input file):

* a person: `{{"line", "nik", "found", ...}}` with the fields of the client's field groups, as in
  `people/lookup`; decisions are compact (no `criteria`, no PKH `components`) unless `explain`;
* a line that is not a NIK: `{{"line", "error": {{"code", "message", "nik"?}}}}` with the value
  masked; codes `malformed_json`, `nik_missing`, `nik_format`, `nik_date`, `nik_serial`,
  `line_too_long` (over {bulk.MAX_LINE} bytes). A bad line never fails the job;
* last, `{{"summary": {{"lines", "found", "not_found", "errors", "blank", "snapshot",
  "rule_set", "evaluation_date", "request_id", "audit_ids", "receipts"}}}}`: one audit record
  per chunk, and for each its signed receipt (a compact JWS, as the `Tepat-Receipt` header of a
  lookup) over the chunk's exact bytes: the answer lines of that chunk, in order.

The options are query parameters (the body is the stream; they are flags, never identifiers).
The snapshot and rule set are pinned once: every line is answered from the same snapshot, even
if a new one is published during the job. Lines are looked up and audited in chunks of
{bulk.CHUNK:,} (one audit record per chunk, written before the chunk is sent). Memory is
constant whatever the body size, and a slow reader slows the reading of the body.

Bulk must be granted to the client (`tepat client create --bulk`); otherwise 403
`bulk_not_granted`. The client's NIK rate limit and daily quota apply chunk by chunk: a job over
the rate is slowed down; if the wait would be too long it gets 429 (first chunk) or the error line
`rate_limited` (later); over the quota, 429 `quota_exceeded` or the error line `quota_exceeded`.

A job whose found rate is under 5 % after its first 10,000 lines (TEPAT_ENUMERATION_*) is ended
with the error line `enumeration_suspected` (no summary) and the client is suspended: every
request answers 403 `client_suspended` until an operator runs `tepat client reinstate`.

Authentication, purpose, programs, snapshot and rule set are checked before streaming starts
(problem+json as elsewhere). Once the stream has started the status is already 200: if a chunk
cannot be audited, the stream ends with `{{"error": {{"code": "audit_unavailable", ...}}}}` and
no summary. **A job is complete only if its last line is the summary.**

Streams are bounded (defaults; the deployment may set others). A client may run 2 streams at
once, across every server process; one more is refused with 429 `too_many_streams` and
`Retry-After`. A server process runs at most 16 streams at once, counted apart from other
requests (bulk jobs never take a lookup's place); past it, 503. If no body bytes arrive for
30 s the stream ends: 408 `idle_timeout` (problem+json) before the answer started, the error
line `idle_timeout` after. The answer carries `Cache-Control: no-store` and `Connection: close`.
"""


def guard(state: AppState, request: Request, caller: Caller) -> bulk.Guard:
    """Enumeration detection: the job is ended and its client suspended (docs/quotas.md)."""
    settings = state.settings

    async def suspend(counts: bulk.Counts) -> None:
        reason = (
            f"{bulk.ENUMERATION}: bulk job {caller.request_id} found {counts.found:,} of "
            f"{counts.found + counts.not_found:,} NIKs after {counts.lines:,} lines"
        )
        await clients.suspend_client(
            state.engine,
            state.audit,
            caller.principal.client_id,
            reason,
            purpose=caller.purpose,
            request_id=caller.request_id,
        )
        allowance = limits.allowance_of(request.app)
        if allowance is not None:
            allowance.suspended(caller.principal.client_id)
        else:
            state.authenticator.note_suspended(caller.principal.client_id)

    return bulk.Guard(settings.enumeration_min_lines, settings.enumeration_min_found_rate, suspend)


class _Stalled(Exception):
    """The client took no answer bytes for the idle timeout."""


class NdjsonStream(Response):
    """Streams an async iterator of bytes, and nothing else; frees the stream's slot at its end.

    Starlette's StreamingResponse listens for a disconnect by calling `receive()` while it
    streams (ASGI spec < 2.4, as uvicorn announces), which would steal the request body this
    answer is still reading. A disconnect is seen by the body reader instead (app.api.streams).
    """

    media_type = NDJSON

    def __init__(
        self,
        first: bytes,
        rest: AsyncGenerator[bytes, None],
        body: Body | None = None,
        slot: Slot | None = None,
    ) -> None:
        self.first = first
        self.rest = rest
        self.source = body
        self.slot = slot
        self.status_code = 200
        self.background = None
        # Personal data: never stored by a cache. One job per connection: a stream may end
        # (idle timeout) before its request body did.
        self.init_headers({"cache-control": "no-store", "connection": "close"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = self.source
        idle = body.idle if body is not None else None
        rid = request_id_of(scope)

        async def put(message: Message) -> None:
            # A client that takes no answer bytes for `idle` seconds holds its stream as surely
            # as one that sends none: one timer per chunk of 1,000 lines, not per line.
            try:
                async with asyncio.timeout(idle):
                    await send(message)
            except TimeoutError:
                raise _Stalled from None

        try:
            await put({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            await put({"type": "http.response.body", "body": self.first, "more_body": True})
            try:
                async for chunk in self.rest:
                    if body is not None and body.gone:
                        raise ClientGone
                    await put({"type": "http.response.body", "body": chunk, "more_body": True})
            finally:
                await self.rest.aclose()  # a send that failed must not leave the job half-open
                if body is not None:
                    body.close()
            await put({"type": "http.response.body", "body": b"", "more_body": False})
        except ClientGone:
            streams.mark_gone(scope)
            log.info("bulk stream %s: the client went away", rid)
        except _Stalled:
            # Nothing more can be sent: the server closes the connection when this returns.
            streams.mark_gone(scope, streams.STALLED)
            log.info("bulk stream %s: the client took no answer for %g s; ended", rid, idle)
        finally:
            if self.slot is not None:
                await self.slot.release()


@router.post(
    "/bulk/eligibility",
    summary="Decisions for millions of NIKs: NDJSON in, NDJSON out, streamed",
    description=DESCRIPTION,
    response_class=NdjsonStream,
    status_code=200,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {NDJSON: {"schema": {"type": "string"}, "example": _REQUEST_EXAMPLE}},
        }
    },
    responses={
        **problems(*DATA_ERRORS, IdleTimeout, BulkNotGranted, TooManyStreams),
        200: {
            "description": "One line per input line, then the summary line",
            "content": {NDJSON: {"schema": {"type": "string"}, "example": _RESPONSE_EXAMPLE}},
        },
    },
)
async def bulk_eligibility(
    request: Request,
    state: State,
    caller: CallerDep,
    snapshot: Annotated[
        str | None,
        Query(
            pattern=SNAPSHOT_ID_PATTERN,
            description="Pin a snapshot (DTSEN release id). Default: current.",
        ),
    ] = None,
    rule_set: Annotated[
        str | None,
        Query(
            pattern=RULE_SET_ID_PATTERN,
            description="Pin a rule set. Default: in force on the cut-off.",
        ),
    ] = None,
    programs: Annotated[
        list[ProgramsParam] | None,
        Query(
            description="Only these programs (repeat the parameter or separate with commas); "
            "each must be granted. Default: all granted.",
        ),
    ] = None,
    explain: Annotated[bool, Query(description="Full decisions. " + EXPLAIN)] = False,
) -> Response:
    asked = (
        [p.strip() for value in programs for p in value.split(",") if p.strip()]
        if programs
        else None
    )
    if not caller.principal.bulk:
        raise BulkNotGranted(
            "bulk eligibility is not granted to this client (tepat client create --bulk)"
        )
    options = bulk.Options(snapshot, rule_set, asked or None, explain)

    async def pace(n: int) -> None:
        # The client's NIK rate limit and daily quota, chunk by chunk: a stream is slowed down,
        # not refused, unless the wait would be long (then 429 at the start, an error line later).
        await limits.throttle(request.scope, caller.principal, n)

    # A slot of the client's (429 too_many_streams past them), held until the stream ends.
    slot = await streams.slots_of(request.app).acquire(caller.principal.client_id)
    settings = state.settings
    body = streams.Body(request.receive, settings.bulk_idle_timeout, settings.bulk_min_body_rate)
    try:
        job = await bulk.open_job(
            state.engine,
            state.audit,
            caller,
            options,
            pace,
            reads=state.reads,
            guard=guard(state, request, caller),
        )
        lines = job.stream(body.chunks())
        # The first chunk is answered (and audited) before the status line goes out, so a job
        # that fails at once still gets a problem+json answer instead of a 200 with an error line.
        first = await anext(lines)
    except ClientGone:
        body.close()
        await slot.release()
        log.info("bulk stream %s: the client went away before the answer", caller.request_id)
        return streams.GoneResponse()
    except BaseException:
        body.close()
        await slot.release()
        raise
    return NdjsonStream(first, lines, body, slot)
