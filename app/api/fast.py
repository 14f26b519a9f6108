"""`POST /v1/people/lookup` without the framework's per-request machinery, same contract.

The route in app.api.routes.lookup stays the definition: its pydantic model documents the body
and produces every validation error. This pure-ASGI layer sits inside the request context,
rate limiting, shedding and deadline middleware and takes only requests it can check whole and
cheaply: a JSON body of exactly the documented fields with valid values. It then runs the same
steps as the route (authenticate, purpose, rate limit, `lookup.people_lookup`) and renders any
error with the app's own exception handlers. Anything else, a bad NIK, an unknown field, an
`explain` that is not a boolean, another content type, is handed to the route untouched, so the
client gets the route's answer. A single-NIK lookup spends about a third of its time in
dependency resolution and body validation; this path does not.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api import limits
from app.api.deps import AppState
from app.api.request_ids import request_id_of
from app.auth.principal import PROGRAMS
from app.identifiers import is_nik
from app.schemas.lookup import MAX_BATCH
from app.services import lookup

PATH = "/v1/people/lookup"
_FIELDS = frozenset({"niks", "snapshot", "rule_set", "programs", "explain"})
# Stricter than the model's patterns (ASCII digits only): what fails here goes to the route.
SNAPSHOT_ID = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(-r[1-9][0-9]*)?")
_RULE_SET = re.compile(r"[a-z0-9][a-z0-9-]{2,63}")
_PROGRAMS = frozenset(PROGRAMS)
_JSON_HEADERS = [(b"content-type", b"application/json")]


@dataclass(slots=True)
class FastStats:
    """How many lookups this path answered and how many it handed to the route."""

    served: int = 0
    handed_over: int = 0


@dataclass(frozen=True, slots=True)
class Plain:
    """A lookup body `parse` accepted whole: what PeopleLookup would hold, without building it."""

    niks: list[str]
    snapshot: str | None
    rule_set: str | None
    programs: list[str] | None
    explain: bool


def parse(body: bytes) -> Plain | None:
    """The request if the body is plainly valid (the model would accept it as is), else None."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(doc) is not dict or not _FIELDS.issuperset(doc):
        return None
    niks = doc.get("niks")
    if type(niks) is not list or not 1 <= len(niks) <= MAX_BATCH:
        return None
    for nik in niks:
        if type(nik) is not str or not is_nik(nik):
            return None
    snapshot = doc.get("snapshot")
    if snapshot is not None and (type(snapshot) is not str or not SNAPSHOT_ID.fullmatch(snapshot)):
        return None
    rule_set = doc.get("rule_set")
    if rule_set is not None and (type(rule_set) is not str or not _RULE_SET.fullmatch(rule_set)):
        return None
    programs = doc.get("programs")
    if programs is not None and (
        type(programs) is not list
        or not programs
        or not all(type(p) is str and p in _PROGRAMS for p in programs)
    ):
        return None
    explain = doc.get("explain", False)
    if type(explain) is not bool:
        return None
    return Plain(niks, snapshot, rule_set, programs, explain)


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
    async def answer(self, scope: Scope, body: bytes, head: Head) -> bytes | None:
        """The 200's JSON body, or None to hand the request to the app behind."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        head = Head.scan(scope["headers"])
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its body
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            data = (
                await self.answer(scope, body, head) if _json_content(head.content_type) else None
            )
        except Exception as e:
            self.stats.served += 1
            handler = _handler_for(scope["app"], e)
            if handler is None:
                raise
            response = await handler(Request(scope), e)
            await response(scope, receive, send)
            return
        if data is None:
            self.stats.handed_over += 1
            await self.app(scope, replay(body, receive), send)
            return
        self.stats.served += 1
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"%d" % len(data)), *_JSON_HEADERS],
            }
        )
        await send({"type": "http.response.body", "body": data})


async def authenticate(scope: Scope, head: Head) -> lookup.Caller:
    """app.api.deps.caller's steps: the key, then (with the client id noted for the access log,
    refused or not) the purpose."""
    state: AppState = scope["app"].state.tepat
    principal = await state.authenticator.authenticate(head.authorization_text())
    scope_state: dict[str, Any] = scope.setdefault("state", {})
    scope_state["client_id"] = principal.client_id
    purpose = principal.require_purpose(head.purpose_text())
    return lookup.Caller(principal, purpose, request_id_of(scope))


class FastLookup(FastPath):
    path = PATH

    async def answer(self, scope: Scope, body: bytes, head: Head) -> bytes | None:
        request = parse(body)
        if request is None:
            return None
        # The route's steps, in its order (app.api.deps.caller, then the route body).
        caller = await authenticate(scope, head)
        allowance = limits.allowance_of(scope["app"])
        n = len(request.niks)  # usually spent from this process's lease, without an await
        if allowance is not None and not allowance.try_spend(caller.principal, n):
            await allowance.charge(caller.principal, n)  # a new lease, or 429 before any SQL
        state: AppState = scope["app"].state.tepat
        return await lookup.people_lookup(state.reads, state.audit, caller, request)


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
