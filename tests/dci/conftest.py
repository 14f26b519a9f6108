"""Fixtures of the DCI tests: the release's rows, and an app running the job worker."""

from __future__ import annotations

import csv
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from app.config import Settings
from app.main import create_app


@pytest.fixture(scope="session")
def release(published: Path) -> tuple[list[dict[str, str]], dict[str, dict[str, str]]]:
    with (published / "anggota.csv").open() as f:
        people = list(csv.DictReader(f))
    with (published / "keluarga.csv").open() as f:
        families = {r["no_kk"]: r for r in csv.DictReader(f)}
    return people, families


@pytest.fixture(scope="module")
async def worker_app(settings: Settings, published: Path) -> AsyncIterator[FastAPI]:
    fast = settings.model_copy(update={"jobs_worker": True, "dci_callback_backoff": 0.2})
    application = create_app(fast)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def worker_http(worker_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=worker_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tepat.test") as c:
        yield c
