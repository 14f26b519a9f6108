"""Decisions of a whole snapshot under one rule set, computed once by the engine and stored.

The engine (app.eligibility) stays the only implementation of docs/rules.md: this streams every
family with its members out of the snapshot (a server-side cursor, ordered by No. KK), evaluates
it in Python, and COPYs one compact row a person into a table of its own, which becomes the
(snapshot, rule set) partition of `decisions` (ATTACH PARTITION) in one transaction together with
its `materializations` row, so it is visible whole or not at all. Both inputs are immutable, so
the result never needs recomputing.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context

import asyncpg

from app import db
from app.config import Settings
from app.eligibility import (
    PROGRAM_ORDER,
    SCHOOL_LEVELS,
    Decision,
    FamilyEvaluation,
    Program,
    RuleSet,
    evaluate_family,
)
from app.identifiers import as_str
from app.models.tables import CRITERIA
from app.repositories.registry import FamilyRow, PersonRow
from app.schemas.snapshots import Snapshot
from app.services.eligibility import to_family

Progress = Callable[[int], None]

_STREAM = """
SELECT f.no_kk, f.region_code, f.decile, f.asn_tni_polri, f.pkh_recipient, f.bpnt_recipient,
       f.home_ownership, f.floor_area_m2, f.drinking_water, f.toilet, f.lighting, f.power_va,
       m.nik, m.relationship, m.sex, m.birth_date, m.name, m.marital_status, m.school_status,
       m.school_level, m.disability, m.pregnant, m.chronic_illness, m.working, m.pbi_recipient
FROM families_{k} f JOIN people_{k} m ON m.no_kk = f.no_kk
{where}ORDER BY f.no_kk
"""
# The first No. KK of each of `$1` ranges of about equal family counts.
_SPLITS = """
SELECT min(no_kk) FROM (SELECT no_kk, ntile($1) OVER (ORDER BY no_kk) AS t FROM families_{k}) r
GROUP BY t ORDER BY 1
"""

# The COPY's columns: those the same for every member of a family first, so that part of a line
# is rendered once a family; then the person's.
COLUMNS = (
    "snapshot_key", "rule_set_key", "no_kk", "region_code", "pkh_yearly", "decile",
    "pkh_eligible", "bpnt_eligible", "pkh_recipient", "bpnt_recipient",
    "nik", "relationship", "head", "sr_level", "sr_priority", "criteria", "pbi_eligible",
    "sr_eligible", "pbi_recipient", "sex", "marital_status", "school_status", "school_level",
    "disability", "pregnant", "chronic_illness", "working", "birth_date", "name",
)  # fmt: skip
_LEVEL = {name: str(code) for name, code in SCHOOL_LEVELS.items()}  # Sekolah Rakyat's: SR_LEVELS
NULL = "\\N"
_BIT = {criterion: 1 << i for i, criterion in enumerate(CRITERIA)}


def criteria_bits(decisions: Iterable[Decision]) -> int:
    """The `criteria` column: each criterion's passed flag at its bit (app.models.tables.CRITERIA)."""
    bits = 0
    for d in decisions:
        program = str(d.program)
        for c in d.criteria:
            if c.passed:
                bits |= _BIT[program, c.id]
    return bits


@dataclass(frozen=True, slots=True)
class Materialized:
    snapshot: str
    rule_set: str
    people: int
    families: int
    seconds: float
    created: bool  # False: it was stored already


def _b(value: bool | None) -> str:
    return NULL if value is None else ("t" if value else "f")


def _i(value: int | None) -> str:
    return NULL if value is None else str(value)


_B = {None: NULL, True: "t", False: "f"}
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def copy_text(value: str) -> str:
    """`value` as one field of COPY's text format (backslash, tab and line breaks escaped)."""
    return value.translate(_COPY_ESCAPES)


# The person's own coded fields (sex to working) rendered once per distinct combination: a few
# hundred in a release, and a dictionary probe is cheaper than formatting eight fields a person.
_OwnKey = tuple[
    int, int | None, int | None, int | None, int | None, bool | None, bool | None, bool | None
]
_OWN: dict[_OwnKey, str] = {}
_OWN_MAX = 1 << 16


def _own(m: PersonRow) -> str:
    key = (
        m.sex, m.marital_status, m.school_status, m.school_level, m.disability, m.pregnant,
        m.chronic_illness, m.working,
    )  # fmt: skip
    text = _OWN.get(key)
    if text is None:
        text = (
            f"{m.sex}\t{_i(m.marital_status)}\t{_i(m.school_status)}\t{_i(m.school_level)}\t"
            f"{_i(m.disability)}\t{_b(m.pregnant)}\t{_b(m.chronic_illness)}\t{_b(m.working)}"
        )
        if len(_OWN) < _OWN_MAX:
            _OWN[key] = text
    return text


