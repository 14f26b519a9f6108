"""Two quarters of one generated registry, imported with their decisions stored, and the change
list between them computed independently from their files (tests/changes/expected.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from tests.changes import expected
from tests.helpers import CHANGES_FROM, CHANGES_TO, two_quarters
from tests.support import auth

PEOPLE = 3000


@pytest.fixture(scope="package")
async def quarters(
    settings: Settings, engine: AsyncEngine, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Path, Path]]:
    async with two_quarters(settings, engine, tmp_path_factory.mktemp("changes"), PEOPLE, 71) as q:
        yield q


@pytest.fixture(scope="package")
def sides(quarters: tuple[Path, Path]) -> tuple[dict[str, expected.Side], dict[str, expected.Side]]:
    return expected.release_people(quarters[0]), expected.release_people(quarters[1])


@pytest.fixture(scope="package")
def full_list(
    sides: tuple[dict[str, expected.Side], dict[str, expected.Side]],
) -> dict[str, dict[str, Any]]:
    return expected.change_list(*sides)


async def post_changes(
    http: httpx.AsyncClient, key: str, purpose: str | None = None, **body: Any
) -> httpx.Response:
    payload = {"from": CHANGES_FROM, "to": CHANGES_TO, **body}
    headers = auth(key) if purpose is None else auth(key, purpose)
    return await http.post("/v1/changes", json=payload, headers=headers)


def split(r: httpx.Response) -> tuple[list[bytes], dict[str, Any]]:
    """(the answer lines, the summary), the summary being the last line."""
    assert r.status_code == 200, r.text
    *lines, last = r.content.splitlines(keepends=True)
    tail = orjson.loads(last)
    assert "summary" in tail, tail
    return lines, tail["summary"]


def by_nik(lines: list[bytes]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for raw in lines:
        line = orjson.loads(raw)
        assert line["nik"] not in out, "a person listed twice"
        out[line["nik"]] = line
    return out
