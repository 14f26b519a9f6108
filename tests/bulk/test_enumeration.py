"""An enumeration-shaped bulk job (made-up, well-formed NIKs, almost none found) is ended after
its first 10,000 lines and its client suspended, audited and shown by `tepat client show`; an
ordinary job (>= 90 % found) runs to its summary. At the default scale of the settings."""

from __future__ import annotations

import asyncio
import json

import httpx
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.bulk.conftest import absent_nik, ndjson, parse, post_bulk
from tests.cli import tepat
from tests.support import MakeClient, auth

LINES = 12_000  # past the default TEPAT_ENUMERATION_MIN_LINES (10,000)


async def _client_id(engine: AsyncEngine, key: str) -> str:
    async with engine.connect() as conn:
        return str(
            (
                await conn.execute(
                    text("SELECT id FROM api_clients WHERE key_prefix = :p"),
                    {"p": key[: len("tepat_") + 6]},
                )
            ).scalar_one()
        )


async def test_an_enumeration_is_ended_and_its_client_suspended(
    http: httpx.AsyncClient,
    app: FastAPI,
    engine: AsyncEngine,
    make_client: MakeClient,
    release_niks: list[str],
) -> None:
    key = await make_client(bulk=True)
    client_id = await _client_id(engine, key)
    assert app.state.tepat.settings.enumeration_min_lines == 10_000  # the default scale
    # One district, every birth date, low serials: well-formed, and (nearly) none of them exist.
    made_up = [absent_nik(i) for i in range(LINES - 3)] + release_niks[:3]
    r = await post_bulk(http, key, ndjson(made_up))
    assert r.status_code == 200
    lines = parse(r.content)
    last = lines[-1]
    assert last["error"]["code"] == "enumeration_suspected"
    assert not any("summary" in line for line in lines)
    assert len(lines) - 1 < LINES  # the rest of the job was never answered

    async with engine.connect() as conn:
        suspended = (
            await conn.execute(
                text("SELECT suspended_at, suspended_reason FROM api_clients WHERE id = :c"),
                {"c": client_id},
            )
        ).one()
        operations = list(
            (
                await conn.execute(
                    text("SELECT operation FROM audit_log WHERE client_id = :c ORDER BY seq"),
                    {"c": client_id},
                )
            ).scalars()
        )
    assert suspended[0] is not None and "enumeration_suspected" in suspended[1]
    assert operations[-1] == "client.suspended"

    # From now on every request of the client is refused, lookups included.
    refused = await http.post(
        "/v1/people/lookup", json={"niks": release_niks[:1]}, headers=auth(key)
    )
    assert refused.status_code == 403 and refused.json()["code"] == "client_suspended"
    again = await post_bulk(http, key, ndjson(release_niks[:5]))
    assert again.status_code == 403 and again.json()["code"] == "client_suspended"

    shown = await asyncio.to_thread(tepat, "client", "show", client_id, "--json")
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert doc["client"]["bulk"] is True
    assert doc["client"]["suspended_at"] and "enumeration" in doc["client"]["suspended_reason"]
    assert [e["operation"] for e in doc["events"]] == ["client.suspended"]
    assert doc["used_today"] >= 10_000
    human = await asyncio.to_thread(tepat, "client", "show", client_id)
    assert "suspended since" in human.stdout and "client.suspended" in human.stdout

    reinstated = await asyncio.to_thread(tepat, "client", "reinstate", client_id)
    assert reinstated.returncode == 0, reinstated.stderr
    app.state.tepat.authenticator.forget()  # as the key cache's TTL would
    # and as this process's lease of the client's allowance, which learnt the suspension, ends
    await asyncio.sleep(app.state.allowance.lease_seconds)
    ok = await http.post("/v1/people/lookup", json={"niks": release_niks[:1]}, headers=auth(key))
    assert ok.status_code == 200, ok.text
    again_shown = await asyncio.to_thread(tepat, "client", "show", client_id, "--json")
    doc = json.loads(again_shown.stdout)
    assert doc["client"]["suspended_at"] is None
    assert [e["operation"] for e in doc["events"]] == ["client.suspended", "client.reinstated"]


async def test_an_ordinary_job_is_not_suspected(
    http: httpx.AsyncClient, engine: AsyncEngine, make_client: MakeClient, release_niks: list[str]
) -> None:
    key = await make_client(bulk=True)
    # 95 % found: a real list of beneficiaries, with some who left the registry.
    asked = [
        absent_nik(i) if i % 20 == 0 else release_niks[i % len(release_niks)] for i in range(LINES)
    ]
    r = await post_bulk(http, key, ndjson(asked))
    assert r.status_code == 200
    summary = parse(r.content)[-1]["summary"]
    assert summary["lines"] == LINES and summary["found"] >= 0.9 * LINES
    async with engine.connect() as conn:
        suspended = (
            await conn.execute(
                text("SELECT suspended_at FROM api_clients WHERE id = :c"),
                {"c": await _client_id(engine, key)},
            )
        ).scalar_one()
    assert suspended is None
    ok = await http.post("/v1/people/lookup", json={"niks": release_niks[:1]}, headers=auth(key))
    assert ok.status_code == 200
