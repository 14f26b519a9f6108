"""The ASGI app: lifespan (database, auth, audit writer), middleware, errors, /v1 and /docs."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp

from app import __version__, db, embedded, logs
from app.api import openapi
from app.api.dci_fast import FastDci
from app.api.fast import FastLookup
from app.api.routes import audit as audit_routes
from app.api.routes import bulk, changes, dci, jobs, lookup, meta
from app.config import Settings, get_settings
from app.graphql.fast import FastGraphQL
from app.graphql.gate import GraphQLGate
from app.graphql.router import mount as mount_graphql
from app.http import limits, metrics, problems, tracing
from app.http.compression import Compression
from app.http.fast import FastStats
from app.http.middleware import RequestContext
from app.http.state import AppState
from app.services import receipts, roles
from app.services.audit import AuditWriter
from app.services.catalog import close_reads, open_reads
from app.services.clients import Authenticator
from app.services.streams import StreamSlots
from app.services.worker import Worker

log = logging.getLogger("tepat.main")

DESCRIPTION = """
Eligibility lookup over immutable **DTSEN** snapshots (Indonesia's single social-economic
registry): the decile, family membership and program decisions for **PKH**, **BPNT
(Sembako)**, **PBI JK** and **Sekolah Rakyat**.

* **Pinned answers.** Every answer's `meta` names the snapshot (DTSEN release id and checksum),
  the rule set (id and checksum) and the evaluation date (the snapshot's cut-off), so it can be
  audited and reproduced later. Pin `snapshot` and `rule_set` in the request to reproduce one.
* **Auth.** `Authorization: Bearer <API key>` and `X-Purpose: <purpose code>` on every data
  request. A client sees only the programs and field groups it was granted.
* **Disclosure follows the data.** A value appears only if the client holds the field group of
  every field it was computed from, whatever field carries it: with `explain`, another member's
  NIK needs `membership`, a HAMIL or DISABILITAS_BERAT component `health`, a criterion's
  observed value the group of the field it observes; Sekolah Rakyat `priority` needs `decile`.
  What is not covered is left out (REST, bulk) or refused before execution (GraphQL).
* **Privacy (UU 27/2022).** NIKs and No. KKs travel only in request bodies, never in URLs.
  Every data answer writes an audit record first; its id is `meta.audit_id`.
* **Limits.** Each client has a NIK rate limit and a daily quota (NIKs a day, WIB), shared by
  every server process: 429 `rate_limited` or `quota_exceeded` with `Retry-After`.
  `families/lookup` costs the members it discloses. Bulk is a separate grant (403
  `bulk_not_granted`); a bulk job that finds under 5 % of its NIKs after 10,000 lines is ended
  (`enumeration_suspected`) and the client suspended (403 `client_suspended` until reinstated).
* **Errors** are RFC 9457 `application/problem+json` with a stable `code`.
* **Request ids.** A client's `X-Request-ID` is kept (echoed, logged, audited) only if it is 8
  to 64 of `A-Z a-z 0-9 . _ -` with no 16 consecutive digits; otherwise the service assigns
  one. Answers carry `Cache-Control: no-store`.
"""


# Served, but not in the OpenAPI document: still labelled by their path in /metrics.
UNLISTED_PATHS = ("/graphql", "/metrics", "/docs", "/openapi.json", "/docs/oauth2-redirect")


def open_keyring(settings: Settings) -> receipts.Keyring:
    return receipts.open_keyring(settings)


async def check_login_role(settings: Settings, url: str) -> None:
    """Production refuses a login role that could rewrite the audit trail; dev warns."""
    conn = await db.connect_raw(settings, url)
    try:
        found = await roles.startup_check(conn, production=settings.is_production)
    finally:
        await conn.close()
    if found:
        log.warning("%s (production refuses to start so)", roles.advice(found))


def _outer_layers(app: FastAPI, settings: Settings) -> None:
    """Our own layers in front of the framework's whole stack, outermost first: the request
    context (request id, body limit, access log), shedding and the deadline, the fast people
    lookup (app.api.fast), the GraphQL gate (app.graphql.gate: key, purpose and body cap before
    a GraphQL body is read) and the fast GraphQL path (app.graphql.fast). Plain lookups then
    never pass through the framework's error, telemetry and body-limit wrappers; everything
    else still does, inside these layers. Pure ASGI all of them, so nothing an exception
    handler answers escapes the access log.
    """
    build = app.build_middleware_stack

    def build_with_outer_layers() -> ASGIApp:
        stack = build()
        if settings.fast_graphql:
            stack = FastGraphQL(
                stack,
                stats=app.state.fast_graphql,
                schema=app.state.graphql_schema,
                production=settings.is_production,
            )
        # Before either GraphQL path reads a body: the key, the purpose, the caps.
        stack = GraphQLGate(
            stack,
            max_body=settings.graphql_max_body_bytes,
            anonymous_max_body=settings.graphql_anonymous_max_body_bytes,
        )
        # Outside the gate, which concerns only POST /graphql: a plain lookup passes one layer
        # fewer (it checks its own key, app.http.caller.authenticate).
        if settings.fast_lookup:
            stack = FastDci(stack, stats=app.state.fast_dci)  # a DCI sync search alike
            stack = FastLookup(stack, stats=app.state.fast_lookup)
        stack = limits.Overload(
            stack,
            max_concurrency=settings.max_concurrency,
            deadline=settings.request_deadline,
            max_streams=settings.max_streams,
        )
        app.state.overload = stack
        # Every answer's body, the fast paths' too (app.http.compression); streams chunk by chunk.
        stack = Compression(stack)
        outer: ASGIApp = RequestContext(
            stack, max_body=settings.max_body_bytes, unlimited_paths=("/v1/bulk/",)
        )
        if settings.tracing:  # outermost: a span covers the whole request
            outer = tracing.wrap(outer)
        return outer

    setattr(app, "build_middleware_stack", build_with_outer_layers)  # noqa: B010 (a method)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    logs.configure(settings.log_level, settings.log_json or settings.is_production)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = db.resolve_url(settings)
        keyring = open_keyring(settings)  # before any connection: a bad key file stops here
        await check_login_role(settings, url)
        engine = db.create_engine(settings, url=url, role=settings.db_role)
        audit = AuditWriter(
            engine,
            settings.audit_hmac_key.get_secret_value().encode(),
            keyring=keyring if settings.audit_receipts else None,
        )
        await audit.start()
        reads = await open_reads(settings, engine, url)
        authenticator = Authenticator(engine)
        app.state.tepat = AppState(settings, engine, authenticator, audit, reads, keyring)
        # Leases have their own two connections: rare, and never waiting behind requests.
        leases = db.create_engine(
            settings.model_copy(update={"db_pool_size": 2}), url=url, role=settings.db_role
        )
        limits.install(app, settings, leases, authenticator)
        app.state.bulk_streams = StreamSlots(
            settings.bulk_streams_per_client,
            dsn=db.asyncpg_dsn(url),
            connect_timeout=settings.db_connect_timeout,
        )
        # The bulk job worker of this process (TEPAT_JOBS_WORKER; `tepat worker` runs one alone).
        job_worker: Worker | None = None
        worker_task: asyncio.Task[None] | None = None
        if settings.jobs_worker:
            job_worker = Worker(
                settings,
                url,
                engine,
                audit,
                limits.allowance_of(app),
                on_suspended=authenticator.note_suspended,
                reads=reads,
            )
            worker_task = asyncio.create_task(job_worker.run(), name="bulk-job-worker")
        app.state.job_worker = job_worker

        def state_for_metrics() -> dict[str, Any]:
            return {
                # Built with the middleware stack, at the first request.
                "overload": getattr(app.state, "overload", None),
                "allowance": limits.allowance_of(app),
                "audit": audit,
                "reads": reads,
                "job_worker": job_worker,
            }

        metrics.REQUEST_METRICS.configure([*app.openapi()["paths"], *UNLISTED_PATHS])
        state_sync = app.state.metrics_sync = metrics.StateSync(state_for_metrics)
        state_sync.start()
        # What start-up built lives as long as the process: out of the collector's sight, so
        # the full collections that requests' garbage triggers do not walk it each time.
        gc.freeze()
        try:
            yield
        finally:
            await state_sync.stop()
            if job_worker is not None and worker_task is not None:
                # A running job stops at its next chunk and is queued again (it resumes there).
                job_worker.stop.set()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(worker_task, settings.shutdown_timeout)
            sync_log = getattr(app.state, "dci_sync_log", None)  # app.api.routes.dci
            if sync_log is not None:
                with contextlib.suppress(Exception):
                    await sync_log.flush()
            await audit.stop()
            await close_reads(reads)
            await leases.dispose()
            await engine.dispose()
            if not settings.database_url:  # this process started the embedded server
                embedded.stop()
            metrics.mark_process_dead(os.getpid())

    app = FastAPIOffline(
        title="Tepat",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_url="/openapi.json",
        redoc_url=None,
        swagger_ui_parameters={"persistAuthorization": True, "displayRequestDuration": True},
        # No OpenTelemetry export from here (and metrics must never carry identifiers); off,
        # FastAPI's per-request telemetry probe costs ~2 % of a lookup.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        # Operation ids are the handlers' names (`lookup_people`), checked by app.contracts.
        generate_unique_id_function=openapi.operation_id,
        # A body without a Content-Type is read as JSON, as the fast path reads it; any other
        # type than JSON on a JSON route is 415 (app.http.problems).
        strict_content_type=False,
    )
    problems.install(app)
    app.include_router(meta.health)
    app.include_router(meta.router, prefix="/v1")
    app.include_router(lookup.router, prefix="/v1")
    app.state.graphql_schema = mount_graphql(app, settings)
    app.include_router(bulk.router, prefix="/v1")
    app.include_router(jobs.router, prefix="/v1")
    app.include_router(changes.router, prefix="/v1")
    app.include_router(audit_routes.router, prefix="/v1")
    app.add_route("/metrics", _metrics_route(settings), include_in_schema=False)
    app.include_router(dci.router, prefix="/dci")
    app.state.fast_lookup = FastStats()
    app.state.fast_dci = FastStats()
    app.state.fast_graphql = FastStats()
    _outer_layers(app, settings)
    _finished_openapi(app)
    return app


def _metrics_route(settings: Settings) -> Any:
    async def serve_metrics(request: Request) -> Response:
        ok, why = metrics.allowed(request.scope, settings)
        if not ok:
            problem = problems.body(request.scope, 403, "metrics_forbidden", why)
            return problems.response(problem, {"Cache-Control": "no-store"})
        return Response(
            metrics.render(),
            media_type=metrics.CONTENT_TYPE,
            headers={"Cache-Control": "no-store"},
        )

    return serve_metrics


def _finished_openapi(app: FastAPI) -> None:
    """/openapi.json as FastAPI generates it, then completed for every route in one place
    (app.api.openapi.finish: problem responses, X-Purpose, rate-limit headers)."""
    generate = app.openapi

    def finished() -> dict[str, Any]:
        if app.openapi_schema is None:
            openapi.finish(app, generate())
        assert app.openapi_schema is not None
        return app.openapi_schema

    setattr(app, "openapi", finished)  # noqa: B010 (a method)
