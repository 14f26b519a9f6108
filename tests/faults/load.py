"""A bounded load generator: N workers POSTing lookups and recording every answer's timing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

PROBLEM_JSON = "application/problem+json"


@dataclass(slots=True)
class Sample:
    started: float
    ended: float
    status: int  # 0: no HTTP answer at all (connection error, client time-out)
    retry_after: str | None
    content_type: str
    body: dict[str, Any] | None
    error: str | None = None

    @property
    def seconds(self) -> float:
        return self.ended - self.started


async def send(
    http: httpx.AsyncClient, path: str, body: dict[str, Any], headers: dict[str, str]
) -> Sample:
    started = time.monotonic()
    try:
        r = await http.post(
            path,
            content=orjson.dumps(body),
            headers={**headers, "Content-Type": "application/json"},
        )
    except httpx.HTTPError as e:
        return Sample(started, time.monotonic(), 0, None, "", None, type(e).__name__)
    ended = time.monotonic()
    try:
        parsed = orjson.loads(r.content)
    except orjson.JSONDecodeError:
        parsed = None
    return Sample(
        started,
        ended,
        r.status_code,
        r.headers.get("retry-after"),
        r.headers.get("content-type", ""),
        parsed if isinstance(parsed, dict) else None,
    )


async def hammer(
    base_url: str,
    headers: dict[str, str],
    body: Callable[[int], dict[str, Any]],
    *,
    workers: int,
    stop: asyncio.Event,
    max_seconds: float,
    max_requests: int = 50_000,
    path: str = "/v1/people/lookup",
) -> list[Sample]:
    """Send until `stop` is set, `max_seconds` pass or `max_requests` are sent; all samples."""
    samples: list[Sample] = []
    until = time.monotonic() + max_seconds
    limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)
    timeout = httpx.Timeout(30.0)  # far past any deadline: a hang shows up as a slow sample

    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout) as http:

        async def worker(w: int) -> None:
            i = 0
            while not stop.is_set() and time.monotonic() < until and len(samples) < max_requests:
                samples.append(await send(http, path, body(w * 1_000_000 + i), headers))
                i += 1

        await asyncio.gather(*(worker(w) for w in range(workers)))
    return samples
