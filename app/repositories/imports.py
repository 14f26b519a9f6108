"""SQL of a release import (asyncpg): the claim on a release, its partitions, the set checks'
queries, the attach and publish, and the clean-up of a refused or failed import.

Every function runs on the caller's connection and inside the caller's transaction, if any.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

IMPORT_LOCK = 7411  # advisory lock class: (IMPORT_LOCK, snapshot key) held by a live importer
TABLES = ("families", "people")  # the partitioned tables a release loads, in load order


def partition_name(table: str, key: int) -> str:
    return f"{table}_{int(key)}"


# --- the claim: a `loading` row and the import's advisory lock ---------------------------------


async def release_status(conn: asyncpg.Connection, release: str) -> str | None:
    """The status of the snapshot row of `release`, None if there is none."""
    row = await conn.fetchrow("SELECT status FROM snapshots WHERE id = $1", release)
    return None if row is None else str(row["status"])


async def lock_release(conn: asyncpg.Connection, release: str) -> tuple[int, str] | None:
    """(key, status) of the snapshot row of `release`, locked until the transaction ends."""
    row = await conn.fetchrow("SELECT key, status FROM snapshots WHERE id = $1 FOR UPDATE", release)
    return None if row is None else (int(row["key"]), str(row["status"]))


async def try_import_lock(conn: asyncpg.Connection, key: int) -> bool:
    """Take the import's advisory lock on snapshot `key` unless another session holds it."""
    return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", IMPORT_LOCK, key))


async def import_lock(conn: asyncpg.Connection, key: int) -> None:
    await conn.fetchval("SELECT pg_advisory_lock($1, $2)", IMPORT_LOCK, key)


async def import_unlock(conn: asyncpg.Connection, key: int) -> None:
    await conn.execute("SELECT pg_advisory_unlock($1, $2)", IMPORT_LOCK, key)


async def retake_loading(conn: asyncpg.Connection, key: int, manifest: str) -> None:
    """A stale `loading` row taken over: its start time and manifest are this run's."""
    await conn.execute(
        "UPDATE snapshots SET created_at = now(), manifest = $2 WHERE key = $1", key, manifest
    )


async def insert_loading(
    conn: asyncpg.Connection, release: str, label: str, cutoff: dt.date, manifest: str
) -> int:
    """A new `loading` row for the release; its key."""
    key: int = await conn.fetchval(
        """INSERT INTO snapshots (id, label, cutoff_date, status, manifest)
           VALUES ($1, $2, $3, 'loading', $4) RETURNING key""",
        release,
        label,
        cutoff,
        manifest,
    )
    return key


async def insert_dry_run(conn: asyncpg.Connection, snapshot_id: str, cutoff: dt.date) -> int:
    """A throw-away `loading` row for a dry run (the caller rolls it back); its key."""
    key: int = await conn.fetchval(
        """INSERT INTO snapshots (id, label, cutoff_date, status, manifest)
           VALUES ($1, 'dry run', $2, 'loading', '{}') RETURNING key""",
        snapshot_id,
        cutoff,
    )
    return key


async def delete_snapshot(conn: asyncpg.Connection, key: int) -> None:
    await conn.execute("DELETE FROM snapshots WHERE key = $1", key)


# --- partitions: created standalone, filled by COPY, attached at publish -----------------------


async def create_partitions(conn: asyncpg.Connection, key: int) -> None:
    for table in TABLES:
        name = partition_name(table, key)
        # The CHECK matches the partition bound, so ATTACH needs no validation scan.
        await conn.execute(
            f"CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS, "
            f"CONSTRAINT {name}_snapshot CHECK (snapshot_key IS NOT NULL AND snapshot_key = {key}))"
        )


async def copy_into_partition(
    conn: asyncpg.Connection,
    table: str,
    key: int,
    columns: Sequence[str],
    source: AsyncIterable[bytes],
    *,
    schema: str | None = None,
    freeze: bool = False,
) -> None:
    """COPY text-format rows (`source`) into the release's partition of `table`.

    `freeze`: the rows are written frozen and their pages all-visible (COPY FREEZE), so the
    index builds, set checks and ANALYZE that read them next set no hint bits (no second write
    of every page) and the first reads after publish need no visibility checks. Only for a
    partition created in the caller's current transaction (PostgreSQL refuses it otherwise):
    until that commits no other transaction can see the table, so the rows being visible to all
    from the start is invisible to anyone."""
    await conn.copy_to_table(
        partition_name(table, key),
        source=source,
        columns=list(columns),
        format="text",
        schema_name=schema,
        freeze=freeze,
    )


