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
    settings: Settings,
    engine: AsyncEngine,
    folder: Path,
    release: str,
    people: int,
    seed: int,
    from_dir: Path | None = None,
) -> AsyncIterator[Path]:
    """A generated release imported and published for the block, dropped after it. With
    `from_dir`: the next quarter of that release (`tepat generate --from`)."""
    from app import db
    from app.ingest.importer import import_release
    from app.services import rule_sets
    from app.synth.generate import generate_release

    generate_release(folder, people=people, seed=seed, release=release, from_dir=from_dir)
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


CHANGES_FROM = "2025-07-23"  # older than the session's release: the current one stays current
CHANGES_TO = "2025-10-23"


@asynccontextmanager
async def two_quarters(
    settings: Settings, engine: AsyncEngine, root: Path, people: int, seed: int
) -> AsyncIterator[tuple[Path, Path]]:
    """Release CHANGES_FROM and its next quarter CHANGES_TO (`tepat generate --from`: movers,
    entrants, leavers), imported, with their decisions stored under the rule set in force."""

    before, after = root / CHANGES_FROM, root / CHANGES_TO
    async with (
        imported_release(settings, engine, before, CHANGES_FROM, people, seed),
        imported_release(settings, engine, after, CHANGES_TO, 0, seed + 1, from_dir=before),
    ):
        for release in (CHANGES_FROM, CHANGES_TO):
            await materialized(settings, engine, release)
        yield before, after


async def materialized(settings: Settings, engine: AsyncEngine, release: str) -> None:
    """Store a published release's decisions under its default rule set."""
    from app import db
    from app.services import materialize, pinning

    async with engine.connect() as conn:
        pinned = await pinning.pin(conn, release, None)
    reader, writer = await db.connect_raw(settings), await db.connect_raw(settings)
    try:
        await materialize.materialize(reader, writer, pinned.snapshot, pinned.rule_set)
    finally:
        await reader.close()
        await writer.close()
