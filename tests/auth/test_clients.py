"""Clients: registration and validation, hash-only storage, authentication of every case."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib

import pytest
from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.auth import keys
from app.errors import ClientNotFound, Unauthenticated, ValidationFailed
from app.models import api_clients
from app.services import clients as svc
from app.services.clients import NOT_ACCEPTED, Authenticator

from .conftest import MakeClient


async def test_create_returns_the_key_once_and_stores_only_its_hash(conn: AsyncConnection) -> None:
    info, key = await svc.create_client(
        conn,
        name="Kemenkes SISRUTE",
        programs=["PBI_JK", "PKH", "PKH"],
        field_groups=["decile", "decision"],
        purposes=["pbi-verification", "referral"],
    )
    assert keys.parse_key(key) == key
    assert info.id.startswith("kemenkes-sisrute-")
    assert info.programs == ["PKH", "PBI_JK"]  # canonical order, no duplicates
    assert info.field_groups == ["decision", "decile"]
    assert info.purposes == ["pbi-verification", "referral"]
    assert info.key_prefix == key[:12]
    assert "key_hash" not in info.model_dump()

    row = (
        await conn.execute(
            text("SELECT row_to_json(c)::text AS j, key_hash FROM api_clients c WHERE id = :id"),
            {"id": info.id},
        )
    ).one()
    assert key not in row.j
    assert key[12:] not in row.j  # not even the secret part
    assert bytes(row.key_hash) == hashlib.sha256(key.encode()).digest()

    listed = await svc.list_clients(conn)
    assert info.id in {c.id for c in listed}
    assert all("key_hash" not in c.model_dump() for c in listed)


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("programs", {"programs": ["PKH", "KIP"]}),
        ("programs", {"programs": []}),
        ("field_groups", {"field_groups": ["decision", "salary"]}),
        ("purposes", {"purposes": ["Has Spaces"]}),
        ("purposes", {"purposes": []}),
        ("name", {"name": "  "}),
        ("expires_at", {"expires_at": dt.datetime(2020, 1, 1, tzinfo=dt.UTC)}),
        ("expires_at", {"expires_at": dt.datetime(2099, 1, 1)}),
    ],
)
async def test_invalid_registrations_name_the_field(
    conn: AsyncConnection, field: str, kwargs: dict[str, object]
) -> None:
    args: dict[str, object] = {
        "name": "Dinsos",
        "programs": ["PKH"],
        "field_groups": ["decision"],
        "purposes": ["pkh-verification"],
    }
    args.update(kwargs)
    with pytest.raises(ValidationFailed) as caught:
        await svc.create_client(conn, **args)  # type: ignore[arg-type]
    assert caught.value.extra["field"] == field


async def test_revoke_is_idempotent_and_unknown_ids_are_refused(conn: AsyncConnection) -> None:
    info, _ = await svc.create_client(
        conn, name="Dinsos", programs=["PKH"], field_groups=["decision"], purposes=["pkh"]
    )
    first = await svc.revoke_client(conn, info.id)
    assert first.revoked_at is not None
    again = await svc.revoke_client(conn, info.id)
    assert again.revoked_at == first.revoked_at
    with pytest.raises(ClientNotFound):
        await svc.revoke_client(conn, "no-such-client")


async def test_valid_key_gives_its_principal(engine: AsyncEngine, make_client: MakeClient) -> None:
    info, key = await make_client(field_groups=["decision", "membership"])
    principal = await Authenticator(engine).authenticate(f"Bearer {key}")
    assert principal.client_id == info.id
    assert principal.name == info.name
    assert principal.programs == {"PKH", "PBI_JK"}
    assert principal.field_groups == {"decision", "membership"}
    assert principal.purposes == {"pbi-verification"}
    # The scheme is case-insensitive (RFC 7235); surrounding spaces are tolerated.
    assert await Authenticator(engine).authenticate(f"  bearer {key} ") == principal


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "tepat_abc", "Bearer tepat_short"],
)
async def test_missing_or_malformed_header_is_unauthenticated(
    engine: AsyncEngine, header: str | None
) -> None:
    with pytest.raises(Unauthenticated) as caught:
        await Authenticator(engine).authenticate(header)
    assert caught.value.status == 401


async def test_unknown_revoked_and_expired_keys_get_the_same_answer(
    engine: AsyncEngine, make_client: MakeClient
) -> None:
    auth = Authenticator(engine)
    messages = []

    with pytest.raises(Unauthenticated) as unknown:
        await auth.authenticate(f"Bearer {keys.generate_key()}")
    messages.append(unknown.value.detail)

    revoked, revoked_key = await make_client()
    async with engine.begin() as c:
        await svc.revoke_client(c, revoked.id)
    with pytest.raises(Unauthenticated) as caught_revoked:
        await auth.authenticate(f"Bearer {revoked_key}")
    messages.append(caught_revoked.value.detail)

    expired, expired_key = await make_client()
    async with engine.begin() as c:
        await c.execute(
            update(api_clients)
            .where(api_clients.c.id == expired.id)
            .values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        )
    with pytest.raises(Unauthenticated) as caught_expired:
        await auth.authenticate(f"Bearer {expired_key}")
    messages.append(caught_expired.value.detail)

    assert messages == [NOT_ACCEPTED] * 3
    assert all(revoked_key not in m and expired_key not in m for m in messages)


async def test_expiry_applies_even_to_a_cached_key(
    engine: AsyncEngine, make_client: MakeClient
) -> None:
    _, key = await make_client(expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1))
    auth = Authenticator(engine, ttl=60)
    await auth.authenticate(f"Bearer {key}")
    await asyncio.sleep(1.1)
    with pytest.raises(Unauthenticated, match=NOT_ACCEPTED):
        await auth.authenticate(f"Bearer {key}")


async def test_revocation_takes_effect_within_the_cache_ttl(
    engine: AsyncEngine, make_client: MakeClient
) -> None:
    info, key = await make_client()
    auth = Authenticator(engine, ttl=0.5)
    await auth.authenticate(f"Bearer {key}")
    async with engine.begin() as c:
        await svc.revoke_client(c, info.id)
    # Still cached: the documented window (one indexed lookup per key per TTL, not per request).
    assert (await auth.authenticate(f"Bearer {key}")).client_id == info.id
    await asyncio.sleep(0.6)
    with pytest.raises(Unauthenticated, match=NOT_ACCEPTED):
        await auth.authenticate(f"Bearer {key}")


async def test_database_down_is_unavailable_not_unauthenticated() -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    from app.errors import Unavailable

    dead = create_async_engine(
        "postgresql+asyncpg://postgres@127.0.0.1:1/none", connect_args={"timeout": 2}
    )
    try:
        with pytest.raises(Unavailable):
            await Authenticator(dead).authenticate(f"Bearer {keys.generate_key()}")
    finally:
        await dead.dispose()
