"""GET /metrics: operators only, the series move with the traffic, no identifier in them."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.http import metrics
from tests.support import MakeClient, auth


@pytest.fixture(scope="module")
def niks(published: Path) -> list[str]:
    with (published / "anggota.csv").open() as f:
        return [r["nik"] for r in csv.DictReader(f)][:40]


def _value(body: str, name: str, **labels: str) -> float:
    """The sample `name{labels}` of a Prometheus text body (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in body.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][\w:]*)(\{([^}]*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = ",".join(sorted((m.group(3) or "").split(","))) if m.group(3) else ""
        if got == want:
            return float(m.group(4))
    return 0.0


async def _scrape(app: FastAPI, http: httpx.AsyncClient) -> str:
    app.state.metrics_sync.sync()  # what the once-a-second task does, now
    r = await http.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return r.text


async def test_metrics_are_refused_to_other_addresses(app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=app, client=("10.20.30.40", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://tepat.test") as far:
        r = await far.get("/metrics")
    assert r.status_code == 403
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "metrics_forbidden"
    assert "TEPAT_METRICS_ALLOW" in r.json()["detail"]


def test_the_token_opens_metrics_from_anywhere_and_a_wrong_one_does_not() -> None:
    settings = Settings(metrics_token=SecretStr("s3cret-token"), metrics_allow=["192.0.2.0/24"])
    far = {"client": ("10.20.30.40", 5000), "headers": []}
    assert metrics.allowed(far, settings)[0] is False
    good = {**far, "headers": [(b"authorization", b"Bearer s3cret-token")]}
    assert metrics.allowed(good, settings) == (True, "")
    bad = {**far, "headers": [(b"authorization", b"Bearer guess")]}
    assert metrics.allowed(bad, settings)[0] is False
    near = {"client": ("192.0.2.7", 5000), "headers": []}
    assert metrics.allowed(near, settings)[0] is True


def test_metrics_allow_refuses_what_is_not_a_network() -> None:
    with pytest.raises(ValueError, match="TEPAT_METRICS_ALLOW"):
        Settings(metrics_allow=["not-a-network"])


async def test_series_follow_the_traffic_and_carry_no_identifier(
    app: FastAPI,
    http: httpx.AsyncClient,
    make_client: MakeClient,
    engine: AsyncEngine,
    niks: list[str],
) -> None:
    key = await make_client()
    async with engine.connect() as conn:
        client_id = str(
            (
                await conn.execute(
                    text("SELECT id FROM api_clients ORDER BY created_at DESC LIMIT 1")
                )
            ).scalar_one()
        )
    before = await _scrape(app, http)
    route = {"route": "/v1/people/lookup", "method": "POST"}
    ok_before = _value(before, "tepat_http_requests_total", **route, status="200")
    records_before = _value(before, "tepat_audit_records_total")

    for i in range(0, 30, 3):  # 10 lookups of 3 NIKs
        r = await http.post("/v1/people/lookup", json={"niks": niks[i : i + 3]}, headers=auth(key))
        assert r.status_code == 200
    r = await http.post(
        "/v1/families/lookup", json={"no_kks": ["1" * 16]}, headers=auth(key, purpose=None)
    )
    assert r.status_code == 403  # no purpose: counted under its route and status

    after = await _scrape(app, http)
    assert _value(after, "tepat_http_requests_total", **route, status="200") == ok_before + 10
    assert _value(after, "tepat_client_niks_total", client_id=client_id) == 30
    families = {"route": "/v1/families/lookup", "method": "POST", "status": "403"}
    assert _value(after, "tepat_http_requests_total", **families) >= 1
    assert _value(after, "tepat_audit_records_total") >= records_before + 10
    assert _value(after, "tepat_http_request_duration_seconds_count", **route) >= 10
    assert _value(after, "tepat_read_node_up", node="primary") == 1
    assert _value(after, "tepat_db_pool_connections", node="primary") >= 1
    assert "tepat_audit_commit_seconds_bucket" in after
    assert "tepat_coalesced_lookups_total" in after
    for nik in niks[:30]:
        assert nik not in after
    assert "1111111111111111" not in after


async def test_unknown_paths_share_one_label(app: FastAPI, http: httpx.AsyncClient) -> None:
    for n in range(3):
        await http.get(f"/no/such/path/{n}3201014501900001")
    body = await _scrape(app, http)
    assert "3201014501900001" not in body
    assert (
        _value(body, "tepat_http_requests_total", route="unmatched", method="GET", status="404")
        >= 3
    )
