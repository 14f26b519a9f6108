"""The bulk stream's transport: its body with an idle timeout, and the answer to a client gone.

The body is read straight from ASGI `receive` (not Starlette's `request.stream()`), so that:

* a wait of more than `idle` seconds for the next body bytes ends the stream with
  IdleTimeout (408 problem+json before the answer started, an `idle_timeout` error line
  after): one `asyncio.timeout` per receive, i.e. per body piece the server reads (tens of
  kilobytes), never per line. A body trickled just under that (a byte every 29 s) ends too:
  over every `idle` seconds spent waiting for it, it must bring `min_rate` bytes a second;
* a disconnect is ClientGone (app.services.streams), which the stream ends on quietly: one
  info line, status 499 in the access log, no traceback;
* once the body is read, a watcher notices a disconnect while the answer is still being
  computed (nobody would read it), so the job stops instead of running to the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from app.errors import IdleTimeout
from app.services.streams import ClientGone, StreamSlots

log = logging.getLogger("tepat.bulk")

CLIENT_GONE = 499  # the status the access log shows for a client that went away (nginx's)
STALLED = 408  # ... and for one that stopped taking the answer


class Body:
    """The request body as an async iterator of bytes; `gone` once the client has left."""

    def __init__(self, receive: Receive, idle: float, min_rate: float = 0.0) -> None:
        self._receive = receive
        self.idle = idle
        self.min_rate = min_rate
        self.gone = False
        self._watcher: asyncio.Task[None] | None = None

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        receive, idle, min_rate = self._receive, self.idle, self.min_rate
        clock = time.perf_counter
        # The time spent waiting for the client, and the bytes it brought, in windows of
        # `idle` seconds of waiting: time the job spends on its answers is not the client's.
        waited = 0.0
        got = 0
        while True:
            began = clock()
            try:
                async with asyncio.timeout(idle):
                    message = await receive()
            except TimeoutError:
                raise IdleTimeout(
                    f"no request body bytes arrived for {idle:g} s; the stream is ended"
                ) from None
            if message["type"] == "http.disconnect":
                self.gone = True
                raise ClientGone
            data: bytes = message.get("body", b"")
            waited += clock() - began
            got += len(data)
            if waited >= idle:
                if got < min_rate * waited:
                    raise IdleTimeout(
                        f"the request body arrives slower than {min_rate:g} bytes a second; "
                        "the stream is ended"
                    )
                waited, got = 0.0, 0
            if data:
                yield data
            if not message.get("more_body", False):
                self._watcher = asyncio.get_running_loop().create_task(self._watch())
                return

    def watch(self) -> None:
        """For a stream whose request body was read already (a change list's JSON): notice
        a disconnect from now on."""
        if self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        # After the last body byte, `receive` returns only when the client disconnects (or
        # the answer is complete, by when this task is cancelled).
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self.gone = True

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None


def mark_gone(scope: Scope, status: int = CLIENT_GONE) -> None:
    """For the access log (app.http.middleware): the status this request really ended with,
    after a 200 went out (the client went away, or stopped reading)."""
    scope.setdefault("state", {})["end_status"] = status


async def answer_gone(scope: Scope, send: Send) -> None:
    """The 'answer' to a client that left before the status line: nothing reaches it (the
    server drops output for a closed connection); the access log records 499."""
    mark_gone(scope)
    with contextlib.suppress(Exception):
        await send({"type": "http.response.start", "status": CLIENT_GONE, "headers": []})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class GoneResponse(Response):
    """What the route returns when its client left before the answer started."""

    def __init__(self) -> None:
        self.status_code = CLIENT_GONE
        self.background = None
        self.init_headers({})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await answer_gone(scope, send)


def slots_of(app: Any) -> StreamSlots:
    """The process's stream slots (app.main's lifespan makes them, shared through the database);
    an app started without its lifespan counts them in the process."""
    state = app.state
    slots = getattr(state, "bulk_streams", None)
    if not isinstance(slots, StreamSlots):
        slots = StreamSlots(state.tepat.settings.bulk_streams_per_client)
        state.bulk_streams = slots
    return slots


__all__ = ["CLIENT_GONE", "STALLED", "Body", "GoneResponse", "answer_gone", "mark_gone", "slots_of"]
