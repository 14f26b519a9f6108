"""SQL of the change lists: the stored decisions of two snapshots joined on the NIK.

One statement, `FULL OUTER JOIN ... USING (nik)` of the two `decisions` partitions (each under
its rule set), filtered in the database to the people whose decisions changed the way the
request asks, streamed through a server-side cursor: memory stays flat whatever the sizes.
app.services.changes builds the filter from validated names only (never from client text) and
renders each row.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass

import asyncpg

# The eligibility column of each program in `decisions`.
ELIGIBLE = {
    "PKH": "pkh_eligible",
    "BPNT": "bpnt_eligible",
    "PBI_JK": "pbi_eligible",
    "SEKOLAH_RAKYAT": "sr_eligible",
}

# (`|` and `<<` share one precedence in PostgreSQL, left to right: the shifts need brackets.)
# Each row, by position (app.services.changes reads them so):
#   0 nik, 1-2 no_kk (from, to; NULL where absent), 3-4 region_code, 5-6 relationship,
#   7-8 decile, 9-10 eligibility bits (PKH 1, BPNT 2, PBI JK 4, Sekolah Rakyat 8),
#   11-12 criteria (app.models.tables.CRITERIA), 13-14 pkh_yearly, 15-16 sr_level.
_SIDE = """SELECT nik, no_kk, region_code, relationship, decile, criteria, pkh_yearly, sr_level,
       (pkh_eligible::int | (bpnt_eligible::int << 1) | (pbi_eligible::int << 2)
        | (sr_eligible::int << 3)) AS eligible, pkh_eligible, bpnt_eligible, pbi_eligible,
       sr_eligible
  FROM decisions WHERE snapshot_key = {s} AND rule_set_key = {r}"""

_CHANGES = """
SELECT nik, f.no_kk, t.no_kk, f.region_code, t.region_code, f.relationship, t.relationship,
       f.decile, t.decile, f.eligible, t.eligible, f.criteria, t.criteria,
       f.pkh_yearly, t.pkh_yearly, f.sr_level, t.sr_level
