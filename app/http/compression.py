"""Compression of answers: gzip, or zstd where the client prefers it, for bodies over a size,
streams included (pure ASGI; docs/api.md "Compression").

Starlette's GZipMiddleware is not used: it knows no zstd and reads `Accept-Encoding` by
substring (`gzip;q=0` counts as a yes). Here:

* the coding is the client's preference (`q`; on a tie, zstd: as small for a fraction of the
  CPU), among gzip and zstd;
  no `Accept-Encoding`, or none of the two, and the answer goes out untouched (one header added);
* an answer with a `Content-Length` under `minimum` bytes is sent as is, and so are 204/304,
  partial content (206, and any request with `Range`: the ranges are of the identity bytes),
  answers already encoded and media types that do not compress (only text and JSON-like do);
* a streamed answer (no `Content-Length`: bulk NDJSON, change lists, job downloads) is compressed
  chunk by chunk, each chunk flushed as a complete compressed block, so the client decodes every
  line as soon as it was produced, never after the stream's end;
* every answer that could be compressed says `Vary: Accept-Encoding`.

Large chunks are compressed off the event loop (zlib and zstd release the GIL).
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable
from typing import Protocol

import zstandard
from starlette.types import ASGIApp, Message, Receive, Scope, Send

GZIP = "gzip"
ZSTD = "zstd"
MINIMUM = 1024  # bytes: a smaller body gains nothing worth the CPU
_OFF_LOOP = 128 * 1024  # a chunk at least this big is compressed in a worker thread
_GZIP_LEVEL = 5
_ZSTD_LEVEL = 3

_VARY = (b"vary", b"Accept-Encoding")
_COMPRESSIBLE = (b"text/", b"application/json", b"application/problem+json")
_COMPRESSIBLE_SUFFIX = (b"+json", b"ndjson", b"javascript", b"xml", b"csv", b"graphql")


def choose(accept_encoding: str) -> str | None:
    """The coding to answer in: gzip or zstd, whichever the client prefers (`q`; on a tie zstd,
    which costs the server far less CPU for as small a body), or None. `identity` and other codings are never chosen here."""
    best: tuple[float, bool, int] | None = None
    chosen: str | None = None
    for index, item in enumerate(accept_encoding.split(",")):
        name, _, params = item.partition(";")
        coding = name.strip().lower()
        if coding not in (GZIP, ZSTD, "x-gzip"):
            continue
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
        if q <= 0:
            continue
        rank = (q, coding == ZSTD, -index)
        if best is None or rank > best:
            best, chosen = rank, (GZIP if coding == "x-gzip" else coding)
    return chosen


class _Encoder(Protocol):
    def chunk(self, data: bytes) -> bytes: ...
    def end(self) -> bytes: ...


class _Gzip:
    def __init__(self) -> None:
        self.z = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, 31)  # 31: the gzip wrapper

    def chunk(self, data: bytes) -> bytes:
        return self.z.compress(data) + self.z.flush(zlib.Z_SYNC_FLUSH)

    def end(self) -> bytes:
        return self.z.flush(zlib.Z_FINISH)


class _Zstd:
    def __init__(self) -> None:
        self.z = zstandard.ZstdCompressor(level=_ZSTD_LEVEL).compressobj()

    def chunk(self, data: bytes) -> bytes:
        return self.z.compress(data) + self.z.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)

    def end(self) -> bytes:
        return self.z.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH)


def encoder(coding: str) -> _Encoder:
    return _Gzip() if coding == GZIP else _Zstd()


def compress(coding: str, data: bytes) -> bytes:
    """A whole body in one coding (what a decoder of that coding gives back as `data`)."""
    if coding == GZIP:
        return zlib.compress(data, _GZIP_LEVEL, wbits=31)
    return zstandard.ZstdCompressor(level=_ZSTD_LEVEL, write_content_size=True).compress(data)


def _compressible(content_type: bytes | None) -> bool:
    if content_type is None:
        return False
    main = content_type.split(b";", 1)[0].strip().lower()
    if main == b"text/event-stream":  # events are read as they come; left to the transport
        return False
    return main.startswith(_COMPRESSIBLE) or main.endswith(_COMPRESSIBLE_SUFFIX)


async def _run(work: Callable[[bytes], bytes], data: bytes) -> bytes:
    if len(data) >= _OFF_LOOP:
        return await asyncio.to_thread(work, data)
    return work(data)


class Compression:
    """Pure ASGI: compresses answers per the request's `Accept-Encoding` (see the module)."""

    def __init__(self, app: ASGIApp, *, minimum: int = MINIMUM) -> None:
        self.app = app
        self.minimum = minimum

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        accept: bytes | None = None
        ranged = False
        for name, value in scope["headers"]:
            if name == b"accept-encoding":
                accept = value
            elif name == b"range":
                ranged = True
        coding = None if accept is None else choose(accept.decode("latin-1"))
        if coding is None or ranged or scope["method"] == "HEAD":
            await self.app(scope, receive, _varying(send))
            return
        await self.app(scope, receive, _Responder(send, coding, self.minimum).send)


