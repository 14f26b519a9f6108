"""REST transport hardening: bad JSON is a 400, echoes are short, request ids are ours,
personal answers are not stored by caches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.http import request_ids
from app.http.request_ids import is_safe
from app.identifiers import echo
from tests.support import auth

NIK = "3201014501900001"
DEEP = b"[" * 400_000 + b"]" * 400_000


def _problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text[:500]
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert body["code"] == code
    return body


def _first_nik(published: Path) -> str:
    return (published / "anggota.csv").read_text().splitlines()[1].split(",")[0]


@pytest.mark.parametrize(
    "body",
    [
        DEEP,
        b'{"niks": ' + b"[" * 400_000 + b"]" * 400_000 + b"}",
        b'{"niks": ["' + NIK.encode() + b'"',
        b'{"niks": [1e999999]}',
        b"\xff\xfe",
    ],
)
@pytest.mark.parametrize("path", ["/v1/people/lookup", "/v1/families/lookup"])
async def test_malformed_or_too_deep_json_is_400(
    http: httpx.AsyncClient, full_key: str, path: str, body: bytes
) -> None:
    r = await http.post(
        path, content=body, headers={**auth(full_key), "Content-Type": "application/json"}
    )
    problem = _problem(r, 400, "malformed_json")
    assert problem["type"].endswith("/malformed-json")
    assert problem["field"] == "body"
    assert problem["errors"][0]["message"].startswith("not valid JSON")
    assert NIK not in r.text


async def test_too_deep_json_without_a_key_is_400_too(http: httpx.AsyncClient) -> None:
    r = await http.post(
        "/v1/people/lookup", content=DEEP, headers={"Content-Type": "application/json"}
    )
    # The body is parsed before the key is looked at (cheaply: orjson stops at 1,024 levels).
    _problem(r, 400, "malformed_json")


async def test_a_huge_bad_identifier_is_echoed_short_and_masked(
    http: httpx.AsyncClient, full_key: str
) -> None:
    bad = "3201" + "9" * 900_000
    r = await http.post("/v1/people/lookup", json={"niks": [bad]}, headers=auth(full_key))
    problem = _problem(r, 422, "validation_failed")
    assert len(r.content) < 2_000
    value = problem["errors"][0]["value"]
    assert value == echo(bad, identifier=True)
    assert value.endswith("…") and len(value) <= 33
    assert "99999999" not in r.text


async def test_a_huge_bad_field_value_is_echoed_short(
    http: httpx.AsyncClient, full_key: str
) -> None:
    r = await http.post(
        "/v1/people/lookup",
        json={"niks": [NIK], "snapshot": "x" * 100_000 + NIK},
        headers=auth(full_key),
    )
    _problem(r, 422, "validation_failed")
    assert len(r.content) < 2_000
    assert NIK not in r.text


def test_echo_truncates_and_masks() -> None:
    assert echo("short") == "short"
    assert echo("a" * 40) == "a" * 32 + "…"
    assert echo(f"id {NIK} x") == "id 3201********0001 x"
    assert echo(NIK[:12] + "-") == "3201****0190-"  # a piece of one is masked too
    assert echo("3201-0145-0190-0001", identifier=True).count("*") == 11
    assert NIK not in echo(NIK * 3)


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("abcdef12", True),
        ("trace-2026.12.04_x", True),
        ("a" * 64, True),
        ("short", False),  # fewer than 8
        ("a" * 65, False),
        ("has space", False),
        ("ünïcode-id", False),
        (NIK, False),
        ("req-" + NIK + "-1", False),
        ("req-320101450190000-1", True),  # 15 digits: not an identifier
    ],
)
def test_request_id_shape(given: str, kept: bool) -> None:
    assert is_safe(given) is kept


def test_our_own_ids_are_safe_whatever_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(request_ids, "_PREFIX", "222422")  # random hex can be all digits
    ids = {request_ids.new_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(is_safe(rid) for rid in ids)


@pytest.mark.parametrize("path", ["fast", "routed"])
async def test_a_nik_as_request_id_is_replaced_everywhere(
    http: httpx.AsyncClient,
    full_key: str,
    engine: AsyncEngine,
    published: Path,
    path: str,
) -> None:
    nik = _first_nik(published)
    rid = f"rq-{nik}"
    # The fast path takes a plain body; an unknown program spelled as the route would is routed.
    body: dict[str, Any] = {"niks": [nik]}
    if path == "routed":
        body["programs"] = ["PKH", "BPNT"]
        body["explain"] = False
    r = await http.post(
        "/v1/people/lookup", json=body, headers={**auth(full_key), "X-Request-ID": rid}
    )
    assert r.status_code == 200, r.text
    given = r.headers["x-request-id"]
    assert given != rid and nik not in given and is_safe(given)
    meta = r.json()["meta"]
    assert meta["request_id"] == given
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT request_id FROM audit_log WHERE id = :id"), {"id": meta["audit_id"]}
            )
        ).all()
        leaked = (
            await conn.execute(
                text("SELECT count(*) FROM audit_log WHERE request_id LIKE :p"),
                {"p": f"%{nik}%"},
            )
        ).scalar_one()
    assert [row.request_id for row in rows] == [given]
    assert leaked == 0


async def test_a_safe_request_id_is_kept(http: httpx.AsyncClient, full_key: str) -> None:
    r = await http.post(
        "/v1/people/lookup",
        json={"niks": [NIK]},
        headers={**auth(full_key), "X-Request-ID": "trace-0001-abc"},
    )
    assert r.headers["x-request-id"] == "trace-0001-abc"
    assert r.json()["meta"]["request_id"] == "trace-0001-abc"


async def test_errors_carry_our_request_id(http: httpx.AsyncClient) -> None:
    r = await http.post("/v1/people/lookup", json={"niks": [NIK]}, headers={"X-Request-ID": NIK})
    problem = _problem(r, 401, "unauthenticated")
    assert problem["request_id"] == r.headers["x-request-id"] != NIK
    assert NIK not in r.text and NIK not in str(r.headers)


@pytest.mark.parametrize("path", ["fast", "routed"])
@pytest.mark.parametrize("what", ["people", "families"])
async def test_personal_answers_are_not_stored(
    http: httpx.AsyncClient, full_key: str, published: Path, path: str, what: str
) -> None:
    row = (published / "anggota.csv").read_text().splitlines()[1].split(",")
    body: dict[str, Any] = {"niks": [row[0]]} if what == "people" else {"no_kks": [row[1]]}
    if path == "routed":
        body["programs"] = ["PKH"]
        body["explain"] = False
    r = await http.post(f"/v1/{what}/lookup", json=body, headers=auth(full_key))
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"


async def test_errors_are_not_stored_either(http: httpx.AsyncClient, full_key: str) -> None:
    r = await http.post("/v1/people/lookup", json={"niks": ["1"]}, headers=auth(full_key))
    assert r.status_code == 422
    assert r.headers["cache-control"] == "no-store"
