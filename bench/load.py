"""The load generator: keep-alive HTTP/1.1 connections for a bounded time, run as its own process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psutil

# Why not httpx for request/response loads: measured here at 32 connections, an httpx client
# drove bare FastAPI at ~250 req/s, where these pre-encoded requests on raw asyncio streams
# (uvloop) drive it at ~6,000 with a quarter of a core; with httpx the ratio would measure the
# client.
NDJSON = "application/x-ndjson"


@dataclass(frozen=True, slots=True)
class Spec:
    """One measurement: what to send, how hard, for how long (seconds)."""

    port: int
    requests: list[bytes]
    connections: int
    duration: float
    warmup: float


@dataclass(slots=True)
class Tally:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    response_bytes: int = 0
    first_error: str = ""
    last_done: float = 0.0
    done_in_window: int = 0


def encode_request(
    method: str, path: str, headers: dict[str, str], body: bytes, host: str = "127.0.0.1"
) -> bytes:
    """A complete HTTP/1.1 keep-alive request, encoded once and sent many times."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """Status, body and whether the server keeps the connection open."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    keep = b"connection: close" not in lower
    at = lower.find(b"content-length:")
    if at >= 0:
        end = lower.index(b"\r\n", at)
        body = await reader.readexactly(int(lower[at + 15 : end]))
        return status, body, keep
    if b"transfer-encoding: chunked" in lower:
        parts: list[bytes] = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return status, b"".join(parts), keep
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
    return status, await reader.read(), False


async def _connection(spec: Spec, index: int, begin: float, end: float, tally: Tally) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", spec.port)
    n = index
    try:
        while True:
            started = time.perf_counter()
            # Past the end, a connection still waits for its first measured answer, so a
            # service slower than the window still gets a figure (at most `end + 60 s`).
            if started >= end and (tally.done_in_window >= spec.connections or started > end + 60):
                return
            request = spec.requests[n % len(spec.requests)]
            n += spec.connections  # connections walk the request list in step, no repeats
            writer.write(request)
            status, body, keep = await _read_response(reader)
            done = time.perf_counter()
            if done >= begin:
                # Completions after the warm-up count (wrk's way), so a slow request that
                # straddles the start is not lost.
                tally.done_in_window += 1
                tally.latencies.append(done - started)
                tally.statuses[status] = tally.statuses.get(status, 0) + 1
                tally.response_bytes += len(body)
                tally.last_done = max(tally.last_done, done)
                if status >= 400 and not tally.first_error:
                    tally.first_error = body[:300].decode("utf-8", "replace")
            if not keep:
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", spec.port)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def run_requests(spec: Spec) -> dict[str, Any]:
    tally = Tally()
    me = psutil.Process()
    begin = time.perf_counter() + spec.warmup
    end = begin + spec.duration
    cpu0 = me.cpu_times()
    await asyncio.gather(
        *(_connection(spec, i, begin, end, tally) for i in range(spec.connections))
    )
    cpu1 = me.cpu_times()
    wall = time.perf_counter() - (begin - spec.warmup)
    measured = max(tally.last_done - begin, 1e-9)
    lat = sorted(tally.latencies)
    ok = sum(v for k, v in tally.statuses.items() if k < 400)
    return {
        "requests": len(lat),
        "ok": ok,
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        "first_error": tally.first_error,
        "seconds": round(measured, 3),
        "rps": len(lat) / measured,
        "p50_ms": _percentile(lat, 0.50) * 1000,
        "p99_ms": _percentile(lat, 0.99) * 1000,
        "mean_response_bytes": tally.response_bytes / max(len(lat), 1),
        # The generator's own CPU share: near 100 % means it, not the server, set the pace.
        "generator_cpu": (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / wall,
    }


async def run_bulk(
    port: int, path: str, headers: dict[str, str], body_file: Path, limit: float
) -> dict[str, Any]:
    """One streamed NDJSON job: the body is read from a file in chunks, the answer counted.

    Bounded: after `limit` seconds the job is abandoned and the rate is what was answered.
    """

    me = psutil.Process()
    cpu0 = me.cpu_times()
    started = time.perf_counter()
    lines = 0
    first_byte = 0.0
    tail = b""
    status = 0
    timed_out = False

    async def upload(writer: asyncio.StreamWriter) -> None:
        head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Transfer-Encoding: chunked"]
        head += [f"{k}: {v}" for k, v in {**headers, "Content-Type": NDJSON}.items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        with body_file.open("rb") as f:
            while chunk := f.read(1 << 16):
                writer.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                await writer.drain()  # blocks while the server reads slowly: backpressure
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async def job() -> None:
        # Full duplex, as a bulk client must be: the service answers chunk by chunk while it
        # still reads the body. A client that sends the whole body before reading (httpx,
        # requests) deadlocks once body and answer outgrow the socket buffers (here: past
        # ~100,000 NIKs).
        nonlocal status, first_byte, lines, tail
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        sending = asyncio.create_task(upload(writer))
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            first_byte = time.perf_counter() - started
            status = int(head[9:12])
            chunked = b"transfer-encoding: chunked" in head.lower()
            while True:
                if chunked:
                    size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                    if size == 0:
                        break
                    data = await reader.readexactly(size + 2)
                    data = data[:-2]
                else:
                    data = await reader.read(1 << 16)
                    if not data:
                        break
                lines += data.count(b"\n")
                # Keep only the last line (complete or not): the summary is checked at the end.
                tail += data
                cut = tail.rfind(b"\n", 0, len(tail) - 1)
                if cut >= 0:
                    tail = tail[cut + 1 :]
        finally:
            sending.cancel()
            with contextlib.suppress(BaseException):
                await sending
            writer.close()

    try:
        await asyncio.wait_for(job(), limit)
    except TimeoutError:
        timed_out = True
    seconds = time.perf_counter() - started
    cpu1 = me.cpu_times()
    last = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    summary: dict[str, Any] = {}
    with contextlib.suppress(orjson.JSONDecodeError):
        summary = orjson.loads(last).get("summary") or {}
    return {
        "status": status,
        "lines": lines,
        "seconds": round(seconds, 3),
        "first_byte_s": round(first_byte, 3),
        "summary": {k: summary.get(k) for k in ("lines", "found", "not_found", "errors")},
        "complete": bool(summary),
        "timed_out": timed_out,
        "last_line": "" if summary else last[:300].decode("utf-8", "replace"),
        "generator_cpu": (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / seconds,
    }


def main() -> None:
    """`python -m bench.load SPEC.json`: run one measurement, print its result as JSON."""
    import uvloop

    spec = json.loads(Path(sys.argv[1]).read_text())
    if spec["kind"] == "bulk":
        result = uvloop.run(
            run_bulk(
                spec["port"],
                spec["path"],
                spec["headers"],
                Path(spec["body_file"]),
                spec["limit"],
            )
        )
    else:
        requests = [
            encode_request(r["method"], r["path"], r["headers"], r["body"].encode())
            for r in spec["requests"]
        ]
        result = uvloop.run(
            run_requests(
                Spec(spec["port"], requests, spec["connections"], spec["duration"], spec["warmup"])
            )
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
