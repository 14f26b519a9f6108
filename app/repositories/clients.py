"""SQL over api_clients."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from app.auth.principal import ClientInfo
from app.models import api_clients, audit_log, oauth2_assertions

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
    api_clients.c.bulk,
    api_clients.c.daily_quota,
    api_clients.c.suspended_at,
    api_clients.c.suspended_reason,
    api_clients.c.callback_url_prefix,
    api_clients.c.jwks,
    api_clients.c.signatures_required,
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
    bulk: bool = False,
    daily_quota: int | None = None,
    callback_url_prefix: str | None = None,
    jwks: dict[str, Any] | None = None,
    signatures_required: bool = False,
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
                    bulk=bulk,
                    daily_quota=daily_quota,
                    callback_url_prefix=callback_url_prefix,
                    jwks=jwks,
                    signatures_required=signatures_required,
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


def _active() -> Any:
    return api_clients.c.revoked_at.is_(None) & (
        api_clients.c.expires_at.is_(None) | (api_clients.c.expires_at > func.now())
    )


async def get_active_by_id(conn: AsyncConnection, client_id: str) -> ClientInfo | None:
    """The client, unless revoked or expired (by the database's clock)."""
    q = select(*_COLUMNS).where(api_clients.c.id == client_id, _active())
    row = (await conn.execute(q)).mappings().first()
    return ClientInfo.model_validate(dict(row)) if row else None


async def get_active_credentials(
    conn: AsyncConnection, client_id: str
) -> tuple[ClientInfo, bytes, dict[str, Any] | None] | None:
    """An active client with its key's hash and its registered JWKS (OAuth2 client auth)."""
    q = select(*_COLUMNS, api_clients.c.key_hash, api_clients.c.jwks).where(
        api_clients.c.id == client_id, _active()
    )
    row = (await conn.execute(q)).mappings().first()
    if row is None:
        return None
    fields = dict(row)
    key_hash, jwks = fields.pop("key_hash"), fields.pop("jwks")
    return ClientInfo.model_validate(fields), bytes(key_hash), jwks


async def use_assertion(
    conn: AsyncConnection, client_id: str, jti: str, expires_at: dt.datetime
) -> bool:
    """Record a client assertion's `jti`; False if it was used before (a replay). Expired
    records are dropped on the way: an expired assertion is refused anyway."""
    await conn.execute(delete(oauth2_assertions).where(oauth2_assertions.c.expires_at < func.now()))
    result = await conn.execute(
        pg_insert(oauth2_assertions)
        .values(client_id=client_id, jti=jti, expires_at=expires_at)
        .on_conflict_do_nothing()
    )
    return bool(result.rowcount)


async def mark_revoked(conn: AsyncConnection, client_id: str) -> bool:
    result = await conn.execute(
        update(api_clients)
        .where(api_clients.c.id == client_id, api_clients.c.revoked_at.is_(None))
        .values(revoked_at=func.now())
    )
    return bool(result.rowcount)


async def mark_suspended(conn: AsyncConnection, client_id: str, reason: str) -> bool:
    """Suspend a client (the first suspension's time and reason are kept)."""
    result = await conn.execute(
        update(api_clients)
        .where(api_clients.c.id == client_id, api_clients.c.suspended_at.is_(None))
        .values(suspended_at=func.now(), suspended_reason=reason)
    )
    return bool(result.rowcount)


async def clear_suspension(conn: AsyncConnection, client_id: str) -> bool:
    result = await conn.execute(
        update(api_clients)
        .where(api_clients.c.id == client_id, api_clients.c.suspended_at.is_not(None))
        .values(suspended_at=None, suspended_reason=None)
    )
    return bool(result.rowcount)


async def events(
    conn: AsyncConnection, client_id: str, operations: tuple[str, ...]
) -> list[tuple[dt.datetime, str, str, str]]:
    """The client's audit records of these operations (suspensions...), oldest first."""
    q = (
        select(audit_log.c.at, audit_log.c.operation, audit_log.c.id, audit_log.c.request_id)
        .where(audit_log.c.client_id == client_id, audit_log.c.operation.in_(operations))
        .order_by(audit_log.c.seq)
    )
    return [(r[0], r[1], r[2], r[3]) for r in await conn.execute(q)]
