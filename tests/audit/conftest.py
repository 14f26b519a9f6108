"""Audit tests' setup: entries, NIKs, a private chain inside a rolled-back transaction."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import pytest
from sqlalchemy import delete, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.models import api_clients
from app.repositories.audit import AuditRecord
from app.services import audit, clients

HMAC_KEY = b"test-audit-key"


def random_nik() -> str:
    """A structurally valid NIK no other test uses (random district, date and serial)."""
    district = f"32{secrets.randbelow(90) + 10:02d}{secrets.randbelow(90) + 10:02d}"
    day = secrets.randbelow(28) + 1 + 40 * secrets.randbelow(2)
    month = secrets.randbelow(12) + 1
    serial = secrets.randbelow(9999) + 1
    return f"{district}{day:02d}{month:02d}{secrets.randbelow(100):02d}{serial:04d}"


def make_entry(
    client_id: str | None = None, subjects: Sequence[str] = (), **kw: Any
) -> audit.AuditEntry:
    args: dict[str, Any] = {
        "id": audit.new_audit_id(),
        "client_id": client_id or f"test-{uuid.uuid4().hex[:10]}",
        "purpose": "pbi-verification",
        "operation": "people.lookup",
        "snapshot_id": "2026-01-23",
        "rule_set_id": "2026.1",
        "subjects": list(subjects) or [audit.nik_subject(random_nik())],
        "found": 1,
        "response_digest": hashlib.sha256(b'{"results": []}').digest(),
        "request_id": uuid.uuid4().hex,
    }
    args.update(kw)
    return audit.AuditEntry(**args)


async def private_chain(
    conn: AsyncConnection, n: int
) -> tuple[asyncpg.Connection, list[AuditRecord]]:
    """Inside the test's transaction: an empty log, then n records chained by the writer's code.

    Triggers are off for the rest of the (rolled-back) transaction so a test can tamper, as a
    superuser could.
    """
    await conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
    await conn.execute(text("DELETE FROM audit_log"))
    # The Merkle tree and checkpoints other tests committed describe the log just emptied.
    await conn.execute(text("DELETE FROM audit_tree"))
    await conn.execute(text("DELETE FROM audit_checkpoints"))
    await conn.execute(
        text("UPDATE audit_head SET seq = 0, hash = decode(repeat('00', 32), 'hex')")
    )
    raw: asyncpg.Connection = (await conn.get_raw_connection()).driver_connection
    now = dt.datetime.now(dt.UTC)
    records = [
        audit.unchained_record(make_entry(), HMAC_KEY, now + dt.timedelta(microseconds=i))
        for i in range(n)
    ]
    return raw, await audit.append(raw, records)


@pytest.fixture
async def make_client_row(engine: AsyncEngine) -> AsyncIterator[str]:
    """A committed client (trail shows its name); deleted afterwards."""
    async with engine.begin() as conn:
        info, _ = await clients.create_client(
            conn,
            name="Trail test client",
            programs=["PBI_JK"],
            field_groups=["decision"],
            purposes=["pbi-verification"],
        )
    yield info.id
    async with engine.begin() as conn:
        await conn.execute(delete(api_clients).where(api_clients.c.id == info.id))
