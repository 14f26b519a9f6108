"""Decisions of a whole snapshot under one rule set, computed once and stored.

This reads every family with its members out of the snapshot in chunks of No. KK (COPY, in a
repeatable-read transaction), decides a chunk at a time with app.eligibility.columnar (the
engine's rules over arrays, held equal to `evaluate_family` by its tests), and COPYs one compact
row a person into a table of its own, which becomes the (snapshot, rule set) partition of
`decisions` (ATTACH PARTITION) in one transaction together with its `materializations` row, so
it is visible whole or not at all. Both inputs are immutable, so the result never needs
recomputing.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from itertools import pairwise

import asyncpg

from app import db
from app.config import Settings
from app.eligibility import RuleSet
from app.models.tables import CRITERIA
from app.schemas.snapshots import Snapshot
from app.services.decide import COLUMNS, copy_source

Progress = Callable[[int], None]
CRITERION_BITS = {criterion: 1 << i for i, criterion in enumerate(CRITERIA)}

# The first No. KK of each of `$1` ranges of about equal family counts.
_SPLITS = """
SELECT min(no_kk) FROM (SELECT no_kk, ntile($1) OVER (ORDER BY no_kk) AS t FROM families_{k}) r
GROUP BY t ORDER BY 1
"""


@dataclass(frozen=True, slots=True)
class Materialized:
    snapshot: str
    rule_set: str
    people: int
    families: int
    seconds: float
    created: bool  # False: it was stored already


async def _already_stored(
    conn: asyncpg.Connection, snapshot: Snapshot, rule_set: RuleSet, key: int, rule_set_key: int
) -> Materialized | None:
    """What an earlier run stored for this (snapshot, rule set), if one did (under the lock)."""
    done = await conn.fetchrow(
        "SELECT people, families, seconds FROM materializations "
        "WHERE snapshot_key = $1 AND rule_set_key = $2",
        key,
        rule_set_key,
    )
    if done is None:
        return None
    return Materialized(
        snapshot.id, rule_set.id, done["people"], done["families"], done["seconds"], created=False
    )


# The layout: `decisions` is LIST-partitioned by snapshot (the initial migration); the snapshot's
# partition `decisions_<snapshot key>`, created here, is LIST-partitioned by rule set, and the
# decisions of one (snapshot, rule set) are a table of their own, `decisions_<key>_<rule set key>`.
#
# A run writes its rows into a staging table shaped like that leaf (the same columns and generated
# codes, no index, and a CHECK of the leaf's bound), then, in the transaction that inserts the
# `materializations` row, builds its NIK index and statistics once over all the rows and ATTACHes
# it as the leaf. ATTACH neither copies nor scans the rows (the CHECK implies the bound), so the
# serial step is an index build, not a second write of every row. Nothing reads the staging table:
# readers see a rule set's rows all at once with its `materializations` row, or none of them; a
# failed run drops it, a killed one leaves it for the next run of the same pair to drop.
#
# A snapshot partition made by an earlier version (a plain table of all its rule sets' rows)
# keeps its layout: the staged rows are inserted into it (INSERT ... SELECT), as they were.


def _partition(key: int) -> str:
    return f"decisions_{int(key)}"


def _leaf(key: int, rule_set_key: int) -> str:
    return f"decisions_{int(key)}_{int(rule_set_key)}"


def _staging(key: int, rule_set_key: int) -> str:
    return f"decisions_staging_{int(key)}_{int(rule_set_key)}"


async def _snapshot_partition(conn: asyncpg.Connection, key: int) -> bool:
    """The snapshot's partition of `decisions`, created (partitioned by rule set) if missing, in
    its own short transaction: creating it locks `decisions`, which must not be held for the run.
    True if it is partitioned by rule set; False for an earlier version's plain partition."""
    partition = _partition(key)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(7412, $1)", key)
        kind = await conn.fetchval(
            "SELECT relkind::text FROM pg_class WHERE oid = to_regclass($1)", partition
        )
        if kind is None:
            await conn.execute(
                f"CREATE TABLE {partition} PARTITION OF decisions FOR VALUES IN ({int(key)}) "
                "PARTITION BY LIST (rule_set_key)"
            )
            return True
        return bool(kind == "p")


