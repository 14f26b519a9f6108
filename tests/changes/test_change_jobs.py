"""POST /v1/changes/jobs: a change list run as a bulk job (kind `changes`). Its download equals
the stream's answer for the same request (and the engine over both releases' files), in NIK
order; CSV is the CLI's mutation list; disclosure holds; resume, cancel and 404 as any job; a
worker killed mid-list is finished by the next (test_change_job_crash.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.main import create_app
from app.services import changes, receipts
from tests.changes import expected
from tests.changes.conftest import by_nik, post_changes, split
from tests.helpers import CHANGES_FROM, CHANGES_TO
from tests.jobs.conftest import wait_done
from tests.support import MakeClient, auth

pytestmark = pytest.mark.slow

JOBS = "/v1/changes/jobs"
CHUNK = 25  # people per chunk of these jobs: the generated lists span several
JOB_SETTINGS = {"jobs_worker": True, "jobs_heartbeat_timeout": 3.0, "changes_job_chunk": CHUNK}
IGNORED = ("audit_ids", "receipts", "request_id")  # differ between two runs of one list


@pytest.fixture(scope="module")
async def jobs_app(settings: Settings, quarters: tuple[Path, Path]) -> AsyncIterator[FastAPI]:
    """The app with its in-process job worker (the package's `http` app runs none)."""
    application = create_app(settings.model_copy(update=JOB_SETTINGS))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def jobs_http(jobs_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=jobs_app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://tepat.test", timeout=60
    ) as client:
        yield client


@pytest.fixture(scope="module")
async def key(make_client: MakeClient) -> str:
    return await make_client(bulk=True)


async def submit(http: httpx.AsyncClient, key: str, **body: Any) -> httpx.Response:
    payload = {"from": CHANGES_FROM, "to": CHANGES_TO, **body}
    return await http.post(JOBS, json=payload, headers=auth(key))


async def done_job(http: httpx.AsyncClient, key: str, **body: Any) -> str:
    r = await submit(http, key, **body)
    assert r.status_code == 202, r.text
    job = await wait_done(http, key, r.headers["location"])
    assert job["status"] == "succeeded", job
    return r.headers["location"]


def without(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if k not in IGNORED}


async def test_a_change_job_answers_what_the_stream_answers(
    jobs_http: httpx.AsyncClient, key: str, full_list: dict[str, dict[str, Any]]
) -> None:
    body = {"from": CHANGES_FROM, "to": CHANGES_TO}
    r = await jobs_http.post(JOBS, json=body, headers=auth(key))
    assert r.status_code == 202, r.text
    job = r.json()
    location = r.headers["location"]
    assert location == f"/v1/bulk/jobs/{job['id']}"
    assert job["kind"] == "changes" and job["status"] == "queued"
    assert job["input"]["format"] == "json"
    assert job["request"]["from"] == CHANGES_FROM and job["request"]["to"] == CHANGES_TO
    done = await wait_done(jobs_http, key, location)
    assert done["status"] == "succeeded", done
    assert done["progress"]["answered"] == len(full_list) == done["input"]["lines"]
    assert done["progress"]["chunks_done"] == done["progress"]["chunks"]

    got = await jobs_http.get(location + "/results", headers=auth(key))
    assert got.status_code == 200, got.text
    lines, summary = split(got)
    streamed_lines, streamed = split(await post_changes(jobs_http, key))
    assert by_nik(lines) == by_nik(streamed_lines)  # every person, every program, alike
    assert by_nik(lines) == full_list  # and as computed from the two releases' files
    niks = [orjson.loads(line)["nik"] for line in lines]
    assert niks == sorted(niks)  # NIK order: the cursor a worker resumes after
    assert without(summary) == without(streamed)
    assert summary["request_id"] == job["request_id"]
    # One audit record and receipt per chunk, over its exact bytes.
    chunks = [b"".join(lines[i : i + CHUNK]) for i in range(0, len(lines), CHUNK)]
    assert len(chunks) == len(summary["audit_ids"]) == len(summary["receipts"]) >= 4
    assert job["request"]["chunk"] == CHUNK
    jwks = (await jobs_http.get("/.well-known/jwks.json")).json()
    for chunk, audit_id, token in zip(
        chunks, summary["audit_ids"], summary["receipts"], strict=True
    ):
        assert receipts.verify(token, chunk, jwks)["audit_id"] == audit_id


async def test_filters_and_disclosure_hold_on_a_change_job(
    jobs_http: httpx.AsyncClient,
    key: str,
    make_client: MakeClient,
    full_list: dict[str, dict[str, Any]],
) -> None:
    limited = await make_client(bulk=True, fields=["decision"], programs=["PBI_JK", "PKH"])
    location = await done_job(jobs_http, limited, kinds=["lost"])
    lines, summary = split(await jobs_http.get(location + "/results", headers=auth(limited)))
    want = expected.narrowed(full_list, programs={"PBI_JK", "PKH"}, kinds=["lost"], groups=())
    assert by_nik(lines) == want and want
    assert all("decile" not in line and "family" not in line for line in want.values())
    assert set(summary["programs"]) <= {"PBI_JK", "PKH"}
    streamed = split(await post_changes(jobs_http, limited, kinds=["lost"]))[1]
    assert without(summary) == without(streamed)
    # A program the client is not granted is refused at submission, as by the stream.
    r = await submit(jobs_http, limited, programs=["BPNT"])
    assert r.status_code == 403 and r.json()["program"] == "BPNT"


async def test_csv_is_the_mutation_list(
    jobs_http: httpx.AsyncClient, key: str, full_list: dict[str, dict[str, Any]]
) -> None:
    location = await done_job(jobs_http, key, programs=["PBI_JK"])
    job = (await jobs_http.get(location, headers=auth(key))).json()
    r = await jobs_http.get(location + "/results", params={"format": "csv"}, headers=auth(key))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    header, *rows = r.text.splitlines()
    assert header == ",".join(changes.CSV_COLUMNS)
    effective = job["request"]["effective_date"]
    want = sorted(
        f"{nik},{c['program']},{c['change']},{';'.join(c['reasons'])},{effective}"
        for nik, line in expected.narrowed(full_list, programs={"PBI_JK"}).items()
        for c in line["changes"]
    )
    assert sorted(rows) == want and want
    # The cursor skips whole chunks of people (a row per change: a person may have several).
    skipped = await jobs_http.get(
        location + "/results", params={"format": "csv", "after_chunk": 1}, headers=auth(key)
    )
    lines = split(await jobs_http.get(location + "/results", headers=auth(key)))[0]
    later = {orjson.loads(line)["nik"] for line in lines[CHUNK:]}
    assert {row.split(",")[0] for row in skipped.text.splitlines()[1:]} == later


async def test_resume_cancel_and_only_its_client(
    jobs_http: httpx.AsyncClient, key: str, make_client: MakeClient
) -> None:
    location = await done_job(jobs_http, key)
    whole = await jobs_http.get(location + "/results", headers=auth(key))
    cut = len(whole.content) // 3
    rest = await jobs_http.get(
        location + "/results", headers={**auth(key), "Range": f"bytes={cut}-"}
    )
    assert rest.status_code == 206
    assert whole.content[:cut] + rest.content == whole.content
    after = await jobs_http.get(location + "/results?after_chunk=1", headers=auth(key))
    lines = whole.content.splitlines(keepends=True)
    assert after.content == b"".join(lines[CHUNK:])

    other = await make_client(bulk=True)
    assert (await jobs_http.get(location, headers=auth(other))).status_code == 404
    r = await jobs_http.get(location + "/results", headers=auth(other))
    assert r.status_code == 404
    assert (await jobs_http.delete(location, headers=auth(other))).status_code == 404
    assert (await jobs_http.delete(location, headers=auth(key))).status_code == 204
    assert (await jobs_http.get(location, headers=auth(key))).status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"from": "2019-01-01"}, 404, "from"),
        ({"to": CHANGES_FROM}, 422, "to"),
        ({"kinds": ["vanished"]}, 422, "kinds"),
        ({"kode_wilayah": "6"}, 422, "kode_wilayah"),
    ],
)
async def test_bad_requests_are_refused_before_a_job_is_made(
    jobs_http: httpx.AsyncClient,
    key: str,
    engine: AsyncEngine,
    body: dict[str, Any],
    status: int,
    field: str,
) -> None:
    async with engine.connect() as c:
        before = (await c.execute(text("SELECT count(*) FROM bulk_jobs"))).scalar_one()
    r = await submit(jobs_http, key, **body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["field"].split("[")[0] == field
    async with engine.connect() as c:
        after = (await c.execute(text("SELECT count(*) FROM bulk_jobs"))).scalar_one()
    assert after == before


async def test_the_bulk_grant_is_needed(
    jobs_http: httpx.AsyncClient, make_client: MakeClient, quarters: tuple[Path, Path]
) -> None:
    r = await submit(jobs_http, await make_client())
    assert r.status_code == 403 and r.json()["code"] == "bulk_not_granted"
