"""The fast people-lookup path (app.api.fast) answers exactly as the route does, or hands over.

Each request goes to two apps on the same database: the default one (fast path on) and one with
`fast_lookup` off (every request through the FastAPI route). Status, content type and body must
match, apart from the per-request ids.
"""

from __future__ import annotations

import csv
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from app.api.fast import parse
from app.config import Settings
from app.http.fast import FastStats
from app.main import create_app
from tests.support import RELEASE, MakeClient, auth

URL = "/v1/people/lookup"
ABSENT = "3201014501990007"


@pytest.fixture
async def route_only(settings: Settings, published: Path) -> AsyncIterator[httpx.AsyncClient]:
    application = create_app(settings.model_copy(update={"fast_lookup": False}))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://tepat.test") as c:
            yield c


@pytest.fixture(scope="module")
def niks(published: Path) -> list[str]:
    with (published / "anggota.csv").open() as f:
        return [r["nik"] for _, r in zip(range(60), csv.DictReader(f), strict=False)]


# Headers whose values are the same on both paths (RateLimit's figures are each app's own).
_SAME_VALUES = ("content-type", "cache-control", "ratelimit-policy", "www-authenticate")


def headers_of(response: httpx.Response) -> tuple[list[str], dict[str, str]]:
    """The header names an answer carries, and the values that must agree across paths."""
    names = sorted(set(response.headers) - {"content-length"})
    return names, {k: response.headers[k] for k in _SAME_VALUES if k in response.headers}


def _comparable(response: httpx.Response) -> tuple[int, str, Any]:
    body = response.json()
    if isinstance(body, dict):
        body.pop("request_id", None)
        meta = body.get("meta")
        if isinstance(meta, dict):
            meta.pop("request_id", None)
            meta.pop("audit_id", None)
    return response.status_code, response.headers.get("content-type", ""), body


def _stats(app: FastAPI) -> FastStats:
    stats: FastStats = app.state.fast_lookup
    return stats


async def _both(
    app: FastAPI,
    http: httpx.AsyncClient,
    route_only: httpx.AsyncClient,
    content: bytes,
    headers: dict[str, str],
) -> tuple[tuple[int, str, Any], str]:
    before = FastStats(_stats(app).served, _stats(app).handed_over)
    fast = await http.post(URL, content=content, headers=headers)
    slow = await route_only.post(URL, content=content, headers=headers)
    assert _comparable(fast) == _comparable(slow)
    assert headers_of(fast) == headers_of(slow)
    took = "fast" if _stats(app).served == before.served + 1 else "route"
    assert (_stats(app).served + _stats(app).handed_over) == (
        before.served + before.handed_over + 1
    )
    return _comparable(fast), took


JSON = {"Content-Type": "application/json"}


async def test_valid_lookups_take_the_fast_path_and_answer_as_the_route(
    app: FastAPI,
    http: httpx.AsyncClient,
    route_only: httpx.AsyncClient,
    full_key: str,
    niks: list[str],
) -> None:
    bodies: list[dict[str, Any]] = [
        {"niks": niks[:1]},
        {"niks": [*niks, ABSENT], "snapshot": RELEASE},
        {"niks": niks[:3], "programs": ["PBI_JK", "PKH"]},
        {"niks": niks[:5], "explain": True},
        {"niks": niks[:2], "rule_set": "kepmensos-79-2025", "explain": False},
        {"niks": [ABSENT]},
    ]
    for body in bodies:
        (status, ctype, answer), took = await _both(
            app, http, route_only, orjson.dumps(body), {**auth(full_key), **JSON}
        )
        assert (status, ctype, took) == (200, "application/json", "fast"), body
        assert [r["nik"] for r in answer["results"]] == body["niks"]
        assert answer["meta"]["snapshot"]["id"] == RELEASE


