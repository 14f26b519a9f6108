"""SQL of the bulk stream slots: session advisory locks of one class, one lock per slot."""

from __future__ import annotations

import asyncpg

SLOT_LOCK = 7414  # advisory lock class: (SLOT_LOCK, hash of client id and slot number)


async def try_slot(conn: asyncpg.Connection, key: int) -> bool:
    """Take slot `key` for this session if no session holds it; never waits."""
    return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", SLOT_LOCK, key))


async def release_all(conn: asyncpg.Connection) -> None:
    """Give back every slot this session holds (closing the session would too, a little later)."""
    await conn.execute("SELECT pg_advisory_unlock_all()")