def _varying(send: Send) -> Send:
    """Untouched answers, each with `Vary: Accept-Encoding` if it could have been compressed."""

    async def varied(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = message.get("headers") or []
            for name, value in headers:
                if name == b"content-type":
                    if _compressible(value):
                        message["headers"] = [*headers, _VARY]
                    break
        await send(message)

    return varied


class _Responder:
    """One answer: held at its start until the first body message says how to send it."""

    def __init__(self, send: Send, coding: str, minimum: int) -> None:
        self.out = send
        self.coding = coding
        self.minimum = minimum
        self.start: Message | None = None
        self.encoder: _Encoder | None = None
        self.passing = False

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self._holds(message):
                self.start = message
            else:
                self.passing = True
                await self.out(message)
            return
        if kind != "http.response.body" and self.start is not None:
            # Another kind of body (an ASGI extension's `pathsend`): sent as it is.
            start, self.start, self.passing = self.start, None, True
            await self.out(start)
        if kind != "http.response.body" or self.passing:
            await self.out(message)
            return
        body: bytes = message.get("body", b"")
        more: bool = message.get("more_body", False)
        if self.start is not None:  # the first body message
            start, self.start = self.start, None
            if not more and len(body) < self.minimum:
                self.passing = True  # a small answer: as it is
                await self.out(start)
                await self.out(message)
                return
            headers = [(n, v) for n, v in start["headers"] if n != b"content-length"]
            _weak_etag(headers)
            headers.append((b"content-encoding", self.coding.encode("ascii")))
            if not more:  # the whole answer at once
                data = await _run(self._whole, body)
                headers.append((b"content-length", b"%d" % len(data)))
                await self.out({**start, "headers": headers})
                await self.out({"type": "http.response.body", "body": data})
                return
            self.encoder = encoder(self.coding)
            await self.out({**start, "headers": headers})
        assert self.encoder is not None
        data = await _run(self.encoder.chunk, body) if body else b""
        if not more:
            data += self.encoder.end()
        if data or not more:
            await self.out({"type": "http.response.body", "body": data, "more_body": more})

    def _whole(self, data: bytes) -> bytes:
        return compress(self.coding, data)

    def _holds(self, message: Message) -> bool:
        """Whether this answer may be compressed (held until its first body message); adds
        `Vary` to any answer whose media type compresses."""
        headers: list[tuple[bytes, bytes]] = list(message.get("headers") or [])
        status: int = message["status"]
        content_type = length = None
        encoded = False
        for name, value in headers:
            if name == b"content-type":
                content_type = value
            elif name == b"content-length":
                length = value
            elif name in (b"content-encoding", b"content-range"):
                encoded = True
        if not _compressible(content_type):
            return False
        headers.append(_VARY)
        message["headers"] = headers
        small = length is not None and length.isdigit() and int(length) < self.minimum
        return not (encoded or small or status in (204, 206, 304) or status < 200)


def _weak_etag(headers: list[tuple[bytes, bytes]]) -> None:
    """A compressed answer is another representation: its ETag may only be weak."""
    for i, (name, value) in enumerate(headers):
        if name == b"etag" and not value.startswith(b"W/"):
            headers[i] = (name, b"W/" + value)