async def test_refusals_on_the_fast_path_are_the_route_refusals(
    app: FastAPI,
    http: httpx.AsyncClient,
    route_only: httpx.AsyncClient,
    full_key: str,
    make_client: MakeClient,
    niks: list[str],
) -> None:
    narrow = await make_client(programs=["PBI_JK"], fields=["decision"])
    body = orjson.dumps({"niks": niks[:2]})
    cases: list[tuple[bytes, dict[str, str], int]] = [
        (body, {"Authorization": "Bearer tepat_nonsense"}, 401),
        (body, {}, 401),
        (body, auth(full_key, purpose=None), 403),
        (body, auth(full_key, purpose="marketing"), 403),
        (orjson.dumps({"niks": niks[:1], "programs": ["PKH"]}), auth(narrow), 403),
        (body, auth(narrow), 200),  # only PBI JK decisions, no decile, no family
        (orjson.dumps({"niks": niks[:1], "snapshot": "2020-01-01"}), auth(full_key), 404),
        (orjson.dumps({"niks": niks[:1], "rule_set": "no-such-rules"}), auth(full_key), 404),
    ]
    for content, headers, status in cases:
        (got, ctype, answer), took = await _both(
            app, http, route_only, content, {**headers, **JSON}
        )
        assert (got, took) == (status, "fast"), (headers, answer)
        if status != 200:
            assert ctype == "application/problem+json"
            assert niks[0] not in orjson.dumps(answer).decode()
    answer = (await http.post(URL, content=body, headers={**auth(narrow), **JSON})).json()
    assert [d["program"] for d in answer["results"][0]["decisions"]] == ["PBI_JK"]
    assert "decile" not in answer["results"][0] and "family" not in answer["results"][0]


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b'{"niks": ["3201014501900000"]}', "application/json"),  # serial 0000
        (b'{"niks": ["320101450190001"]}', "application/json"),  # 15 digits
        (b'{"niks": [3201014501900001]}', "application/json"),  # a number
        (b'{"niks": []}', "application/json"),
        (b'{"niks": ["3201014501900001"], "extra": 1}', "application/json"),
        (b'{"niks": ["3201014501900001"], "explain": null}', "application/json"),
        (b'{"niks": ["3201014501900001"], "programs": []}', "application/json"),
        (b'{"niks": ["3201014501900001"], "programs": ["KIP"]}', "application/json"),
        (b'{"niks": ["3201014501900001"], "snapshot": "latest"}', "application/json"),
        (b'{"niks": ["3201014501900001"]', "application/json"),  # truncated JSON
        (b'["3201014501900001"]', "application/json"),
        (b'{"niks": ["3201014501900001"]}', "text/plain"),
        (b"", "application/json"),
    ],
)
async def test_what_the_fast_path_cannot_take_whole_goes_to_the_route(
    app: FastAPI,
    http: httpx.AsyncClient,
    route_only: httpx.AsyncClient,
    full_key: str,
    content: bytes,
    content_type: str,
) -> None:
    assert parse(content) is None or content_type != "application/json"
    (status, ctype, _), took = await _both(
        app, http, route_only, content, {**auth(full_key), "Content-Type": content_type}
    )
    assert took == "route"
    assert 400 <= status < 500 and ctype == "application/problem+json"


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (b'{"niks": ["3201014501900001"], "explain": "yes"}', "explain"),
        (b'{"niks": ["3201014501900001"], "explain": 0}', "explain"),
        (b'{"niks": ["3201014501900001"], "explain": 1}', "explain"),
        (b'{"niks": ["3201014501900001"], "snapshot": 20260123}', "snapshot"),
    ],
)
async def test_lax_values_are_refused_naming_the_field_not_coerced(
    app: FastAPI,
    http: httpx.AsyncClient,
    route_only: httpx.AsyncClient,
    full_key: str,
    content: bytes,
    field: str,
) -> None:
    # The request model is strict: the schema says boolean, so 0 and "yes" are not false/true.
    (status, ctype, body), took = await _both(
        app, http, route_only, content, {**auth(full_key), **JSON}
    )
    assert (status, took, ctype) == (422, "route", "application/problem+json")
    assert body["code"] == "validation_failed" and body["field"] == field


def test_parse_accepts_exactly_the_plain_shape() -> None:
    plain = parse(b'{"niks": ["3201014501900001"], "programs": ["PKH"], "explain": true}')
    assert plain is not None
    assert (plain.niks, plain.programs, plain.explain) == (["3201014501900001"], ["PKH"], True)
    assert parse(b'{"niks": ["3201014501900001"], "snapshot": "2026-01-23-r2"}') is not None
    wide = {"niks": ["3201014501900001"], "snapshot": "２０２６-01-23"}  # full-width digits
    assert parse(orjson.dumps(wide)) is None
    assert parse(orjson.dumps({"niks": ["3201014501900001"] * 1001})) is None


async def test_a_lower_configured_batch_limit_holds_on_both_rest_paths(
    settings: Settings, published: Path, full_key: str, niks: list[str]
) -> None:
    """TEPAT_MAX_BATCH (at most the published MAX_BATCH) limits REST as it limits GraphQL."""
    application = create_app(settings.model_copy(update={"max_batch": 2}))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://tepat.test") as c:
            headers = {**auth(full_key), **JSON}
            ok = await c.post(URL, content=orjson.dumps({"niks": niks[:2]}), headers=headers)
            assert ok.status_code == 200
            over = await c.post(URL, content=orjson.dumps({"niks": niks[:3]}), headers=headers)
            assert over.status_code == 422
            assert over.json()["field"] == "niks"
            families = await c.post(
                "/v1/families/lookup",
                content=orjson.dumps({"no_kks": ["3201010101200001"] * 3}),
                headers=headers,
            )
            assert families.status_code == 422
            assert families.json()["field"] == "no_kks"
    assert parse(orjson.dumps({"niks": niks[:3]}), 2) is None
    assert parse(orjson.dumps({"niks": niks[:2]}), 2) is not None


def test_the_batch_setting_cannot_exceed_the_published_limit() -> None:
    from pydantic import ValidationError

    from app.config import MAX_BATCH

    assert Settings(_env_file=None).max_batch == MAX_BATCH
    with pytest.raises(ValidationError):
        Settings(_env_file=None, max_batch=MAX_BATCH + 1)