# --- `--jobs N`: partitions loaded by several connections --------------------------------------
# Several processes COPY into the partitions over their own connections and commit, so the
# partitions must exist, committed, before they start. They are created in LOADING_SCHEMA, which
# no query of the service reads; the publishing transaction moves them into `public` and attaches
# them, so they appear with the `published` row or not at all. A killed import leaves them in
# LOADING_SCHEMA, where the next import of the release (which takes over its key) drops them.

LOADING_SCHEMA = "tepat_loading"


async def create_loading_partitions(conn: asyncpg.Connection, key: int) -> None:
    """The release's partitions, empty, committed, in LOADING_SCHEMA (any left-over dropped)."""
    # A concurrent import of another release may create it at the same moment.
    with contextlib.suppress(asyncpg.UniqueViolationError, asyncpg.DuplicateSchemaError):
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {LOADING_SCHEMA}")
    await drop_loading_partitions(conn, key)
    for table in TABLES:
        name = partition_name(table, key)
        await conn.execute(
            f"CREATE TABLE {LOADING_SCHEMA}.{name} (LIKE public.{table} INCLUDING DEFAULTS, "
            f"CONSTRAINT {name}_snapshot CHECK (snapshot_key IS NOT NULL AND snapshot_key = {key}))"
        )


async def drop_loading_partitions(conn: asyncpg.Connection, key: int) -> None:
    """Drop what a refused, failed or killed `--jobs` import of `key` left in LOADING_SCHEMA."""
    for table in TABLES:
        await conn.execute(f"DROP TABLE IF EXISTS {LOADING_SCHEMA}.{partition_name(table, key)}")


async def move_loading_partitions(conn: asyncpg.Connection, key: int) -> None:
    """Into `public`, inside the caller's transaction: the set checks and the attach follow."""
    for table in TABLES:
        await conn.execute(
            f"ALTER TABLE {LOADING_SCHEMA}.{partition_name(table, key)} SET SCHEMA public"
        )


async def next_key(conn: asyncpg.Connection) -> int:
    """A snapshot key no other import will take (a dry run's, with `--jobs`)."""
    key: int = await conn.fetchval("SELECT nextval(pg_get_serial_sequence('snapshots', 'key'))")
    return key


async def attach_and_publish(
    conn: asyncpg.Connection,
    key: int,
    checksum: str,
    family_count: int,
    people_count: int,
    import_report: str,
) -> None:
    """Attach both partitions and turn the row `published` (visible when the caller commits)."""
    for table in TABLES:
        name = partition_name(table, key)
        await conn.execute(f"ANALYZE {name}")
        await conn.execute(f"ALTER TABLE {table} ATTACH PARTITION {name} FOR VALUES IN ({key})")
    await conn.execute(
        """UPDATE snapshots SET status = 'published', published_at = now(), checksum = $2,
                  family_count = $3, people_count = $4, import_report = $5
           WHERE key = $1""",
        key,
        checksum,
        family_count,
        people_count,
        import_report,
    )


# --- the set checks' queries -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Found:
    """What a set check found: how many (rows, or distinct families) and the first five rows
    by source line, each as (source_line, the offending value)."""

    total: int
    examples: list[tuple[int, Any]]


async def set_check_memory(conn: asyncpg.Connection) -> None:
    """Memory for the set checks' sorts and hashes and the index builds, for the rest of the
    caller's transaction (the defaults spill a national release's aggregates to disk)."""
    await conn.execute("SET LOCAL work_mem = '128MB'")
    await conn.execute("SET LOCAL maintenance_work_mem = '512MB'")


