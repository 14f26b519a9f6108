"""Decisions for people and families of a snapshot: registry rows in, engine decisions out.

One implementation of the semantics: app.eligibility (pure). This module only adapts rows to
the engine's inputs and shapes its outputs for the faces, leaving out what a client may not see.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from cachetools import TTLCache

from app.eligibility import (
    SCHOOL_LEVEL_NAMES,
    Family,
    FamilyEvaluation,
    Member,
    Program,
    RuleSet,
    evaluate_family,
    stored_decision,
)
from app.identifiers import as_str
from app.models.tables import DECISION_CODE, PERSON_CODE
from app.repositories import decisions as decisions_repo
from app.repositories import registry
from app.repositories.registry import Conn, FamilyMembers, FamilyRow, PersonRow
from app.schemas.snapshots import Snapshot
from app.services.catalog import Reads
from app.services.disclosure import shape_decisions

FIELD_GROUPS = ("decision", "decile", "membership", "identity", "attributes", "health")
ALL_GROUPS = frozenset(FIELD_GROUPS)


@dataclass(frozen=True, slots=True)
class View:
    """What one answer may contain: the programs asked and granted, the field groups granted."""

    programs: tuple[Program, ...]
    groups: frozenset[str]
    explain: bool = False


def to_member(p: PersonRow) -> Member:
    return Member(
        nik=as_str(p.nik),
        relationship=p.relationship,
        sex=p.sex,
        birth_date=p.birth_date,
        pregnant=p.pregnant,
        school_status=p.school_status,
        school_level=SCHOOL_LEVEL_NAMES.get(p.school_level) if p.school_level else None,
        disability=p.disability,
        pbi_recipient=p.pbi_recipient,
    )


def to_family(f: FamilyRow, members: Sequence[PersonRow]) -> Family:
    return Family(
        no_kk=as_str(f.no_kk),
        decile=f.decile,
        asn_tni_polri=f.asn_tni_polri,
        pkh_recipient=f.pkh_recipient,
        bpnt_recipient=f.bpnt_recipient,
        members=tuple(to_member(m) for m in members),
    )


def evaluate(
    families: FamilyMembers, rule_set: RuleSet, snapshot: Snapshot, programs: Collection[Program]
) -> dict[int, FamilyEvaluation]:
    return {
        no_kk: evaluate_family(to_family(f, members), rule_set, snapshot.cutoff_date, programs)
        for no_kk, (f, members) in families.items()
    }


def _decisions(decisions: Sequence[Any], view: View, asker_nik: str | None) -> list[dict[str, Any]]:
    """The decisions as the client may see them (app.services.disclosure, the one rule)."""
    return shape_decisions(decisions, view.groups, asker_nik, view.explain)


def _person_fields(p: PersonRow, view: View, out: dict[str, Any]) -> None:
    groups = view.groups
    if "identity" in groups:
        out["identity"] = {"name": p.name, "sex": p.sex, "birth_date": p.birth_date.isoformat()}
    coded_fields(p.__getattribute__, groups, out)


def coded_fields(get: Callable[[str], Any], groups: frozenset[str], out: dict[str, Any]) -> None:
    """A person's attributes and health, from a row or from a decoded person_code (`get`)."""
    if "attributes" in groups:
        level = get("school_level")
        out["attributes"] = {
            "marital_status": get("marital_status"),
            "school_status": get("school_status"),
            "school_level": SCHOOL_LEVEL_NAMES.get(level) if level else None,
            "working": get("working"),
        }
    if "health" in groups:
        out["health"] = {
            "disability": get("disability"),
            "chronic_illness": get("chronic_illness"),
            "pregnant": get("pregnant"),
        }


def _family_attributes(f: FamilyRow) -> dict[str, Any]:
    return {
        "asn_tni_polri": f.asn_tni_polri,
        "home_ownership": f.home_ownership,
        "floor_area_m2": f.floor_area_m2,
        "drinking_water": f.drinking_water,
        "toilet": f.toilet,
        "lighting": f.lighting,
        "power_va": f.power_va,
    }


def person_results(
    niks: Sequence[str],
    families: FamilyMembers,
    evaluations: dict[int, FamilyEvaluation],
    view: View,
) -> list[dict[str, Any]]:
    """One result per asked NIK, in the asked order; not found in place."""
    index: dict[str, tuple[FamilyRow, PersonRow]] = {}
    for f, members in families.values():
        for m in members:
            index[as_str(m.nik)] = (f, m)
    results: list[dict[str, Any]] = []
    for nik in niks:
        hit = index.get(nik)
        if hit is None:
            results.append({"nik": nik, "found": False})
            continue
        f, p = hit
        out: dict[str, Any] = {"nik": nik, "found": True}
        if "decile" in view.groups:
            out["decile"] = f.decile
        if "membership" in view.groups:
            out["family"] = {
                "no_kk": as_str(f.no_kk),
                "relationship": p.relationship,
                "kode_wilayah": f"{f.region_code:010d}",
            }
        _person_fields(p, view, out)
        if "decision" in view.groups:
            out["decisions"] = _decisions(evaluations[f.no_kk].for_person(nik), view, nik)
        results.append(out)
    return results


