"""Test fixtures: a real PostgreSQL (never an in-memory stand-in, never mocks), migrated once per session.

TEPAT_TEST_DATABASE_URL names a server to create the `tepat_test_<worker>` database on (CI here:
the machine's PostgreSQL 15). Unset, the tests start the embedded PostgreSQL under .tepat/test.
Each test that writes runs in an outer transaction that is rolled back (see `conn`).
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app import db, embedded, migrate
from app.config import Settings
from app.main import create_app
from app.services import clients
from tests.helpers import imported_release
from tests.support import ALL_GROUPS, ALL_PROGRAMS, PURPOSE, RELEASE, MakeClient

ROOT = Path(__file__).resolve().parent.parent
# One database per test session (by pid), so concurrent runs on one server never collide.
TEST_DB = f"tepat_test_{os.getpid()}"


def _server_url() -> str:
    settings = Settings()
    if settings.test_database_url:
        return settings.test_database_url
    return embedded.ensure_started(ROOT / ".tepat" / "test", install_sigterm=False)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh, migrated database for this test session; its URL."""
    import asyncio

    server = _server_url()
    url = db.sqlalchemy_url(server).set(database=TEST_DB).render_as_string(hide_password=False)

    async def recreate() -> None:
        admin = await asyncpg.connect(db.asyncpg_dsn(server))
        try:
            # Databases of test sessions that died (their pid is gone) are dropped here.
            for name in await admin.fetch(
                "SELECT datname FROM pg_database WHERE datname ~ '^tepat_test_[0-9]+$'"
            ):
                pid = int(name["datname"].rsplit("_", 1)[1])
                if pid != os.getpid() and not psutil.pid_exists(pid):
                    await _drop(admin, name["datname"])
            await _drop(admin, TEST_DB)
            await admin.execute(f'CREATE DATABASE "{TEST_DB}"')
        finally:
            await admin.close()

    async def drop() -> None:
        admin = await asyncpg.connect(db.asyncpg_dsn(server))
        try:
            await _drop(admin, TEST_DB)
        finally:
            await admin.close()

    asyncio.run(recreate())
    os.environ["TEPAT_DATABASE_URL"] = url  # for subprocesses (CLI, servers) the tests start
    # No bulk job worker in the apps and servers the tests start, unless a test asks for one
    # (tests/jobs): a worker is a queue consumer the other tests do not expect.
    os.environ["TEPAT_JOBS_WORKER"] = "false"
    yield url
    asyncio.run(drop())
    embedded.stop()


async def _drop(admin: asyncpg.Connection, name: str) -> None:
    await admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
    )
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, env="test")


@pytest.fixture(scope="session")
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = db.create_engine(settings)
    await migrate.run(engine, "upgrade", "head")
    yield engine
    await engine.dispose()


@pytest.fixture
async def scratch(settings: Settings, database_url: str) -> AsyncIterator[AsyncEngine]:
    """An empty database of its own (migration tests go down to base there), dropped after."""
    name = f"tepat_scratch_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(db.asyncpg_dsn(database_url))
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = db.sqlalchemy_url(database_url).set(database=name).render_as_string(hide_password=False)
    scratch_engine = db.create_engine(settings, url=url)
    try:
        yield scratch_engine
    finally:
        await scratch_engine.dispose()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def conn(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection inside a transaction that is rolled back after the test."""
    async with engine.connect() as connection:
        tx = await connection.begin()
        try:
            yield connection
        finally:
            await tx.rollback()


@pytest.fixture
async def raw(settings: Settings, engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    """A plain asyncpg connection (importer, COPY). Tests that commit clean up after themselves."""
    connection = await db.connect_raw(settings)
    try:
        yield connection
    finally:
        await connection.close()


# --- a published release, clients and the app: shared by the REST, GraphQL and bulk tests ---


@pytest.fixture(scope="session")
async def published(
    engine: AsyncEngine, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Path]:
    """Release 2026-01-23 (4,000 people), imported once for the session, with the rule sets."""
    folder = tmp_path_factory.mktemp("api") / RELEASE
    async with imported_release(settings, engine, folder, RELEASE, people=4000, seed=21):
        yield folder


@pytest.fixture(scope="session")
async def make_client(engine: AsyncEngine) -> MakeClient:
    """Create an API client; returns its key."""

    async def make(
        *,
        programs: list[str] | None = None,
        fields: list[str] | None = None,
        purposes: list[str] | None = None,
        expires_at: dt.datetime | None = None,
        expired: bool = False,
        bulk: bool = False,
        daily_quota: int | None = None,
    ) -> str:
        async with engine.begin() as conn:
            info, key = await clients.create_client(
                conn,
                name="test client",
                programs=ALL_PROGRAMS if programs is None else programs,
                field_groups=ALL_GROUPS if fields is None else fields,
                purposes=[PURPOSE] if purposes is None else purposes,
                expires_at=expires_at,
                bulk=bulk,
                daily_quota=daily_quota,
            )
            if expired:  # clients cannot be created expired; age this one as time would
                await conn.execute(
                    text(
                        "UPDATE api_clients SET expires_at = now() - interval '1 minute' WHERE id = :id"
                    ),
                    {"id": info.id},
                )
        return key

    return make


@pytest.fixture(scope="session")
async def full_key(make_client: MakeClient) -> str:
    return await make_client(bulk=True)


@pytest.fixture(scope="session")
async def app(settings: Settings, published: Path) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tepat.test") as client:
        yield client
