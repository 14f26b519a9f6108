"""SQL over the rule_sets table."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from app.eligibility import RuleSet
from app.models import rule_sets


def _to_rule_set(parameters: Any) -> RuleSet:
    return RuleSet.from_canonical(
        parameters if isinstance(parameters, dict) else orjson.loads(parameters)
    )


async def list_all(conn: AsyncConnection) -> list[tuple[RuleSet, dt.datetime]]:
    rows = await conn.execute(
        select(rule_sets.c.parameters, rule_sets.c.loaded_at).order_by(
            rule_sets.c.effective_from.desc(), rule_sets.c.id
        )
    )
    return [(_to_rule_set(r.parameters), r.loaded_at) for r in rows]


async def get(conn: AsyncConnection, rule_set_id: str) -> tuple[RuleSet, str] | None:
    """The stored rule set and its stored checksum (compared on load: a changed file is refused)."""
    row = (
        await conn.execute(
            select(rule_sets.c.parameters, rule_sets.c.checksum).where(
                rule_sets.c.id == rule_set_id
            )
        )
    ).first()
    return (_to_rule_set(row.parameters), row.checksum) if row else None


async def add(conn: AsyncConnection, rule_set: RuleSet) -> None:
    await conn.execute(
        insert(rule_sets).values(
            id=rule_set.id,
            effective_from=rule_set.effective_from,
            checksum=rule_set.checksum,
            parameters=orjson.loads(rule_set.canonical_json()),
        )
    )
