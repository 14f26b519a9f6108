"""Compression (app.http.compression): gzip or zstd as the client prefers, the same bytes once
decoded, small answers as they are, `Vary: Accept-Encoding` (streams: tests/bulk)."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import zstandard
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.http.compression import MINIMUM, Compression, choose
from tests.support import auth

LOOKUP = "/v1/people/lookup"


def decode(coding: str | None, raw: bytes) -> bytes:
    if coding == "gzip":
        return zlib.decompress(raw, 31)
    if coding == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(raw)
    assert coding is None
    return raw


async def fetch(
    http: httpx.AsyncClient, method: str, url: str, accept: str, **kw: object
) -> tuple[httpx.Response, bytes]:
    """The answer and its body exactly as sent (not decoded by httpx)."""
    headers = {**kw.pop("headers", {}), "Accept-Encoding": accept}  # type: ignore[dict-item]
    async with http.stream(method, url, headers=headers, **kw) as response:  # type: ignore[arg-type]
        raw = b"".join([part async for part in response.aiter_raw()])
    return response, raw


@pytest.mark.parametrize(
    ("header", "coding"),
    [
        ("gzip", "gzip"),
        ("zstd", "zstd"),
        ("gzip, zstd", "zstd"),  # a tie: zstd, the cheaper for the server
        ("gzip, deflate, br, zstd", "zstd"),  # httpx with zstandard installed
        ("zstd, gzip", "zstd"),
        ("gzip;q=0.5, zstd", "zstd"),
        ("zstd;q=0.2, gzip;q=0.8", "gzip"),
        ("gzip;q=0, zstd;q=0", None),
        ("br, deflate", None),
        ("identity", None),
        ("x-gzip", "gzip"),
        ("GZIP ; Q=1", "gzip"),
        ("", None),
    ],
)
def test_the_client_preference_picks_the_coding(header: str, coding: str | None) -> None:
    assert choose(header) == coding


@pytest.mark.parametrize("coding", ["gzip", "zstd"])
async def test_a_large_answer_decodes_to_the_identity_bytes(
    http: httpx.AsyncClient, coding: str
) -> None:
    plain, plain_raw = await fetch(http, "GET", "/openapi.json", "identity")
    packed, packed_raw = await fetch(http, "GET", "/openapi.json", coding)
    assert plain.headers.get("content-encoding") is None
    assert packed.headers["content-encoding"] == coding
    assert "accept-encoding" in packed.headers["vary"].lower()
    assert "accept-encoding" in plain.headers["vary"].lower()
    assert int(packed.headers["content-length"]) == len(packed_raw) < len(plain_raw)
    assert decode(coding, packed_raw) == plain_raw


@pytest.mark.parametrize("coding", ["gzip", "zstd"])
async def test_a_lookup_is_compressed_by_the_fast_path_too(
    http: httpx.AsyncClient, full_key: str, published: Path, coding: str
) -> None:
    niks = [line.split(",", 1)[0] for line in (published / "anggota.csv").read_text().splitlines()]
    body = {"niks": niks[1:201]}
    plain, plain_raw = await fetch(
        http, "POST", LOOKUP, "identity", json=body, headers=auth(full_key)
    )
    packed, packed_raw = await fetch(
        http, "POST", LOOKUP, f"{coding}, identity;q=0.1", json=body, headers=auth(full_key)
    )
    assert plain.status_code == packed.status_code == 200
    assert len(plain_raw) > MINIMUM
    assert packed.headers["content-encoding"] == coding
    one, two = orjson.loads(plain_raw), orjson.loads(decode(coding, packed_raw))
    assert one.pop("meta")["audit_id"] != two.pop("meta")["audit_id"]  # two lookups, two records
    assert one == two


async def test_small_answers_stay_uncompressed(http: httpx.AsyncClient, full_key: str) -> None:
    response, raw = await fetch(http, "GET", "/healthz", "gzip, zstd")
    assert response.status_code == 200 and len(raw) < MINIMUM
    assert response.headers.get("content-encoding") is None
    assert raw == (await fetch(http, "GET", "/healthz", "identity"))[1]
    # A problem answer too: small, as it is, and still a problem.
    problem, raw = await fetch(
        http, "POST", LOOKUP, "gzip", json={"niks": []}, headers=auth(full_key)
    )
    assert problem.status_code == 422 and problem.headers.get("content-encoding") is None
    assert orjson.loads(raw)["status"] == 422


async def test_a_range_request_is_answered_in_identity(http: httpx.AsyncClient) -> None:
    response, raw = await fetch(
        http, "GET", "/openapi.json", "gzip", headers={"Range": "bytes=0-99"}
    )
    assert response.headers.get("content-encoding") is None
    assert raw.startswith(b"{")


def _streaming_app(chunks: list[bytes], headers: list[tuple[bytes, bytes]]) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for i, chunk in enumerate(chunks):
            await send(
                {"type": "http.response.body", "body": chunk, "more_body": i < len(chunks) - 1}
            )

    return app


async def _call(app: ASGIApp, accept: str) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "headers": [(b"accept-encoding", accept.encode())],
    }
    await Compression(app)(scope, receive, send)
    return sent


NDJSON = [(b"content-type", b"application/x-ndjson")]


@pytest.mark.parametrize("coding", ["gzip", "zstd"])
async def test_each_chunk_of_a_stream_decodes_as_soon_as_it_is_sent(coding: str) -> None:
    chunks = [b'{"line": %d, "pad": "%s"}\n' % (i, b"x" * 300) for i in range(1, 6)]
    sent = await _call(_streaming_app(chunks, NDJSON), coding)
    start, *bodies = sent
    headers = dict(start["headers"])
    assert headers[b"content-encoding"] == coding.encode() and b"content-length" not in headers
    decoder: Any = (
        zlib.decompressobj(31) if coding == "gzip" else zstandard.ZstdDecompressor().decompressobj()
    )
    # Every chunk's compressed message gives back that chunk, before the next one is sent.
    for chunk, message in zip(chunks, bodies, strict=False):
        assert decoder.decompress(message["body"]) == chunk
    assert bodies[-1]["more_body"] is False


async def test_encoded_and_event_stream_answers_pass_untouched() -> None:
    big = b"y" * (4 * MINIMUM)
    encoded = [*NDJSON, (b"content-encoding", b"br")]
    sent = await _call(_streaming_app([big], encoded), "gzip")
    assert [m.get("body") for m in sent[1:]] == [big]
    events = [(b"content-type", b"text/event-stream")]
    sent = await _call(_streaming_app([big, big], events), "gzip")
    assert b"content-encoding" not in dict(sent[0]["headers"])
    assert b"vary" not in dict(sent[0]["headers"])
    assert [m["body"] for m in sent[1:]] == [big, big]
