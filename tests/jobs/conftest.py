"""Bulk job tests' setup: an app whose lifespan runs a job worker, and the job client's steps.

The app (and so its worker) lives for one test module: the crash tests run their own worker
processes, with no other worker to take their jobs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.config import Settings
from app.main import create_app
from tests.bulk.conftest import parse
from tests.support import auth

JOBS = "/v1/bulk/jobs"
NDJSON = "application/x-ndjson"


@pytest.fixture(scope="session")
def release_niks(published: Path) -> list[str]:
    import csv

    with (published / "anggota.csv").open() as f:
        return [r["nik"] for r in csv.DictReader(f)]


@pytest.fixture(scope="session")
def worker_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"jobs_worker": True, "jobs_heartbeat_timeout": 3.0})


@pytest.fixture(scope="module")
async def jobs_app(worker_settings: Settings, published: Path) -> AsyncIterator[FastAPI]:
    application = create_app(worker_settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def jobs_http(jobs_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=jobs_app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://tepat.test", timeout=60
    ) as client:
        yield client


async def submit(
    http: httpx.AsyncClient,
    key: str,
    body: bytes,
    content_type: str = NDJSON,
    **params: Any,
) -> httpx.Response:
    return await http.post(
        JOBS, content=body, params=params, headers={**auth(key), "Content-Type": content_type}
    )


async def wait_done(
    http: httpx.AsyncClient, key: str, location: str, within: float = 120.0
) -> dict[str, Any]:
    """Poll until the job has ended (bounded: a stuck job fails the test, never hangs it)."""
    deadline = time.monotonic() + within
    while True:
        r = await http.get(location, headers=auth(key, None))
        assert r.status_code == 200, r.text
        job: dict[str, Any] = r.json()
        if job["status"] not in ("queued", "running"):
            return job
        assert time.monotonic() < deadline, f"job still {job['status']}: {job['progress']}"
        await asyncio.sleep(0.05)


def answers(body: bytes) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Answer lines and the summary (which must be last)."""
    *lines, last = parse(body)
    assert "summary" in last, last
    return lines, last["summary"]
