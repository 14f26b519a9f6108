"""SQL over the materialised decisions: what is stored, and the targeting report's aggregate."""

from __future__ import annotations

import functools
from typing import Any, Literal

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.models.tables import CodeField
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


# A stored answer as PostgreSQL renders it, four columns a row (app.services.eligibility.
# render_stored reads them by position):
#   0 nik            int8, to match the asked NIKs;
#   1 head           bytea, the result object up to its decisions, unclosed:
#                    {"nik":"...","found":true then the view's decile, family and identity, in
#                    the shape of app.services.eligibility.person_results;
#   2 decision_code  int8 (NULL when the view has no decisions) and
#   3 person_code    int4 (NULL when it has neither attributes nor health): the packed columns
#                    (app.models.tables.DECISION_CODE, PERSON_CODE) the worker renders from a
#                    memo of the few distinct codes (`decode` unpacks a code on a miss).
# The worker copies a few values a person instead of decoding twenty columns and formatting
# them; the formatting of the high-cardinality fields runs on the database's core.
# tests/services/test_materialize.py holds this rendering equal to the engine's for every
# combination of groups.
_STORED = """
SELECT d.nik, convert_to({head}, 'UTF8'), {decision_code}, {person_code}
FROM decisions d
WHERE d.snapshot_key = $1 AND d.rule_set_key = $2 AND d.nik = ANY($3::int8[])
"""


_NIK = "lpad(d.nik::text, 16, '0')"
_NO_KK = "lpad(d.no_kk::text, 16, '0')"
_REGION = "lpad(d.region_code::text, 10, '0')"


def _null(column: str) -> str:
    return f"coalesce({column}::text, 'null')"


# Each field group the database renders, as a template (a %s for each argument) and its
# arguments, in answer order. Attributes and health come from person_code, decisions from
# decision_code.
_PIECES: dict[str, tuple[str, tuple[str, ...]]] = {
    "decile": (',"decile":%s', (_null("d.decile"),)),
    "membership": (
        ',"family":{"no_kk":"%s","relationship":%s,"kode_wilayah":"%s"}',
        (
            _NO_KK,
            "d.relationship",
            _REGION,
        ),
    ),
    "identity": (
        ',"identity":{"name":%s,"sex":%s,"birth_date":%s}',
        # to_json of a date is ISO 8601 whatever the session's DateStyle, and cheaper than
        # to_char (bench/: ~0.4 ms of database CPU less for 1,000 NIKs).
        ("to_json(d.name)", "d.sex", "to_json(d.birth_date)"),
    ),
}
CODED_GROUPS = ("attributes", "health")  # rendered by the worker after the head, in this order


@functools.cache
def stored_query(groups: frozenset[str]) -> str:
    """The stored-answers query for a view's granted field groups."""
    wanted = [_PIECES[g] for g in _PIECES if g in groups]
    template = '{"nik":"%s","found":true' + "".join(t for t, _ in wanted)
    args = [_NIK, *(a for _, args in wanted for a in args)]
    return _STORED.format(
        head=_concat(template, args),
        decision_code="d.decision_code" if "decision" in groups else "NULL::int8",
        person_code="d.person_code" if groups.intersection(CODED_GROUPS) else "NULL::int4",
    )


# The same stored row in the DCI standard's shape (app.services.dci_records.person_record): a
# Person's members after `additional_attributes` (which the worker renders from the codes), keys
# in sorted order, as the signed DCI envelope needs them (app.services.signatures). Each piece:
# the field group that grants it (None: always), its template and its arguments.
_DCI_PIECES: tuple[tuple[str | None, str, tuple[str, ...]], ...] = (
    ("membership", '"address":{"@type":"Address","region_code":"%s"},', (_REGION,)),
    ("identity", '"birth_date":%s,', ("to_json(d.birth_date)",)),
    (
        "membership",
        '"household_identifier":{"@type":"Identifier","identifier_type":"KK",'
        '"identifier_value":"%s"},"household_status":"%s",',
        (_NO_KK, "d.relationship"),
    ),
    (
        None,
        '"identifier":{"@type":"Identifier","identifier_type":"NIK","identifier_value":"%s"}',
        (_NIK,),
    ),
    ("identity", ',"name":{"@type":"Name","given_name":%s}', ("to_json(d.name)",)),
    # A decile left out when unknown, as the record leaves out `poverty_score`.
    (
        "decile",
        "%s",
        (
            "CASE WHEN d.decile IS NULL THEN '' ELSE ',\"poverty_score\":\"' || d.decile || '\"' END",
        ),
    ),
    (
        "identity",
        ',"sex":"%s"',
        ("CASE d.sex WHEN 1 THEN 'male' WHEN 2 THEN 'female' ELSE d.sex::text END",),
    ),
)


@functools.cache
def dci_person_query(groups: frozenset[str]) -> str:
    """The stored-answers query whose second column is a DCI Person's members after its
    `additional_attributes`, for a view's granted field groups (the other columns as
    `stored_query`'s)."""
    wanted = [(t, args) for group, t, args in _DCI_PIECES if group is None or group in groups]
    return _STORED.format(
        head=_concat("".join(t for t, _ in wanted), [a for _, args in wanted for a in args]),
        decision_code="d.decision_code" if "decision" in groups else "NULL::int8",
        person_code="d.person_code" if groups.intersection(CODED_GROUPS) else "NULL::int4",
    )


def _concat(template: str, args: list[str]) -> str:
    """`template`'s pieces and `args` in turn, as one concat() call: each %s an argument.

    concat() rather than format(): no format string to parse a row, and one output function
    call an argument (1,000 rows: ~1 ms less of the database's CPU than format and ROW::text).
    """
    pieces = template.split("%s")
    if len(pieces) != len(args) + 1:
        raise ValueError("one argument for each %s")
    parts: list[str] = []
    for piece, arg in zip(pieces, [*args, None], strict=True):
        if piece:
            parts.append("'" + piece.replace("'", "''") + "'")
        if arg is not None:
            parts.append(arg)
    return f"concat({', '.join(parts)})"


def decode(code: int, fields: tuple[CodeField, ...]) -> dict[str, int | bool | None]:
    """The columns packed in a person_code or decision_code (app.models.tables.PERSON_CODE)."""
    out: dict[str, int | bool | None] = {}
    for name, bits, kind in fields:
        digit = code & ((1 << bits) - 1) if bits else code
        code >>= bits
        out[name] = None if digit == 0 else (digit == 2 if kind is bool else digit - 1)
    return out


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