def rows_of(
    snapshot_key: int,
    rule_set_key: int,
    f: FamilyRow,
    members: list[PersonRow],
    evaluation: FamilyEvaluation,
) -> list[str]:
    """The COPY lines of one family in COLUMNS' order: a person a line (family programs
    repeated, `head` once)."""
    by_program = {d.program: d for d in evaluation.family}
    pkh, bpnt = by_program[Program.PKH], by_program[Program.BPNT]
    yearly = (pkh.benefit or {}).get("yearly_rupiah", 0) if pkh.eligible else 0
    head_nik = min((m.nik for m in members if m.relationship == 1), default=None)
    family = (
        f"{snapshot_key}\t{rule_set_key}\t{f.no_kk}\t{f.region_code}\t{yearly}\t"
        f"{NULL if f.decile is None else f.decile}\t{_B[pkh.eligible]}\t{_B[bpnt.eligible]}\t"
        f"{_B[f.pkh_recipient]}\t{_B[f.bpnt_recipient]}\t"
    )
    lines = []
    family_bits = criteria_bits(evaluation.family)
    people = evaluation.people
    for m in members:
        pbi, sr = people[as_str(m.nik)]
        bits = family_bits | criteria_bits((pbi, sr))
        lines.append(
            f"{family}{m.nik}\t{m.relationship}\t{_B[m.nik == head_nik]}\t"
            f"{_LEVEL.get(sr.level or '', NULL)}\t{NULL if sr.priority is None else sr.priority}\t"
            f"{bits}\t{_B[pbi.eligible]}\t{_B[sr.eligible]}\t{_B[m.pbi_recipient]}\t{_own(m)}\t"
            f"{m.birth_date.isoformat()}\t{m.name.translate(_COPY_ESCAPES)}\n"
        )
    return lines


async def _families(
    reader: asyncpg.Connection, key: int, lo: int | None = None, hi: int | None = None
) -> AsyncIterator[tuple[FamilyRow, list[PersonRow]]]:
    """Every family of the snapshot with its members, by No. KK; only `lo <= no_kk < hi` when
    given (a missing bound is open)."""
    where = "WHERE ($1::bigint IS NULL OR f.no_kk >= $1) AND ($2::bigint IS NULL OR f.no_kk < $2)\n"
    current: FamilyRow | None = None
    members: list[PersonRow] = []
    query = _STREAM.format(k=int(key), where=where)
    async for r in reader.cursor(query, lo, hi, prefetch=5000):
        if current is None or r[0] != current.no_kk:
            if current is not None:
                yield current, members
            current, members = FamilyRow(*r[:12]), []
        members.append(PersonRow(*r[12:]))
    if current is not None:
        yield current, members


async def _copy_source(
    reader: asyncpg.Connection,
    snapshot: Snapshot,
    rule_set: RuleSet,
    rule_set_key: int,
    counts: dict[str, int],
    progress: Progress | None,
    lo: int | None = None,
    hi: int | None = None,
) -> AsyncIterator[bytes]:
    """COPY text of the decisions of the families `lo <= no_kk < hi`, ~8,192 people a chunk."""
    key = snapshot.key
    buffer: list[str] = []
    async with reader.transaction(isolation="repeatable_read", readonly=True):
        async for f, members in _families(reader, key, lo, hi):
            evaluation = evaluate_family(
                to_family(f, members), rule_set, snapshot.cutoff_date, PROGRAM_ORDER
            )
            buffer.extend(rows_of(key, rule_set_key, f, members, evaluation))
            counts["families"] += 1
            if len(buffer) >= 8192:
                counts["people"] += len(buffer)
                if progress:
                    progress(len(buffer))
                yield "".join(buffer).encode()
                buffer.clear()
    if buffer:
        counts["people"] += len(buffer)
        if progress:
            progress(len(buffer))
        yield "".join(buffer).encode()


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
        return _copy_source(reader, snapshot, rule_set, rule_set_key, counts, progress)

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


# --jobs N: ranges of No. KK evaluated in N processes. The staging table is committed empty, each
# worker COPYs its range into it and commits; no query reads it. The publishing transaction then
# makes it the leaf (above). A failed worker fails the run and the staging table is dropped.


def _worker(
    settings: Settings,
    snapshot: Snapshot,
    rule_set: RuleSet,
    rule_set_key: int,
    lo: int | None,
    hi: int | None,
) -> tuple[int, int]:
    """One process's range: its people and families, COPYed into the staging table."""

    async def go() -> tuple[int, int]:
        reader = await db.connect_raw(settings)
        writer = await db.connect_raw(settings)
        counts = {"people": 0, "families": 0}
        try:
            async with writer.transaction():
                await writer.copy_to_table(
                    _staging(snapshot.key, rule_set_key),
                    source=_copy_source(
                        reader, snapshot, rule_set, rule_set_key, counts, None, lo, hi
                    ),
                    columns=list(COLUMNS),
                    format="text",
                )
        finally:
            await reader.close()
            await writer.close()
        return counts["people"], counts["families"]

    return asyncio.run(go())


async def materialize_jobs(
    settings: Settings,
    snapshot: Snapshot,
    rule_set: RuleSet,
    *,
    jobs: int | None = None,
    progress: Progress | None = None,
) -> Materialized:
    """`materialize` over `jobs` processes (default: the number of cores). One job: as before,
    one COPY in one transaction. Several: ranges of No. KK of about equal family counts, each in
    a spawned process, then one publishing transaction. Identical rows either way."""
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
            try:
                loop = asyncio.get_running_loop()
                with ProcessPoolExecutor(len(splits) or 1, mp_context=get_context("spawn")) as pool:
                    futures = [
                        loop.run_in_executor(
                            pool,
                            _worker,
                            settings,
                            snapshot,
                            rule_set,
                            rule_set_key,
                            bounds[i],
                            bounds[i + 1],
                        )
                        for i in range(len(bounds) - 1)
                    ]
                    try:
                        for finished in asyncio.as_completed(futures):
                            n, f = await finished
                            counts["people"] += n
                            counts["families"] += f
                            if progress:
                                progress(n)
                    except BaseException:
                        pool.shutdown(wait=True, cancel_futures=True)
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
