"""`tepat client create|list|revoke`, run as an operator would (in-process: tests/cli.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from joserfc.jwk import OKPKey
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth import keys
from app.models import api_clients
from app.services.clients import Authenticator
from tests.cli import tepat


@pytest.fixture
async def created(engine: AsyncEngine) -> AsyncIterator[list[str]]:
    ids: list[str] = []
    yield ids
    async with engine.begin() as conn:
        await conn.execute(delete(api_clients).where(api_clients.c.id.in_(ids)))


async def test_create_list_revoke(engine: AsyncEngine, created: list[str]) -> None:
    made = await asyncio.to_thread(
        tepat, "client", "create", "Dinsos Kab. Bogor", "--programs", "PKH,BPNT",
        "--fields", "decision,decile", "--purpose", "pkh-verification",
        "--purpose", "bansos-targeting", "--expires", "2099-01-01",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert keys.parse_key(key) == key  # stdout holds the key alone, ready for a secret store
    assert "shown only now" in made.stderr
    client_id = made.stderr.split("created client ")[1].split()[0]
    created.append(client_id)

    listed = await asyncio.to_thread(tepat, "client", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    (mine,) = [c for c in json.loads(listed.stdout) if c["id"] == client_id]
    assert mine["programs"] == ["PKH", "BPNT"]
    assert mine["purposes"] == ["bansos-targeting", "pkh-verification"]
    assert mine["expires_at"].startswith("2099-01-01T00:00:00")
    assert mine["key_prefix"] == key[:12]
    assert key not in listed.stdout
    assert key[12:] not in listed.stdout
    assert "key_hash" not in listed.stdout
    table = await asyncio.to_thread(tepat, "client", "list")
    assert client_id in table.stdout
    assert key[12:] not in table.stdout

    assert (await Authenticator(engine).authenticate(f"Bearer {key}")).client_id == client_id
    revoked = await asyncio.to_thread(tepat, "client", "revoke", client_id, "--json")
    assert revoked.returncode == 0, revoked.stderr
    assert json.loads(revoked.stdout)["revoked_at"] is not None


def test_create_json_and_validation(created: list[str]) -> None:
    made = tepat(
        "client", "create", "BPJS", "--programs", "PBI_JK", "--fields", "decision",
        "--purpose", "pbi-verification", "--json",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    doc = json.loads(made.stdout)
    created.append(doc["client"]["id"])
    assert keys.parse_key(doc["key"])
    assert "shown only now" in doc["warning"]

    bad = tepat(
        "client", "create", "X", "--programs", "PKH,KIP", "--fields", "decision", "--purpose", "ab"
    )
    assert bad.returncode == 1
    assert "KIP" in bad.stderr
    upper = tepat(
        "client", "create", "X", "--programs", "PKH", "--fields", "decision", "--purpose", "AUDIT"
    )  # fmt: skip
    assert upper.returncode == 1
    assert "^[a-z0-9]" in upper.stderr  # the pattern reaches the user whole, not eaten as markup
    assert tepat("client", "revoke", "no-such-client").returncode == 1


async def test_create_with_a_jwks_file(
    engine: AsyncEngine, created: list[str], tmp_path: Path
) -> None:
    key = OKPKey.generate_key("Ed25519")
    public = tmp_path / "client.jwks.json"
    public.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    made = await asyncio.to_thread(
        tepat, "client", "create", "SIKS-NG", "--programs", "PKH", "--fields", "decision",
        "--purpose", "pkh-verification", "--jwks", str(public), "--json",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    created.append(json.loads(made.stdout)["client"]["id"])
    async with engine.connect() as conn:
        stored = await conn.scalar(
            select(api_clients.c.jwks).where(api_clients.c.id == created[-1])
        )
    assert stored == {"keys": [key.as_dict(private=False)]}

    private = tmp_path / "private.jwks.json"
    private.write_text(json.dumps({"keys": [key.as_dict(private=True)]}))
    refused = await asyncio.to_thread(
        tepat, "client", "create", "SIKS-NG", "--programs", "PKH", "--fields", "decision",
        "--purpose", "pkh-verification", "--jwks", str(private),
    )  # fmt: skip
    assert refused.returncode != 0
    assert "public keys only" in refused.stdout + refused.stderr
    assert str(key.as_dict(private=True)["d"]) not in refused.stdout + refused.stderr
