"""RFC 9457 problem+json: the one place a problem body is built and sent.

Every error answered outside GraphQL's own `errors` list goes through `body` (the members) and
`response` or `send` (the bytes): the exception handlers of the app below, the middleware (413),
shedding and the deadline (503), the GraphQL transport errors (400, 405, 413, 415).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import compile_path
from starlette.types import Scope, Send

from app import resilience
from app.errors import PROBLEM_BASE, TepatError, Unavailable
from app.http.request_ids import request_id_of
from app.identifiers import echo

log = logging.getLogger("tepat.api")

PROBLEM_JSON = "application/problem+json"
JSON_ONLY = "send the request body as `Content-Type: application/json`"
_service_log = resilience.LogThrottle()


TITLES = {
    "graphql_request_invalid": "The GraphQL request is not valid",
    "http_error": "HTTP error",
    "internal": "Internal error",
    "malformed_json": "The request body is not valid JSON",
    "method_not_allowed": "Method not allowed",
    "not_found": "No such resource",
    "payload_too_large": "The request body is too large",
    "unsupported_media_type": "Unsupported media type",
    "validation_failed": "The request is not valid",
}


def body(scope: Scope, status: int, code: str, detail: str, **extra: Any) -> dict[str, Any]:
    """A problem's members for a transport error (no domain error behind it)."""
    return {
        "type": PROBLEM_BASE + code.replace("_", "-"),
        "title": TITLES.get(code, "HTTP error"),
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
        "request_id": request_id_of(scope),
    }


def of_error(scope: Scope, error: TepatError) -> dict[str, Any]:
    """A domain error's problem (app.errors), with the request id."""
    out = error.problem()
    out["request_id"] = request_id_of(scope)
    return out


# RFC 6750 3.1: no error code when no key was sent; `invalid_token` when the key sent is bad.
CHALLENGE = 'Bearer realm="tepat"'
CHALLENGE_INVALID = 'Bearer realm="tepat", error="invalid_token"'


def challenge(scope: Scope | None) -> str:
    """The `WWW-Authenticate` of a 401: did the request send a bearer key at all?"""
    for name, value in (scope or {}).get("headers") or ():
        if name == b"authorization":
            scheme, _, key = value.strip().partition(b" ")
            if scheme.lower() == b"bearer" and key.strip():
                return CHALLENGE_INVALID
            break
    return CHALLENGE


def retry_after(error: TepatError) -> int:
    """Whole seconds to wait, rounded up, at least 1: what `Retry-After` and the detail say."""
    given = error.extra.get("retry_after") if isinstance(error.extra, dict) else None
    try:
        seconds = math.ceil(float(given)) if given is not None else 1
    except (TypeError, ValueError):
        seconds = 1
    return max(1, seconds)


def headers_of(error: TepatError, scope: Scope | None = None) -> dict[str, str]:
    """`Retry-After` on every 429 and 503 (the error's own figure); `WWW-Authenticate` on 401."""
    if error.status in (429, 503) or isinstance(error, Unavailable):
        return {"Retry-After": str(retry_after(error))}
    if error.status == 401:
        return {"WWW-Authenticate": challenge(scope)}
    return {}


def response(problem: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(problem), status_code=problem["status"], media_type=PROBLEM_JSON,
        headers=headers,
    )  # fmt: skip


async def send(send: Send, problem: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    """Send a problem straight from a pure-ASGI layer (no router, no handlers)."""
    data = orjson.dumps(problem)
    raw = [
        (b"content-type", PROBLEM_JSON.encode()),
        (b"content-length", b"%d" % len(data)),
        *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()),
    ]
    await send({"type": "http.response.start", "status": problem["status"], "headers": raw})
    await send({"type": "http.response.body", "body": data})


def _request_id(request: Request) -> str:
    return request_id_of(request.scope)


