"""Bulk streams are bounded: slots per client (shared by processes), a stream count apart from the
in-flight limit, an idle-body timeout, and a client that leaves is one info line.

Real servers (tests/server.py) and raw sockets: a stalled body, a disconnect and the 499 in the
access log exist only there. Every wait is bounded; nothing asserts a duration.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from app import db
from app.repositories.streams import SLOT_LOCK
from tests.bulk.conftest import absent_nik, ndjson
from tests.server import Server, running_server
from tests.support import PURPOSE, MakeClient, auth

pytestmark = pytest.mark.slow

PER_CLIENT = 2
CONCURRENCY = 4  # requests in flight per process, streams not counted
STREAMS = 6  # streams per process
IDLE = 2.0  # the idle timeout of `idle_server` (short, yet long enough for a loaded machine)
WAIT = 15.0  # the longest any poll below waits for the server


@pytest.fixture(scope="module")
def servers(
    database_url: str, published: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Server]]:
    """Two processes on one database (as two workers would be), small limits, the default idle
    timeout (30 s: longer than any test here keeps a body stalled)."""
    env = {
        "TEPAT_BULK_STREAMS_PER_CLIENT": str(PER_CLIENT),
        "TEPAT_MAX_CONCURRENCY": str(CONCURRENCY),
        "TEPAT_MAX_STREAMS": str(STREAMS),
    }
    folder = tmp_path_factory.mktemp("streams")
    with (
        running_server(database_url, folder / "one.log", env) as one,
        running_server(database_url, folder / "two.log", env) as two,
    ):
        yield one, two


@pytest.fixture(scope="module")
def idle_server(
    database_url: str, published: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    env = {"TEPAT_BULK_IDLE_TIMEOUT": str(IDLE)}
    with running_server(database_url, tmp_path_factory.mktemp("idle") / "idle.log", env) as s:
        yield s


@pytest.fixture
async def locks(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(db.asyncpg_dsn(database_url), timeout=10)
    try:
        yield conn
    finally:
        await conn.close()


# --- a raw HTTP/1.1 client: headers now, the body (chunked) whenever the test says ----------------


def port_of(server: Server) -> int:
    return int(server.base_url.rsplit(":", 1)[1])


class Stream:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, data: bytes) -> None:
        self.writer.write(b"%x\r\n%s\r\n" % (len(data), data))
        await self.writer.drain()

    async def end(self) -> None:
        self.writer.write(b"0\r\n\r\n")
        await self.writer.drain()

    async def status(self) -> tuple[int, dict[str, str]]:
        line = await asyncio.wait_for(self.reader.readline(), WAIT)
        status = int(line.split()[1])
        headers: dict[str, str] = {}
        while (h := await asyncio.wait_for(self.reader.readline(), WAIT)) not in (b"\r\n", b""):
            name, _, value = h.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers

    async def body(self, headers: dict[str, str]) -> bytes:
        if "content-length" in headers:
            return await asyncio.wait_for(
                self.reader.readexactly(int(headers["content-length"])), WAIT
            )
        out = b""
        while True:
            size = int((await asyncio.wait_for(self.reader.readline(), WAIT)).split(b";")[0], 16)
            if size == 0:
                return out
            out += await asyncio.wait_for(self.reader.readexactly(size + 2), WAIT)
            out = out[:-2]

    def close(self) -> None:
        self.writer.close()


async def open_stream(
    server: Server, key: str, request_id: str | None = None, extra: dict[str, str] | None = None
) -> Stream:
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
    head = [
        "POST /v1/bulk/eligibility HTTP/1.1",
        "Host: 127.0.0.1",
        "Transfer-Encoding: chunked",
        "Content-Type: application/x-ndjson",
        f"Authorization: Bearer {key}",
        f"X-Purpose: {PURPOSE}",
    ]
    if request_id:
        head.append(f"X-Request-ID: {request_id}")
    head += [f"{name}: {value}" for name, value in (extra or {}).items()]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
    await writer.drain()
    return Stream(reader, writer)


async def held_slots(conn: asyncpg.Connection) -> int:
    """Stream slots held in this database, by every process."""
    n: int = await conn.fetchval(
        """SELECT count(*) FROM pg_locks
           WHERE locktype = 'advisory' AND classid = $1 AND granted
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())""",
        SLOT_LOCK,
    )
    return n


async def until(check: Callable[[], Any], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {WAIT} s: {what}")


async def slots_become(conn: asyncpg.Connection, n: int) -> None:
    async def check() -> bool:
        return await held_slots(conn) == n

    await until(check, f"{n} slots held")


def found(release: list[str], n: int) -> bytes:
    """n NIKs of the release, cycling (a job of absent NIKs would look like enumeration)."""
    return ndjson({"nik": release[i % len(release)]} for i in range(n))


def job(n: int, offset: int = 0) -> bytes:
    return ndjson({"nik": absent_nik(offset + i)} for i in range(n))


async def post(server: Server, key: str, body: bytes) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=WAIT) as http:
        return await http.post(
            "/v1/bulk/eligibility",
            content=body,
            headers={**auth(key), "Content-Type": "application/x-ndjson"},
        )


def lines(body: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in body.splitlines()]


def access_lines(server: Server, request_id: str) -> list[dict[str, Any]]:
    out = []
    for line in server.log_text().splitlines():
        if request_id in line and line.startswith("{"):
            out.append(orjson.loads(line))
    return out


# --- slots per client -----------------------------------------------------------------------------


async def test_a_third_stream_of_a_client_is_refused_while_others_stream(
    servers: tuple[Server, Server], make_client: MakeClient, locks: asyncpg.Connection
) -> None:
    one, _ = servers
    greedy, other = await make_client(bulk=True), await make_client(bulk=True)
    base = await held_slots(locks)
    stalled = [await open_stream(one, greedy) for _ in range(PER_CLIENT)]
    try:
        await slots_become(locks, base + PER_CLIENT)
        refused = await post(one, greedy, job(3))
        assert refused.status_code == 429
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["code"] == "too_many_streams"
        assert int(refused.headers["retry-after"]) >= 1
        # Another client is not held back by this one's streams.
        served = await post(one, other, job(3))
        assert served.status_code == 200
        assert served.headers["cache-control"] == "no-store"
        assert "summary" in lines(served.content)[-1]
    finally:
        for s in stalled:
            s.close()
    # A stream that ended (here: its client left) frees its slot; the next one is served.
    await slots_become(locks, base)
    again = await post(one, greedy, job(3))
    assert again.status_code == 200
    assert "summary" in lines(again.content)[-1]
    await slots_become(locks, base)  # and a stream that ended normally frees it too


async def test_slots_are_shared_by_processes(
    servers: tuple[Server, Server], make_client: MakeClient, locks: asyncpg.Connection
) -> None:
    one, two = servers
    key = await make_client(bulk=True)
    base = await held_slots(locks)
    stalled = [await open_stream(one, key), await open_stream(two, key)]
    try:
        await slots_become(locks, base + 2)
        for server in (one, two):
            refused = await post(server, key, job(1))
            assert refused.status_code == 429, server.base_url
            assert refused.json()["code"] == "too_many_streams"
    finally:
        for s in stalled:
            s.close()
    await slots_become(locks, base)
    assert (await post(two, key, job(1))).status_code == 200


# --- the process's limits: streams apart from the requests in flight ------------------------------


async def test_stalled_streams_do_not_starve_lookups(
    servers: tuple[Server, Server], make_client: MakeClient, locks: asyncpg.Connection
) -> None:
    one, _ = servers
    keys = [await make_client(bulk=True) for _ in range(STREAMS // PER_CLIENT)]
    base = await held_slots(locks)
    # More stalled bulk POSTs (headers, no body) than requests may be in flight at once.
    stalled = [await open_stream(one, k) for k in keys for _ in range(PER_CLIENT)]
    assert len(stalled) > CONCURRENCY
    try:
        await slots_become(locks, base + len(stalled))
        async with httpx.AsyncClient(base_url=one.base_url, timeout=WAIT) as http:
            for i in range(CONCURRENCY + 2):
                r = await http.post(
                    "/v1/people/lookup", json={"niks": [absent_nik(i)]}, headers=auth(keys[0])
                )
                assert r.status_code == 200, r.text
        # Past the process's stream limit a stream is refused at once, whoever asks.
        busy = await post(one, await make_client(bulk=True), job(1))
        assert busy.status_code == 503
        assert busy.json()["code"] == "unavailable"
        assert "bulk streams" in busy.json()["detail"]
    finally:
        for s in stalled:
            s.close()
    await slots_become(locks, base)


# --- the idle timeout ----------------------------------------------------------------------------


async def test_a_body_that_never_comes_is_a_408_and_frees_the_slot(
    idle_server: Server, make_client: MakeClient, locks: asyncpg.Connection
) -> None:
    key = await make_client(bulk=True)
    base = await held_slots(locks)
    stream = await open_stream(idle_server, key)
    try:
        status, headers = await stream.status()
        problem = orjson.loads(await stream.body(headers))
    finally:
        stream.close()
    assert status == 408
    assert headers["content-type"].startswith("application/problem+json")
    assert problem["code"] == "idle_timeout"
    await slots_become(locks, base)


async def test_a_body_that_stops_mid_job_ends_with_an_idle_timeout_line(
    idle_server: Server, make_client: MakeClient, locks: asyncpg.Connection
) -> None:
    key = await make_client(bulk=True)
    base = await held_slots(locks)
    stream = await open_stream(idle_server, key)
    try:
        await stream.send(job(1000))  # one whole chunk: answered, so the answer has started
        status, headers = await stream.status()
        answer = lines(await stream.body(headers))
    finally:
        stream.close()
    assert status == 200
    assert headers["cache-control"] == "no-store"
    assert [a["line"] for a in answer[:-1]] == list(range(1, 1001))
    assert answer[-1]["error"]["code"] == "idle_timeout"
    assert not any("summary" in a for a in answer)
    await slots_become(locks, base)


# --- a client that leaves ------------------------------------------------------------------------


async def test_a_client_that_leaves_is_one_info_line(
    servers: tuple[Server, Server],
    make_client: MakeClient,
    locks: asyncpg.Connection,
    database_url: str,
) -> None:
    one, _ = servers
    key = await make_client(bulk=True)
    base = await held_slots(locks)

    # Before the first answer: a few lines of body, then the connection closes.
    early = await open_stream(one, key, "streams-gone-early")
    await early.send(job(10))
    await slots_become(locks, base + 1)
    early.close()

    # Mid-way: the first chunk was answered (and audited), then the connection closes.
    late = await open_stream(one, key, "streams-gone-late")
    await late.send(job(1500))
    status, _ = await late.status()
    assert status == 200
    late.close()

    async def both_logged() -> bool:
        return all(
            any(e.get("event") == "request" for e in access_lines(one, rid))
            for rid in ("streams-gone-early", "streams-gone-late")
        )

    await until(both_logged, "the access lines of both requests")
    await slots_become(locks, base)
    text = one.log_text()
    assert "Traceback" not in text
    assert "Exception in ASGI application" not in text
    for rid in ("streams-gone-early", "streams-gone-late"):
        events = access_lines(one, rid)
        assert [e["status"] for e in events if e.get("event") == "request"] == [499], events
        told = [e for e in events if "went away" in str(e.get("event"))]
        assert len(told) == 1, events
        assert told[0]["level"] == "info"

    # What was sent was audited first; what was never answered was not.
    audit = await asyncpg.connect(db.asyncpg_dsn(database_url), timeout=10)
    try:
        count = "SELECT count(*) FROM audit_log WHERE request_id = $1"
        assert await audit.fetchval(count, "streams-gone-early") == 0
        assert await audit.fetchval(count, "streams-gone-late") >= 1
    finally:
        await audit.close()


async def test_a_trickled_body_ends_too(
    idle_server: Server, make_client: MakeClient, locks: asyncpg.Connection
) -> None:
    """A byte every 0.6 IDLE never waits the idle timeout out, but brings far less than the
    minimum rate (256 bytes a second over each IDLE seconds of waiting): the stream ends."""
    key = await make_client(bulk=True)
    base = await held_slots(locks)
    stream = await open_stream(idle_server, key)
    trickle = job(1)

    async def drip() -> None:
        for i in range(len(trickle)):
            await stream.send(trickle[i : i + 1])
            await asyncio.sleep(0.6 * IDLE)

    dripping = asyncio.create_task(drip())
    try:
        status, headers = await stream.status()
        problem = orjson.loads(await stream.body(headers))
    finally:
        dripping.cancel()
        stream.close()
    assert status == 408
    assert problem["code"] == "idle_timeout"
    assert "slower than" in problem["detail"]
    await slots_become(locks, base)


async def test_a_client_that_stops_reading_frees_its_slot(
    idle_server: Server, make_client: MakeClient, locks: asyncpg.Connection, release_niks: list[str]
) -> None:
    """The whole body sent, the answer never read: once the socket buffers are full the answer
    cannot move for the idle timeout, and the stream ends with its slot freed."""
    key = await make_client(bulk=True)
    base = await held_slots(locks)
    stream = await open_stream(idle_server, key, "streams-no-reader")

    async def logged() -> bool:
        return any(
            e.get("event") == "request" for e in access_lines(idle_server, "streams-no-reader")
        )

    stream.writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(big := found(release_niks, 200_000)), big))
    try:
        await until(logged, "the access line")  # written when the stream has ended
        await slots_become(locks, base)
    finally:
        stream.close()
    events = access_lines(idle_server, "streams-no-reader")
    assert [e["status"] for e in events if e.get("event") == "request"] == [408], events
    assert any("took no answer" in str(e.get("event")) for e in events), events
    assert "Traceback" not in idle_server.log_text()
