"""In front of `POST /graphql`: nothing costs much before the key is checked.

A pure-ASGI layer outside the compiled fast path and Strawberry. Before a byte of the body is
read it checks, from the headers alone: the API key and the purpose when a key is sent (a bad
one is refused as the GraphQL face refuses it: 401 or 403, `errors[].extensions.code`), the
content type (415) and the declared length. The body is then read with a running count, so a
body without a length (chunked) is cut off at the cap too. The caps: TEPAT_GRAPHQL_MAX_BODY_BYTES
with a key, TEPAT_GRAPHQL_ANONYMOUS_MAX_BODY_BYTES without one (only documents without personal
fields run without a key); over them, 413 with a key and 401 without (send the key). Nothing is
parsed here: the body goes on, replayed, to be parsed once.

The compiled path takes the caller admitted here (`admitted`); Strawberry's path checks the key
again for documents with personal fields (app.graphql.context), from the authenticator's
in-process cache: no database round trip.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from app import resilience
from app.errors import TepatError, Unauthenticated
from app.http import problems
from app.http.fast import FastPath, Head, caller_of, replay
from app.http.request_ids import request_id_of
from app.services.lookup import Caller

PATH = "/graphql"
_CALLER = "graphql_caller"


class _Refused(Exception):
    def __init__(
        self,
        status: int,
        body: bytes,
        content_type: bytes,
        retry_after: int | None = None,
        challenge: str | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.retry_after = retry_after
        self.challenge = challenge


class GraphQLGate:
    def __init__(self, app: ASGIApp, *, max_body: int, anonymous_max_body: int) -> None:
        self.app = app
        self.max_body = max_body
        self.anonymous_max_body = anonymous_max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        head = Head.scan(scope["headers"])
        try:
            body = await self._admit(scope, receive, head)
        except _Refused as refused:
            await _send(send, refused)
            return
        if body is None:
            return  # the client went away before sending its body
        if isinstance(self.app, FastPath) and self.app.path == PATH:
            # The compiled path takes the body and headers read here: no second read or scan.
            await self.app.serve(scope, receive, send, body, head)
        else:
            await self.app(scope, replay(body, receive), send)

    async def _admit(self, scope: Scope, receive: Receive, head: Head) -> bytes | None:
        if head.authorization is not None:
            try:
                caller = await caller_of(scope, head)  # the key, then the purpose
            except TepatError as e:
                raise graphql_refusal(scope, e) from None
            except Exception as e:
                if not resilience.is_unavailable(e):
                    raise
                raise graphql_refusal(scope, resilience.unavailable(e)) from None
            scope["state"][_CALLER] = caller
            cap = self.max_body
        else:
            cap = self.anonymous_max_body
        if head.content_type is None or b"application/json" not in head.content_type.lower():
            raise transport_refusal(
                scope, 415, "unsupported_media_type", "send the request as `application/json`"
            )
        declared = _content_length(scope)
        if declared is not None and declared > cap:
            raise self._too_large(scope, head, cap)
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > cap:
                raise self._too_large(scope, head, cap)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _too_large(self, scope: Scope, head: Head, cap: int) -> _Refused:
        if head.authorization is None:
            return graphql_refusal(
                scope,
                Unauthenticated(
                    f"a GraphQL request without an API key may be at most {cap} bytes; send the "
                    "key as `Authorization: Bearer <key>`"
                ),
            )
        return transport_refusal(
            scope, 413, "payload_too_large", f"a GraphQL request body may be at most {cap} bytes"
        )


def admitted(scope: Scope) -> Caller | None:
    """The caller the gate authenticated for this request (None: no key was sent)."""
    caller: Caller | None = scope.get("state", {}).get(_CALLER)
    return caller


def graphql_refusal(scope: Scope, error: TepatError) -> _Refused:
    """A refusal in the GraphQL face's shape (as app.graphql.router renders a refused request)."""
    rid = request_id_of(scope)
    extensions: dict[str, Any] = {"code": error.code}
    if isinstance(error.extra, dict):
        extensions.update(error.extra)
    body = {
        "data": None,
        "errors": [{"message": error.detail, "extensions": extensions}],
        "extensions": {"meta": {"request_id": rid}},
    }
    retry = problems.retry_after(error) if error.status in (429, 503) else None
    challenge = problems.challenge(scope) if error.status == 401 else None
    return _Refused(error.status, orjson.dumps(body), b"application/json", retry, challenge)


def transport_refusal(scope: Scope, status: int, code: str, detail: str) -> _Refused:
    """A request refused before it is a GraphQL request at all: problem+json."""
    body = problems.body(scope, status, code, detail)
    return _Refused(status, orjson.dumps(body), problems.PROBLEM_JSON.encode())


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


async def _send(send: Send, refused: _Refused) -> None:
    headers = [
        (b"content-type", refused.content_type),
        (b"content-length", b"%d" % len(refused.body)),
    ]
    if refused.retry_after is not None:
        headers.append((b"retry-after", b"%d" % refused.retry_after))
    if refused.challenge is not None:
        headers.append((b"www-authenticate", refused.challenge.encode("ascii")))
    await send({"type": "http.response.start", "status": refused.status, "headers": headers})
    await send({"type": "http.response.body", "body": refused.body})