async def _create_staging(conn: asyncpg.Connection, key: int, rule_set_key: int) -> str:
    """A fresh staging table for (snapshot, rule set), in the caller's transaction; its name."""
    staging = _staging(key, rule_set_key)
    await conn.execute(f"DROP TABLE IF EXISTS {staging}")  # a killed run's
    # Autovacuum off while it loads: a vacuum started on it would hold up the index build.
    await conn.execute(
        f"CREATE TABLE {staging} (LIKE decisions INCLUDING DEFAULTS INCLUDING GENERATED, "
        f"CONSTRAINT {staging}_bound "
        f"CHECK (snapshot_key = {int(key)} AND rule_set_key = {int(rule_set_key)})) "
        "WITH (autovacuum_enabled = false)"
    )
    return staging


async def _publish(
    conn: asyncpg.Connection,
    key: int,
    rule_set_key: int,
    attach: bool,
    counts: dict[str, int],
    started: float,
) -> float:
    """Make the staged rows the stored decisions of (snapshot, rule set), in the caller's
    transaction, with their `materializations` row; the run's seconds."""
    staging, leaf, partition = (
        _staging(key, rule_set_key),
        _leaf(key, rule_set_key),
        _partition(key),
    )
    if attach:
        if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", leaf):
            # Rows without their `materializations` row are not stored decisions (removed by
            # hand): replaced.
            await conn.execute(f"DROP TABLE {leaf}")
        # One sorted build over every row (in parallel where the server allows it), then the
        # statistics: without them the planner's generic plan for the lookup scans the table
        # (bench/: 9.3 ms vs 0.09 ms a NIK), and autovacuum may be off or late.
        await conn.execute(f"CREATE INDEX {leaf}_nik_idx ON {staging} (nik)")
        await conn.execute(f"ANALYZE {staging}")
        await conn.execute(
            f"ALTER TABLE {partition} ATTACH PARTITION {staging} "
            f"FOR VALUES IN ({int(rule_set_key)})"
        )
        # The bound is the partition's own constraint now; the CHECK only repeated it.
        await conn.execute(
            f"ALTER TABLE {staging} DROP CONSTRAINT {staging}_bound, RESET (autovacuum_enabled)"
        )
        await conn.execute(f"ALTER TABLE {staging} RENAME TO {leaf}")
    else:
        columns = ", ".join(COLUMNS)
        await conn.execute(f"INSERT INTO {partition} ({columns}) SELECT {columns} FROM {staging}")
        await conn.execute(f"DROP TABLE {staging}")
        await conn.execute(f"ANALYZE {partition}")
    seconds = time.perf_counter() - started
    await conn.execute(
        "INSERT INTO materializations (snapshot_key, rule_set_key, people, families, seconds) "
        "VALUES ($1, $2, $3, $4, $5)",
        key,
        rule_set_key,
        counts["people"],
        counts["families"],
        seconds,
    )
    return seconds


async def materialize(
    reader: asyncpg.Connection,
    writer: asyncpg.Connection,
    snapshot: Snapshot,
    rule_set: RuleSet,
    *,
    progress: Progress | None = None,
) -> Materialized:
    """Store the decisions of `snapshot` under `rule_set` (idempotent). Two connections: one
    streams the registry, the other COPYs the decisions into a staging table and publishes it,
    all in one transaction."""
    started = time.perf_counter()
    rule_set_key = await writer.fetchval("SELECT key FROM rule_sets WHERE id = $1", rule_set.id)
    if rule_set_key is None:
        raise LookupError(f"rule set {rule_set.id} is not stored")
    key = snapshot.key
    counts = {"people": 0, "families": 0}

    def source() -> AsyncIterator[bytes]:
        return copy_source(
            reader, snapshot, rule_set, rule_set_key, CRITERION_BITS, counts, progress
        )

    attach = await _snapshot_partition(writer, key)
    # Like the importer, this is operator batch work: it owns its transaction.
    async with writer.transaction():
        # One materialisation of a (snapshot, rule set) at a time; a second caller finds it done.
        await writer.execute("SELECT pg_advisory_xact_lock(7413, $1)", key)
        done = await _already_stored(writer, snapshot, rule_set, key, rule_set_key)
        if done is not None:
            return done
        staging = await _create_staging(writer, key, rule_set_key)
        await writer.copy_to_table(staging, source=source(), columns=list(COLUMNS), format="text")
        seconds = await _publish(writer, key, rule_set_key, attach, counts, started)
    return Materialized(
        snapshot.id, rule_set.id, counts["people"], counts["families"], seconds, created=True
    )


