"""The change list computed independently: every family of both releases' files through the
rule engine, in Python, then diffed person by person (no SQL, no stored decisions)."""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.eligibility import PROGRAM_ORDER, evaluate_family, load_rule_set, shipped_rule_sets
from tests.api.test_lookup import _engine_family

KINDS = ("gained", "lost", "benefit_changed", "level_changed")


@dataclass(frozen=True)
class Side:
    """One person in one release: per program (eligible, criteria passed in order, yearly
    amount, level), the family's decile and the person's family fields."""

    decisions: dict[str, tuple[bool, tuple[tuple[str, bool], ...], int | None, str | None]]
    decile: int | None
    family: dict[str, Any]


def release_people(folder: Path) -> dict[str, Side]:
    rule_set = load_rule_set(shipped_rule_sets()[0])
    manifest_cutoff = dt.date.fromisoformat(folder.name[:10])
    with (folder / "keluarga.csv").open() as f:
        families = {r["no_kk"]: r for r in csv.DictReader(f)}
    members: dict[str, list[dict[str, str]]] = {}
    with (folder / "anggota.csv").open() as f:
        for r in csv.DictReader(f):
            members.setdefault(r["no_kk"], []).append(r)
    out: dict[str, Side] = {}
    for kk, fam in families.items():
        ev = evaluate_family(_engine_family(fam, members[kk]), rule_set, manifest_cutoff)
        for m in members[kk]:
            decisions = {}
            for d in ev.for_person(m["nik"]):
                yearly = (d.benefit or {}).get("yearly_rupiah")
                criteria = tuple((c.id, c.passed) for c in d.criteria)
                decisions[str(d.program)] = (d.eligible, criteria, yearly, d.level)
            out[m["nik"]] = Side(
                decisions,
                int(fam["desil"]) if fam["desil"] else None,
                {
                    "no_kk": kk,
                    "relationship": int(m["hubungan_kk"]),
                    "kode_wilayah": fam["kode_wilayah"],
                },
            )
    return out


def change_list(before: dict[str, Side], after: dict[str, Side]) -> dict[str, dict[str, Any]]:
    """Every person whose decisions changed, in the API's shape with every field group."""
    out: dict[str, dict[str, Any]] = {}
    for nik in before.keys() | after.keys():
        f, t = before.get(nik), after.get(nik)
        status = "left" if t is None else "entered" if f is None else "stayed"
        changes = []
        for program in map(str, PROGRAM_ORDER):
            was = f.decisions[program] if f else None
            now = t.decisions[program] if t else None
            e_was, e_now = bool(was and was[0]), bool(now and now[0])
            kind = None
            if e_now and not e_was:
                kind = "gained"
            elif e_was and not e_now:
                kind = "lost"
            elif e_was and e_now and was and now:
                if program == "PKH" and was[2] != now[2]:
                    kind = "benefit_changed"
                elif program == "SEKOLAH_RAKYAT" and was[3] != now[3]:
                    kind = "level_changed"
            if kind is None:
                continue
            if status == "entered":
                reasons = ["entered_registry"]
            elif status == "left":
                reasons = ["left_registry"]
            else:
                assert was and now
                reasons = [
                    cid for (cid, p1), (_, p2) in zip(was[1], now[1], strict=True) if p1 != p2
                ]
            changes.append({"program": program, "change": kind, "reasons": reasons})
        if changes:
            out[nik] = {
                "nik": nik,
                "status": status,
                "changes": changes,
                "decile": {"from": f.decile if f else None, "to": t.decile if t else None},
                "family": {"from": f.family if f else None, "to": t.family if t else None},
            }
    return out


def narrowed(
    full: dict[str, dict[str, Any]],
    *,
    programs: Collection[str] | None = None,
    kinds: Collection[str] | None = None,
    prefix: str | None = None,
    groups: Iterable[str] = ("decile", "membership"),
) -> dict[str, dict[str, Any]]:
    """The full list as a request with these filters and field groups should see it."""
    groups = set(groups)
    out: dict[str, dict[str, Any]] = {}
    for nik, line in full.items():
        changes = [
            c
            for c in line["changes"]
            if (programs is None or c["program"] in programs)
            and (kinds is None or c["change"] in kinds)
        ]
        if not changes:
            continue
        if prefix is not None:
            regions = [s["kode_wilayah"] for s in line["family"].values() if s is not None]
            if not any(r.startswith(prefix) for r in regions):
                continue
        shaped = {**line, "changes": changes}
        if "decile" not in groups:
            del shaped["decile"]
        if "membership" not in groups:
            del shaped["family"]
        out[nik] = shaped
    return out


def counts(lines: Iterable[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per program and change: how many people."""
    out: dict[str, dict[str, int]] = {}
    for line in lines:
        for c in line["changes"]:
            by = out.setdefault(c["program"], dict.fromkeys(KINDS, 0))
            by[c["change"]] += 1
    return out
