"""The engine's decisions for many families at once, a column at a time (numpy).

`evaluate_family` (app.eligibility.engine) is the reference implementation of docs/rules.md and
the one every answer with an explanation comes from. Storing the decisions of a whole release
(app.services.materialize) needs only their outcome, for hundreds of millions of people: this
computes exactly those outcomes from the same compiled parameters, with array operations instead
of a Python loop per person, and `tests/eligibility/test_columnar.py` holds it equal to the engine
on every field it stores (random families built to hit every branch, and generated releases).

What it computes, per person (family outcomes repeated on each member): PKH's eligibility and
yearly amount, BPNT's and PBI JK's eligibility, Sekolah Rakyat's eligibility, level and priority,
every criterion's pass flag, and whether the person is the family's head (the lowest NIK among
members with relationship 1).

PKH's selection (docs/rules.md step 3) walks the candidates sorted by amount, table order, then
NIK. Walking it component by component in that order gives the same result: within one
component, the candidates whose member has no component yet are taken in NIK order, as many as
the component's cap and the family's remaining member slots allow; a candidate left out never
changes a count, so the rest of that component are left out too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Final

import numpy as np
import numpy.typing as npt

from app.eligibility.engine import SCHOOL_LEVELS, _compiled
from app.eligibility.rule_set import RuleSet

Bools = npt.NDArray[np.bool_]
Ints = npt.NDArray[np.int64]

NO_LEVEL: Final = 0  # `school_level` unknown / Sekolah Rakyat's level when not eligible
_SR_CODES: Final = tuple(SCHOOL_LEVELS[name] for name in ("SD", "SMP", "SMA"))


@dataclass(frozen=True, slots=True)
class People:
    """The inputs, one entry per person, grouped by family and by NIK ascending within it.

    Missing values: `decile` 0 (unranked), `school_status` and `disability` -1, `school_level`
    NO_LEVEL; `pregnant` False when unknown (the engine treats unknown as not pregnant).
    `birth` is year * 10000 + month * 100 + day.
    """

    no_kk: Ints
    nik: Ints
    decile: Ints
    asn_tni_polri: Bools
    relationship: Ints
    birth: Ints
    pregnant: Bools
    school_status: Ints
    school_level: Ints
    disability: Ints


@dataclass(frozen=True, slots=True)
class Outcomes:
    """What is stored of the decisions, one entry per person (app.services.materialize)."""

    pkh_eligible: Bools
    pkh_yearly: Ints  # the taken components' sum when eligible, else 0
    bpnt_eligible: Bools
    pbi_eligible: Bools
    sr_eligible: Bools
    sr_level: Ints  # SCHOOL_LEVELS code when eligible, else NO_LEVEL
    sr_priority: Ints  # the decile when eligible, else 0
    head: Bools
    # (program, criterion id) -> pass flag, as the engine's criteria of the same decisions.
    passed: dict[tuple[str, str], Bools]


def _in(values: Ints, bounds: tuple[int, int]) -> Bools:
    lo, hi = bounds
    return (values >= lo) & (values <= hi)


def evaluate_people(people: People, rule_set: RuleSet, evaluation_date: date) -> Outcomes:
    """The stored outcomes of every person in `people` under `rule_set` on `evaluation_date`."""
    rules = _compiled(rule_set)
    n = len(people.nik)
    if n == 0:
        empty_b, empty_i = np.zeros(0, np.bool_), np.zeros(0, np.int64)
        return Outcomes(empty_b, empty_i, empty_b, empty_b, empty_b, empty_i, empty_i, empty_b, {})
    no_kk = people.no_kk
    starts = np.flatnonzero(np.concatenate(([True], no_kk[1:] != no_kk[:-1])))
    sizes = np.diff(np.append(starts, n))

    def per_family(values: Ints | Bools) -> Ints:
        """The sum of `values` over each family."""
        return np.add.reduceat(values.astype(np.int64), starts)

    def spread(values: Ints) -> Ints:
        """A value a family onto each of its members."""
        return np.repeat(values, sizes)

    md = evaluation_date.month * 100 + evaluation_date.day
    birth = people.birth
    age = evaluation_date.year - birth // 10000 - (md < birth % 10000).astype(np.int64)

    decile = people.decile
    ranked = decile > 0
    excluded = people.asn_tni_polri
    not_excluded = ~excluded

    # PKH: candidates component by component in selection order, as the engine ranks them.
    school_status, school_level = people.school_status, people.school_level
    attending = school_status == 1
    candidates: list[tuple[int, Bools, int, int]] = []  # (rank, candidate, cap, yearly)
    hamil, usia_dini = rules.hamil, rules.usia_dini
    disabilitas, lansia = rules.disabilitas_berat, rules.lansia
    candidates.append((hamil.rank, people.pregnant, hamil.cap, hamil.yearly_rupiah))
    candidates.append(
        (usia_dini.rank, _in(age, (usia_dini.lo, usia_dini.hi)), usia_dini.cap,
         usia_dini.yearly_rupiah)
    )  # fmt: skip
    candidates.append(
        (disabilitas.rank, people.disability == 2, disabilitas.cap, disabilitas.yearly_rupiah)
    )
    candidates.append((lansia.rank, age >= lansia.lo, lansia.cap, lansia.yearly_rupiah))
    for school, component in rules.school.items():
        candidate = attending & (school_level == SCHOOL_LEVELS[school])
        candidate &= _in(age, (component.lo, component.hi))
        candidates.append((component.rank, candidate, component.cap, component.yearly_rupiah))
    candidates.sort(key=lambda c: c[0])

    member_taken = np.zeros(n, np.bool_)
    taken = np.zeros(len(starts), np.int64)  # members taken, per family
    yearly = np.zeros(len(starts), np.int64)
    for _, candidate, cap, amount in candidates:
        open_ = candidate & ~member_taken
        count = np.cumsum(open_, dtype=np.int64)
        before = count - open_  # open candidates earlier in the whole array
        before -= spread(before[starts])  # ... earlier in the family (NIK order)
        room = np.minimum(cap, rules.max_members - taken)
        take = open_ & (before < spread(room))
        member_taken |= take
        took = per_family(take)
        taken += took
        yearly += took * amount

    pkh_decile = ranked & _in(decile, rules.pkh_decile.required)
    has_component = spread(taken) >= 1
    pkh_eligible = pkh_decile & not_excluded & has_component
    pkh_yearly = np.where(pkh_eligible, spread(yearly), 0)

    bpnt_decile = ranked & _in(decile, rules.bpnt_decile.required)
    pbi_decile = ranked & _in(decile, rules.pbi_decile.required)

    # Sekolah Rakyat: the level attended (SD, SMP or SMA only) or, not attending, the age's.
    by_age = np.zeros(n, np.int64)
    for age_years, name in rules.level_by_age.items():
        by_age[age == age_years] = SCHOOL_LEVELS[name]
    attended = np.where(np.isin(school_level, _SR_CODES), school_level, NO_LEVEL)
    level: Ints = np.where(attending, attended, by_age)
    sr_decile = ranked & _in(decile, rules.sr_decile.required)
    sr_age = _in(age, rules.sr_ages)
    sr_level_ok: Bools = level != NO_LEVEL
    sr_eligible = sr_decile & sr_age & sr_level_ok

    # The head: the lowest NIK with relationship 1 (rows are in NIK order within the family).
    index = np.arange(n, dtype=np.int64)
    first_head = np.minimum.reduceat(np.where(people.relationship == 1, index, n), starts)
    head = index == spread(first_head)

    return Outcomes(
        pkh_eligible=pkh_eligible,
        pkh_yearly=pkh_yearly,
        bpnt_eligible=bpnt_decile & not_excluded,
        pbi_eligible=pbi_decile & not_excluded,
        sr_eligible=sr_eligible,
        sr_level=np.where(sr_eligible, level, NO_LEVEL),
        sr_priority=np.where(sr_eligible, decile, 0),
        head=head,
        passed={
            ("PKH", "decile_in_range"): pkh_decile,
            ("PKH", "not_excluded"): not_excluded,
            ("PKH", "has_component"): has_component,
            ("BPNT", "decile_in_range"): bpnt_decile,
            ("BPNT", "not_excluded"): not_excluded,
            ("PBI_JK", "decile_in_range"): pbi_decile,
            ("PBI_JK", "not_excluded"): not_excluded,
            ("SEKOLAH_RAKYAT", "decile_in_range"): sr_decile,
            ("SEKOLAH_RAKYAT", "age_in_range"): sr_age,
            ("SEKOLAH_RAKYAT", "school_level"): sr_level_ok,
        },
    )
