"""Canary NIKs through a real server: none may appear in its logs, nor any 16-digit number."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from tests.server import running_server
from tests.support import RELEASE, auth

pytestmark = pytest.mark.slow


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
