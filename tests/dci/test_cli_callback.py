"""`tepat client create --callback-url-prefix`: stored as given (normalised), refused if unusable."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine

from app.models import api_clients
from app.services.clients import Authenticator
from tests.cli import tepat


@pytest.fixture
async def created(engine: AsyncEngine) -> AsyncIterator[list[str]]:
    ids: list[str] = []
    yield ids
    async with engine.begin() as conn:
        await conn.execute(delete(api_clients).where(api_clients.c.id.in_(ids)))


async def test_create_with_a_callback_prefix(engine: AsyncEngine, created: list[str]) -> None:
    made = await asyncio.to_thread(
        tepat,
        "client", "create", "SPMIS", "--programs", "PKH", "--fields", "decision",
        "--purpose", "pbi-verification", "--callback-url-prefix", "https://SPMIS.example/dci/",
        "--json",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    doc = json.loads(made.stdout)
    created.append(doc["client"]["id"])
    assert doc["client"]["callback_url_prefix"] == "https://spmis.example/dci"
    principal = await Authenticator(engine).authenticate(f"Bearer {doc['key']}")
    assert principal.callback_url_prefix == "https://spmis.example/dci"

    for bad in ("ftp://spmis.example", "spmis.example/dci", "https://spmis.example/?a=1"):
        refused = await asyncio.to_thread(
            tepat,
            "client", "create", "X", "--programs", "PKH", "--fields", "decision",
            "--purpose", "pbi-verification", "--callback-url-prefix", bad,
        )  # fmt: skip
        assert refused.returncode == 1, bad
        assert "callback_url_prefix" in refused.stderr
