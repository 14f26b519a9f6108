"""RFC 9457 problem+json for every error the REST face returns, validation included."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from app import resilience
from app.api.request_ids import request_id_of
from app.errors import PROBLEM_BASE, TepatError, Unavailable
from app.identifiers import echo

log = logging.getLogger("tepat.api")

PROBLEM_JSON = "application/problem+json"
_service_log = resilience.LogThrottle()


def problem_response(body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body), status_code=body["status"], media_type=PROBLEM_JSON, headers=headers
    )


def _request_id(request: Request) -> str:
    return request_id_of(request.scope)


def _masked(value: Any) -> Any:
    """Values echoed in errors: truncated, identifier-like digit runs masked (identifiers.echo)."""
    if isinstance(value, int | float | bool) or value is None:
        return value
    return echo(value)


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "header", "path")]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out or "body"


async def tepat_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TepatError)
    body = exc.problem()
    body["request_id"] = _request_id(request)
    if exc.status >= 500 and _service_log.due():
        # Operators need the cause of a 503 (details never carry identifiers, app.errors), but
        # an outage fails every request: at most one line a second, with the count since.
        log.warning("%s: %s (%d like it since the last line)", exc.code, exc.detail,
                    _service_log.take())  # fmt: skip
    headers = {}
    retry = exc.extra.get("retry_after") if isinstance(exc.extra, dict) else None
    if isinstance(exc, Unavailable) or exc.status == 429:
        headers["Retry-After"] = str(retry or 1)
    return problem_response(body, headers)


async def validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = []
    for e in exc.errors():
        field = _field(e.get("loc", ()))
        item: dict[str, Any] = {"field": field, "message": e.get("msg", "invalid")}
        if e.get("type") == "json_invalid":  # loc is (body, the character the parser stopped at)
            loc = e.get("loc", ())
            reason = echo(str((e.get("ctx") or {}).get("error", "invalid")), limit=80)
            where = f" at character {loc[-1]}" if loc and isinstance(loc[-1], int) else ""
            item = {"field": "body", "message": f"not valid JSON{where}: {reason}"}
        ctx = e.get("ctx") or {}
        if "rule" in ctx:
            item["rule"] = ctx["rule"]
        if e.get("type") not in ("missing", "json_invalid") and "input" in e:
            identifier = field.startswith(("niks[", "no_kks["))
            item["value"] = echo(e["input"], identifier=True) if identifier else _masked(e["input"])
        errors.append(item)
    first = errors[0]["field"] if errors else "body"
    malformed = any(e.get("type") == "json_invalid" for e in exc.errors())
    body = {
        "type": PROBLEM_BASE + ("malformed-json" if malformed else "validation-failed"),
        "title": "The request body is not valid JSON" if malformed else "The request is not valid",
        "status": 400 if malformed else 422,
        "detail": f"{len(errors)} problem(s); first: {first}: {errors[0]['message']}"
        if errors
        else "invalid request",
        "code": "malformed_json" if malformed else "validation_failed",
        "field": first,
        "errors": errors,
        "request_id": _request_id(request),
    }
    return problem_response(body)


_HTTP_CODES = {
    404: ("not_found", "No such resource"),
    405: ("method_not_allowed", "Method not allowed"),
    413: ("payload_too_large", "The request body is too large"),
    415: ("unsupported_media_type", "Unsupported media type"),
}


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code, title = _HTTP_CODES.get(exc.status_code, ("http_error", "HTTP error"))
    body = {
        "type": PROBLEM_BASE + code.replace("_", "-"),
        "title": title,
        "status": exc.status_code,
        "detail": str(exc.detail) if exc.detail else title,
        "code": code,
        "request_id": _request_id(request),
    }
    return problem_response(body, dict(exc.headers or {}))


async def unexpected_error(request: Request, exc: Exception) -> Response:
    log.error("unhandled error", exc_info=exc, extra={"request_id": _request_id(request)})
    body = {
        "type": PROBLEM_BASE + "internal",
        "title": "Internal error",
        "status": 500,
        "detail": "an unexpected error occurred; quote the request id when reporting it",
        "code": "internal",
        "request_id": _request_id(request),
    }
    return problem_response(body)


async def database_error(request: Request, exc: Exception) -> Response:
    """The one place database failures become 503 + Retry-After (app.resilience decides which)."""
    if not resilience.is_unavailable(exc):
        return await unexpected_error(request, exc)
    if resilience.outage_log.due():  # an outage fails every request: one line a second
        held = resilience.outage_log.take()
        log.warning("database unavailable: %s (%d more since)", type(exc).__name__, held)
    body = resilience.unavailable(exc).problem()
    body["request_id"] = _request_id(request)
    return problem_response(body, {"Retry-After": "1"})


def install(app: FastAPI) -> None:
    # Registered on the exception middleware (not as the catch-all 500 handler), so the answer
    # goes through the other middleware: logged with its status, no traceback re-raised.
    for error in resilience.DATABASE_ERRORS:
        app.add_exception_handler(error, database_error)
    app.add_exception_handler(TepatError, tepat_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected_error)
