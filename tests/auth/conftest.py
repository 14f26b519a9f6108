"""Auth tests' setup: clients committed for the Authenticator (it uses its own connections)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth.principal import ClientInfo
from app.models import api_clients
from app.services import clients as svc

MakeClient = Callable[..., Awaitable[tuple[ClientInfo, str]]]


@pytest.fixture
async def make_client(engine: AsyncEngine) -> AsyncIterator[MakeClient]:
    """Create committed clients (unique names); they are deleted after the test."""
    made: list[str] = []

    async def make(**overrides: Any) -> tuple[ClientInfo, str]:
        args: dict[str, Any] = {
            "name": f"Test client {uuid.uuid4().hex[:8]}",
            "programs": ["PBI_JK", "PKH"],
            "field_groups": ["decision", "decile"],
            "purposes": ["pbi-verification"],
        }
        args.update(overrides)
        async with engine.begin() as conn:
            info, key = await svc.create_client(conn, **args)
        made.append(info.id)
        return info, key

    yield make
    async with engine.begin() as conn:
        await conn.execute(delete(api_clients).where(api_clients.c.id.in_(made)))
