"""ASGI middleware: request id, body size limit, `Cache-Control: no-store` on data answers,
one access log line without identifiers."""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.http import limits, problems, request_ids
from app.http.metrics import REQUEST_METRICS
from app.logs import access, scrub

_NO_STORE = (b"cache-control", b"no-store")
_PRIVATE = ("/v1/", "/graphql")
_PUBLIC = ("/graphql/static",)


class BodyTooLarge(Exception):
    pass


class RequestContext:
    """Pure ASGI (no BaseHTTPMiddleware): cheap enough for every request, streams untouched."""

    def __init__(
        self, app: ASGIApp, *, max_body: int, unlimited_paths: tuple[str, ...] = ()
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.unlimited = unlimited_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given: bytes | None = None
        declared: bytes | None = None
        for name, value in scope.get("headers") or ():  # the last of each, as dict() would
            if name == b"x-request-id":
                given = value
            elif name == b"content-length":
                declared = value
        rid = request_ids.assign(scope, given)  # the client's only if safe (app.http.request_ids)
        started = time.perf_counter()
        status = 500
        path: str = scope.get("path", "")
        limited = not path.startswith(self.unlimited)
        # Answers that may carry personal data, and their errors, are never stored by a cache.
        private = path.startswith(_PRIVATE) and not path.startswith(_PUBLIC)

        if (
            limited
            and declared is not None
            and declared.isdigit()
            and int(declared) > self.max_body
        ):
            await self._too_large(scope, send)
            self._log(scope, 413, started, rid)
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if limited and message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise BodyTooLarge
            return message

        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                headers = [*message.get("headers", []), (b"x-request-id", rid.encode())]
                if limits.RATE_LIMITED in scope["state"]:
                    headers += limits.rate_limit_headers(scope, status, headers)
                if private:
                    for name, _ in headers:
                        if name == b"cache-control":
                            break
                    else:
                        headers.append(_NO_STORE)
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, limited_receive, send_with_id)
        except BodyTooLarge:
            if not response_started:
                status = 413
                await self._too_large(scope, send)
        finally:
            self._log(scope, status, started, rid)

    def _log(self, scope: Scope, status: int, started: float, rid: str) -> None:
        state: dict[str, Any] = scope.get("state", {})
        seconds = time.perf_counter() - started
        status = state.get("end_status", status)
        REQUEST_METRICS.observe(scope, status, seconds)
        access.write(
            {
                "event": "request",
                "method": scope.get("method"),
                "path": scrub(scope.get("path", "")),  # never the query string
                # A stream's real end once its 200 went out: 499, the client went away; 408, it
                # stopped reading (app.api.streams).
                "status": status,
                "ms": round(seconds * 1000, 2),
                "request_id": rid,
                "client_id": state.get("client_id"),
                "level": "info",
                "logger": "tepat.access",
            }
        )

    async def _too_large(self, scope: Scope, send: Send) -> None:
        detail = f"the body must be at most {self.max_body} bytes"
        problem = problems.body(scope, 413, "payload_too_large", detail)
        headers = {"X-Request-ID": problem["request_id"], "Cache-Control": "no-store"}
        await problems.send(send, problem, headers)
