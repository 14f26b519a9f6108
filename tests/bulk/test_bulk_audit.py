"""Bulk jobs are audited chunk by chunk, and answered from one pinned snapshot throughout."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app import db
from app.config import Settings
from app.ingest.importer import import_release
from app.services.audit import nik_subject, subject_hash
from app.synth.generate import generate_release
from tests.bulk.conftest import absent_nik, ndjson, parse, pieces, post_bulk
from tests.helpers import drop_release
from tests.support import RELEASE


async def _records(engine: AsyncEngine, request_id: str) -> list[dict[str, object]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT id, client_id, purpose, operation, snapshot_id, subject_hashes, "
                "subject_count, found_count, response_digest FROM audit_log "
                "WHERE request_id = :rid ORDER BY seq"
            ),
            {"rid": request_id},
        )
        return [dict(r._mapping) for r in rows]


async def test_the_audit_covers_every_nik_asked_chunk_by_chunk(
    http: httpx.AsyncClient,
    full_key: str,
    release_niks: list[str],
    engine: AsyncEngine,
    settings: Settings,
) -> None:
    asked = [n if i % 4 else absent_nik(i) for i, n in enumerate(release_niks[:2600])]
    lines: list[str | dict[str, str]] = [{"nik": n} for n in asked]
    lines[10:10] = ["not a nik", '{"nik": "1"}']  # malformed lines are answered, not audited
    rid = uuid.uuid4().hex
    r = await post_bulk(http, full_key, pieces(ndjson(lines), 5000), headers={"X-Request-ID": rid})
    *answers, last = parse(r.content)
    summary = last["summary"]

    # Chunks are answered concurrently, so records may be committed out of chunk order; the
    # summary lists them in chunk order.
    records = await _records(engine, rid)
    assert sorted(str(x["id"]) for x in records) == sorted(summary["audit_ids"])
    assert len(records) == 3
    by_id = {str(x["id"]): x for x in records}
    key = settings.audit_hmac_key.get_secret_value().encode()
    audited = {h for x in records for h in x["subject_hashes"]}  # type: ignore[attr-defined]
    assert audited == {subject_hash(key, nik_subject(n)) for n in asked}
    assert sum(x["found_count"] for x in records) == summary["found"]  # type: ignore[misc]
    assert sum(x["subject_count"] for x in records) == len(asked)  # type: ignore[misc]
    assert {(x["operation"], x["purpose"], x["snapshot_id"]) for x in records} == {
        ("bulk.eligibility", "pbi-verification", RELEASE)
    }
    # Each record's digest is the sha256 of exactly the bytes of its chunk (1,000 lines each).
    raw_lines = r.content.splitlines(keepends=True)[:-1]
    assert len(raw_lines) == len(answers) == len(lines)
    for i, audit_id in enumerate(summary["audit_ids"]):
        chunk = b"".join(raw_lines[i * 1000 : (i + 1) * 1000])
        assert by_id[audit_id]["response_digest"] == hashlib.sha256(chunk).digest()


@pytest.mark.slow
async def test_a_snapshot_published_mid_job_does_not_change_the_job(
    http: httpx.AsyncClient,
    full_key: str,
    release_niks: list[str],
    settings: Settings,
    tmp_path: Path,
) -> None:
    newer = "2026-04-24"
    folder = tmp_path / newer
    generate_release(folder, people=300, seed=77, release=newer)
    newer_niks = [line.split(",")[0] for line in (folder / "anggota.csv").read_text().splitlines()]
    header = newer_niks.pop(0)
    assert header == "nik"
    newer_niks = [n for n in newer_niks if n not in set(release_niks)][:100]
    published_mid_job = False

    async def body() -> AsyncIterator[bytes]:
        nonlocal published_mid_job
        yield ndjson(release_niks[:1000])
        # The server asks for more only after answering the first chunk: publish now.
        raw = await db.connect_raw(settings)
        try:
            result = await import_release(raw, folder)
            assert result.published
        finally:
            await raw.close()
        published_mid_job = True
        yield ndjson(release_niks[1000:2000] + newer_niks)

    try:
        r = await post_bulk(http, full_key, body())
        assert published_mid_job
        *answers, last = parse(r.content)
        assert last["summary"]["snapshot"]["id"] == RELEASE
        assert all(x["found"] for x in answers[:2000])
        assert not any(x["found"] for x in answers[2000:])
        # A new job now reads the newer snapshot: the pin above was not luck.
        again = parse((await post_bulk(http, full_key, ndjson(newer_niks[:5]))).content)
        assert again[-1]["summary"]["snapshot"]["id"] == newer
        assert all(x["found"] for x in again[:-1])
    finally:
        raw = await db.connect_raw(settings)
        try:
            await drop_release(raw, newer)
        finally:
            await raw.close()
