"""Decisions for people and families of a snapshot: registry rows in, engine decisions out.

One implementation of the semantics: app.eligibility (pure). This module only adapts rows to
the engine's inputs and shapes its outputs for the faces, leaving out what a client may not see.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from app.eligibility import Family, FamilyEvaluation, Member, Program, RuleSet, evaluate_family
from app.identifiers import as_str
from app.ingest.columns import SCHOOL_LEVEL_NAMES
from app.repositories import registry
from app.repositories.registry import FamilyMembers, FamilyRow, PersonRow
from app.schemas.snapshots import Snapshot

FIELD_GROUPS = ("decision", "decile", "membership", "identity", "attributes", "health")
ALL_GROUPS = frozenset(FIELD_GROUPS)

# With `explain`, a criterion's observed value is shown only to a client that may see the field
# it comes from (the decile, the ASN flag, an age, a school level).
_CRITERION_GROUP = {
    "decile_in_range": "decile",
    "not_excluded": "attributes",
    "age_in_range": "identity",
    "school_level": "attributes",
}


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


def _decisions(decisions: Sequence[Any], view: View) -> list[dict[str, Any]]:
    out = []
    for d in decisions:
        shaped = d.to_dict(view.explain)
        if view.explain:
            for c in shaped["criteria"]:
                group = _CRITERION_GROUP.get(c["id"])
                if group is not None and group not in view.groups:
                    c.pop("observed", None)
        out.append(shaped)
    return out


def _person_fields(p: PersonRow, view: View, out: dict[str, Any]) -> None:
    groups = view.groups
    if "identity" in groups:
        out["identity"] = {"name": p.name, "sex": p.sex, "birth_date": p.birth_date.isoformat()}
    if "attributes" in groups:
        out["attributes"] = {
            "marital_status": p.marital_status,
            "school_status": p.school_status,
            "school_level": SCHOOL_LEVEL_NAMES.get(p.school_level) if p.school_level else None,
            "working": p.working,
        }
    if "health" in groups:
        out["health"] = {
            "disability": p.disability,
            "chronic_illness": p.chronic_illness,
            "pregnant": p.pregnant,
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
            out["decisions"] = _decisions(evaluations[f.no_kk].for_person(nik), view)
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
                    member["decisions"] = _decisions(evaluation.people[nik], view)
                shaped_members.append(member)
            out["members"] = shaped_members
        if "decision" in view.groups:
            out["decisions"] = _decisions(evaluation.family, view)
        results.append(out)
    return results


async def people(
    conn: AsyncConnection, snapshot: Snapshot, rule_set: RuleSet, niks: Sequence[str], view: View
) -> tuple[list[dict[str, Any]], int]:
    """Results for NIKs (one SQL statement) and how many were found."""
    families = await registry.families_of_people(conn, snapshot.key, [int(n) for n in niks])
    evaluations = evaluate(families, rule_set, snapshot, view.programs)
    results = person_results(niks, families, evaluations, view)
    return results, sum(1 for r in results if r["found"])


async def families(
    conn: AsyncConnection, snapshot: Snapshot, rule_set: RuleSet, no_kks: Sequence[str], view: View
) -> tuple[list[dict[str, Any]], int]:
    found = await registry.families_by_no_kk(conn, snapshot.key, [int(k) for k in no_kks])
    evaluations = evaluate(found, rule_set, snapshot, view.programs)
    results = family_results(no_kks, found, evaluations, view)
    return results, sum(1 for r in results if r["found"])
