"""Fault fixtures: our own PostgreSQL cluster, a published release, clients, real server processes.

Never the shared server: these tests stop, freeze and restart PostgreSQL. Everything listens on
127.0.0.1 only; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app import db, migrate
from app.config import Settings
from app.ingest.importer import import_release
from app.services import clients, rule_sets
from app.synth.generate import generate_release
from app.synth.reference import ANGGOTA_COLUMNS
from app.synth.release_io import iter_rows, read_manifest, table_file
from tests.faults.cluster import Cluster, free_port

ROOT = Path(__file__).resolve().parents[2]
R1 = "2026-01-23"
R2 = "2026-04-23"  # the next quarter of R1 (churn: deaths, births)
PURPOSE = "pbi-verification"
DATABASE = "tepat_faults"


@dataclass
class World:
    """A migrated database on our cluster with R1 published and R2 generated (not imported)."""

    cluster: Cluster
    url: str
    settings: Settings
    engine: AsyncEngine
    r1: Path
    r2: Path
    r1_niks: list[str]
    r2_niks: list[str]
    folder: Path

    async def client_key(self, name: str = "faults") -> str:
        async with self.engine.begin() as conn:
            _, key = await clients.create_client(
                conn,
                name=name,
                programs=["PKH", "BPNT", "PBI_JK", "SEKOLAH_RAKYAT"],
                field_groups=["decision", "decile", "membership"],
                purposes=[PURPOSE],
            )
        return key

    async def raw(self) -> asyncpg.Connection:
        return await asyncpg.connect(db.asyncpg_dsn(self.url), timeout=10)


def _niks(folder: Path) -> list[str]:
    path = table_file(folder, read_manifest(folder), "anggota")
    return [row[0] for row in iter_rows(path, ANGGOTA_COLUMNS)]


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    c = Cluster()
    try:
        c.init()
        c.start()
        yield c
    finally:
        c.remove()


@pytest.fixture(scope="session")
async def world(cluster: Cluster) -> AsyncIterator[World]:
    admin = await asyncpg.connect(cluster.url, timeout=10)
    try:
        await admin.execute(f"CREATE DATABASE {DATABASE}")
    finally:
        await admin.close()
    url = db.sqlalchemy_url(cluster.url).set(database=DATABASE).render_as_string(False)
    settings = Settings(database_url=url, env="test", db_role=None)
    engine = db.create_engine(settings)
    await migrate.run(engine, "upgrade", "head")
    async with engine.begin() as conn:
        await rule_sets.ensure_shipped(conn)
    folder = cluster.root / "releases"
    r1, r2 = folder / R1, folder / R2
    generate_release(r1, people=2000, seed=7, release=R1)
    generate_release(r2, people=0, seed=8, release=R2, from_dir=r1)
    raw = await asyncpg.connect(db.asyncpg_dsn(url), timeout=10)
    try:
        result = await import_release(raw, r1)
        assert result.published, result.report.to_dict()
    finally:
        await raw.close()
    yield World(cluster, url, settings, engine, r1, r2, _niks(r1), _niks(r2), folder)
    await engine.dispose()


# --- the server under test: `tepat serve` in a subprocess ---------------------------------------


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    base_url: str
    log: Path
    env: dict[str, str] = field(default_factory=dict)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def terminate(self, timeout: float = 40) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=10)


async def start_server(world: World, name: str, **env: str | float | int) -> Server:
    port = free_port()
    log = world.cluster.root / f"server-{name}.log"
    full = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TEPAT_")},
        "TEPAT_DATABASE_URL": world.url,
        "TEPAT_ENV": "test",
        "TEPAT_DB_ROLE": "tepat_service",
        "TEPAT_LOG_LEVEL": "WARNING",  # no access lines: thousands of requests a second here
        "TEPAT_DATA_DIR": str(world.cluster.root / "data-dir"),
        **{f"TEPAT_{k.upper()}": str(v) for k, v in env.items()},
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=full,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(proc, f"http://127.0.0.1:{port}", log, full)
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient(base_url=server.base_url, timeout=2) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"server exited early:\n{server.log_text()}")
            try:
                if (await http.get("/readyz")).status_code == 200:
                    return server
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    server.terminate()
    raise AssertionError(f"server not ready in 30 s:\n{server.log_text()}")


@pytest.fixture(scope="session")
async def main_server(world: World) -> AsyncIterator[Server]:
    """Default settings (the deadline, pool and timeouts a deployment gets)."""
    server = await start_server(world, "main")
    yield server
    server.terminate()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "X-Purpose": PURPOSE}


async def backends(world: World, where: str) -> list[int]:
    """The service's backends matching `where` (a fresh connection each time: pg_stat_activity
    is read once per transaction)."""
    raw = await world.raw()
    try:
        rows = await raw.fetch(
            f"""SELECT pid FROM pg_stat_activity
                WHERE datname = current_database() AND application_name = 'tepat' AND {where}"""
        )
        return [r["pid"] for r in rows]
    finally:
        await raw.close()


async def wait_for_backends(world: World, where: str, n: int) -> list[int]:
    until = time.monotonic() + 3
    while time.monotonic() < until:
        pids = await backends(world, where)
        if len(pids) >= n:
            return pids
        await asyncio.sleep(0.02)
    raise AssertionError(f"fewer than {n} of the service's backends where {where}")


LOCK_WAIT = "wait_event_type = 'Lock'"
