"""Bulk jobs end to end in-process: upload, poll, download; equal to the stream's answers."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import time
import uuid
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.main import create_app
from app.services import bulk, receipts
from app.services.audit.verify import verify_chain
from tests.bulk.conftest import URL as STREAM
from tests.bulk.conftest import found_and_absent, ndjson
from tests.jobs.conftest import NDJSON, answers, submit, wait_done
from tests.support import MakeClient, auth


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


async def _done_job(
    http: httpx.AsyncClient, key: str, body: bytes, content_type: str = NDJSON
) -> str:
    r = await submit(http, key, body, content_type)
    assert r.status_code == 202, r.text
    done = await wait_done(http, key, r.headers["location"])
    assert done["status"] == "succeeded", done
    return str(r.headers["location"])


async def test_csv_upload_and_csv_results(
    jobs_http: httpx.AsyncClient, full_key: str, release_niks: list[str]
) -> None:
    niks = found_and_absent(release_niks, 1500, every=2)
    rows = ["Nama,NIK"] + [f'"Warga {i}",{n}' for i, n in enumerate(niks)] + ["x,123"]
    body = ("\r\n".join(rows) + "\r\n").encode()
    location = await _done_job(jobs_http, full_key, body, "text/csv; charset=utf-8")
    # The same answers as the stream for the NIKs as lines (the header is line 1, blank).
    as_lines = b"\n" + ndjson([*niks, "123"])
    streamed = await jobs_http.post(
        STREAM, content=as_lines, headers={**auth(full_key), "Content-Type": NDJSON}
    )
    nd = await jobs_http.get(location + "/results", headers=auth(full_key))
    assert answers(nd.content)[0] == answers(streamed.content)[0]
    summary = answers(nd.content)[1]
    assert (summary["lines"], summary["blank"], summary["errors"]) == (1501, 1, 1)

    for how in ({"params": {"format": "csv"}}, {"headers": {"Accept": "text/csv"}}):
        extra = how.get("headers", {})
        got = await jobs_http.get(
            location + "/results", params=how.get("params"), headers={**auth(full_key), **extra}
        )
        assert got.status_code == 200, got.text
        assert got.headers["content-type"].startswith("text/csv")
        table = list(csv.DictReader(io.StringIO(got.text)))
        assert len(table) == 1501
        by_line = {int(r["line"]): r for r in table}
        for answer in answers(nd.content)[0]:
            row = by_line[answer["line"]]
            if "error" in answer:
                assert row["error_code"] == answer["error"]["code"]
                continue
            assert row["nik"] == answer["nik"]
            assert row["found"] == ("true" if answer["found"] else "false")
            for d in answer.get("decisions", ()):
                assert row[f"{d['program']}_eligible"] == ("true" if d["eligible"] else "false")
        assert {r["audit_id"] for r in table if r["chunk"] == "1"} == {summary["audit_ids"][0]}


async def test_resume_with_range_and_with_the_cursor(
    jobs_http: httpx.AsyncClient, full_key: str, release_niks: list[str]
) -> None:
    body = ndjson(found_and_absent(release_niks, 3200, every=2))
    location = await _done_job(jobs_http, full_key, body)
    # Ranges are of the uncompressed bytes: the whole answer as such, then compressed.
    plain = {**auth(full_key), "Accept-Encoding": "identity"}
    whole = await jobs_http.get(location + "/results", headers=plain)
    assert whole.headers["accept-ranges"] == "bytes"
    assert int(whole.headers["content-length"]) == len(whole.content)
    size = len(whole.content)
    packed = {**auth(full_key), "Accept-Encoding": "gzip"}
    async with jobs_http.stream("GET", location + "/results", headers=packed) as gz:
        raw = b"".join([part async for part in gz.aiter_raw()])
    assert gz.headers["content-encoding"] == "gzip" and len(raw) < size
    assert gz.headers["etag"] == "W/" + whole.headers["etag"]  # another representation
    assert zlib.decompress(raw, 31) == whole.content
    for cut in (0, 1, 1000, size // 2, size - 5):
        rest = await jobs_http.get(
            location + "/results",
            headers={**auth(full_key), "Range": f"bytes={cut}-", "If-Range": whole.headers["etag"]},
        )
        assert "content-encoding" not in rest.headers
        assert rest.status_code == 206, rest.text
        assert rest.headers["content-range"] == f"bytes {cut}-{size - 1}/{size}"
        assert rest.headers["etag"] == whole.headers["etag"]
        assert whole.content[:cut] + rest.content == whole.content
    middle = await jobs_http.get(
        location + "/results", headers={**auth(full_key), "Range": "bytes=100-199"}
    )
    assert middle.content == whole.content[100:200]
    tail = await jobs_http.get(
        location + "/results", headers={**auth(full_key), "Range": "bytes=-50"}
    )
    assert tail.content == whole.content[-50:]
    past = await jobs_http.get(
        location + "/results", headers={**auth(full_key), "Range": f"bytes={size}-"}
    )
    assert past.status_code == 416 and past.json()["code"] == "range_not_satisfiable"

    # The cursor: a client that kept 2,345 whole lines holds the first 2 chunks.
    lines = whole.content.split(b"\n")
    kept = lines[:2345]
    rest = await jobs_http.get(
        location + "/results", params={"after_chunk": 2345 // 1000}, headers=auth(full_key)
    )
    assert rest.status_code == 200
    assert b"\n".join(kept[:2000]) + b"\n" + rest.content == whole.content
    nothing_left = await jobs_http.get(
        location + "/results", params={"after_chunk": 99}, headers=auth(full_key)
    )
    assert nothing_left.content == lines[-2] + b"\n"  # only the summary


async def test_another_client_gets_404(
    jobs_http: httpx.AsyncClient, full_key: str, make_client: MakeClient, release_niks: list[str]
) -> None:
    location = await _done_job(jobs_http, full_key, ndjson(release_niks[:10]))
    other = await make_client(bulk=True)
    for method, path in (
        ("GET", location),
        ("GET", location + "/results"),
        ("DELETE", location),
        ("GET", f"/v1/bulk/jobs/{uuid.uuid4()}"),
    ):
        r = await jobs_http.request(method, path, headers=auth(other))
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["code"] == "job_not_found"
    # ... and the job is untouched by the other client's DELETE.
    r = await jobs_http.get(location, headers=auth(full_key))
    assert r.json()["status"] == "succeeded"


async def test_cancel_deletes_the_answers(
    jobs_http: httpx.AsyncClient,
    full_key: str,
    engine: AsyncEngine,
    release_niks: list[str],
) -> None:
    location = await _done_job(jobs_http, full_key, ndjson(release_niks[:1500]))
    job_id = location.rsplit("/", 1)[1]
    r = await jobs_http.delete(location, headers=auth(full_key))
    assert r.status_code == 204
    assert (await jobs_http.get(location, headers=auth(full_key))).status_code == 404
    async with engine.connect() as c:
        left = await c.execute(
            text(
                "SELECT (SELECT count(*) FROM bulk_job_results WHERE job_id = CAST(:id AS uuid))"
                " + (SELECT count(*) FROM bulk_job_input WHERE job_id = CAST(:id AS uuid))"
            ),
            {"id": job_id},
        )
        assert left.scalar() == 0


async def _waiting_job(
    http: httpx.AsyncClient, make_client: MakeClient, niks: list[str]
) -> tuple[str, str]:
    """A job that stays queued: its client's daily quota (1 NIK) is smaller than a chunk, so
    the worker puts it back in the queue until 00:00 WIB, saying why."""
    key = await make_client(bulk=True, daily_quota=1)
    r = await submit(http, key, ndjson(niks))
    assert r.status_code == 202, r.text
    location = str(r.headers["location"])
    deadline = time.monotonic() + 60
    while True:
        job = (await http.get(location, headers=auth(key, None))).json()
        if job["error"] is not None:
            break
        assert time.monotonic() < deadline, job
        await asyncio.sleep(0.05)
    assert job["status"] == "queued" and job["error"]["code"] == "quota_exceeded", job
    return key, location


async def test_a_waiting_job_is_409_then_cancelled_410(
    jobs_http: httpx.AsyncClient, make_client: MakeClient, release_niks: list[str]
) -> None:
    key, location = await _waiting_job(jobs_http, make_client, release_niks[:1500])
    early = await jobs_http.get(location + "/results", headers=auth(key))
    assert early.status_code == 409 and early.json()["code"] == "job_not_finished"
    cancel = await jobs_http.delete(location, headers=auth(key))
    assert cancel.status_code == 204
    job = (await jobs_http.get(location, headers=auth(key, None))).json()
    assert job["status"] == "cancelled" and job["progress"]["answered"] == 0
    assert job["expires_at"] is not None
    gone = await jobs_http.get(location + "/results", headers=auth(key))
    assert gone.status_code == 410 and gone.json()["code"] == "job_cancelled"


async def test_bad_inputs_are_4xx_naming_the_problem(
    jobs_http: httpx.AsyncClient, full_key: str, make_client: MakeClient
) -> None:
    r = await submit(jobs_http, full_key, b"3201014501150001\n", "text/plain")
    assert r.status_code == 415 and r.json()["code"] == "unsupported_media_type"
    assert "text/plain" in r.json()["detail"]
    r = await submit(jobs_http, full_key, b"")
    assert r.status_code == 422 and "no line to answer" in r.json()["detail"]
    r = await submit(jobs_http, full_key, b"\n  \n\n")
    assert r.status_code == 422
    r = await submit(jobs_http, full_key, b"nik\n", "text/csv")
    assert r.status_code == 422 and "CSV" in r.json()["detail"]
    r = await jobs_http.get("/v1/bulk/jobs/not-a-uuid", headers=auth(full_key))
    assert r.status_code == 422
    r = await submit(jobs_http, full_key, b"3201014501150001\n", programs="NOPE")
    assert r.status_code == 422 and "NOPE" in r.json()["detail"]
    no_bulk = await make_client(bulk=False)
    r = await submit(jobs_http, no_bulk, b"3201014501150001\n")
    assert r.status_code == 403 and r.json()["code"] == "bulk_not_granted"
    r = await jobs_http.post(
        "/v1/bulk/jobs", content=b"3201014501150001\n", headers={"Content-Type": NDJSON}
    )
    assert r.status_code == 401


async def test_an_upload_over_the_limit_is_413_and_leaves_nothing(
    worker_settings: Settings, published: Path, full_key: str, engine: AsyncEngine
) -> None:
    small = create_app(worker_settings.model_copy(update={"bulk_job_max_bytes": 1000}))
    async with small.router.lifespan_context(small):
        transport = httpx.ASGITransport(app=small)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            async with engine.connect() as c:
                before = (await c.exec_driver_sql("SELECT count(*) FROM bulk_jobs")).scalar()

            async def body() -> AsyncIterator[bytes]:
                for _ in range(100):
                    yield b"3201014501150001\n"

            r = await http.post(
                "/v1/bulk/jobs", content=body(), headers={**auth(full_key), "Content-Type": NDJSON}
            )
            assert r.status_code == 413, r.text
            assert "1,000 bytes" in r.json()["detail"]
            async with engine.connect() as c:
                after = (await c.exec_driver_sql("SELECT count(*) FROM bulk_jobs")).scalar()
            assert after == before


async def test_each_chunks_receipt_verifies(
    jobs_http: httpx.AsyncClient, full_key: str, release_niks: list[str]
) -> None:
    body = ndjson(found_and_absent(release_niks, 2100, every=2))
    location = await _done_job(jobs_http, full_key, body)
    got = await jobs_http.get(location + "/results", headers=auth(full_key))
    lines = got.content.split(b"\n")[:-2]
    chunks = [
        b"".join(line + b"\n" for line in lines[i : i + 1000]) for i in range(0, len(lines), 1000)
    ]
    summary = answers(got.content)[1]
    jwks = (await jobs_http.get("/.well-known/jwks.json")).json()
    assert len(chunks) == len(summary["receipts"]) == len(summary["audit_ids"]) == 3
    for chunk, token, audit_id in zip(
        chunks, summary["receipts"], summary["audit_ids"], strict=True
    ):
        claims = receipts.verify(token, chunk, jwks)
        assert claims["audit_id"] == audit_id
    with pytest.raises(receipts.ReceiptInvalid):
        receipts.verify(summary["receipts"][0], chunks[1], jwks)


async def test_chunks_chain_into_the_trail_while_lookups_are_audited(
    jobs_app: FastAPI,
    jobs_http: httpx.AsyncClient,
    full_key: str,
    engine: AsyncEngine,
    release_niks: list[str],
) -> None:
    """A worker commits a chunk in one statement chained to the audit tip it wrote last, and
    under the head's row lock when another appender moved the tip. With the API's audit writer
    appending lookups' records between the job's chunks, the chain stays whole and every chunk
    has its record, in chunk order."""
    writer = jobs_app.state.tepat.audit
    locked_before = writer.stats.locked_batches
    body = ndjson(found_and_absent(release_niks, 12_000, every=3))
    r = await submit(jobs_http, full_key, body)
    assert r.status_code == 202, r.text
    location = r.headers["location"]
    lookups = 0
    while (await jobs_http.get(location, headers=auth(full_key))).json()["status"] in (
        "queued",
        "running",
    ):
        got = await jobs_http.post(
            "/v1/people/lookup", json={"niks": release_niks[:2]}, headers=auth(full_key)
        )
        assert got.status_code == 200
        lookups += 1
    done = await wait_done(jobs_http, full_key, location)
    assert done["status"] == "succeeded", done
    assert lookups > 0
    # The API's writer found the tip moved by the job (and so chained under the lock).
    assert writer.stats.locked_batches > locked_before
    summary = answers((await jobs_http.get(location + "/results", headers=auth(full_key))).content)[
        1
    ]
    assert len(summary["audit_ids"]) == 12
    async with engine.connect() as c:
        seqs = (
            await c.execute(
                text("SELECT id, seq FROM audit_log WHERE request_id = :rid ORDER BY seq"),
                {"rid": done["request_id"]},
            )
        ).all()
    assert [row[0] for row in seqs] == summary["audit_ids"]
    async with engine.connect() as c, c.begin():
        await c.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
        result = await verify_chain(c)
    assert result.ok, result
    # Stored as the worker compressed them (zstd), served as answered (the receipts verify).
    async with engine.connect() as c:
        coding, answered, stored = (
            await c.execute(
                text(
                    "SELECT j.results_coding, j.result_bytes, sum(octet_length(r.data)) "
                    "FROM bulk_jobs j JOIN bulk_job_results r ON r.job_id = j.id "
                    "WHERE j.id = CAST(:id AS uuid) GROUP BY 1, 2"
                ),
                {"id": done["id"]},
            )
        ).one()
    assert coding == "zstd" and stored < answered / 4
    whole = await jobs_http.get(location + "/results", headers=auth(full_key))
    assert len(whole.content) > answered
    jwks = (await jobs_http.get("/.well-known/jwks.json")).json()
    lines = whole.content.splitlines(keepends=True)[:-1]
    chunks = [b"".join(lines[i : i + 1000]) for i in range(0, len(lines), 1000)]
    for chunk, token in zip(chunks, summary["receipts"], strict=True):
        receipts.verify(token, chunk, jwks)