def family_results(
    no_kks: Sequence[str],
    families: FamilyMembers,
    evaluations: dict[int, FamilyEvaluation],
    view: View,
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    for no_kk in no_kks:
        key = int(no_kk)
        hit = families.get(key)
        if hit is None:
            results.append({"no_kk": no_kk, "found": False})
            continue
        f, members = hit
        evaluation = evaluations[key]
        out: dict[str, Any] = {"no_kk": no_kk, "found": True}
        if "decile" in view.groups:
            out["decile"] = f.decile
        if "attributes" in view.groups:
            out["attributes"] = _family_attributes(f)
        if "membership" in view.groups:
            out["kode_wilayah"] = f"{f.region_code:010d}"
            shaped_members = []
            for m in members:
                nik = as_str(m.nik)
                member: dict[str, Any] = {"nik": nik, "relationship": m.relationship}
                _person_fields(m, view, member)
                if "decision" in view.groups:
                    member["decisions"] = _decisions(evaluation.people[nik], view, nik)
                shaped_members.append(member)
            out["members"] = shaped_members
        if "decision" in view.groups:
            out["decisions"] = _decisions(evaluation.family, view, None)
        results.append(out)
    return results


@dataclass(frozen=True, slots=True)
class Rendered:
    """Results already rendered as JSON, one per asked identifier in asked order."""

    parts: list[bytes]
    found: int
    disclosed: frozenset[str] = frozenset()  # NIKs named beyond those asked (audited too)


async def people(
    conn: Conn,
    snapshot: Snapshot,
    rule_set: RuleSet,
    niks: Sequence[str],
    view: View,
    shape: Shape | None = None,
) -> Rendered:
    """Results for NIKs in one SQL statement, rendered.

    A plain answer (no `explain`) on a (snapshot, rule set) whose decisions are stored reads
    them: one index probe a NIK, rendered straight to bytes. Otherwise (explain, or not stored
    yet) the engine evaluates the families live. Both are the engine's decisions:
    tests/services/test_materialize.py checks the two paths answer alike for every person.
    Rendered in `shape` (the API's by default).
    """
    shape = shape or API_SHAPE
    rule_set_key = await plain_stored_key(conn, snapshot, rule_set, view)
    if rule_set_key is not None:
        return await people_stored(conn, snapshot, rule_set, rule_set_key, niks, view, shape)
    results, found = await people_live(conn, snapshot, rule_set, niks, view)
    return Rendered(
        [shape.result(r) for r in results], found, frozenset(disclosed_niks(results, niks))
    )


def disclosed_niks(results: list[dict[str, Any]], asked: Sequence[str]) -> set[str]:
    """NIKs an answer reveals beyond those asked (members, PKH components): they are audited
    too, so a person's access trail (UU 27/2022 art. 32) includes family lookups about them."""
    out: set[str] = set()
    for r in results:
        for m in r.get("members", ()):
            out.add(m["nik"])
        for d in r.get("decisions", ()):
            for c in d.get("components") or ():
                out.add(c["nik"])
        for m in r.get("members", ()):
            for d in m.get("decisions", ()):
                for c in d.get("components") or ():
                    out.add(c["nik"])
    return out.difference(asked)


async def people_live(
    conn: Conn, snapshot: Snapshot, rule_set: RuleSet, niks: Sequence[str], view: View
) -> tuple[list[dict[str, Any]], int]:
    """The engine on the families of the NIKs, fetched with all their members in one statement."""
    families = await registry.families_of_people(conn, snapshot.key, [int(n) for n in niks])
    evaluations = evaluate(families, rule_set, snapshot, view.programs)
    results = person_results(niks, families, evaluations, view)
    return results, sum(1 for r in results if r["found"])


# Stored decisions never change once their materializations row exists: a key found is kept for
# good; "not stored yet" is re-asked after a few seconds (a materialisation may just finish).
_stored_keys: dict[tuple[int, str], int] = {}
_not_stored: TTLCache[tuple[int, str], bool] = TTLCache(maxsize=1024, ttl=5)


async def plain_stored_key(
    conn: Conn, snapshot: Snapshot, rule_set: RuleSet, view: View
) -> int | None:
    """The rule set's key when an answer under `view` comes from the stored decisions (a plain
    answer on a materialised snapshot and rule set); None: the engine evaluates live. Every
    face falls back on this one condition."""
    if view.explain:
        return None
    return await stored_rule_set_key(conn, snapshot.key, rule_set.id)


async def stored_rule_set_key(conn: Conn, snapshot_key: int, rule_set_id: str) -> int | None:
    key = (snapshot_key, rule_set_id)
    if key in _stored_keys:
        return _stored_keys[key]
    if key in _not_stored:
        return None
    found = await decisions_repo.materialized_key(conn, snapshot_key, rule_set_id)
    if found is None:
        _not_stored[key] = True
    else:
        _stored_keys[key] = found
    return found


# The stored columns of each program's decision (app.services.materialize writes them).
_STORED_COLUMNS = {
    Program.PKH: ("pkh_eligible", "pkh_recipient"),
    Program.BPNT: ("bpnt_eligible", "bpnt_recipient"),
    Program.PBI_JK: ("pbi_eligible", "pbi_recipient"),
    Program.SEKOLAH_RAKYAT: ("sr_eligible", None),
}


def stored_decisions(
    row: Any, rule_set: RuleSet, programs: Sequence[Program], groups: frozenset[str]
) -> list[dict[str, Any]]:
    """A plain answer's decisions from a stored row (`decisions_repo.decode` of a decision_code,
    or the row itself): the engine's decisions rebuilt (`stored_decision`) and shaped as any
    plain answer is, for a client holding `groups` (app.services.disclosure)."""
    decisions = []
    for program in programs:
        eligible, recipient = _STORED_COLUMNS[program]
        level = row["sr_level"]
        decisions.append(
            stored_decision(
                program,
                rule_set,
                eligible=row[eligible],
                recipient=None if recipient is None else row[recipient],
                pkh_yearly=row["pkh_yearly"],
                level=SCHOOL_LEVEL_NAMES.get(level) if level else None,
                priority=row["sr_priority"],
            )
        )
    return shape_decisions(decisions, groups, None, False)


# --- the stored path, rendered straight to bytes -------------------------------------------------
#
# The hot loop of plain lookups and bulk jobs. Rows are read by position (app.repositories.
# decisions gives the column order) and rendered with byte templates: no dict per person and no
# serialiser pass, and bytes are not tracked by the garbage collector. The decisions take few
# distinct values (flags, an amount, a level), so each distinct list is serialised once and
# shared. What is rendered must equal orjson.dumps of the engine's answer: the test above.

_NOT_FOUND = b'{"nik":"%b","found":false}'


class Memo(dict[int, bytes]):
    """Rendered fragments by code for one shape (rule set and programs, or field groups): a
    plain dict, so a hit is one subscript; a miss renders through `render` (the shared
    definition). All memos share one budget of `_MEMO_ENTRIES`: past it they are all emptied."""

    def __init__(self, render: Callable[[int], bytes]) -> None:
        super().__init__()
        self.render = render

    def __missing__(self, code: int) -> bytes:
        global _entries
        if _entries >= _MEMO_ENTRIES:
            for memo in _memos.values():
                memo.clear()
            _entries = 0
        found = self[code] = self.render(code)
        _entries += 1
        return found


# The distinct codes are few (flags, levels, an amount; a few thousand at national scale), the
# shapes too (rule sets x program lists x field groups); the budget bounds memory whatever
# the data (~65 k fragments of a few hundred bytes).
_MEMO_ENTRIES = 65_536
_entries = 0
_memos: dict[tuple[Any, ...], Memo] = {}


def memo(shape: tuple[Any, ...], render: Callable[[int], bytes]) -> Memo:
    global _entries
    memo = _memos.get(shape)
    if memo is None:
        if len(_memos) >= 1024:
            _memos.clear()
            _entries = 0
        memo = _memos[shape] = Memo(render)
    return memo


def _decisions_memo(
    rule_set: RuleSet, programs: tuple[Program, ...], groups: frozenset[str]
) -> Memo:
    """`,"decisions":[...]` by decision_code, as `stored_decisions` renders it. The shape
    includes what the client may see (its field groups), so one client's is never another's."""

    def render(code: int) -> bytes:
        row = decisions_repo.decode(code, DECISION_CODE)
        return b',"decisions":' + orjson.dumps(stored_decisions(row, rule_set, programs, groups))

    return memo(("decisions", rule_set.checksum, programs, groups), render)


def _person_memo(groups: frozenset[str]) -> Memo:
    """`,"attributes":{...},"health":{...}` (those granted) by person_code."""

    def render(code: int) -> bytes:
        out: dict[str, Any] = {}
        coded_fields(decisions_repo.decode(code, PERSON_CODE).__getitem__, groups, out)
        return b"," + orjson.dumps(out)[1:-1]

    return memo(("person", groups.intersection(decisions_repo.CODED_GROUPS)), render)


def render_stored(
    niks: Sequence[str],
    keys: Sequence[int],
    by_nik: Mapping[int, Any],
    rule_set: RuleSet,
    view: View,
) -> Rendered:
    """One rendered result per asked NIK (`keys`: the same as int8), in order, from the rows of
    `decisions_repo.stored_query(view.groups)` by NIK (more rows than asked are fine)."""
    groups = view.groups
    person = _person_memo(groups) if groups.intersection(decisions_repo.CODED_GROUPS) else None
    decisions = _decisions_memo(rule_set, view.programs, groups) if "decision" in groups else None
    parts: list[bytes] = []
    append = parts.append
    found = 0
    for nik, key in zip(niks, keys, strict=True):
        r = by_nik.get(key)
        if r is None:
            append(_NOT_FOUND % nik.encode())
            continue
        found += 1
        if person is None:
            if decisions is None:
                append(r[1] + b"}")
            else:
                append(b"%b%b}" % (r[1], decisions[r[2]]))
        elif decisions is None:
            append(b"%b%b}" % (r[1], person[r[3]]))
        else:
            append(b"%b%b%b}" % (r[1], person[r[3]], decisions[r[2]]))
    return Rendered(parts, found)


async def people_stored(
    conn: Conn,
    snapshot: Snapshot,
    rule_set: RuleSet,
    rule_set_key: int,
    niks: Sequence[str],
    view: View,
    shape: Shape | None = None,
) -> Rendered:
    shape = shape or API_SHAPE
    asked = [int(n) for n in niks]
    query = shape.query(view.groups)
    rows = await decisions_repo.stored_by_nik(conn, snapshot.key, rule_set_key, asked, query)
    return shape.render(niks, asked, {r[0]: r for r in rows}, rule_set, view)


COALESCE_MAX = 16  # NIKs; a larger lookup is a statement of its own


async def people_read(
    reads: Reads,
    snapshot: Snapshot,
    rule_set: RuleSet,
    niks: Sequence[str],
    view: View,
    shape: Shape | None = None,
) -> Rendered:
    """`people` for the API faces. A small plain lookup on stored decisions shares its statement
    with the lookups that arrive with it (app.services.coalesce); others get a connection."""
    shape = shape or API_SHAPE
    rule_set_key = _stored_keys.get((snapshot.key, rule_set.id))
    if rule_set_key is not None and not view.explain and len(niks) <= COALESCE_MAX:
        asked = [int(n) for n in niks]
        rows = await reads.coalescer.rows(
            shape.query(view.groups), (snapshot.key, rule_set_key), asked
        )
        return shape.render(niks, asked, rows, rule_set, view)
    return await reads.run(lambda conn: people(conn, snapshot, rule_set, niks, view, shape))


@dataclass(frozen=True, slots=True)
class Shape:
    """How a people answer is rendered, one part a person in asked order: from the stored
    decisions (`query` for a view's field groups, its rows by NIK to `render`), or from one
    result of the engine's (`result`, the API's dict of `person_results`). The API's own shape
    is `API_SHAPE`; the DCI face renders the standard's Person (app.services.dci)."""

    query: Callable[[frozenset[str]], str]
    render: Callable[[Sequence[str], Sequence[int], Mapping[int, Any], RuleSet, View], Rendered]
    result: Callable[[dict[str, Any]], bytes]


API_SHAPE = Shape(decisions_repo.stored_query, render_stored, orjson.dumps)


async def families_read(
    reads: Reads, snapshot: Snapshot, rule_set: RuleSet, no_kks: Sequence[str], view: View
) -> Rendered:
    return await reads.run(lambda conn: families(conn, snapshot, rule_set, no_kks, view))


async def families_live(
    conn: Conn, snapshot: Snapshot, rule_set: RuleSet, no_kks: Sequence[str], view: View
) -> tuple[list[dict[str, Any]], int]:
    """Families with all their members in one statement, evaluated by the engine."""
    found = await registry.families_by_no_kk(conn, snapshot.key, [int(k) for k in no_kks])
    evaluations = evaluate(found, rule_set, snapshot, view.programs)
    results = family_results(no_kks, found, evaluations, view)
    return results, sum(1 for r in results if r["found"])


async def families(
    conn: Conn, snapshot: Snapshot, rule_set: RuleSet, no_kks: Sequence[str], view: View
) -> Rendered:
    results, found = await families_live(conn, snapshot, rule_set, no_kks, view)
    return Rendered(
        [orjson.dumps(r) for r in results], found, frozenset(disclosed_niks(results, ()))
    )
