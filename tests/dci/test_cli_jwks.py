"""`tepat client create --jwks FILE [--require-signatures]`: the client's public keys, checked."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from joserfc.jwk import OKPKey
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine

from app.models import api_clients
from app.services.clients import Authenticator
from tests.cli import tepat

BASE = ("client", "create", "SPMIS", "--programs", "PKH", "--fields", "decision",
        "--purpose", "pbi-verification")  # fmt: skip


@pytest.fixture
async def created(engine: AsyncEngine) -> AsyncIterator[list[str]]:
    ids: list[str] = []
    yield ids
    async with engine.begin() as conn:
        await conn.execute(delete(api_clients).where(api_clients.c.id.in_(ids)))


async def test_create_with_public_keys(
    engine: AsyncEngine, created: list[str], tmp_path: Path
) -> None:
    key = OKPKey.generate_key("Ed25519")
    public = {**key.as_dict(private=False), "kid": key.thumbprint()}
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [public]}))
    made = await asyncio.to_thread(
        tepat, *BASE, "--jwks", str(jwks), "--require-signatures", "--json"
    )
    assert made.returncode == 0, made.stderr
    doc = json.loads(made.stdout)
    created.append(doc["client"]["id"])
    assert doc["client"]["jwks"] == {"keys": [public]}
    assert doc["client"]["signatures_required"] is True
    principal = await Authenticator(engine).authenticate(f"Bearer {doc['key']}")
    assert principal.jwks == {"keys": [public]} and principal.signatures_required

    private = tmp_path / "private.json"
    private.write_text(json.dumps({"keys": [key.as_dict(private=True)]}))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    for args in (
        ("--jwks", str(private)),  # a private key is never registered
        ("--jwks", str(broken)),
        ("--require-signatures",),  # nothing to check signatures with
    ):
        refused = await asyncio.to_thread(tepat, *BASE, *args)
        assert refused.returncode != 0, args
        assert "jwks" in refused.stderr, refused.stderr
