"""SQL over the registry (people and families of a snapshot): batch reads in one round trip.

The hot queries go through the asyncpg connection under SQLAlchemy's: asyncpg prepares and
caches them per connection, and rows come back as tuples without ORM processing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

import asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection

_FAMILY_COLS = """f.no_kk, f.region_code, f.decile, f.asn_tni_polri, f.pkh_recipient,
    f.bpnt_recipient, f.home_ownership, f.floor_area_m2, f.drinking_water, f.toilet, f.lighting,
    f.power_va"""
_MEMBER_COLS = """m.nik, m.relationship, m.sex, m.birth_date, m.name, m.marital_status,
    m.school_status, m.school_level, m.disability, m.pregnant, m.chronic_illness, m.working,
    m.pbi_recipient"""

# Every member of the families of the asked NIKs, with their family's columns.
FAMILIES_OF_PEOPLE = f"""
SELECT {_FAMILY_COLS}, {_MEMBER_COLS}
FROM families f JOIN people m ON m.snapshot_key = f.snapshot_key AND m.no_kk = f.no_kk
WHERE f.snapshot_key = $1
  AND f.no_kk IN (SELECT p.no_kk FROM people p WHERE p.snapshot_key = $1 AND p.nik = ANY($2::int8[]))
"""

FAMILIES_BY_NO_KK = f"""
SELECT {_FAMILY_COLS}, {_MEMBER_COLS}
FROM families f JOIN people m ON m.snapshot_key = f.snapshot_key AND m.no_kk = f.no_kk
WHERE f.snapshot_key = $1 AND f.no_kk = ANY($2::int8[])
"""


@dataclass(frozen=True, slots=True)
class FamilyRow:
    no_kk: int
    region_code: int
    decile: int | None
    asn_tni_polri: bool
    pkh_recipient: bool | None
    bpnt_recipient: bool | None
    home_ownership: int | None
    floor_area_m2: int | None
    drinking_water: int | None
    toilet: int | None
    lighting: int | None
    power_va: int | None


@dataclass(frozen=True, slots=True)
class PersonRow:
    nik: int
    relationship: int
    sex: int
    birth_date: dt.date
    name: str
    marital_status: int | None
    school_status: int | None
    school_level: int | None
    disability: int | None
    pregnant: bool | None
    chronic_illness: bool | None
    working: bool | None
    pbi_recipient: bool | None


FamilyMembers = dict[int, tuple[FamilyRow, list[PersonRow]]]


# A read connection: SQLAlchemy's (inside a transaction) or a bare asyncpg one from the lean
# pool of app.services.catalog (one statement, no transaction).
Conn: TypeAlias = "AsyncConnection | asyncpg.Connection"


async def driver(conn: Conn) -> asyncpg.Connection:
    if isinstance(conn, asyncpg.Connection):
        return conn
    raw = await conn.get_raw_connection()
    connection: asyncpg.Connection = raw.driver_connection
    return connection


def _group(rows: Sequence[asyncpg.Record]) -> FamilyMembers:
    out: FamilyMembers = {}
    for r in rows:
        no_kk = r[0]
        entry = out.get(no_kk)
        if entry is None:
            entry = out[no_kk] = (FamilyRow(*r[:12]), [])
        entry[1].append(PersonRow(*r[12:]))
    for _, members in out.values():
        members.sort(key=lambda m: (m.relationship, m.nik))
    return out


async def families_of_people(conn: Conn, snapshot_key: int, niks: Sequence[int]) -> FamilyMembers:
    """The families (with all members) of the given NIKs, keyed by No. KK; one statement."""
    if not niks:
        return {}
    rows = await (await driver(conn)).fetch(FAMILIES_OF_PEOPLE, snapshot_key, list(niks))
    return _group(rows)


async def families_by_no_kk(conn: Conn, snapshot_key: int, no_kks: Sequence[int]) -> FamilyMembers:
    if not no_kks:
        return {}
    rows = await (await driver(conn)).fetch(FAMILIES_BY_NO_KK, snapshot_key, list(no_kks))
    return _group(rows)
