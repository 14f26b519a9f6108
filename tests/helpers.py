"""Helpers shared by tests (not fixtures)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings


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


@asynccontextmanager
async def imported_release(
    settings: Settings, engine: AsyncEngine, folder: Path, release: str, people: int, seed: int
) -> AsyncIterator[Path]:
    """A generated release imported and published for the block, dropped after it."""
    from app import db
    from app.ingest.importer import import_release
    from app.services import rule_sets
    from app.synth.generate import generate_release

    generate_release(folder, people=people, seed=seed, release=release)
    async with engine.begin() as conn:
        await rule_sets.ensure_shipped(conn)
    raw = await db.connect_raw(settings)
    try:
        await drop_release(raw, release)
        result = await import_release(raw, folder)
        assert result.published, result.report.to_dict()
    finally:
        await raw.close()
    try:
        yield folder
    finally:
        raw = await db.connect_raw(settings)
        try:
            await drop_release(raw, release)
        finally:
            await raw.close()
