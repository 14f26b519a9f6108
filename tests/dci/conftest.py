"""Fixtures of the DCI tests: the release's rows, an app running the job worker, and HTTP
clients that hold every DCI answer they see to the standard's own schemas (tests/dci/spec.py)."""

from __future__ import annotations

import csv
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from app.config import Settings
from app.main import create_app
from tests.dci import spec


async def check_dci_answer(response: httpx.Response) -> None:
    """An httpx response hook: a DCI registry answer must be what the standard's YAML allows."""
    path = response.request.url.path
    if not path.startswith("/dci/registry/") or spec.documents() is None:
        return
    await response.aread()
    spec.check_answer(path.removeprefix("/dci"), response.status_code, response.json())


def validating(transport: httpx.AsyncBaseTransport) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=transport,
        base_url="http://tepat.test",
        event_hooks={"response": [check_dci_answer]},
    )


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with validating(httpx.ASGITransport(app=app)) as c:
        yield c


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
    async with validating(httpx.ASGITransport(app=worker_app)) as c:
        yield c
