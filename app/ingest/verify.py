"""Recompute a stored snapshot's content checksum from its rows (`tepat snapshot verify`)."""

from __future__ import annotations

import datetime as dt

import asyncpg

from app.ingest.columns import FAMILIES, PEOPLE
from app.ingest.manifest import snapshot_checksum
from app.ingest.validate import HASH_MOD, row_hash
from app.repositories.imports import partition_name
from app.schemas.snapshots import Snapshot


async def _table_sum(
    conn: asyncpg.Connection, table: str, columns: tuple[str, ...], key: int
) -> tuple[int, int]:
    count = 0
    total = 0
    pending = b""

    async def sink(chunk: bytes) -> None:
        nonlocal count, total, pending
        data = pending + chunk
        lines = data.split(b"\n")
        pending = lines.pop()
        for line in lines:
            total += row_hash(line.decode())
        count += len(lines)

    # COPY TO prints each value exactly as the importer rendered it for COPY FROM.
    await conn.copy_from_query(
        f"SELECT {', '.join(columns)} FROM {partition_name(table, key)}", output=sink
    )
    assert not pending
    return count, total % HASH_MOD


async def stored_checksum(conn: asyncpg.Connection, key: int, release: str, cutoff: dt.date) -> str:
    sums = {}
    for spec in (FAMILIES, PEOPLE):
        sums[spec.table] = await _table_sum(conn, spec.table, spec.content_columns, key)
    return snapshot_checksum(release, cutoff, sums)


async def verify_snapshot(raw: asyncpg.Connection, snap: Snapshot) -> tuple[bool, str]:
    """Recompute the content checksum from the stored rows; (matches, recomputed)."""
    recomputed = await stored_checksum(raw, snap.key, snap.id, snap.cutoff_date)
    return recomputed == snap.checksum, recomputed
