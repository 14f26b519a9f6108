"""Overload protection: the client's allowance (rate and quota), shedding and a request deadline."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.auth.principal import Principal
from app.config import Settings
from app.errors import TepatError, Unavailable
from app.http import problems
from app.services.allowance import Allowance
from app.services.clients import Authenticator

log = logging.getLogger("tepat.limits")

# Paths that are never shed: probes must tell "alive" and "ready" apart from "busy".
UNSHED = frozenset({"/healthz", "/readyz", "/metrics"})
# Streams run as long as their input; they bound each database step instead (statement timeout).
UNBOUNDED_PREFIXES = ("/v1/bulk/", "/v1/changes")


# --- the rate limit and the daily quota: NIKs per client, shared by every process -------------


def allowance_of(app: Any) -> Allowance | None:
    allowance = getattr(getattr(app, "state", None), "allowance", None)
    return allowance if isinstance(allowance, Allowance) else None


# The scope's state key under which the caller check leaves the client whose allowance the
# answer's RateLimit headers describe (app.http.caller.authenticate; app.http.middleware).
RATE_LIMITED = "rate_limited_principal"


def note_limited(scope: Scope, principal: Principal) -> None:
    """This answer carries the client's RateLimit-Policy and RateLimit headers."""
    scope.setdefault("state", {})[RATE_LIMITED] = principal


def rate_limit_headers(
    scope: Scope, status: int, headers: list[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    """The RateLimit-Policy and RateLimit headers of an answer to a client `note_limited`
    named (none when no limit applies), computed as the answer starts: after its charge."""
    principal = scope.get("state", {}).get(RATE_LIMITED)
    allowance = allowance_of(scope.get("app")) if principal is not None else None
    if allowance is None:
        return []
    policy = allowance.policy(principal)
    if policy is None:
        return []
    retry = None
    if status == 429:
        for name, value in headers:
            if name == b"retry-after" and value.isdigit():
                retry = int(value)
    remaining = allowance.remaining(principal, status, retry)
    if remaining is None:
        return []
    return [(b"ratelimit-policy", policy), (b"ratelimit", remaining)]


def debit(scope: Scope, principal: Principal, n: int) -> None:
    """Charge `n` more once the answer is known (families: the members disclosed). The charge
    before the lookup is app.http.caller.charge."""
    allowance = allowance_of(scope["app"])
    if allowance is not None:
        allowance.debit(principal, n)


async def throttle(scope: Scope, principal: Principal, n: int, *, max_wait: float = 30.0) -> None:
    """For streams: wait until `n` more identifiers fit the client's rate (at most max_wait)."""
    allowance = allowance_of(scope["app"])
    if allowance is not None:
        await allowance.throttle(principal, n, max_wait=max_wait)


# --- shedding and the deadline ------------------------------------------------------------------

_background: set[asyncio.Task[None]] = set()  # strong references until each task ends


def _spawn(coro: Coroutine[Any, Any, None]) -> None:
    task = asyncio.get_running_loop().create_task(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)


async def _reply(scope: Scope, send: Send, error: TepatError) -> None:
    """Send a problem+json answer straight from the middleware (no router, no handlers)."""
    try:
        await problems.send(
            send, problems.of_error(scope, error), problems.headers_of(error, scope)
        )
    except Exception as e:  # the client went away: nothing left to tell it
        log.debug("could not send the %s answer: %s", error.status, type(e).__name__)


class Overload:
    """Pure ASGI: shed requests past `max_concurrency` at once; answer 503 at `deadline`.

    Bulk streams (`unbounded_prefixes`) have a count of their own, `max_streams`, and no deadline.

    Shedding answers at once instead of queueing for the pool: a queue only turns overload into
    time-outs for everyone. The deadline does not wait for the request's clean-up (SQLAlchemy
    finishes a connection's close even when cancelled, and against a frozen server that takes
    the command timeout): a timer sends the 503, then cancels the work, which unwinds on its own.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_concurrency: int,
        deadline: float,
        unshed: frozenset[str] = UNSHED,
        unbounded_prefixes: tuple[str, ...] = UNBOUNDED_PREFIXES,
        max_streams: int = 0,
    ) -> None:
        self.app = app
        self.max_concurrency = max_concurrency
        self.deadline = deadline
        self.unshed = unshed
        self.unbounded = unbounded_prefixes
        self.in_flight = 0
        # Streams (the unbounded paths) count apart: a stalled body must not take a lookup's
        # slot. Per client they are bounded too (app.services.streams).
        self.max_streams = max_streams
        self.streams = 0
        self.shed = 0
        self.expired = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        bounded = self.deadline > 0 and not path.startswith(self.unbounded)
        if path in self.unshed:
            await (
                self._bounded(scope, receive, send) if bounded else self.app(scope, receive, send)
            )
            return
        if path.startswith(self.unbounded):
            await self._stream(scope, receive, send)
            return
        if self.in_flight >= self.max_concurrency > 0:
            self.shed += 1
            busy = f"the server is at its limit of {self.max_concurrency} requests at once"
            await _reply(scope, send, Unavailable(busy))
            return
        self.in_flight += 1
        try:
            if bounded:
                await self._bounded(scope, receive, send)
            else:
                await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.streams >= self.max_streams > 0:
            self.shed += 1
            busy = f"the server is at its limit of {self.max_streams} bulk streams at once"
            await _reply(scope, send, Unavailable(busy))
            return
        self.streams += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.streams -= 1

    async def _bounded(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        started = False
        answered = False

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if answered:
                return  # the deadline already answered; late output has nowhere to go
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        def expire() -> None:
            nonlocal answered
            if started:
                return  # a response is on its way; cutting it short would only corrupt it
            answered = True
            self.expired += 1
            late = f"the request did not complete within its deadline of {self.deadline:g} s"
            _spawn(_reply(scope, send, Unavailable(late)))
            if task is not None:
                task.cancel()

        handle = asyncio.get_running_loop().call_later(self.deadline, expire)
        try:
            await self.app(scope, receive, guarded_send)
        except asyncio.CancelledError:
            if not answered or task is None:
                raise  # not ours: a shutdown or a disconnect
        except Exception as e:
            if not answered:
                raise
            log.debug("request failed after its deadline: %s", type(e).__name__)
        finally:
            handle.cancel()
            if answered and task is not None and task.cancelling():
                task.uncancel()


def install(app: Starlette, settings: Settings, engine: AsyncEngine, auth: Authenticator) -> None:
    """The allowance (app.state.allowance), built by the lifespan once the engine exists;
    app.main puts Overload in front of the app."""
    app.state.allowance = Allowance(
        engine,
        rate=settings.rate_limit_niks_per_second,
        burst=settings.rate_limit_burst,
        lease_seconds=settings.rate_limit_lease_seconds,
        quota=settings.daily_quota,
        quota_bulk=settings.daily_quota_bulk,
        on_suspended=auth.note_suspended,
        on_active=auth.note_active,
    )


__all__ = [
    "RATE_LIMITED",
    "Overload",
    "allowance_of",
    "debit",
    "install",
    "note_limited",
    "rate_limit_headers",
    "throttle",
]
