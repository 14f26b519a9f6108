"""The allowance on every face: bulk is a permission, the daily quota answers 429 until midnight
WIB, families cost the members they disclose, and a suspended client is refused everywhere
until reinstated (audited)."""

from __future__ import annotations

import csv
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.main import create_app
from app.services import clients
from app.services.allowance import seconds_until_midnight_wib
from tests.support import MakeClient, auth

NDJSON = {"Content-Type": "application/x-ndjson"}
PERSON = "query($nik: String!) { person(nik: $nik) { nik } }"


@pytest.fixture(scope="module")
def households(published: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    with (published / "anggota.csv").open() as f:
        for r in csv.DictReader(f):
            out.setdefault(r["no_kk"], []).append(r["nik"])
    return out


@pytest.fixture(scope="module")
async def quick(settings: Settings, published: Path) -> AsyncIterator[FastAPI]:
    """An app whose leases last a millisecond: it learns of a suspension made elsewhere (by
    another process, or the CLI) at its very next lookup."""
    application = create_app(settings.model_copy(update={"rate_limit_lease_seconds": 0.001}))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def qhttp(quick: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=quick)
    async with httpx.AsyncClient(transport=transport, base_url="http://tepat.test") as client:
        yield client


def _problem(r: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, object] = r.json()
    assert body["code"] == code
    return body


async def test_bulk_needs_its_own_grant(
    http: httpx.AsyncClient, make_client: MakeClient, households: dict[str, list[str]]
) -> None:
    nik = next(iter(households.values()))[0]
    body = f'{{"nik": "{nik}"}}\n'.encode()
    plain = await make_client()
    r = await http.post("/v1/bulk/eligibility", content=body, headers={**auth(plain), **NDJSON})
    _problem(r, 403, "bulk_not_granted")
    assert nik not in r.text
    # The same client may look people up; only bulk is refused.
    ok = await http.post("/v1/people/lookup", json={"niks": [nik]}, headers=auth(plain))
    assert ok.status_code == 200
    granted = await make_client(bulk=True)
    r = await http.post("/v1/bulk/eligibility", content=body, headers={**auth(granted), **NDJSON})
    assert r.status_code == 200 and b'"summary"' in r.content


async def test_over_the_daily_quota_is_429_until_midnight_wib(
    http: httpx.AsyncClient, make_client: MakeClient, households: dict[str, list[str]]
) -> None:
    niks = [m for members in households.values() for m in members][:10]
    key = await make_client(daily_quota=5)
    assert (await http.post("/v1/people/lookup", json={"niks": niks[:3]}, headers=auth(key))).status_code == 200  # fmt: skip
    faces = [
        await http.post("/v1/people/lookup", json={"niks": niks[3:6]}, headers=auth(key)),
        await http.post("/v1/people/lookup", json={"niks": ["123"]}, headers=auth(key)),
        await http.post(
            "/v1/families/lookup", json={"no_kks": list(households)[:3]}, headers=auth(key)
        ),
    ]
    for r in faces[:1] + faces[2:]:
        body = _problem(r, 429, "quota_exceeded")
        assert abs(int(r.headers["retry-after"]) - seconds_until_midnight_wib()) <= 5
        assert "00:00 WIB" in str(body["detail"])
    assert faces[1].status_code == 422  # bad input is still bad input
    # GraphQL: refused in its own shape, same code.
    g = await http.post(
        "/graphql",
        json={
            "query": "query($n: [String!]!) { people(niks: $n) { nik } }",
            "variables": {"n": niks[3:9]},
        },
        headers=auth(key),
    )
    assert g.status_code == 429
    assert g.json()["errors"][0]["extensions"]["code"] == "quota_exceeded"
    # Two more fit (3 + 2 = 5): the quota counts NIKs, not requests.
    assert (await http.post("/v1/people/lookup", json={"niks": niks[3:5]}, headers=auth(key))).status_code == 200  # fmt: skip


async def test_a_family_costs_the_members_it_discloses(
    http: httpx.AsyncClient, make_client: MakeClient, households: dict[str, list[str]]
) -> None:
    no_kk, members = max(households.items(), key=lambda item: len(item[1]))
    assert len(members) >= 3
    others = [m for kk, ms in households.items() if kk != no_kk for m in ms][:2]
    key = await make_client(daily_quota=len(members) + 1)
    r = await http.post("/v1/families/lookup", json={"no_kks": [no_kk]}, headers=auth(key))
    assert r.status_code == 200
    assert {m["nik"] for m in r.json()["results"][0]["members"]} == set(members)
    # One token per family would leave len(members) NIKs; the members cost them all but one.
    r = await http.post("/v1/people/lookup", json={"niks": others}, headers=auth(key))
    _problem(r, 429, "quota_exceeded")
    r = await http.post("/v1/people/lookup", json={"niks": others[:1]}, headers=auth(key))
    assert r.status_code == 200

    # Without `membership` nothing is disclosed: a family costs one.
    narrow = await make_client(fields=["decision", "decile"], daily_quota=2)
    r = await http.post("/v1/families/lookup", json={"no_kks": [no_kk]}, headers=auth(narrow))
    assert r.status_code == 200 and "members" not in r.json()["results"][0]
    r = await http.post("/v1/people/lookup", json={"niks": others[:1]}, headers=auth(narrow))
    assert r.status_code == 200


async def _suspend_elsewhere(engine: AsyncEngine, key: str) -> str:
    """Suspend the key's client in the database, as another process would."""
    async with engine.begin() as conn:
        row = (
            await conn.execute(
                text(
                    "UPDATE api_clients SET suspended_at = now(), suspended_reason = 'test' "
                    "WHERE key_prefix = :p RETURNING id"
                ),
                {"p": key[: len("tepat_") + 6]},
            )
        ).one()
    return str(row[0])


async def test_a_suspended_client_is_refused_on_every_face_until_reinstated(
    qhttp: httpx.AsyncClient,
    quick: FastAPI,
    engine: AsyncEngine,
    make_client: MakeClient,
    households: dict[str, list[str]],
) -> None:
    nik = next(iter(households.values()))[0]
    no_kk = next(iter(households))
    key = await make_client(bulk=True)
    people = {"niks": [nik]}
    assert (await qhttp.post("/v1/people/lookup", json=people, headers=auth(key))).status_code == 200  # fmt: skip
    client_id = await _suspend_elsewhere(engine, key)

    # The key is cached as not suspended; the next lookup's lease learns it (leases last 1 ms
    # here) and from then on the authenticator refuses every face at once.
    answers = [
        await qhttp.post("/v1/people/lookup", json=people, headers=auth(key)),  # fast path
        await qhttp.post("/v1/people/lookup", json={**people, "explain": True}, headers=auth(key)),
        await qhttp.post("/v1/families/lookup", json={"no_kks": [no_kk]}, headers=auth(key)),
        await qhttp.post(
            "/v1/bulk/eligibility", content=f"{nik}\n".encode(), headers={**auth(key), **NDJSON}
        ),
    ]
    for r in answers:
        _problem(r, 403, "client_suspended")
        assert nik not in r.text
    for document in (PERSON, PERSON + " "):  # the compiled path, then Strawberry's
        g = await qhttp.post(
            "/graphql", json={"query": document, "variables": {"nik": nik}}, headers=auth(key)
        )
        assert g.status_code == 403, g.text
        assert g.json()["errors"][0]["extensions"]["code"] == "client_suspended"
        assert nik not in g.text

    state = quick.state.tepat
    info = await clients.reinstate_client(engine, state.audit, client_id, "test-reinstate")
    assert info.suspended_at is None
    state.authenticator.forget()  # as the key cache's TTL would, 30 s later
    r = await qhttp.post("/v1/people/lookup", json=people, headers=auth(key))
    assert r.status_code == 200, r.text
    async with engine.connect() as conn:
        operations = (
            await conn.execute(
                text("SELECT operation FROM audit_log WHERE client_id = :c ORDER BY seq"),
                {"c": client_id},
            )
        ).scalars()
        assert "client.reinstated" in list(operations)
