"""The pure-ASGI fast-path base: a layer that answers POSTs to one path itself when it can.

The REST people lookup (app.api.fast) and compiled GraphQL documents (app.graphql.fast) each
answer their plainly valid requests without the framework's per-request machinery, and hand
anything else, its body replayed, to the app behind, which answers it as always. An exception
a path raises is rendered by the app's own exception handlers (app.http.problems).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.http.caller import authenticate
from app.services.lookup import Answer, Caller
from app.services.receipts import HEADER

_JSON_HEADERS = [(b"content-type", b"application/json")]
_RECEIPT = HEADER.lower().encode("ascii")


@dataclass(slots=True)
class FastStats:
    """How many lookups this path answered and how many it handed to the route."""

    served: int = 0
    handed_over: int = 0


def _json_content(value: bytes | None) -> bool:
    """What FastAPI parses as JSON: no content type, or application/json or */*+json."""
    if value is None:
        return True
    main = value.split(b";", 1)[0].strip().lower()
    return main == b"application/json" or (
        main.startswith(b"application/") and main.endswith(b"+json")
    )


@dataclass(slots=True)
class Head:
    """The request headers a fast path reads: the first of each, as Starlette's headers.get."""

    authorization: bytes | None = None
    purpose: bytes | None = None
    content_type: bytes | None = None
    # Any Accept header asks for multipart or event-stream answers (Strawberry's transports).
    accepts_stream: bool = False

    @classmethod
    def scan(cls, headers: list[tuple[bytes, bytes]]) -> Head:
        head = cls()
        for name, value in headers:
            if name == b"authorization":
                head.authorization = head.authorization or value
            elif name == b"x-purpose":
                head.purpose = head.purpose or value
            elif name == b"content-type":
                head.content_type = head.content_type or value
            elif name == b"accept" and (b"multipart" in value or b"event-stream" in value):
                head.accepts_stream = True
        return head

    def authorization_text(self) -> str | None:
        return None if self.authorization is None else self.authorization.decode("latin-1")

    def purpose_text(self) -> str | None:
        return None if self.purpose is None else self.purpose.decode("latin-1")


class FastPath(ABC):
    """A pure-ASGI layer that answers POSTs to one path itself when it can, else hands over.

    `answer` returns the JSON body of a 200, or None to hand the request (its body replayed) to
    the app behind; an exception it raises is rendered by the app's own exception handlers.
    """

    path = ""

    def __init__(self, app: ASGIApp, *, stats: FastStats) -> None:
        self.app = app
        self.stats = stats

    @abstractmethod
    async def answer(self, scope: Scope, body: bytes, head: Head) -> Answer | None:
        """The 200's JSON body and its receipt, or None to hand the request to the app behind."""

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Not a coroutine: a request for another path gets the next layer's own awaitable, so
        # no frame of this layer stays in its await chain (each resumption of a suspended
        # request walks the chain: bench/ P11).
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] != "POST":
            return self.app(scope, receive, send)
        return self._read(scope, receive, send)

    async def _read(self, scope: Scope, receive: Receive, send: Send) -> None:
        head = Head.scan(scope["headers"])
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its body
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        await self.serve(scope, receive, send, b"".join(chunks), head)

    async def serve(
        self, scope: Scope, receive: Receive, send: Send, body: bytes, head: Head
    ) -> None:
        """Answer a request whose body and headers were already read (by this layer, or by a
        layer in front that checked them first: app.graphql.gate), or hand it over."""
        try:
            data = (
                await self.answer(scope, body, head) if _json_content(head.content_type) else None
            )
        except Exception as e:
            self.stats.served += 1
            response = await self.error_response(scope, e)
            if response is None:
                raise
            await response(scope, receive, send)
            return
        if data is None:
            self.stats.handed_over += 1
            await self.app(scope, replay(body, receive), send)
            return
        self.stats.served += 1
        headers = [(b"content-length", b"%d" % len(data.body)), *_JSON_HEADERS]
        if data.receipt is not None:
            headers.append((_RECEIPT, data.receipt.encode("ascii")))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": data.body})

    async def error_response(self, scope: Scope, error: Exception) -> Any:
        """The answer to an error `answer` raised: the app's own handler's (None: re-raise)."""
        handler = _handler_for(scope["app"], error)
        return None if handler is None else await handler(Request(scope), error)


async def caller_of(scope: Scope, head: Head) -> Caller:
    """The caller from the headers a fast path scanned (app.http.caller.authenticate)."""
    return await authenticate(scope, head.authorization_text(), head.purpose_text())


def _handler_for(app: Any, error: Exception) -> Any:
    """The app's exception handler for `error`, looked up the way Starlette does (by MRO)."""
    handlers: dict[Any, Any] = app.exception_handlers
    for cls in type(error).__mro__:
        if cls in handlers:
            return handlers[cls]
    return None


def replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the already-read body once, then defers to the real one."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again
