"""A change list job whose worker is killed (kill -9) mid-list is finished by the next: its
download equals the stream's list, nobody twice, nobody skipped, one audit record per chunk."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.main import create_app
from tests.changes.conftest import post_changes, split
from tests.changes.test_change_jobs import CHUNK, submit, without
from tests.jobs.conftest import answers
from tests.jobs.test_worker_crash import job_row, until, worker_process
from tests.support import MakeClient, auth

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
async def quiet_http(
    settings: Settings, quarters: tuple[Path, Path]
) -> AsyncIterator[httpx.AsyncClient]:
    """An app that runs no job worker (only the processes below answer the job) and makes
    change list jobs of CHUNK people a chunk."""
    application: FastAPI = create_app(
        settings.model_copy(update={"jobs_worker": False, "changes_job_chunk": CHUNK})
    )
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://tepat.test", timeout=60
        ) as client:
            yield client


async def test_a_killed_worker_s_list_is_finished_by_the_next(
    quiet_http: httpx.AsyncClient,
    make_client: MakeClient,
    engine: AsyncEngine,
    full_list: dict[str, dict[str, Any]],
    tmp_path: Path,
) -> None:
    # Paced by the client's rate (a chunk a second) so the first worker dies mid-list.
    http = quiet_http
    key = await make_client(bulk=True)
    r = await submit(http, key)
    assert r.status_code == 202, r.text
    killed = r.json()["id"]
    log = tmp_path / "workers.log"
    with worker_process(log, rate=CHUNK) as first:
        at_kill = await until(engine, killed, lambda j: j["chunks_done"] >= 1)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(30)
    after_kill = await job_row(engine, killed)
    assert after_kill["status"] == "running", log.read_text()[-3000:]  # it died mid-list
    assert after_kill["chunks_done"] >= at_kill["chunks_done"] >= 1
    assert after_kill["after_nik"] is not None
    with worker_process(log, rate=CHUNK):
        await until(engine, killed, lambda j: j["status"] != "running")
    assert (await job_row(engine, killed))["status"] == "succeeded", log.read_text()[-3000:]

    got = await http.get(f"/v1/bulk/jobs/{killed}/results", headers=auth(key))
    lines, summary = answers(got.content)
    niks = [line["nik"] for line in lines]
    assert niks == sorted(set(niks))  # nobody twice, in order
    assert {line["nik"]: line for line in lines} == full_list  # nobody skipped
    assert len(lines) > after_kill["chunks_done"] * CHUNK  # the next worker did list some
    streamed = split(await post_changes(http, key))[1]
    assert without(summary) == without(streamed)
    # One audit record per committed chunk: the chunks the first worker was making when it
    # died left none.
    async with engine.connect() as c:
        rows = (
            (
                await c.execute(
                    text(
                        "SELECT id FROM audit_log WHERE request_id = :rid "
                        "AND operation = 'changes' ORDER BY seq"
                    ),
                    {"rid": r.json()["request_id"]},
                )
            )
            .scalars()
            .all()
        )
    assert rows == summary["audit_ids"]