# --jobs N: ranges of No. KK decided side by side, each over its own connections. The staging
# table is committed empty, each range COPYs into it and commits; no query reads it. The publishing transaction then makes it the
# leaf (above). A failed range fails the run and the staging table is dropped.


async def materialize_jobs(
    settings: Settings,
    snapshot: Snapshot,
    rule_set: RuleSet,
    *,
    jobs: int | None = None,
    progress: Progress | None = None,
) -> Materialized:
    """`materialize` over `jobs` ranges at once (default: the number of cores). One job: as
    before, one COPY in one transaction. Several: ranges of No. KK of about equal family counts,
    each read, decided and COPYed over its own two connections, side by side in this process
    (the rules run in threads: numpy and pyarrow release the GIL, and the server does most of
    the work), then one publishing transaction. Identical rows either way."""
    jobs = jobs or os.cpu_count() or 1
    if jobs <= 1:
        reader = await db.connect_raw(settings)
        writer = await db.connect_raw(settings)
        try:
            return await materialize(reader, writer, snapshot, rule_set, progress=progress)
        finally:
            await reader.close()
            await writer.close()
    started = time.perf_counter()
    key = snapshot.key
    conn = await db.connect_raw(settings)
    try:
        rule_set_key = await conn.fetchval("SELECT key FROM rule_sets WHERE id = $1", rule_set.id)
        if rule_set_key is None:
            raise LookupError(f"rule set {rule_set.id} is not stored")
        # The same lock as the single-process path, held for the whole run (session level).
        await conn.execute("SELECT pg_advisory_lock(7413, $1)", key)
        try:
            done = await _already_stored(conn, snapshot, rule_set, key, rule_set_key)
            if done is not None:
                return done
            attach = await _snapshot_partition(conn, key)
            async with conn.transaction():
                staging = await _create_staging(conn, key, rule_set_key)
            splits = [r[0] for r in await conn.fetch(_SPLITS.format(k=int(key)), jobs)]
            bounds: list[int | None] = [None, *splits[1:], None]
            counts = {"people": 0, "families": 0}

            async def copy_range(lo: int | None, hi: int | None) -> None:
                reader = await db.connect_raw(settings)
                writer = await db.connect_raw(settings)
                try:
                    async with writer.transaction():
                        source = copy_source(
                            reader, snapshot, rule_set, rule_set_key, CRITERION_BITS, counts,
                            progress, lo, hi,
                        )  # fmt: skip
                        await writer.copy_to_table(
                            staging, source=source, columns=list(COLUMNS), format="text"
                        )
                finally:
                    await reader.close()
                    await writer.close()

            try:
                # One failed range cancels the others (their COPYs roll back) and fails the run
                # with its own exception.
                tasks = [asyncio.create_task(copy_range(lo, hi)) for lo, hi in pairwise(bounds)]
                try:
                    await asyncio.gather(*tasks)
                except BaseException:
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                    raise
                async with conn.transaction():
                    seconds = await _publish(conn, key, rule_set_key, attach, counts, started)
            except BaseException:
                await conn.execute(f"DROP TABLE IF EXISTS {staging}")
                raise
        finally:
            await conn.execute("SELECT pg_advisory_unlock(7413, $1)", key)
    finally:
        await conn.close()
    return Materialized(
        snapshot.id, rule_set.id, counts["people"], counts["families"], seconds, created=True
    )
