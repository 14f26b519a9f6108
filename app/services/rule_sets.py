"""Rule sets: loading (immutable once stored), listing, and the one in force for a snapshot."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cachetools import TTLCache
from sqlalchemy.ext.asyncio import AsyncConnection

from app.eligibility import (
    RuleSet,
    RuleSetError,
    load_rule_set,
    rule_set_in_force,
    shipped_rule_sets,
)
from app.errors import NoRuleSetInForce, RuleSetConflict, RuleSetNotFound, ValidationFailed
from app.identifiers import RULE_SET_ID
from app.repositories import rule_sets as repo
from app.schemas.snapshots import Snapshot

# Rule sets never change once stored, but a new one may be loaded at any time, and it can
# become the default for a snapshot: the list is cached briefly, each rule set forever.
_list_cache: TTLCache[str, list[RuleSet]] = TTLCache(maxsize=1, ttl=30)


def forget_cached() -> None:
    """Drop the cached list (the catalog listener calls this when rule sets change)."""
    _list_cache.clear()


async def load(conn: AsyncConnection, rule_set: RuleSet) -> bool:
    """Store a rule set; False if the identical one is already there. A changed one is refused."""
    stored = await repo.get(conn, rule_set.id)
    if stored is not None:
        if stored[1] != rule_set.checksum:
            raise RuleSetConflict(
                f"rule set {rule_set.id} is already loaded with checksum {stored[1]}; this file "
                f"has {rule_set.checksum}. A change is a new rule set: give it a new id.",
                rule_set=rule_set.id,
            )
        return False
    await repo.add(conn, rule_set)
    _list_cache.clear()
    return True


async def load_file(conn: AsyncConnection, path: Path) -> tuple[RuleSet, bool]:
    try:
        rule_set = load_rule_set(path)
    except (RuleSetError, OSError) as e:
        raise ValidationFailed(str(e)) from None
    return rule_set, await load(conn, rule_set)


async def ensure_shipped(conn: AsyncConnection) -> list[str]:
    """Load the rule sets bundled with the package that are not stored yet; their ids."""
    added = []
    for path in shipped_rule_sets():
        rule_set, new = await load_file(conn, path)
        if new:
            added.append(rule_set.id)
    return added


async def list_rule_sets(conn: AsyncConnection) -> list[RuleSet]:
    cached = _list_cache.get("all")
    if cached is None:
        cached = [r for r, _ in await repo.list_all(conn)]
        _list_cache["all"] = cached
    return cached


async def get_rule_set(conn: AsyncConnection, rule_set_id: str) -> RuleSet:
    if not RULE_SET_ID.fullmatch(rule_set_id):  # cannot name a rule set; never reaches SQL
        raise RuleSetNotFound("no rule set has that id (a rule set id is a lower-case slug)")
    for r in await list_rule_sets(conn):
        if r.id == rule_set_id:
            return r
    stored = await repo.get(conn, rule_set_id)  # loaded since the list was cached
    if stored is None:
        raise RuleSetNotFound(f"no rule set {rule_set_id!r} is loaded", rule_set=rule_set_id)
    _list_cache.clear()
    return stored[0]


async def resolve(conn: AsyncConnection, snapshot: Snapshot, rule_set_id: str | None) -> RuleSet:
    """The named rule set, else the one in force on the snapshot's cut-off date (docs/rules.md)."""
    if rule_set_id is not None:
        return await get_rule_set(conn, rule_set_id)
    return in_force(await list_rule_sets(conn), snapshot.cutoff_date)


def in_force(rule_sets: list[RuleSet], on: dt.date) -> RuleSet:
    try:
        found = rule_set_in_force(rule_sets, on)
    except RuleSetError as e:
        raise NoRuleSetInForce(str(e)) from None
    if found is None:
        raise NoRuleSetInForce(
            f"no rule set is in force on {on}; load one (tepat rule-set load) or name one",
            evaluation_date=on.isoformat(),
        )
    return found
