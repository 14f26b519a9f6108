"""SQL over the materialised decisions: what is stored, and the targeting report's aggregate."""

from __future__ import annotations

import functools
from typing import Any, Literal

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.repositories.registry import Conn, driver

Level = Literal["national", "province", "regency"]
_DIVISOR = {"national": None, "province": 100_000_000, "regency": 1_000_000}

# One scan of one partition; family programs count the head's row only (one per family).
_REPORT = """
SELECT {region} AS region,
  count(*) FILTER (WHERE head) AS families,
  count(*) AS people,
  count(*) FILTER (WHERE head AND pkh_eligible) AS pkh_eligible,
  count(*) FILTER (WHERE head AND pkh_recipient) AS pkh_recipients,
  count(*) FILTER (WHERE head AND pkh_eligible AND pkh_recipient) AS pkh_both,
  count(*) FILTER (WHERE head AND bpnt_eligible) AS bpnt_eligible,
  count(*) FILTER (WHERE head AND bpnt_recipient) AS bpnt_recipients,
  count(*) FILTER (WHERE head AND bpnt_eligible AND bpnt_recipient) AS bpnt_both,
  count(*) FILTER (WHERE pbi_eligible) AS pbi_eligible,
  count(*) FILTER (WHERE pbi_recipient) AS pbi_recipients,
  count(*) FILTER (WHERE pbi_eligible AND pbi_recipient) AS pbi_both,
  count(*) FILTER (WHERE sr_eligible) AS sr_eligible,
  count(*) FILTER (WHERE sr_eligible AND sr_priority = 1) AS sr_priority_1
FROM decisions
WHERE snapshot_key = :snapshot AND rule_set_key = (SELECT key FROM rule_sets WHERE id = :rule_set)
GROUP BY {group}
ORDER BY 1 NULLS FIRST
"""


async def targeting_counts(
    conn: AsyncConnection, snapshot_key: int, rule_set_id: str, level: Level
) -> list[dict[str, Any]]:
    """Counts per region (and a national row with region None), from the stored decisions."""
    divisor = _DIVISOR[level]
    if divisor is None:
        sql = _REPORT.format(region="NULL::bigint", group="()")
    else:
        sql = _REPORT.format(region=f"region_code / {divisor}", group="ROLLUP (1)")
    rows = await conn.execute(text(sql), {"snapshot": snapshot_key, "rule_set": rule_set_id})
    return [dict(r) for r in rows.mappings()]


# Column positions are relied upon by app.services.eligibility.render_stored (0-14 always, 15 the
# person's fragment when asked): change them together.
_STORED = """
SELECT d.nik, d.no_kk, d.region_code, d.decile, d.relationship, d.pkh_yearly, d.sr_level,
       d.sr_priority, d.pkh_eligible, d.bpnt_eligible, d.pbi_eligible, d.sr_eligible,
       d.pkh_recipient, d.bpnt_recipient, d.pbi_recipient{person}
FROM decisions d
WHERE d.snapshot_key = $1 AND d.rule_set_key = $2 AND d.nik = ANY($3::int8[])
"""
STORED_BY_NIK = _STORED.format(person="")


def _null(column: str) -> str:
    return f"coalesce({column}::text, 'null')"


def _school_level(names: dict[int, str]) -> str:
    cases = " ".join(f"""WHEN {code} THEN '"{name}"'""" for code, name in sorted(names.items()))
    return f"CASE d.school_level {cases} ELSE 'null' END"


# The person's own field groups (stored beside the decisions), rendered by PostgreSQL as JSON members (",name":{...}) in the
# shape of app.services.eligibility.person_results: the work lands on the database's core, and
# Python copies one text per row instead of decoding ten columns. tests/services/
# test_materialize.py holds the two renderings equal for every combination of groups.
def _person_pieces(school_levels: dict[int, str]) -> dict[str, tuple[str, tuple[str, ...]]]:
    return {
        "identity": (
            ',"identity":{"name":%s,"sex":%s,"birth_date":"%s"}',
            ("to_json(d.name)", "d.sex", "to_char(d.birth_date, 'YYYY-MM-DD')"),
        ),
        "attributes": (
            ',"attributes":{"marital_status":%s,"school_status":%s,"school_level":%s,"working":%s}',
            (
                _null("d.marital_status"),
                _null("d.school_status"),
                _school_level(school_levels),
                _null("d.working"),
            ),
        ),
        "health": (
            ',"health":{"disability":%s,"chronic_illness":%s,"pregnant":%s}',
            (_null("d.disability"), _null("d.chronic_illness"), _null("d.pregnant")),
        ),
    }


PERSON_GROUPS = ("identity", "attributes", "health")


@functools.cache
def stored_query(groups: frozenset[str], school_levels: tuple[tuple[int, str], ...]) -> str:
    """The stored-decisions query; with the person's granted groups as one JSON text column."""
    pieces = _person_pieces(dict(school_levels))
    wanted = [pieces[g] for g in PERSON_GROUPS if g in groups]
    if not wanted:
        return STORED_BY_NIK
    template = "".join(t for t, _ in wanted)
    args = ", ".join(a for _, args in wanted for a in args)
    return _STORED.format(person=f",\n       format('{template}', {args})")


async def materialized_key(conn: Conn, snapshot_key: int, rule_set_id: str) -> int | None:
    """The rule set's key if the decisions of (snapshot, rule set) are stored, else None."""
    found = await (await driver(conn)).fetchval(
        "SELECT m.rule_set_key FROM materializations m JOIN rule_sets r ON r.key = m.rule_set_key "
        "WHERE m.snapshot_key = $1 AND r.id = $2",
        snapshot_key,
        rule_set_id,
    )
    return int(found) if found is not None else None


async def stored_by_nik(
    conn: Conn, snapshot_key: int, rule_set_key: int, niks: list[int], query: str
) -> list[asyncpg.Record]:
    """Stored decisions (and the person's fragment if the query asks it) for NIKs: one statement."""
    rows: list[asyncpg.Record] = await (await driver(conn)).fetch(
        query, snapshot_key, rule_set_key, niks
    )
    return rows