async def unique_index(conn: asyncpg.Connection, table: str, key: int, column: str) -> bool:
    """Index the partition's `column` as unique; False (and no index) if values repeat."""
    name = partition_name(table, key)
    try:
        async with conn.transaction():
            await conn.execute(f"CREATE UNIQUE INDEX {name}_{column} ON {name} ({column})")
    except asyncpg.UniqueViolationError:
        return False
    return True


async def plain_index(conn: asyncpg.Connection, table: str, key: int, column: str) -> None:
    name = partition_name(table, key)
    await conn.execute(f"CREATE INDEX {name}_{column} ON {name} ({column})")


async def duplicates(conn: asyncpg.Connection, table: str, key: int, column: str) -> Found:
    """Rows of the partition whose `column` value occurs more than once."""
    name = partition_name(table, key)
    return await _found(
        conn,
        f"""SELECT t.source_line, t.{column} FROM {name} t
            JOIN (SELECT {column} FROM {name} GROUP BY {column} HAVING count(*) > 1) d
              USING ({column})""",
    )


# The family rules read one aggregate of the members by family (count, heads), built once:
# each rule is then a join of two tables of one row a family, not a scan of the people.
MEMBERS = "tepat_import_members"


async def count_members(conn: asyncpg.Connection, key: int) -> None:
    """The temporary aggregate the family rules read (dropped when the transaction ends)."""
    ppl = partition_name("people", key)
    await conn.execute(
        f"""CREATE TEMPORARY TABLE {MEMBERS} ON COMMIT DROP AS
            SELECT no_kk, count(*) AS members, count(*) FILTER (WHERE relationship = 1) AS heads
            FROM {ppl} GROUP BY no_kk"""
    )
    await conn.execute(f"ANALYZE {MEMBERS}")


async def members_of_unknown_families(conn: asyncpg.Connection, key: int) -> Found:
    """People whose no_kk is no family's (needs count_members and people's no_kk index)."""
    fam, ppl = partition_name("families", key), partition_name("people", key)
    return await _found(
        conn,
        f"""SELECT p.source_line, p.no_kk FROM {ppl} p
            JOIN (SELECT m.no_kk FROM {MEMBERS} m
                  WHERE NOT EXISTS (SELECT 1 FROM {fam} f WHERE f.no_kk = m.no_kk)) u
              USING (no_kk)""",
    )


async def families_without_members(conn: asyncpg.Connection, key: int) -> Found:
    fam = partition_name("families", key)
    return await _found(
        conn,
        f"""SELECT f.source_line, f.no_kk FROM {fam} f
            WHERE NOT EXISTS (SELECT 1 FROM {MEMBERS} m WHERE m.no_kk = f.no_kk)""",
    )


async def families_without_head(conn: asyncpg.Connection, key: int) -> Found:
    """Families with members, none of them the head (relationship 1)."""
    fam = partition_name("families", key)
    return await _found(
        conn,
        f"""SELECT f.source_line, f.no_kk FROM {fam} f
            JOIN {MEMBERS} m USING (no_kk) WHERE m.heads = 0""",
    )


async def heads_of_families_with_several(conn: asyncpg.Connection, key: int) -> Found:
    """The head rows of families with more than one head; `total` counts the families."""
    ppl = partition_name("people", key)
    return await _found(
        conn,
        f"""SELECT p.source_line, p.no_kk, dense_rank() OVER (ORDER BY p.no_kk) AS family FROM {ppl} p
            JOIN (SELECT no_kk FROM {MEMBERS} WHERE heads > 1) h USING (no_kk)
            WHERE p.relationship = 1""",
        count_distinct="no_kk",
    )


async def _found(
    conn: asyncpg.Connection, query: str, *, count_distinct: str | None = None
) -> Found:
    """Count what `query` finds (rows, or distinct `count_distinct`) and keep the first five."""
    counted = f"count(DISTINCT {count_distinct})" if count_distinct else "count(*)"
    rows = await conn.fetch(
        f"""WITH bad AS MATERIALIZED ({query})
            SELECT (SELECT {counted} FROM bad) AS total, b.*
            FROM (SELECT * FROM bad ORDER BY source_line LIMIT 5) b"""
    )
    total = int(rows[0]["total"]) if rows else 0
    return Found(total, [(r[1], r[2]) for r in rows])
