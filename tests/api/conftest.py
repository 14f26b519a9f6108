"""API fixtures: a published release, loaded rule sets, clients with keys, the app in-process."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.ingest.importer import import_release
from app.main import create_app
from app.services import clients, rule_sets
from app.synth.generate import generate_release
from tests.helpers import drop_release

RELEASE = "2026-01-23"
PURPOSE = "pbi-verification"
ALL_PROGRAMS = ["PKH", "BPNT", "PBI_JK", "SEKOLAH_RAKYAT"]
ALL_GROUPS = ["decision", "decile", "membership", "identity", "attributes", "health"]


@pytest.fixture(scope="session")
async def published(
    engine: AsyncEngine, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Path]:
    """Release 2026-01-23 (4,000 people), imported once for the session, with the rule sets."""
    from app import db

    folder = tmp_path_factory.mktemp("api") / RELEASE
    generate_release(folder, people=4000, seed=21, release=RELEASE)
    async with engine.begin() as conn:
        await rule_sets.ensure_shipped(conn)
    raw = await db.connect_raw(settings)
    try:
        await drop_release(raw, RELEASE)
        result = await import_release(raw, folder)
        assert result.published, result.report.to_dict()
    finally:
        await raw.close()
    yield folder
    raw = await db.connect_raw(settings)
    try:
        await drop_release(raw, RELEASE)
    finally:
        await raw.close()


MakeClient = Callable[..., Coroutine[Any, Any, str]]


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
    ) -> str:
        async with engine.begin() as conn:
            info, key = await clients.create_client(
                conn,
                name="test client",
                programs=ALL_PROGRAMS if programs is None else programs,
                field_groups=ALL_GROUPS if fields is None else fields,
                purposes=[PURPOSE] if purposes is None else purposes,
                expires_at=expires_at,
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
    return await make_client()


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


def auth(key: str, purpose: str | None = PURPOSE) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {key}"}
    if purpose is not None:
        headers["X-Purpose"] = purpose
    return headers
