"""SQL over the audit log's Merkle tree (audit_tree) and its signed checkpoints
(audit_checkpoints). Both are append-only: a node or a checkpoint never changes once written."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import asyncpg

from app.repositories.audit import AuditRecord

_FIELDS = tuple(AuditRecord.__dataclass_fields__)
TREE_LOCK = 7415  # pg_advisory_xact_lock key: one extender of the tree at a time


async def tree_size(conn: asyncpg.Connection) -> int:
    """Leaves in the stored tree (its level-0 nodes are leaves 0 .. size - 1)."""
    size = await conn.fetchval("SELECT coalesce(max(idx) + 1, 0) FROM audit_tree WHERE level = 0")
    return int(size)


async def nodes(
    conn: asyncpg.Connection, keys: Iterable[tuple[int, int]]
) -> dict[tuple[int, int], bytes]:
    """The stored hashes of these (level, index) nodes; absent ones are left out."""
    levels, indexes = [], []
    for level, index in keys:
        levels.append(level)
        indexes.append(index)
    if not levels:
        return {}
    rows = await conn.fetch(
        "SELECT t.level, t.idx, t.hash FROM audit_tree t "
        "JOIN unnest($1::smallint[], $2::bigint[]) AS k(level, idx) USING (level, idx)",
        levels,
        indexes,
    )
    return {(r["level"], r["idx"]): bytes(r["hash"]) for r in rows}


async def insert_nodes(conn: asyncpg.Connection, new: Sequence[tuple[int, int, bytes]]) -> None:
    await conn.copy_records_to_table("audit_tree", records=new, columns=("level", "idx", "hash"))


async def lock_tree(conn: asyncpg.Connection) -> None:
    """Inside a transaction: wait for any other extender of the tree."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", TREE_LOCK)


async def records_from(conn: asyncpg.Connection, seq: int, limit: int) -> list[AuditRecord]:
    """Up to `limit` audit records from `seq` on, in chain order."""
    rows = await conn.fetch(
        f"SELECT {', '.join(_FIELDS)} FROM audit_log WHERE seq >= $1 ORDER BY seq LIMIT $2",
        seq,
        limit,
    )
    return [
        AuditRecord(**{**dict(r), "subject_hashes": tuple(bytes(h) for h in r["subject_hashes"])})
        for r in rows
    ]


async def record_by_id(conn: asyncpg.Connection, audit_id: str) -> AuditRecord | None:
    row = await conn.fetchrow(f"SELECT {', '.join(_FIELDS)} FROM audit_log WHERE id = $1", audit_id)
    if row is None:
        return None
    return AuditRecord(
        **{**dict(row), "subject_hashes": tuple(bytes(h) for h in row["subject_hashes"])}
    )


async def last_seq(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT coalesce(max(seq), 0) FROM audit_log"))


async def save_checkpoint(conn: asyncpg.Connection, size: int, root: bytes, note: bytes) -> None:
    await conn.execute(
        "INSERT INTO audit_checkpoints (size, root, note) VALUES ($1, $2, $3) "
        "ON CONFLICT (size) DO NOTHING",
        size,
        root,
        note.decode(),
    )


async def latest_checkpoint(conn: asyncpg.Connection) -> tuple[int, str] | None:
    row = await conn.fetchrow("SELECT size, note FROM audit_checkpoints ORDER BY size DESC LIMIT 1")
    return None if row is None else (int(row["size"]), str(row["note"]))


async def checkpoint_sizes(conn: asyncpg.Connection) -> list[int]:
    return [int(r[0]) for r in await conn.fetch("SELECT size FROM audit_checkpoints ORDER BY size")]
