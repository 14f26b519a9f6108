"""Canary NIKs through a real server: none may appear in its logs, nor any 16-digit number."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.server import running_server
from tests.support import RELEASE, auth

pytestmark = pytest.mark.slow

GQL = "query Q($n: String!) { person(nik: $n) { nik found decile } }"
FRAGMENT = " fragment F on Person { decile }"


async def test_no_identifier_reaches_a_log_line(
    database_url: str, published: Path, full_key: str, tmp_path: Path
) -> None:
    members = (published / "anggota.csv").read_text().splitlines()[1:6]
    found = [line.split(",")[0] for line in members]
    kk = members[0].split(",")[1]
    canaries = [*found, kk, "3201014501990007", "3201013213900001", "32010145019000"]
    with running_server(database_url, tmp_path / "server.log") as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
            h = auth(full_key)
            assert (
                await client.post("/v1/people/lookup", json={"niks": canaries[:6]}, headers=h)
            ).status_code == 200
            assert (
                await client.post(
                    "/v1/people/lookup", json={"niks": canaries[:6], "explain": True}, headers=h
                )
            ).status_code == 200
            assert (
                await client.post("/v1/families/lookup", json={"no_kks": [kk]}, headers=h)
            ).status_code == 200
            # Malformed ones, an unknown purpose that looks like a NIK, and a NIK in a URL.
            assert (
                await client.post("/v1/people/lookup", json={"niks": canaries[6:]}, headers=h)
            ).status_code == 422
            assert (
                await client.post(
                    "/v1/people/lookup", json={"niks": found[:1]}, headers=auth(full_key, found[0])
                )
            ).status_code == 403
            assert (await client.get(f"/v1/snapshots/{found[0]}")).status_code == 404
            assert (await client.get(f"/v1/snapshots/{RELEASE}?nik={found[1]}")).status_code == 200
            assert (
                await client.post(
                    "/v1/people/lookup",
                    content=b'{"niks": ["' + found[2].encode(),
                    headers={**h, "Content-Type": "application/json"},
                )
            ).status_code == 400
        logs = server.log_text()
    assert "request" in logs  # the access log is there, structured
    for canary in canaries:
        assert canary not in logs
    assert not re.search(r"\d{16}", logs)


async def test_no_identifier_through_request_ids_or_graphql_errors(
    database_url: str, published: Path, full_key: str, tmp_path: Path, engine: AsyncEngine
) -> None:
    """A canary NIK as X-Request-ID, in a bad GraphQL document, variable and operationName, in
    too-deep JSON: in no log line, no response header, no audit row."""
    canary = (published / "anggota.csv").read_text().splitlines()[2].split(",")[0]
    h = {**auth(full_key), "X-Request-ID": canary}
    headers_seen: list[str] = []
    rids: list[str] = []
    with running_server(database_url, tmp_path / "server.log") as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:

            async def post(path: str, status: int, **kwargs: Any) -> httpx.Response:
                r = await client.post(path, **kwargs)
                assert r.status_code == status, r.text[:300]
                headers_seen.append(str(r.headers))
                assert canary not in r.text or status == 200
                rids.append(r.headers["x-request-id"])
                return r

            await post("/v1/people/lookup", 200, json={"niks": [canary]}, headers=h)
            await post(
                "/v1/people/lookup", 200, json={"niks": [canary], "explain": True}, headers=h
            )
            await post("/graphql", 200, json={"query": GQL, "variables": {"n": canary}}, headers=h)
            await post(
                "/graphql",
                200,
                json={
                    "query": GQL.replace("decile", "...F") + FRAGMENT,
                    "variables": {"n": canary},
                },
                headers=h,
            )
            # Bad documents and operation names that carry the canary.
            await post("/graphql", 400, json={"query": f"{{ person(nik: {canary}) {{ nik "},
                       headers=h)  # fmt: skip
            await post(
                "/graphql",
                400,
                json={"query": GQL, "variables": {"n": canary}, "operationName": f"X{canary}"},
                headers=h,
            )
            await post(
                "/graphql",
                400,
                json={
                    "query": GQL.replace("decile", f"decile_{canary}"),
                    "variables": {"n": canary},
                },
                headers=h,
            )
            await post("/graphql", 400, json=[{"query": GQL, "variables": {"n": canary}}] * 2,
                       headers=h)  # fmt: skip
            deep = b'{"niks": ["' + canary.encode() + b'"], "x": ' + b"[" * 100_000 + b"]" * 100_000
            await post("/v1/people/lookup", 400, content=deep + b"}",
                       headers={**h, "Content-Type": "application/json"})  # fmt: skip
            await post("/graphql", 413, content=deep + b"}",
                       headers={**h, "Content-Type": "application/json"})  # fmt: skip
            await post("/graphql", 401, content=deep + b"}",
                       headers={"X-Request-ID": canary, "Content-Type": "application/json"})  # fmt: skip
        logs = server.log_text()
    assert canary not in logs
    assert not re.search(r"\d{16}", logs)
    # Every line went through the project's formatter (JSON here), uvicorn's own included.
    lines = [orjson.loads(line) for line in logs.splitlines() if line.strip()]
    assert any(str(line.get("logger", "")).startswith("uvicorn") for line in lines)
    assert all(canary not in seen for seen in headers_seen)
    assert all(rid != canary and not re.search(r"\d{16}", rid) for rid in rids)
    async with engine.connect() as conn:
        stored = (
            await conn.execute(
                text("SELECT count(*) FROM audit_log WHERE request_id LIKE :p"),
                {"p": f"%{canary}%"},
            )
        ).scalar_one()
        ours = (
            await conn.execute(
                text("SELECT count(*) FROM audit_log WHERE request_id = ANY(:ids)"),
                {"ids": rids},
            )
        ).scalar_one()
    assert stored == 0
    assert ours == 4  # the four answers with data were audited, under our ids
