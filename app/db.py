"""Database URLs, engines and connections: the embedded default or TEPAT_DATABASE_URL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from app import embedded
from app.config import Settings


def resolve_url(settings: Settings) -> str:
    """The server to use: the configured one, else the embedded one (started on demand)."""
    if settings.database_url:
        return settings.database_url
    return embedded.ensure_started(settings.data_dir)


def sqlalchemy_url(url: str) -> URL:
    """Accept `postgresql://`, `postgres://` and `postgresql+asyncpg://`; always drive asyncpg."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    if parsed.get_backend_name() != "postgresql":
        raise ValueError("TEPAT_DATABASE_URL must be a PostgreSQL URL")
    return parsed.set(drivername="postgresql+asyncpg")


def asyncpg_dsn(url: str) -> str:
    """A DSN asyncpg itself accepts (no `+asyncpg` driver suffix)."""
    return sqlalchemy_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def server_settings(settings: Settings, *, statement_timeout: bool = True) -> dict[str, str]:
    out = {"application_name": "tepat", "DateStyle": "ISO, YMD", "TimeZone": "UTC"}
    if statement_timeout:
        out["statement_timeout"] = str(int(settings.db_statement_timeout * 1000))
    return out


def create_engine(
    settings: Settings, url: str | None = None, *, role: str | None = None, **kw: Any
) -> AsyncEngine:
    """The pooled engine. `role`: the service runs as a role that cannot alter the audit trail."""
    url = url or resolve_url(settings)
    server = server_settings(settings)
    if role:
        server["role"] = role
    return create_async_engine(
        sqlalchemy_url(url),
        pool_size=settings.db_pool_size,
        max_overflow=0,
        pool_timeout=settings.db_pool_timeout,
        pool_pre_ping=True,
        connect_args={
            "timeout": settings.db_connect_timeout,
            "command_timeout": settings.db_statement_timeout + 5,
            "server_settings": server,
        },
        **kw,
    )


async def connect_raw(
    settings: Settings, url: str | None = None, *, statement_timeout: bool = False
) -> asyncpg.Connection:
    """A plain asyncpg connection for long operator work (import, verify): no statement timeout."""
    url = url or resolve_url(settings)
    return await asyncpg.connect(
        asyncpg_dsn(url),
        timeout=settings.db_connect_timeout,
        server_settings=server_settings(settings, statement_timeout=statement_timeout),
    )


@asynccontextmanager
async def engine_scope(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings)
    try:
        yield engine
    finally:
        await engine.dispose()


@asynccontextmanager
async def read_connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection in a read-only transaction: every read sees one consistent snapshot."""
    async with engine.connect() as conn:
        await conn.exec_driver_sql("SET TRANSACTION READ ONLY")
        yield conn
