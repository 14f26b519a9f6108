"""Overload protection: a per-client NIK rate limit, concurrency shedding and a request deadline."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import orjson
from cachetools import LRUCache
from starlette.applications import Starlette
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.problems import PROBLEM_JSON
from app.config import Settings
from app.errors import RateLimited, TepatError, Unavailable

log = logging.getLogger("tepat.limits")

# Paths that are never shed: probes must tell "alive" and "ready" apart from "busy".
UNSHED = frozenset({"/healthz", "/readyz"})
# Streams run as long as their input; they bound each database step instead (statement timeout).
UNBOUNDED_PREFIXES = ("/v1/bulk/",)


# --- the rate limit: NIKs per client ------------------------------------------------------------


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """Token buckets per client id: `rate` NIKs a second, up to `burst` at once. In-process.

    A batch costs one token per identifier. A batch larger than the burst is let through when
    the bucket is full and leaves a debt, so its cost is still paid before the next one. Buckets
    live in a bounded LRU; keys are authenticated client ids, so a flood of made-up ids cannot
    evict real ones, and an evicted client only gets a fresh (full) bucket.
    """

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self._clock = clock
        self._buckets: LRUCache[str, _Bucket] = LRUCache(maxsize=max_clients)

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def _bucket(self, client_id: str) -> _Bucket:
        now = self._clock()
        bucket = self._buckets.get(client_id)
        if bucket is None:
            bucket = _Bucket(self.burst, now)
            self._buckets[client_id] = bucket
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
        return bucket

    def try_charge(self, client_id: str, n: int) -> float:
        """Take `n` tokens: 0.0 when granted, else the seconds until the batch would pass."""
        if not self.enabled or n <= 0:
            return 0.0
        bucket = self._bucket(client_id)
        need = min(float(n), self.burst)
        if bucket.tokens >= need:
            bucket.tokens -= n
            return 0.0
        return (need - bucket.tokens) / self.rate

    def charge(self, client_id: str, n: int) -> None:
        """Take `n` tokens or raise RateLimited (429) with the seconds to wait in retry_after."""
        wait = self.try_charge(client_id, n)
        if wait > 0:
            raise RateLimited(
                f"the limit is {self.rate:g} NIK lookups a second (bursts of {self.burst:g}); "
                f"this request of {n} can pass in {wait:.1f} s",
                retry_after=max(1, math.ceil(wait)),
            )

    def reserve(self, client_id: str, n: int) -> float:
        """Take `n` tokens now, into debt if need be; the seconds to sleep to honour the rate.

        For streams that have already answered 200 and can only slow down, not fail.
        """
        if not self.enabled or n <= 0:
            return 0.0
        bucket = self._bucket(client_id)
        bucket.tokens -= n
        return max(0.0, -bucket.tokens / self.rate)

    def refund(self, client_id: str, n: int) -> None:
        if self.enabled and n > 0:
            bucket = self._bucket(client_id)
            bucket.tokens = min(self.burst, bucket.tokens + n)


def limiter_of(app: Any) -> RateLimiter | None:
    limiter = getattr(getattr(app, "state", None), "rate_limiter", None)
    return limiter if isinstance(limiter, RateLimiter) else None


def charge(request: HTTPConnection, client_id: str, n: int) -> None:
    """Charge `n` looked-up identifiers to a client before the lookup runs; 429 when over.

    Every face calls this (REST lookups, bulk, GraphQL) with the number of NIKs or No. KKs it
    is about to look up, after authentication (so a bad key cannot drain a client's bucket).
    """
    limiter = limiter_of(request.app)
    if limiter is not None:
        limiter.charge(client_id, n)


async def throttle(
    request: HTTPConnection, client_id: str, n: int, *, max_wait: float = 30.0
) -> None:
    """For streams: wait until `n` more identifiers fit the client's rate (at most max_wait)."""
    limiter = limiter_of(request.app)
    if limiter is None:
        return
    wait = limiter.reserve(client_id, n)
    if wait > max_wait:
        limiter.refund(client_id, n)
        raise RateLimited("the stream is over the client's rate limit", retry_after=math.ceil(wait))
    if wait > 0:
        await asyncio.sleep(wait)


# --- shedding and the deadline ------------------------------------------------------------------

_background: set[asyncio.Task[None]] = set()  # strong references until each task ends


def _spawn(coro: Coroutine[Any, Any, None]) -> None:
    task = asyncio.get_running_loop().create_task(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)


async def _reply(scope: Scope, send: Send, error: TepatError) -> None:
    """Send a problem+json answer straight from the middleware (no router, no handlers)."""
    body = error.problem()
    body["request_id"] = scope.get("state", {}).get("request_id")
    data = orjson.dumps(body)
    retry = error.extra.get("retry_after", 1)
    headers = [
        (b"content-type", PROBLEM_JSON.encode()),
        (b"content-length", str(len(data)).encode()),
        (b"retry-after", str(retry).encode()),
    ]
    try:
        await send({"type": "http.response.start", "status": error.status, "headers": headers})
        await send({"type": "http.response.body", "body": data})
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


def install(app: Starlette, settings: Settings) -> None:
    """The rate limiter (app.state.rate_limiter); app.main puts Overload in front of the app."""
    app.state.rate_limiter = RateLimiter(
        settings.rate_limit_niks_per_second, settings.rate_limit_burst
    )


__all__ = ["Overload", "RateLimiter", "charge", "install", "limiter_of", "throttle"]
