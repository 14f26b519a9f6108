"""A job whose worker is killed (kill -9) mid-way is finished by the next worker: its answers
equal a job that ran through, no line twice, none missing, one audit record per chunk."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.bulk.conftest import ndjson
from tests.jobs.conftest import answers, submit
from tests.support import MakeClient, auth

pytestmark = pytest.mark.slow

CHUNKS = 30


@contextmanager
def worker_process(log: Path, rate: int = 3000) -> Iterator[subprocess.Popen[bytes]]:
    """`tepat worker` against the test database, its rate limited (default ~3 chunks of 1,000
    a second) so a test can stop it mid-job; a heartbeat timeout of 2 s so the next worker
    takes over soon."""
    env = {
        **os.environ,
        "TEPAT_JOBS_WORKER": "true",
        "TEPAT_JOBS_HEARTBEAT_TIMEOUT": "2",
        "TEPAT_RATE_LIMIT_NIKS_PER_SECOND": str(rate),
        "TEPAT_RATE_LIMIT_BURST": str(rate),
        "TEPAT_LOG_JSON": "true",
    }
    with log.open("ab") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker"], env=env, stdout=sink, stderr=sink
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def job_row(engine: AsyncEngine, job_id: str) -> dict[str, Any]:
    """A job's progress as its row says (the crash tests of bulk and change-list jobs)."""
    async with engine.connect() as c:
        row = (
            (
                await c.execute(
                    text(
                        "SELECT status, chunks, chunks_done, request_id, after_nik FROM bulk_jobs "
                        "WHERE id = CAST(:id AS uuid)"
                    ),
                    {"id": job_id},
                )
            )
            .mappings()
            .one()
        )
    return dict(row)


async def until(engine: AsyncEngine, job_id: str, ok: Any, within: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        job = await job_row(engine, job_id)
        if ok(job):
            return job
        assert time.monotonic() < deadline, job
        await asyncio.sleep(0.05)


async def test_a_killed_worker_s_job_is_finished_by_the_next(
    http: httpx.AsyncClient,
    make_client: MakeClient,
    engine: AsyncEngine,
    release_niks: list[str],
    tmp_path: Path,
) -> None:
    key = await make_client(bulk=True)
    niks = list(itertools.islice(itertools.cycle(release_niks), CHUNKS * 1000))
    body = ndjson([{"nik": n} if i % 2 else n for i, n in enumerate(niks)] + ["123"])
    # Submitted through an app that runs no worker: only the processes below answer it.
    r = await submit(http, key, body)
    assert r.status_code == 202, r.text
    killed = r.json()["id"]
    log = tmp_path / "workers.log"

    with worker_process(log) as first:
        at_kill = await until(engine, killed, lambda j: j["chunks_done"] >= 5)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(30)
    after_kill = await job_row(engine, killed)
    assert after_kill["status"] == "running"  # nobody finished it: it died mid-way
    assert 5 <= after_kill["chunks_done"] < after_kill["chunks"] == CHUNKS + 1
    assert after_kill["chunks_done"] >= at_kill["chunks_done"]

    # The same input again: this one runs through under the next worker.
    r2 = await submit(http, key, body)
    through = r2.json()["id"]
    with worker_process(log):
        await until(engine, killed, lambda j: j["status"] != "running")
        await until(engine, through, lambda j: j["status"] not in ("queued", "running"))
    assert (await job_row(engine, killed))["status"] == "succeeded", log.read_text()[-3000:]

    got = await http.get(f"/v1/bulk/jobs/{killed}/results", headers=auth(key))
    want = await http.get(f"/v1/bulk/jobs/{through}/results", headers=auth(key))
    lines, summary = answers(got.content)
    want_lines, want_summary = answers(want.content)
    assert lines == want_lines
    assert {
        k: v for k, v in summary.items() if k not in ("audit_ids", "receipts", "request_id")
    } == {k: v for k, v in want_summary.items() if k not in ("audit_ids", "receipts", "request_id")}
    assert [x["line"] for x in lines] == list(range(1, len(niks) + 2))  # none twice or missing
    assert summary["lines"] == len(niks) + 1 and summary["errors"] == 1
    # The last chunk holds only the malformed line: it discloses nothing, so has no record.
    assert len(summary["audit_ids"]) == len(set(summary["audit_ids"])) == CHUNKS

    # One audit record per chunk, no more: the chunks the first worker was answering when it
    # died left none (their records were in the transactions that never committed).
    async with engine.connect() as c:
        rows = (
            (
                await c.execute(
                    text(
                        "SELECT id FROM audit_log WHERE request_id = :rid "
                        "AND operation = 'bulk.eligibility' ORDER BY seq"
                    ),
                    {"rid": r.json()["request_id"]},
                )
            )
            .scalars()
            .all()
        )
    assert rows == summary["audit_ids"]


async def test_a_job_queued_before_0003_is_stored_and_served_as_answered(
    http: httpx.AsyncClient,
    make_client: MakeClient,
    engine: AsyncEngine,
    release_niks: list[str],
    tmp_path: Path,
) -> None:
    """A job submitted before migration 0003 (results_coding 'identity') is answered by a new
    worker as it was: its answers stored as answered, and served the same as a new job's."""
    key = await make_client(bulk=True)
    body = ndjson(list(itertools.islice(itertools.cycle(release_niks), 2500)))
    old = (await submit(http, key, body)).json()["id"]
    async with engine.begin() as c:
        await c.execute(
            text("UPDATE bulk_jobs SET results_coding = 'identity' WHERE id = CAST(:id AS uuid)"),
            {"id": old},
        )
    new = (await submit(http, key, body)).json()["id"]
    with worker_process(tmp_path / "worker.log"):
        for job_id in (old, new):
            await until(engine, job_id, lambda j: j["status"] not in ("queued", "running"))
    got = {
        job_id: answers(
            (await http.get(f"/v1/bulk/jobs/{job_id}/results", headers=auth(key))).content
        )[0]
        for job_id in (old, new)
    }
    assert got[old] == got[new] and len(got[old]) == 2500
    async with engine.connect() as c:
        stored: dict[str, bool] = dict(
            (
                await c.execute(
                    text(
                        "SELECT j.results_coding, sum(octet_length(r.data)) = j.result_bytes "
                        "FROM bulk_jobs j JOIN bulk_job_results r ON r.job_id = j.id "
                        "WHERE j.id IN (CAST(:a AS uuid), CAST(:b AS uuid)) "
                        "GROUP BY j.results_coding, j.result_bytes"
                    ),
                    {"a": old, "b": new},
                )
            ).all()
        )
    assert stored == {"identity": True, "zstd": False}