FROM ({before}) f FULL OUTER JOIN ({after}) t USING (nik)
WHERE ({changed}){region}
"""


# For the statement's transaction. The planner estimates a full join of two partitions of
# 1 M rows at tens of millions of rows, past the JIT thresholds: compiling the expressions costs
# more than it saves (bench/ P8: 0.26 of 0.6 s at 100,000 people). The whole result is read,
# so the cursor is planned for all rows, not the first 10 %.
SESSION = "SET LOCAL jit = off; SET LOCAL cursor_tuple_fraction = 1"


@dataclass(frozen=True, slots=True)
class Filter:
    """What counts as a change (validated names only): programs, kinds, a region prefix."""

    programs: tuple[str, ...]
    kinds: frozenset[str]
    # Programs whose fixed benefit differs between the two rule sets (BPNT, PBI JK): every
    # person eligible on both sides has a `benefit_changed`.
    amount_changed: frozenset[str] = frozenset()
    prefix: int | None = None  # the region prefix as a number, and its divisor
    divisor: int = 1


def _terms(where: Filter) -> list[str]:
    terms: list[str] = []
    for program in where.programs:
        col = ELIGIBLE[program]
        before, after = f"coalesce(f.{col}, false)", f"coalesce(t.{col}, false)"
        if {"gained", "lost"} <= where.kinds:
            terms.append(f"{before} <> {after}")
        elif "gained" in where.kinds:
            terms.append(f"({after} AND NOT {before})")
        elif "lost" in where.kinds:
            terms.append(f"({before} AND NOT {after})")
        if "benefit_changed" in where.kinds:
            if program == "PKH":
                terms.append("(f.pkh_eligible AND t.pkh_eligible AND f.pkh_yearly <> t.pkh_yearly)")
            elif program in where.amount_changed:
                terms.append(f"(f.{col} AND t.{col})")
        if "level_changed" in where.kinds and program == "SEKOLAH_RAKYAT":
            terms.append(
                "(f.sr_eligible AND t.sr_eligible AND f.sr_level IS DISTINCT FROM t.sr_level)"
            )
    return terms


def changes_query(where: Filter, keyset: bool = False) -> str | None:
    """The statement for this filter ($1-$4: the two snapshot and rule set keys); None when no
    change can match (e.g. only benefit_changed asked of programs whose benefit cannot change).

    `keyset`: the rows in NIK order, only those after the NIK $5 (a change list run as a job:
    its worker resumes after the last person it committed, app.services.jobs)."""
    terms = _terms(where)
    if not terms:
        return None
    region = ""
    if where.prefix is not None:
        d, p = int(where.divisor), int(where.prefix)
        region = f" AND (f.region_code / {d} = {p} OR t.region_code / {d} = {p})"
    after = " AND nik > $5" if keyset else ""
    return _CHANGES.format(
        before=_SIDE.format(s="$1", r="$2") + after,
        after=_SIDE.format(s="$3", r="$4") + after,
        changed=" OR ".join(terms),
        region=region,
    ) + ("ORDER BY nik\n" if keyset else "")


def baseline_query(keys: tuple[int, int, int, int]) -> str:
    """The bare join the benchmark compares against (bench/, `COPY (...) TO STDOUT`, so the keys
    are literals): the same columns of every person of both sides, nothing filtered."""
    a, b, c, d = (int(k) for k in keys)
    return _CHANGES.format(
        before=_SIDE.format(s=a, r=b), after=_SIDE.format(s=c, r=d), changed="true", region=""
    )


# The report: per region (the `to` region, or the `from` one for people who left) and program,
# people who gained and lost; and per region of `from`, the people eligible there before.
_REPORT = """
SELECT coalesce(t.region_code, f.region_code) / {d} AS region, {counts}
FROM ({before}) f FULL OUTER JOIN ({after}) t USING (nik)
WHERE {changed}
GROUP BY 1
"""
_BASE = """
SELECT region_code / {d} AS region, {counts}
FROM decisions WHERE snapshot_key = $1 AND rule_set_key = $2
GROUP BY 1
"""


async def report_counts(
    conn: asyncpg.Connection,
    keys: tuple[int, int, int, int],
    programs: Collection[str],
    divisor: int,
) -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
    """(gained and lost per region and program, eligible in `from` per region and program):
    columns `region`, then `<program>_gained`, `<program>_lost` / `<program>_eligible`."""
    d = int(divisor)
    counts, base, changed = [], [], []
    for program in programs:
        col = ELIGIBLE[program]
        before, after = f"coalesce(f.{col}, false)", f"coalesce(t.{col}, false)"
        counts.append(f'count(*) FILTER (WHERE {after} AND NOT {before}) AS "{program}_gained"')
        counts.append(f'count(*) FILTER (WHERE {before} AND NOT {after}) AS "{program}_lost"')
        base.append(f'count(*) FILTER (WHERE {col}) AS "{program}_eligible"')
        changed.append(f"{before} <> {after}")
    changes = await conn.fetch(
        _REPORT.format(
            d=d,
            counts=", ".join(counts),
            before=_SIDE.format(s="$1", r="$2"),
            after=_SIDE.format(s="$3", r="$4"),
            changed=" OR ".join(changed),
        ),
        *keys,
    )
    before = await conn.fetch(_BASE.format(d=d, counts=", ".join(base)), keys[0], keys[1])
    return changes, before


async def stream(
    conn: asyncpg.Connection,
    query: str,
    keys: tuple[int, int, int, int],
    prefetch: int = 5000,
    after_nik: int | None = None,
) -> AsyncIterator[asyncpg.Record]:
    """The rows of `query`, through a server-side cursor in one read-only transaction
    (`after_nik`: the keyset statement's $5, `changes_query(..., keyset=True)`)."""
    args: tuple[int, ...] = keys if after_nik is None else (*keys, after_nik)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        await conn.execute(SESSION)
        async for row in conn.cursor(query, *args, prefetch=prefetch):
            yield row


async def rule_set_key(conn: asyncpg.Connection, rule_set_id: str) -> int | None:
    found = await conn.fetchval("SELECT key FROM rule_sets WHERE id = $1", rule_set_id)
    return int(found) if found is not None else None
