"""Optional OpenTelemetry traces (TEPAT_TRACING=true), exported over OTLP/HTTP to where the
standard OTEL_EXPORTER_OTLP_* variables say (docs/operations.md#traces).

What is traced: each request (the ASGI layer: method, route, status; never the query string,
headers or bodies), each database statement (asyncpg: the SQL text with its `$n` placeholders,
never the parameters, which carry NIKs) and each outgoing HTTP call (httpx: callbacks). No span
carries a NIK, a No. KK or a name; tests/test_tracing.py holds it to that with canaries.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.types import ASGIApp

log = logging.getLogger("tepat.tracing")
_installed = False


def install(exporter: Any | None = None) -> Any:
    """The tracer provider, with the database and HTTP client instrumented (once per process).
    `exporter`: where spans go (tests pass an in-memory one); default OTLP over HTTP."""
    global _installed
    from opentelemetry import trace
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    if _installed:
        return trace.get_tracer_provider()
    provider = TracerProvider(resource=Resource.create({"service.name": "tepat"}))
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    # capture_parameters=False: statement parameters (NIKs) are never recorded.
    AsyncPGInstrumentor(capture_parameters=False).instrument(tracer_provider=provider)  # type: ignore[no-untyped-call]
    HTTPXClientInstrumentor().instrument(tracer_provider=provider)
    _installed = True
    log.info("tracing on: %s", "OTLP export" if exporter is None else type(exporter).__name__)
    return provider


def wrap(app: ASGIApp) -> ASGIApp:
    """The app inside OpenTelemetry's ASGI middleware (a server span per request)."""
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    install()
    # No request or response headers are captured (none are configured); the URL is the
    # path alone (the query string is excluded by the span name and scrubbed below).
    return OpenTelemetryMiddleware(app, exclude_spans=["receive", "send"])


def uninstall() -> None:
    """Undo `install` (tests: the rest of a test session runs uninstrumented)."""
    global _installed
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    if _installed:
        AsyncPGInstrumentor().uninstrument()  # type: ignore[no-untyped-call]
        HTTPXClientInstrumentor().uninstrument()
        _installed = False
