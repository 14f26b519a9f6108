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
    hmac_key_id: str
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
                r.hmac_key_id,
                r.prev_hash,
                r.hash,
            )
            for r in records
        ],
    )


async def set_head(raw: asyncpg.Connection, seq: int, hash_: bytes) -> None:
    await raw.execute("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1", seq, hash_)


def insert_records_sql(first: int, only_if: str) -> str:
    """INSERT of chained records passed as 16 arrays, parameters $first.. (`record_arrays`), only
    if the CTE `only_if` returned a row. A record's subject hashes travel concatenated (all 32
    bytes) and are split back into the array."""
    p = [f"${first + i}" for i in range(16)]
    return f"""INSERT INTO audit_log ({", ".join(_FIELDS)})
SELECT u.seq, u.id, u.at, u.client_id, u.purpose, u.operation, u.snapshot_id, u.rule_set_id,
       ARRAY(SELECT substr(u.subjects, 32 * i + 1, 32)
             FROM generate_series(0, length(u.subjects) / 32 - 1) AS i ORDER BY i),
       u.subject_count, u.found_count, u.response_digest, u.request_id, u.hmac_key_id,
       u.prev_hash, u.hash
FROM unnest({p[0]}::int8[], {p[1]}::text[], {p[2]}::timestamptz[], {p[3]}::text[],
            {p[4]}::text[], {p[5]}::text[], {p[6]}::text[], {p[7]}::text[], {p[8]}::bytea[],
            {p[9]}::int4[], {p[10]}::int4[], {p[11]}::bytea[], {p[12]}::text[], {p[13]}::text[],
            {p[14]}::bytea[], {p[15]}::bytea[])
     AS u(seq, id, at, client_id, purpose, operation, snapshot_id, rule_set_id, subjects,
          subject_count, found_count, response_digest, request_id, hmac_key_id, prev_hash, hash)
WHERE EXISTS (SELECT FROM {only_if})"""


def record_arrays(records: Sequence[AuditRecord]) -> list[list[Any]]:
    """The 16 arrays `insert_records_sql` reads, from chained records."""
    if any(len(h) != 32 for r in records for h in r.subject_hashes):
        raise ValueError("subject hashes must be 32 bytes")
    return [
        [r.seq for r in records],
        [r.id for r in records],
        [r.at for r in records],
        [r.client_id for r in records],
        [r.purpose for r in records],
        [r.operation for r in records],
        [r.snapshot_id for r in records],
        [r.rule_set_id for r in records],
        [b"".join(r.subject_hashes) for r in records],
        [r.subject_count for r in records],
        [r.found_count for r in records],
        [r.response_digest for r in records],
        [r.request_id for r in records],
        [r.hmac_key_id for r in records],
        [r.prev_hash for r in records],
        [r.hash for r in records],
    ]


# A whole batch in ONE statement (one round trip, its own implicit transaction): the head moves
# from the record the batch was chained to (seq and hash) to the batch's last record, and the
# records go in, only if the head is still that record (compare-and-set: another process that
# appended meanwhile makes it insert nothing, and the writer chains again under the lock).
_APPEND_IF_HEAD = f"""
WITH moved AS (
    UPDATE audit_head SET seq = $3, hash = $4 WHERE id = 1 AND seq = $1 AND hash = $2
    RETURNING 1
)
{insert_records_sql(5, "moved")}
"""


async def append_if_head(raw: asyncpg.Connection, records: Sequence[AuditRecord]) -> bool:
    """Insert chained `records` and move the head, in one statement, if the head is still the
    record the first one links to (its seq and hash); False (nothing written) if it is not."""
    first, last = records[0], records[-1]
    status: str = await raw.execute(
        _APPEND_IF_HEAD,
        first.seq - 1,
        first.prev_hash,
        last.seq,
        last.hash,
        *record_arrays(records),
    )
    inserted = int(status.rsplit(" ", 1)[-1])
    if inserted not in (0, len(records)):  # one statement: all or nothing
        raise RuntimeError(f"audit append wrote {inserted} of {len(records)} records")
    return inserted == len(records)


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
# after it (seq range on the primary key), each confirmed against the full hash under the key
# the record names (one hash per configured key: a rotated key's records still match). One
# statement: one snapshot, so a concurrent `audit index` can neither hide nor double a record.
_TRAIL = """
WITH keyed AS (
    SELECT * FROM unnest(CAST(:key_ids AS text[]), CAST(:hashes AS bytea[])) AS k(id, hash)
),
hits AS (
    SELECT seq FROM audit_subjects WHERE subject = ANY(CAST(:keys AS int8[]))
    UNION
    SELECT seq FROM audit_log
    WHERE seq > (SELECT indexed_upto FROM audit_index WHERE id = 1)
)
SELECT a.at, a.id AS audit_id, a.client_id, c.name AS client_name, a.purpose, a.operation,
       a.snapshot_id, a.rule_set_id
FROM hits JOIN audit_log a ON a.seq = hits.seq
LEFT JOIN api_clients c ON c.id = a.client_id
WHERE EXISTS (
    SELECT FROM keyed WHERE keyed.id = a.hmac_key_id AND a.subject_hashes @> ARRAY[keyed.hash]
)
ORDER BY a.seq
"""


async def trail(conn: AsyncConnection, hashes: Sequence[tuple[str, bytes]]) -> list[TrailRow]:
    """Every record whose subjects include the subject's hash under the key the record names,
    oldest first. `hashes`: (key id, the subject's hash under that key), one per known key."""
    params = {
        "key_ids": [key_id for key_id, _ in hashes],
        "hashes": [h for _, h in hashes],
        "keys": [subject_key(h) for _, h in hashes],
    }
    rows = await conn.execute(text(_TRAIL), params)
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
