"""A compressed bulk stream is still a stream: with `Accept-Encoding: gzip` (or zstd) the first
chunk's answer lines arrive, compressed and decodable, while the request body is still open, so
before the last lines can have been computed. A real server and a raw socket (tests/server.py)."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard

from app.services.bulk import CHUNK
from tests.bulk.conftest import ndjson
from tests.bulk.test_streams import WAIT, Stream, open_stream
from tests.server import Server, running_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(
    database_url: str, published: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    with running_server(database_url, tmp_path_factory.mktemp("gz") / "server.log") as s:
        yield s


class Decoder:
    def __init__(self, coding: str) -> None:
        self.gzip = zlib.decompressobj(31) if coding == "gzip" else None
        self.zstd = zstandard.ZstdDecompressor().decompressobj() if coding == "zstd" else None

    def feed(self, data: bytes) -> bytes:
        if self.gzip is not None:
            return self.gzip.decompress(data)
        assert self.zstd is not None
        return self.zstd.decompress(data)


async def read_chunk(stream: Stream) -> bytes | None:
    """One HTTP chunk of the answer as sent (None at the end)."""
    size = int((await asyncio.wait_for(stream.reader.readline(), WAIT)).split(b";")[0], 16)
    if size == 0:
        return None
    data = await asyncio.wait_for(stream.reader.readexactly(size + 2), WAIT)
    return data[:-2]


@pytest.mark.parametrize("coding", ["gzip", "zstd"])
async def test_first_lines_arrive_compressed_before_the_body_ends(
    server: Server, full_key: str, release_niks: list[str], coding: str
) -> None:
    niks = release_niks[: CHUNK + CHUNK // 2]
    stream = await open_stream(server, full_key, extra={"Accept-Encoding": coding})
    try:
        # One chunk and a half: the first chunk can be answered, the rest is not yet sent.
        await stream.send(ndjson({"nik": n} for n in niks[:CHUNK]))
        await stream.send(ndjson({"nik": n} for n in niks[CHUNK : CHUNK + 10]))
        status, headers = await stream.status()
        assert status == 200
        assert headers["content-encoding"] == coding
        assert "accept-encoding" in headers["vary"].lower()
        decoder, text = Decoder(coding), b""
        while text.count(b"\n") < CHUNK:
            data = await read_chunk(stream)
            assert data is not None, "the stream ended before the body did"
            text += decoder.feed(data)
        early = [orjson.loads(line) for line in text.split(b"\n")[:CHUNK]]
        assert [line["line"] for line in early] == list(range(1, CHUNK + 1))
        assert all(line["nik"] == nik for line, nik in zip(early, niks, strict=False))
        # Now the rest of the body; the stream ends with the summary.
        await stream.send(ndjson({"nik": n} for n in niks[CHUNK + 10 :]))
        await stream.end()
        while (data := await read_chunk(stream)) is not None:
            text += decoder.feed(data)
        lines: list[dict[str, Any]] = [orjson.loads(x) for x in text.splitlines()]
        assert lines[-1]["summary"]["lines"] == len(niks)
        assert [x["line"] for x in lines[:-1]] == list(range(1, len(niks) + 1))
    finally:
        stream.close()
