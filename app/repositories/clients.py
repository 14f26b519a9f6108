"""SQL over api_clients."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.auth.principal import ClientInfo
from app.models import api_clients

# Never key_hash: nothing outside this module needs it, and lists must not carry it.
_COLUMNS = (
    api_clients.c.id,
    api_clients.c.name,
    api_clients.c.programs,
    api_clients.c.field_groups,
    api_clients.c.purposes,
    api_clients.c.key_prefix,
    api_clients.c.created_at,
    api_clients.c.expires_at,
    api_clients.c.revoked_at,
)


async def create(
    conn: AsyncConnection,
    *,
    client_id: str,
    name: str,
    programs: list[str],
    field_groups: list[str],
    purposes: list[str],
    key_hash: bytes,
    key_prefix: str,
    expires_at: dt.datetime | None,
) -> ClientInfo:
    row = (
        (
            await conn.execute(
                insert(api_clients)
                .values(
                    id=client_id,
                    name=name,
                    programs=programs,
                    field_groups=field_groups,
                    purposes=purposes,
                    key_hash=key_hash,
                    key_prefix=key_prefix,
                    expires_at=expires_at,
                )
                .returning(*_COLUMNS)
            )
        )
        .mappings()
        .one()
    )
    return ClientInfo.model_validate(dict(row))


async def exists(conn: AsyncConnection, client_id: str) -> bool:
    q = select(api_clients.c.id).where(api_clients.c.id == client_id)
    return (await conn.execute(q)).first() is not None


async def list_all(conn: AsyncConnection) -> list[ClientInfo]:
    q = select(*_COLUMNS).order_by(api_clients.c.created_at, api_clients.c.id)
    return [ClientInfo.model_validate(dict(r)) for r in (await conn.execute(q)).mappings()]


async def get_by_id(conn: AsyncConnection, client_id: str) -> ClientInfo | None:
    q = select(*_COLUMNS).where(api_clients.c.id == client_id)
    row = (await conn.execute(q)).mappings().first()
    return ClientInfo.model_validate(dict(row)) if row else None


async def get_active_by_key_hash(conn: AsyncConnection, key_hash: bytes) -> ClientInfo | None:
    """The client holding this key, unless revoked or expired (by the database's clock)."""
    q = select(*_COLUMNS).where(
        api_clients.c.key_hash == key_hash,
        api_clients.c.revoked_at.is_(None),
        (api_clients.c.expires_at.is_(None)) | (api_clients.c.expires_at > func.now()),
    )
    row = (await conn.execute(q)).mappings().first()
    return ClientInfo.model_validate(dict(row)) if row else None


async def mark_revoked(conn: AsyncConnection, client_id: str) -> bool:
    result = await conn.execute(
        update(api_clients)
        .where(api_clients.c.id == client_id, api_clients.c.revoked_at.is_(None))
        .values(revoked_at=func.now())
    )
    return bool(result.rowcount)