def _masked(value: Any) -> Any:
    """Values echoed in errors: truncated, identifier-like digit runs masked (identifiers.echo)."""
    if isinstance(value, int | float | bool) or value is None:
        return value
    return echo(value)


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    # Only the first element says where (a body member may itself be named `header`).
    where = ("body", "query", "header", "path")
    parts = [str(p) for p in (loc[1:] if loc and loc[0] in where else loc)]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out or "body"


async def tepat_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TepatError)
    if exc.status >= 500 and _service_log.due():
        # Operators need the cause of a 503 (details never carry identifiers, app.errors), but
        # an outage fails every request: at most one line a second, with the count since.
        log.warning("%s: %s (%d like it since the last line)", exc.code, exc.detail,
                    _service_log.take())  # fmt: skip
    return response(of_error(request.scope, exc), headers_of(exc, request.scope))


def _not_json(request: Request) -> str | None:
    """The media type of a body sent to a JSON-body route as something else, else None.

    FastAPI hands such a body to the model as bytes, which can only fail validation: this is
    where that failure becomes 415. No Content-Type at all is read as JSON (as the fast path
    does; the app sets `strict_content_type=False`).
    """
    route = request.scope.get("route")
    if getattr(route, "body_field", None) is None:
        return None
    given = request.headers.get("content-type")
    if given is None:
        return None
    media = given.split(";", 1)[0].strip().lower()
    if media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    ):
        return None
    return media or "an empty Content-Type"


async def validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    media = _not_json(request)
    if media is not None:
        detail = f"{JSON_ONLY}; got {echo(media, limit=80)}"
        problem = body(request.scope, 415, "unsupported_media_type", detail, field="Content-Type")
        return response(problem)
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
    detail = (
        f"{len(errors)} problem(s); first: {first}: {errors[0]['message']}"
        if errors
        else "invalid request"
    )
    if malformed:
        problem = body(request.scope, 400, "malformed_json", detail, field=first, errors=errors)
    else:
        problem = body(request.scope, 422, "validation_failed", detail, field=first, errors=errors)
    return response(problem)


_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def _allow(request: Request) -> str | None:
    """Every method some route of the path answers (Starlette names only the first route's)."""
    methods: set[str] = set()
    for context in iter_route_contexts(request.app.routes):
        if (
            context.path
            and context.methods
            and compile_path(context.path)[0].match(request.url.path)
        ):
            methods |= context.methods
    return ", ".join(sorted(methods)) or None


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    detail = str(exc.detail) if exc.detail else TITLES[code]
    headers = dict(exc.headers or {})
    if exc.status_code == 400:  # FastAPI could not read the body (not UTF-8, say)
        reason = f"not valid JSON: {detail}"
        error = {"field": "body", "message": reason}
        problem = body(request.scope, 400, "malformed_json", reason, field="body", errors=[error])
        return response(problem, headers)
    if exc.status_code == 405 and (allow := _allow(request)) is not None:
        headers["Allow"] = allow
    return response(body(request.scope, exc.status_code, code, detail), headers)


async def unexpected_error(request: Request, exc: Exception) -> Response:
    log.error("unhandled error", exc_info=exc, extra={"request_id": _request_id(request)})
    detail = "an unexpected error occurred; quote the request id when reporting it"
    return response(body(request.scope, 500, "internal", detail))


async def database_error(request: Request, exc: Exception) -> Response:
    """The one place database failures become 503 + Retry-After (app.resilience decides which)."""
    if not resilience.is_unavailable(exc):
        return await unexpected_error(request, exc)
    if resilience.outage_log.due():  # an outage fails every request: one line a second
        held = resilience.outage_log.take()
        log.warning("database unavailable: %s (%d more since)", type(exc).__name__, held)
    error = resilience.unavailable(exc)
    return response(of_error(request.scope, error), headers_of(error, request.scope))


def install(app: FastAPI) -> None:
    # Registered on the exception middleware (not as the catch-all 500 handler), so the answer
    # goes through the other middleware: logged with its status, no traceback re-raised.
    for error in resilience.DATABASE_ERRORS:
        app.add_exception_handler(error, database_error)
    app.add_exception_handler(TepatError, tepat_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected_error)
