"""Bulk jobs end to end in-process: upload, poll, download; equal to the stream's answers."""

from __future__ import annotations

import hashlib

import httpx
import orjson

from app.services import bulk
from tests.bulk.conftest import URL as STREAM
from tests.jobs.conftest import NDJSON, answers, found_and_absent, ndjson, submit, wait_done
from tests.support import auth


def _lines_of(niks: list[str]) -> bytes:
    extra = ["", '{"nik": "32010145011500"', "   ", '{"id": 1}']
    body: list[str | dict[str, str]] = []
    for i, n in enumerate(niks):
        body.append({"nik": n} if i % 3 else n)
        if i % 997 == 5:
            body.append(extra[i % len(extra)])
    return ndjson(body)


async def test_a_job_answers_what_the_stream_answers(
    jobs_http: httpx.AsyncClient, full_key: str, release_niks: list[str]
) -> None:
    body = _lines_of(found_and_absent(release_niks, 2500, every=2))
    r = await submit(jobs_http, full_key, body)
    assert r.status_code == 202, r.text
    location = r.headers["location"]
    job = r.json()
    assert location == f"/v1/bulk/jobs/{job['id']}"
    assert job["status"] == "queued"
    assert job["input"]["sha256"] == hashlib.sha256(body).hexdigest()
    assert job["input"]["bytes"] == len(body)
    done = await wait_done(jobs_http, full_key, location)
    assert done["status"] == "succeeded", done
    assert done["progress"]["answered"] == done["input"]["lines"]

    got = await jobs_http.get(location + "/results", headers=auth(full_key))
    assert got.status_code == 200, got.text
    assert got.headers["content-type"].startswith(NDJSON)
    streamed = await jobs_http.post(
        STREAM, content=body, headers={**auth(full_key), "Content-Type": NDJSON}
    )
    assert streamed.status_code == 200
    job_lines, job_summary = answers(got.content)
    stream_lines, stream_summary = answers(streamed.content)
    assert job_lines == stream_lines  # line by line, byte-identical answers
    for key in ("lines", "found", "not_found", "errors", "blank", "snapshot", "rule_set"):
        assert job_summary[key] == stream_summary[key], key
    assert len(job_summary["audit_ids"]) == len(stream_summary["audit_ids"]) == 3
    assert len(job_summary["receipts"]) == 3
    assert done["progress"]["found"] == job_summary["found"]
    assert got.content.split(b"\n")[:-2] == streamed.content.split(b"\n")[:-2]
    assert orjson.loads(got.content.splitlines()[-1])["summary"]["request_id"] == job["request_id"]
    assert bulk.CHUNK == 1000
