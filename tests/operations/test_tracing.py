"""Traces (TEPAT_TRACING): a span per request and per statement, and no identifier in any."""

from __future__ import annotations

import csv
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from app.config import Settings
from app.http import tracing
from app.main import create_app
from tests.support import MakeClient, auth


@pytest.fixture
async def traced(
    settings: Settings, published: Path
) -> AsyncIterator[tuple[FastAPI, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    tracing.install(exporter)
    application = create_app(settings.model_copy(update={"tracing": True}))
    try:
        async with application.router.lifespan_context(application):
            yield application, exporter
    finally:
        tracing.uninstall()


async def test_spans_cover_requests_and_statements_and_carry_no_identifier(
    traced: tuple[FastAPI, InMemorySpanExporter], make_client: MakeClient, published: Path
) -> None:
    app, exporter = traced
    with (published / "anggota.csv").open() as f:
        rows = list(csv.DictReader(f))[:5]
    niks = [r["nik"] for r in rows]
    canaries = set(niks) | {r["no_kk"] for r in rows} | {r["nama"] for r in rows if r.get("nama")}
    key = await make_client()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tepat.test") as http:
        r = await http.post(
            "/v1/people/lookup", json={"niks": niks, "explain": True}, headers=auth(key)
        )
        assert r.status_code == 200
        r = await http.post(
            "/v1/families/lookup", json={"no_kks": [rows[0]["no_kk"]]}, headers=auth(key)
        )
        assert r.status_code == 200
    spans = exporter.get_finished_spans()
    assert any(
        (s.attributes and s.attributes.get("http.route") == "/v1/people/lookup")
        or "/v1/people/lookup" in s.name
        for s in spans
    )
    assert any(s.attributes and s.attributes.get("db.system") == "postgresql" for s in spans)
    for span in spans:
        texts = [span.name, *(str(v) for v in (span.attributes or {}).values())]
        for event in span.events:
            texts += [event.name, *(str(v) for v in (event.attributes or {}).values())]
        for canary in canaries:
            assert not any(canary in t for t in texts), (span.name, canary)
