"""A primary and a real streaming replica on loopback (`pg_basebackup -R`), one `tepat serve`.

Shown with the replica's own statistics: the registry is read on the replica while the audit trail
is written on the primary; a snapshot published on the primary but not yet replayed is served by
the primary (never refused), and by the replica right after it is replayed; the replica stopped
under load costs no request (the primary answers), and it is back in rotation once it returns.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from app import db
from app.ingest.importer import import_release
from app.synth.generate import generate_release
from app.synth.reference import ANGGOTA_COLUMNS
from app.synth.release_io import iter_rows, read_manifest, table_file
from tests.faults.cluster import Cluster
from tests.faults.conftest import DATABASE, Server, World, auth, start_server
from tests.faults.load import Sample, hammer
from tests.helpers import drop_release

pytestmark = pytest.mark.slow

R3 = "2026-07-23"  # newer than every release of the other fault tests: current once published
REGISTRY = "relname ~ '^(people|families|decisions)'"


@pytest.fixture(scope="module")
def replica(cluster: Cluster, world: World) -> Iterator[Cluster]:
    """A hot standby of the fault tests' cluster (`world` first: the database is on it)."""
    standby = Cluster()
    try:
        standby.standby_of(cluster)
        standby.start()
        yield standby
    finally:
        standby.remove()


def _on(cluster: Cluster) -> str:
    return db.sqlalchemy_url(cluster.url).set(database=DATABASE).render_as_string(False)


@pytest.fixture(scope="module")
async def server(world: World, replica: Cluster) -> AsyncIterator[Server]:
    s = await start_server(
        world, "replica", database_replica_urls=_on(replica), replica_check_interval=0.2
    )
    yield s
    s.terminate()


async def _fetchval(url: str, sql: str) -> Any:
    conn = await asyncpg.connect(db.asyncpg_dsn(url), timeout=10)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def _registry_scans(replica: Cluster) -> int:
    """Index and sequential scans of the registry's tables, counted by the replica itself."""
    sql = f"SELECT coalesce(sum(coalesce(idx_scan, 0) + seq_scan), 0) FROM pg_stat_user_tables WHERE {REGISTRY}"
    return int(await _fetchval(_on(replica), sql))


async def _scans_grow(replica: Cluster, before: int, by: int) -> int:
    """The replica's scan count once it has grown by `by` (a backend flushes its statistics
    when idle, within seconds): bounded wait, then the last count."""
    until = time.monotonic() + 20
    now = await _registry_scans(replica)
    while now < before + by and time.monotonic() < until:
        await asyncio.sleep(0.25)
        now = await _registry_scans(replica)
    return now


async def _caught_up(world: World, replica: Cluster) -> None:
    """Wait until the replica has replayed everything the primary has written so far."""
    target = await _fetchval(world.url, "SELECT pg_current_wal_lsn()::text")
    sql = f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn"
    until = time.monotonic() + 30
    while not await _fetchval(_on(replica), sql):
        assert time.monotonic() < until, "the replica did not catch up in 30 s"
        await asyncio.sleep(0.05)


async def _audit_count(world: World) -> int:
    return int(await _fetchval(world.url, "SELECT count(*) FROM audit_log"))


async def _readyz(server: Server) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=5) as http:
        r = await http.get("/readyz")
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body


async def _lookups(server: Server, key: str, niks: list[str], n: int) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
        answers = []
        for i in range(n):
            r = await http.post(
                "/v1/people/lookup", json={"niks": [niks[i % len(niks)]]}, headers=auth(key)
            )
            assert r.status_code == 200, r.text
            answers.append(r.json())
        return answers


def _niks(folder: Path) -> list[str]:
    path = table_file(folder, read_manifest(folder), "anggota")
    return [row[0] for row in iter_rows(path, ANGGOTA_COLUMNS)]


async def test_reads_run_on_the_replica_and_the_audit_on_the_primary(
    world: World, replica: Cluster, server: Server
) -> None:
    key = await world.client_key("replica-reads")
    await _caught_up(world, replica)
    ready = await _readyz(server)
    assert [n["role"] for n in ready["nodes"]] == ["primary", "replica"]
    assert all(n["status"] == "up" for n in ready["nodes"]), ready
    scans, audited = await _registry_scans(replica), await _audit_count(world)

    answers = await _lookups(server, key, world.r1_niks, 60)

    assert all(a["results"][0]["found"] for a in answers)
    assert await _audit_count(world) == audited + 60  # written on the primary (a standby cannot)
    assert await _scans_grow(replica, scans, 60) >= scans + 60  # read on the replica


