"""What the contract promises of every answer, on the routed and the fast path alike: 415 for a
body that is not JSON, `WWW-Authenticate` on 401, `Retry-After` and the detail agreeing on 429,
and the IETF RateLimit headers on data answers."""

from __future__ import annotations

import csv
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from app.config import Settings
from app.main import create_app
from tests.support import MakeClient, auth

PEOPLE = "/v1/people/lookup"
# RFC 8941 lists of items: "name";param=value, ...
POLICY = re.compile(r'^"rate";q=(\d+);qu="niks";w=(\d+), "daily";q=(\d+);qu="niks";w=86400$')
LIMITS = re.compile(r'^"rate";r=(\d+);t=(\d+), "daily";r=(\d+);t=(\d+)$')


@pytest.fixture(scope="module")
def niks(published: Path) -> list[str]:
    with (published / "anggota.csv").open() as f:
        return [r["nik"] for _, r in zip(range(50), csv.DictReader(f), strict=False)]


@pytest.fixture(scope="module")
async def tight(settings: Settings, published: Path) -> AsyncIterator[FastAPI]:
    """A small bucket (100 NIKs, refilled at 1 a second), so a 429 is one request away."""
    application = create_app(
        settings.model_copy(
            update={"rate_limit_niks_per_second": 1, "rate_limit_burst": 100, "fast_lookup": True}
        )
    )
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def thttp(tight: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=tight)
    async with httpx.AsyncClient(transport=transport, base_url="http://tepat.test") as client:
        yield client


@pytest.mark.parametrize(
    ("path", "content_type", "content"),
    [
        (PEOPLE, "application/x-www-form-urlencoded", b'{"niks": ["3201014501900001"]}'),
        (PEOPLE, "text/plain", b'{"niks": ["3201014501900001"]}'),
        ("/v1/families/lookup", "text/plain; charset=utf-8", b'{"no_kks": ["3201010101200001"]}'),
        ("/v1/audit/proof", "multipart/form-data; boundary=x", b"--x--"),
    ],
)
async def test_a_body_that_is_not_json_is_415_saying_what_to_send(
    http: httpx.AsyncClient, full_key: str, path: str, content_type: str, content: bytes
) -> None:
    r = await http.post(
        path, content=content, headers={**auth(full_key), "Content-Type": content_type}
    )
    assert r.status_code == 415, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["code"] == "unsupported_media_type" and body["field"] == "Content-Type"
    assert "application/json" in body["detail"]
    assert content_type.split(";")[0] in body["detail"]
    assert "b'" not in body["detail"]


async def test_a_body_without_content_type_is_read_as_json(
    http: httpx.AsyncClient, full_key: str, niks: list[str]
) -> None:
    # httpx sends no Content-Type for raw bytes: both paths read the body as JSON.
    r = await http.post(
        PEOPLE, content=b'{"niks": ["%s"]}' % niks[0].encode(), headers=auth(full_key)
    )
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("authorization", "challenge"),
    [
        (None, 'Bearer realm="tepat"'),
        ("Basic dXNlcjpwYXNz", 'Bearer realm="tepat"'),
        ("Bearer tepat_notakeyatall", 'Bearer realm="tepat", error="invalid_token"'),
        ("Bearer tepat_" + "A" * 40, 'Bearer realm="tepat", error="invalid_token"'),
    ],
)
@pytest.mark.parametrize("path", [PEOPLE, "/v1/families/lookup", "/v1/audit/proof"])
async def test_every_401_carries_a_bearer_challenge(
    http: httpx.AsyncClient, authorization: str | None, challenge: str, path: str
) -> None:
    headers = {"X-Purpose": "pbi-verification"}
    if authorization is not None:
        headers["Authorization"] = authorization
    body = {"niks": ["3201014501900001"]} if "people" in path else {}
    r = await http.post(path, json=body, headers=headers)
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == challenge


async def test_graphql_401_carries_the_challenge_too(http: httpx.AsyncClient) -> None:
    query = {"query": '{ person(nik: "3201014501900001") { nik } }'}
    r = await http.post("/graphql", json=query)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Bearer realm="tepat"'
    bad = await http.post("/graphql", json=query, headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401
    assert bad.headers["www-authenticate"] == 'Bearer realm="tepat", error="invalid_token"'


async def test_data_answers_carry_the_ratelimit_headers(
    http: httpx.AsyncClient, make_client: MakeClient, niks: list[str]
) -> None:
    key = await make_client(daily_quota=1000)
    first = await http.post(PEOPLE, json={"niks": niks[:5]}, headers=auth(key))
    assert first.status_code == 200
    policy = POLICY.match(first.headers["ratelimit-policy"])
    assert policy is not None, first.headers["ratelimit-policy"]
    assert int(policy.group(3)) == 1000
    left = LIMITS.match(first.headers["ratelimit"])
    assert left is not None, first.headers["ratelimit"]
    assert int(left.group(3)) == 1000 - 5  # the daily quota less what was spent
    assert 1 <= int(left.group(4)) <= 86400
    second = await http.post(PEOPLE, json={"niks": niks[:7]}, headers=auth(key))
    after = LIMITS.match(second.headers["ratelimit"])
    assert after is not None and int(after.group(3)) == 1000 - 12
    # A refusal of the purpose still names the client's limits; metadata carries none.
    refused = await http.post(PEOPLE, json={"niks": niks[:1]}, headers=auth(key, "nope"))
    assert refused.status_code == 403 and "ratelimit-policy" in refused.headers
    assert "ratelimit" not in (await http.get("/v1/snapshots")).headers
    anonymous = await http.post(PEOPLE, json={"niks": niks[:1]})
    assert "ratelimit" not in anonymous.headers


async def test_a_429_says_in_its_detail_what_retry_after_says(
    thttp: httpx.AsyncClient, make_client: MakeClient, niks: list[str]
) -> None:
    key = await make_client()
    ok = await thttp.post(PEOPLE, json={"niks": niks[:50]}, headers=auth(key))
    assert ok.status_code == 200
    left = LIMITS.match(ok.headers["ratelimit"])
    assert left is not None and 0 <= int(left.group(1)) < 100  # the bucket less what was spent
    refused = await thttp.post(PEOPLE, json={"niks": niks[:50] * 2}, headers=auth(key))
    assert refused.status_code == 429, refused.text
    body = refused.json()
    retry = refused.headers["retry-after"]
    assert retry.isdigit() and int(retry) >= 1
    assert body["retry_after"] == int(retry)
    assert f"fits in {retry} s" in body["detail"]
    assert refused.headers["ratelimit"] == f'"rate";r=0;t={retry}'
    assert POLICY.match(refused.headers["ratelimit-policy"])
