"""Helpers shared by tests (not fixtures)."""

from __future__ import annotations

import asyncpg


async def drop_release(raw: asyncpg.Connection, release: str) -> None:
    """Remove a snapshot a test imported (partitions and row), as an operator would purge it."""
    key = await raw.fetchval("SELECT key FROM snapshots WHERE id = $1", release)
    if key is None:
        return
    for table in ("decisions", "people", "families"):
        await raw.execute(f"DROP TABLE IF EXISTS {table}_{int(key)}")
    await raw.execute("DELETE FROM snapshots WHERE key = $1", key)


async def visible_tables(raw: asyncpg.Connection) -> set[str]:
    rows = await raw.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {r["tablename"] for r in rows}
