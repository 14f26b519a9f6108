"""SQL over audit_log and audit_head: the group-commit append (asyncpg), the walk, the trail and
its subject index."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.models import audit_head, audit_log


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


def subject_key(subject_hash: bytes) -> int:
    """The audit_subjects key of a subject hash: its first 8 bytes as a signed bigint."""
    return int.from_bytes(subject_hash[:8], "big", signed=True)


# The records naming a subject: from the index up to `indexed_upto`, by scanning the records
# after it (seq range on the primary key), each confirmed against the full hash. One statement:
# one snapshot, so a concurrent `audit index` can neither hide nor double a record.
_TRAIL = """
WITH hits AS (
    SELECT seq FROM audit_subjects WHERE subject = :key
    UNION
    SELECT seq FROM audit_log
    WHERE seq > (SELECT indexed_upto FROM audit_index WHERE id = 1)
)
SELECT a.at, a.id AS audit_id, a.client_id, c.name AS client_name, a.purpose, a.operation,
       a.snapshot_id, a.rule_set_id
FROM hits JOIN audit_log a ON a.seq = hits.seq
LEFT JOIN api_clients c ON c.id = a.client_id
WHERE a.subject_hashes @> ARRAY[CAST(:hash AS bytea)]
ORDER BY a.seq
"""


async def trail(conn: AsyncConnection, subject_hash: bytes) -> list[TrailRow]:
    """Every record whose subjects include this keyed hash, oldest first."""
    rows = await conn.execute(
        text(_TRAIL), {"key": subject_key(subject_hash), "hash": subject_hash}
    )
    return [TrailRow(**row) for row in rows.mappings()]


# One step of indexing: the next `limit` records after `indexed_upto`, in one transaction with
# the row lock on audit_index (two indexers take turns). The key expression is subject_key's.
_INDEX_STEP = """
WITH state AS (SELECT indexed_upto FROM audit_index WHERE id = 1 FOR UPDATE),
chunk AS (
    SELECT a.seq, a.subject_hashes FROM audit_log a, state
    WHERE a.seq > state.indexed_upto ORDER BY a.seq LIMIT $1
),
added AS (
    INSERT INTO audit_subjects (subject, seq)
    SELECT DISTINCT ('x' || encode(substr(h, 1, 8), 'hex'))::bit(64)::bigint, c.seq
    FROM chunk c, unnest(c.subject_hashes) h
    ON CONFLICT DO NOTHING
    RETURNING 1
)
UPDATE audit_index SET indexed_upto = coalesce((SELECT max(seq) FROM chunk), indexed_upto)
WHERE id = 1
RETURNING indexed_upto, (SELECT count(*) FROM chunk), (SELECT count(*) FROM added)
"""


async def index_step(raw: asyncpg.Connection, limit: int) -> tuple[int, int, int]:
    """(indexed_upto, records indexed, entries added) after indexing up to `limit` records."""
    async with raw.transaction():
        row = await raw.fetchrow(_INDEX_STEP, limit)
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


async def index_lag(conn: AsyncConnection) -> tuple[int, int]:
    """(indexed_upto, the chain's last seq)."""
    row = (
        await conn.execute(
            text(
                "SELECT (SELECT indexed_upto FROM audit_index WHERE id = 1), "
                "(SELECT seq FROM audit_head WHERE id = 1)"
            )
        )
    ).one()
    return int(row[0]), int(row[1])
