"""SQL over audit_log and audit_head: the group-commit append (asyncpg), the walk and the trail."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from app.models import api_clients, audit_head, audit_log


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One audit_log row, exactly the fields the chain hash covers (plus prev_hash and hash)."""

    seq: int
    id: str
    at: dt.datetime
    client_id: str
    purpose: str
    operation: str
    snapshot_id: str | None
    rule_set_id: str | None
    subject_hashes: tuple[bytes, ...]
    subject_count: int
    found_count: int
    response_digest: bytes
    request_id: str
    prev_hash: bytes
    hash: bytes


@dataclass(frozen=True, slots=True)
class TrailRow:
    at: dt.datetime
    audit_id: str
    client_id: str
    client_name: str | None
    purpose: str
    operation: str
    snapshot_id: str | None
    rule_set_id: str | None


_FIELDS = tuple(AuditRecord.__dataclass_fields__)
_INSERT = (
    f"INSERT INTO audit_log ({', '.join(_FIELDS)}) "
    f"VALUES ({', '.join(f'${i}' for i in range(1, len(_FIELDS) + 1))})"
)


# --- the writer's path: raw asyncpg inside the caller's transaction ---------------------------


async def lock_head(raw: asyncpg.Connection) -> tuple[int, bytes]:
    """The chain's tip, locked until the transaction ends: appends from all processes queue here."""
    row = await raw.fetchrow("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE")
    if row is None:
        raise RuntimeError("audit_head has no row: run `tepat db upgrade`")
    return int(row["seq"]), bytes(row["hash"])


async def insert_many(raw: asyncpg.Connection, records: Sequence[AuditRecord]) -> None:
    # executemany pipelines every row over one prepared statement: one round trip per batch.
    await raw.executemany(
        _INSERT,
        [
            (
                r.seq,
                r.id,
                r.at,
                r.client_id,
                r.purpose,
                r.operation,
                r.snapshot_id,
                r.rule_set_id,
                list(r.subject_hashes),
                r.subject_count,
                r.found_count,
                r.response_digest,
                r.request_id,
                r.prev_hash,
                r.hash,
            )
            for r in records
        ],
    )


async def set_head(raw: asyncpg.Connection, seq: int, hash_: bytes) -> None:
    await raw.execute("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1", seq, hash_)


# --- reading: verify and trail -----------------------------------------------------------------


async def read_head(conn: AsyncConnection) -> tuple[int, bytes]:
    row = (await conn.execute(select(audit_head.c.seq, audit_head.c.hash))).first()
    if row is None:
        raise RuntimeError("audit_head has no row: run `tepat db upgrade`")
    return int(row.seq), bytes(row.hash)


def _record(row: dict[str, Any]) -> AuditRecord:
    return AuditRecord(**{**row, "subject_hashes": tuple(row["subject_hashes"])})


async def stream_by_seq(conn: AsyncConnection, batch: int = 2_000) -> AsyncIterator[AuditRecord]:
    """Every record in chain order through a server-side cursor: memory stays flat."""
    q = (
        select(*(audit_log.c[name] for name in _FIELDS))
        .order_by(audit_log.c.seq)
        .execution_options(yield_per=batch)
    )
    result = await conn.stream(q)
    async for partition in result.mappings().partitions():
        for row in partition:
            yield _record(dict(row))


async def get_by_seq(conn: AsyncConnection, seq: int) -> AuditRecord | None:
    q = select(*(audit_log.c[name] for name in _FIELDS)).where(audit_log.c.seq == seq)
    row = (await conn.execute(q)).mappings().first()
    return _record(dict(row)) if row else None


async def trail(conn: AsyncConnection, subject_hash: bytes) -> list[TrailRow]:
    """Every record whose subjects include this keyed hash (GIN index), oldest first."""
    q = (
        select(
            audit_log.c.at,
            audit_log.c.id.label("audit_id"),
            audit_log.c.client_id,
            api_clients.c.name.label("client_name"),
            audit_log.c.purpose,
            audit_log.c.operation,
            audit_log.c.snapshot_id,
            audit_log.c.rule_set_id,
        )
        .select_from(audit_log.outerjoin(api_clients, api_clients.c.id == audit_log.c.client_id))
        .where(audit_log.c.subject_hashes.contains([subject_hash]))
        .order_by(audit_log.c.seq)
    )
    return [TrailRow(**row) for row in (await conn.execute(q)).mappings()]