async def test_a_snapshot_not_yet_replayed_is_served_by_the_primary_then_by_the_replica(
    world: World, replica: Cluster, server: Server
) -> None:
    key = await world.client_key("replica-lag")
    folder = world.folder / R3
    generate_release(folder, people=600, seed=31, release=R3)
    niks = _niks(folder)[:50]
    await _caught_up(world, replica)
    replica_url = _on(replica)
    await _fetchval(replica_url, "SELECT pg_wal_replay_pause()")
    try:
        raw = await world.raw()
        try:
            result = await import_release(raw, folder)
        finally:
            await raw.close()
        assert result.published, result.report.to_dict()
        on_replica = f"SELECT count(*) FROM snapshots WHERE id = '{R3}'"
        assert await _fetchval(replica_url, on_replica) == 0  # the standby has not replayed it

        # Published on the primary, not on the replica: answered at once, naming R3.
        answers = await _lookups(server, key, niks, 20)
        assert {a["meta"]["snapshot"]["id"] for a in answers} == {R3}
        assert all(a["results"][0]["found"] for a in answers)
        pinned = await _lookups_pinned(server, key, niks[:5], R3)
        assert all(a["results"][0]["found"] for a in pinned)
    finally:
        await _fetchval(replica_url, "SELECT pg_wal_replay_resume()")

    # Replayed: the replica serves R3 (its own scan count grows with R3's lookups).
    await _caught_up(world, replica)
    assert await _fetchval(replica_url, on_replica) == 1
    await asyncio.sleep(0.5)  # one check of the server's monitor (every 0.2 s) sees it
    scans = await _registry_scans(replica)
    answers = await _lookups(server, key, niks, 40)
    assert {a["meta"]["snapshot"]["id"] for a in answers} == {R3}
    assert await _scans_grow(replica, scans, 40) >= scans + 40

    raw = await world.raw()
    try:
        await drop_release(raw, R3)  # the other fault tests expect their own current release
    finally:
        await raw.close()


async def _lookups_pinned(
    server: Server, key: str, niks: list[str], snapshot: str
) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
        out = []
        for nik in niks:
            r = await http.post(
                "/v1/people/lookup",
                json={"niks": [nik], "snapshot": snapshot},
                headers=auth(key),
            )
            assert r.status_code == 200, r.text
            out.append(r.json())
        return out


async def _under_load(
    server: Server, key: str, niks: list[str], fault: Callable[[], Awaitable[dict[str, Any]]]
) -> tuple[list[Sample], float, dict[str, Any]]:
    """Six clients looking up NIKs; after a second, `fault` (which returns /readyz as it saw
    it meanwhile); then the load ends. The samples, when the fault began, that /readyz."""

    def body(i: int) -> dict[str, Any]:
        return {"niks": [niks[i % len(niks)], niks[(i * 7 + 3) % len(niks)]]}

    stop = asyncio.Event()
    load = asyncio.create_task(
        hammer(server.base_url, auth(key), body, workers=6, stop=stop, max_seconds=60)
    )
    await asyncio.sleep(1.0)
    began = time.monotonic()
    seen = await fault()
    stop.set()
    return await load, began, seen


def _every_one_answered(
    samples: list[Sample], began: float, label: str, capsys: pytest.CaptureFixture[str]
) -> None:
    statuses = Counter(s.status for s in samples)
    during = [s for s in samples if s.ended > began]
    with capsys.disabled():
        print(
            f"\n[{label}] {len(samples)} lookups, {len(during)} during and after it: "
            f"{dict(statuses)}; longest {max(s.seconds for s in samples) * 1000:.0f} ms"
        )
    assert during, "no request was sent during the fault"
    failed = [(s.status, s.body) for s in samples if s.status != 200][:3]
    assert statuses == Counter({200: len(samples)}), failed  # none failed: the primary answered


async def _back_in_rotation(server: Server) -> None:
    until = time.monotonic() + 30
    while (await _readyz(server))["nodes"][1]["status"] != "up":
        assert time.monotonic() < until, "the replica did not return to rotation in 30 s"
        await asyncio.sleep(0.1)


async def test_the_replica_stopped_under_load_costs_no_request_and_returns_to_rotation(
    world: World, replica: Cluster, server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    key = await world.client_key("replica-stop")
    await _caught_up(world, replica)

    async def stop_replica() -> dict[str, Any]:
        await asyncio.to_thread(replica.stop, "fast")
        await asyncio.sleep(2.0)
        return await _readyz(server)

    samples, began, down = await _under_load(server, key, world.r1_niks, stop_replica)
    _every_one_answered(samples, began, "replica stopped", capsys)
    assert [n["status"] for n in down["nodes"]] == ["up", "down"], down

    # Back: in rotation again at the monitor's next check, and reading there.
    await asyncio.to_thread(replica.start)
    await _back_in_rotation(server)
    await _caught_up(world, replica)
    scans = await _registry_scans(replica)
    await _lookups(server, key, world.r1_niks, 40)
    assert await _scans_grow(replica, scans, 40) >= scans + 40


async def test_a_frozen_replica_costs_no_request(
    world: World, replica: Cluster, server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    """Unreachable without being down (every process stopped, sockets open): reads running on it
    are abandoned after TEPAT_REPLICA_READ_TIMEOUT and answered by the primary."""
    key = await world.client_key("replica-freeze")
    await _caught_up(world, replica)

    async def freeze_replica() -> dict[str, Any]:
        replica.freeze()
        try:
            await asyncio.sleep(3.0)
            return await _readyz(server)
        finally:
            replica.thaw()

    samples, began, down = await _under_load(server, key, world.r1_niks, freeze_replica)
    _every_one_answered(samples, began, "replica frozen", capsys)
    assert [n["status"] for n in down["nodes"]] == ["up", "down"], down
    await _back_in_rotation(server)
