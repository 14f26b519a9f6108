"""Finished jobs are kept TEPAT_BULK_JOB_RETENTION_DAYS, then the worker deletes them."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.services.worker import Worker
from tests.bulk.conftest import ndjson
from tests.jobs.conftest import submit, wait_done
from tests.support import auth


async def test_the_purge_deletes_expired_jobs_only(
    jobs_app: FastAPI,
    jobs_http: httpx.AsyncClient,
    full_key: str,
    engine: AsyncEngine,
    release_niks: list[str],
) -> None:
    locations = []
    for part in (release_niks[:1200], release_niks[1200:1300]):
        r = await submit(jobs_http, full_key, ndjson(part))
        assert r.status_code == 202
        job = await wait_done(jobs_http, full_key, r.headers["location"])
        assert job["status"] == "succeeded"
        # Kept for the retention period (7 days by default) after it ended.
        assert job["expires_at"] > job["finished_at"]
        locations.append(r.headers["location"])
    old, fresh = (loc.rsplit("/", 1)[1] for loc in locations)
    async with engine.begin() as c:  # the first one ended 8 days ago
        await c.execute(
            text(
                "UPDATE bulk_jobs SET finished_at = now() - interval '8 days', "
                "expires_at = now() - interval '1 day' WHERE id = CAST(:id AS uuid)"
            ),
            {"id": old},
        )
    worker: Worker = jobs_app.state.job_worker
    assert await worker.purge() >= 1
    assert (await jobs_http.get(locations[0], headers=auth(full_key, None))).status_code == 404
    assert (await jobs_http.get(locations[1], headers=auth(full_key, None))).status_code == 200
    async with engine.connect() as c:
        left = await c.execute(
            text("SELECT count(*) FROM bulk_job_results WHERE job_id = CAST(:id AS uuid)"),
            {"id": old},
        )
        assert left.scalar() == 0
        kept = await c.execute(
            text("SELECT count(*) FROM bulk_job_results WHERE job_id = CAST(:id AS uuid)"),
            {"id": fresh},
        )
        assert kept.scalar() == 1
