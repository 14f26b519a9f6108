"""The GraphQL transport: nothing costs much before the key, bodies are capped, bad JSON and
bad requests are problem+json with short masked echoes, documents are cached by hash within
a byte budget, request ids are ours, answers are not stored by caches."""

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
from app.graphql import documents
from app.graphql.documents import DocumentCache
from app.graphql.permissions import REQUIREMENTS
from app.http.request_ids import is_safe
from app.main import create_app
from tests.graphql.conftest import gql
from tests.support import auth

JSON = {"Content-Type": "application/json"}
PERSON = "query Person($nik: String!) { person(nik: $nik) { nik found decile } }"
NIK = "3201014501900001"


@pytest.fixture(scope="module")
def nik(published: Path) -> str:
    return (published / "anggota.csv").read_text().splitlines()[1].split(",")[0]


def _problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text[:500]
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert body["code"] == code and body["status"] == status
    assert body["request_id"] == r.headers["x-request-id"]
    return body


def _parses() -> int:
    return documents.PARSED.computed + documents.VALIDATED.computed


class _Asgi:
    """One request straight into the app, counting how often the app asked for body."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def post(
        self, headers: dict[str, str], chunks: list[bytes]
    ) -> tuple[int, dict[str, str], bytes, int]:
        pending = list(chunks)
        asked = 0
        status = 0
        out_headers: dict[str, str] = {}
        body = b""

        async def receive() -> dict[str, Any]:
            nonlocal asked
            asked += 1
            if not pending:
                return {"type": "http.disconnect"}
            chunk = pending.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status, body
            if message["type"] == "http.response.start":
                status = message["status"]
                out_headers.update(
                    (k.decode().lower(), v.decode()) for k, v in message.get("headers", [])
                )
            elif message["type"] == "http.response.body":
                body += message.get("body", b"")

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/graphql",
            "raw_path": b"/graphql",
            "root_path": "",
            "query_string": b"",
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
            "client": ("127.0.0.1", 1),
            "server": ("tepat.test", 80),
            "app": self.app,
        }
        await self.app(scope, receive, send)  # type: ignore[arg-type]
        return status, out_headers, body, asked


def _big_document(size: int, salt: str = "") -> bytes:
    query = "{ programs { id } }\n# " + salt + "x" * size
    return orjson.dumps({"query": query})


# --- before the key -------------------------------------------------------------------------


async def test_a_big_anonymous_body_is_401_unread_and_unparsed(app: FastAPI) -> None:
    body = _big_document(990_000)
    before = _parses(), len(REQUIREMENTS._cache)
    status, _, answer, asked = await _Asgi(app).post(
        {**JSON, "Content-Length": str(len(body))}, [body]
    )
    assert status == 401
    assert orjson.loads(answer)["errors"][0]["extensions"]["code"] == "unauthenticated"
    assert asked == 0  # refused from the declared length: not a byte read
    assert (_parses(), len(REQUIREMENTS._cache)) == before


async def test_a_chunked_anonymous_body_is_cut_off_at_the_cap(app: FastAPI) -> None:
    chunks = [b"x" * 4096] * 200  # 800 KB, no Content-Length
    before = _parses()
    status, _, _, asked = await _Asgi(app).post(dict(JSON), chunks)
    assert status == 401
    assert asked <= 3  # 8,192 bytes at most, then refused
    assert _parses() == before


async def test_a_bad_key_is_refused_before_the_body(app: FastAPI) -> None:
    body = _big_document(50_000)
    for headers in (
        {"Authorization": "Bearer tepat_nonsense", "X-Purpose": "pbi-verification"},
        {"Authorization": "Basic abc"},
    ):
        status, _, answer, asked = await _Asgi(app).post({**headers, **JSON}, [body])
        assert status == 401
        assert orjson.loads(answer)["errors"][0]["extensions"]["code"] == "unauthenticated"
        assert asked == 0


async def test_a_good_key_without_purpose_is_refused_before_the_body(
    app: FastAPI, full_key: str
) -> None:
    status, _, answer, asked = await _Asgi(app).post(
        {**auth(full_key, purpose=None), **JSON}, [_big_document(10)]
    )
    assert status == 403
    assert orjson.loads(answer)["errors"][0]["extensions"]["code"] == "purpose_required"
    assert asked == 0


async def test_an_authenticated_body_over_the_cap_is_413(
    app: FastAPI, http: httpx.AsyncClient, full_key: str
) -> None:
    body = _big_document(200_000)
    before = _parses()
    r = await http.post("/graphql", content=body, headers={**auth(full_key), **JSON})
    problem = _problem(r, 413, "payload_too_large")
    assert "65536" in problem["detail"]
    status, headers, _, _ = await _Asgi(app).post({**auth(full_key), **JSON}, [b"x" * 8192] * 20)
    assert status == 413 and headers["content-type"] == "application/problem+json"
    assert _parses() == before


async def test_small_anonymous_documents_still_run(http: httpx.AsyncClient) -> None:
    r = await gql(http, "{ programs { id } }")
    assert r.status_code == 200
    assert r.json()["data"]["programs"]


async def test_a_wrong_content_type_is_415(http: httpx.AsyncClient, full_key: str) -> None:
    r = await http.post(
        "/graphql",
        content=b'{"query": "{ programs { id } }"}',
        headers={**auth(full_key), "Content-Type": "text/plain"},
    )
    _problem(r, 415, "unsupported_media_type")


# --- bad JSON, bad requests -----------------------------------------------------------------


@pytest.fixture(scope="module")
async def roomy(settings: Settings, published: Path) -> AsyncIterator[httpx.AsyncClient]:
    """An app whose GraphQL caps let 400,000 levels of nesting through to the parser."""
    application = create_app(
        settings.model_copy(
            update={"graphql_max_body_bytes": 999_000, "graphql_anonymous_max_body_bytes": 999_000}
        )
    )
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://tepat.test") as c:
            yield c


@pytest.mark.parametrize("levels", [2_000, 400_000])
@pytest.mark.parametrize("keyed", [True, False])
async def test_too_deep_json_is_400(
    roomy: httpx.AsyncClient, full_key: str, levels: int, keyed: bool
) -> None:
    body = b'{"query": ' + b"[" * levels + b"]" * levels + b"}"
    headers = {**(auth(full_key) if keyed else {}), **JSON}
    r = await roomy.post("/graphql", content=body, headers=headers)
    _problem(r, 400, "malformed_json")


async def test_too_deep_json_within_the_default_cap_is_400(
    http: httpx.AsyncClient, full_key: str
) -> None:
    body = b"[" * 30_000 + b"]" * 30_000
    r = await http.post("/graphql", content=body, headers={**auth(full_key), **JSON})
    _problem(r, 400, "malformed_json")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "malformed_json"),
        (b'{"query": "{ programs { id } }"', "malformed_json"),
        (b'[{"query": "{ programs { id } }"}, {"query": "{ programs { id } }"}]',
         "graphql_request_invalid"),
        (b'"{ programs { id } }"', "graphql_request_invalid"),
        (b"17", "graphql_request_invalid"),
        (b'{"query": 17}', "graphql_request_invalid"),
        (b'{"query": "{ programs { id } }", "variables": [1]}', "graphql_request_invalid"),
        (b'{"variables": {}}', "graphql_request_invalid"),
    ],
)  # fmt: skip
async def test_transport_errors_are_problems(
    http: httpx.AsyncClient, full_key: str, body: bytes, code: str
) -> None:
    r = await http.post("/graphql", content=body, headers={**auth(full_key), **JSON})
    _problem(r, 400, code)


@pytest.mark.parametrize("name", [NIK, "Op" + NIK * 2000])
async def test_an_unknown_operation_name_is_echoed_masked_and_short(
    http: httpx.AsyncClient, full_key: str, name: str
) -> None:
    r = await http.post(
        "/graphql",
        json={"query": PERSON, "variables": {"nik": NIK}, "operationName": name},
        headers=auth(full_key),
    )
    problem = _problem(r, 400, "graphql_request_invalid")
    assert NIK not in r.text and "01450190" not in r.text
    assert "3201****" in problem["detail"] or "…" in problem["detail"]
    assert len(r.content) < 1_000


async def test_a_query_by_get_is_405(http: httpx.AsyncClient) -> None:
    r = await http.get("/graphql", params={"query": "{ programs { id } }"})
    _problem(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "POST"


async def test_a_huge_bad_variable_is_echoed_short(http: httpx.AsyncClient, full_key: str) -> None:
    bad = "3201" + "9" * 50_000
    r = await gql(http, PERSON, {"nik": bad}, auth(full_key))
    assert r.status_code in (400, 422)
    assert len(r.content) < 2_000
    assert "99999999" not in r.text
    r = await gql(http, PERSON, {"nik": 3201014501900001 * 10**5}, auth(full_key))
    assert r.status_code in (400, 422) and "01450190" not in r.text


# --- caches ---------------------------------------------------------------------------------


async def test_documents_are_cached_by_hash_and_big_ones_not_at_all(
    http: httpx.AsyncClient, full_key: str
) -> None:
    headers = auth(full_key)
    small = "{ programs { id } } # cached"
    assert (await gql(http, small, headers=headers)).status_code == 200
    before = documents.PARSED.computed, len(documents.PARSED)
    assert (await gql(http, small, headers=headers)).status_code == 200
    assert (documents.PARSED.computed, len(documents.PARSED)) == before  # a hit
    held = documents.PARSED.size
    for salt in "abcde":
        big = "{ programs { id } }\n# " + salt + "x" * 20_000
        assert (await gql(http, big, headers=headers)).status_code == 200
    assert documents.PARSED.computed == before[0] + 5  # parsed each time...
    assert len(documents.PARSED) == before[1] and documents.PARSED.size == held  # ...kept never


def test_a_document_cache_holds_its_byte_budget() -> None:
    cache: DocumentCache[int] = DocumentCache(budget=200_000)
    for i in range(1_000):
        query = f"{{ programs {{ id }} }} # {i:04d}" + "x" * 1_000
        assert cache.get(query, None, lambda i=i: i) == i  # type: ignore[misc]
        assert cache.size <= 200_000
    assert 0 < len(cache) < 1_000
    assert cache.get(query, None, lambda: -1) == 999  # the newest is still there
    assert cache.get(query, "other", lambda: -1) == -1  # keyed by what else it depends on


# --- request ids and caching headers ---------------------------------------------------------


FRAGMENT = (
    "query Person($nik: String!) { person(nik: $nik) { ...P } } "
    "fragment P on Person { nik found decile }"
)


@pytest.mark.parametrize(("query", "compiled"), [(PERSON, 1), (FRAGMENT, 0)])
async def test_request_ids_are_ours_and_answers_not_stored(
    app: FastAPI,
    http: httpx.AsyncClient,
    full_key: str,
    nik: str,
    engine: AsyncEngine,
    query: str,
    compiled: int,
) -> None:
    served = app.state.fast_graphql.served
    r = await gql(http, query, {"nik": nik}, {**auth(full_key), "X-Request-ID": f"rq{nik}"})
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    rid = r.headers["x-request-id"]
    assert nik not in rid and is_safe(rid)
    meta = r.json()["extensions"]["meta"]
    assert meta["request_id"] == rid
    async with engine.connect() as conn:
        stored = (
            await conn.execute(
                text("SELECT request_id FROM audit_log WHERE id = :id"), {"id": meta["audit_id"]}
            )
        ).scalar_one()
    assert stored == rid
    # The first document is the compiled path's, the second Strawberry's: both are covered.
    assert app.state.fast_graphql.served - served == compiled


async def test_errors_are_not_stored_either(http: httpx.AsyncClient) -> None:
    r = await http.post("/graphql", content=b"{", headers=JSON)
    assert r.status_code == 400 and r.headers["cache-control"] == "no-store"
