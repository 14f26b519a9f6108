"""The columnar evaluator equals the engine on every outcome it stores.

Families are drawn at random (seeded) to crowd the branches: several pregnant members, toddlers
and elderly against the caps, more candidates than member slots, members with two components,
ages at every boundary (and birthdays on 29 February), unknown values, no head or several,
unranked and excluded families; under the shipped rule set and under rule sets with other caps,
member limits, ages, deciles and amounts, so every parameter is read, not assumed.
"""

from __future__ import annotations

import random
from datetime import date, timedelta

import numpy as np
import orjson
import pytest

from app.eligibility import (
    SCHOOL_LEVELS,
    Family,
    Member,
    Program,
    RuleSet,
    evaluate_family,
)
from app.eligibility.columnar import NO_LEVEL, People, evaluate_people

ON = date(2026, 2, 28)  # the day before a 29 February birthday counts in a common year
LEVELS = (None, "SD", "SMP", "SMA", "PT")


def _birth(rng: random.Random) -> date:
    """Mostly ages near a rule's edge, on or about the evaluation date's day of the year."""
    age = rng.choice((0, 1, 5, 6, 7, 12, 13, 15, 16, 18, 19, 21, 22, 40, 59, 60, 61, 69, 70, 90))
    if rng.random() < 0.15:
        year = ON.year - age
        while year % 4:  # a leap year near the age, born on 29 February
            year -= 1
        return date(year, 2, 29)
    shift = timedelta(days=rng.choice((-1, 0, 1, 0, 0, rng.randint(-200, 200))))
    return max(date(1900, 1, 1), min(ON, ON.replace(year=ON.year - age) + shift))


def _family(rng: random.Random, no_kk: int) -> Family:
    size = rng.choice((1, 1, 2, 3, 4, 5, 6, 7, 9))
    niks = rng.sample(range(1_000_000, 9_999_999), size)
    members = []
    for nik in niks:
        members.append(
            Member(
                nik=f"{3201000000000000 + nik:016d}",
                relationship=rng.choice((1, 1, 2, 3, 3, 4, 8)),
                sex=rng.choice((1, 2)),
                birth_date=_birth(rng),
                pregnant=rng.choice((None, False, True, True)),
                school_status=rng.choice((None, 0, 1, 1, 2)),
                school_level=rng.choice(LEVELS),
                disability=rng.choice((None, 0, 1, 2, 2)),
                pbi_recipient=rng.choice((None, False, True)),
            )
        )
    return Family(
        no_kk=f"{no_kk:016d}",
        decile=rng.choice((None, 1, 2, 3, 4, 5, 6, 10)),
        asn_tni_polri=rng.random() < 0.15,
        pkh_recipient=rng.choice((None, True)),
        bpnt_recipient=rng.choice((None, False)),
        members=tuple(members),
    )


def _columns(families: list[Family]) -> People:
    rows = [(f, m) for f in families for m in sorted(f.members, key=lambda m: m.nik)]

    def ints(values: list[int]) -> np.ndarray:
        return np.array(values, dtype=np.int64)

    return People(
        no_kk=ints([int(f.no_kk) for f, _ in rows]),
        nik=ints([int(m.nik) for _, m in rows]),
        decile=ints([f.decile or 0 for f, _ in rows]),
        asn_tni_polri=np.array([f.asn_tni_polri for f, _ in rows], dtype=np.bool_),
        relationship=ints([m.relationship for _, m in rows]),
        birth=ints([int(m.birth_date.strftime("%Y%m%d")) for _, m in rows]),
        pregnant=np.array([bool(m.pregnant) for _, m in rows], dtype=np.bool_),
        school_status=ints([-1 if m.school_status is None else m.school_status for _, m in rows]),
        school_level=ints([SCHOOL_LEVELS.get(m.school_level or "", NO_LEVEL) for _, m in rows]),
        disability=ints([-1 if m.disability is None else m.disability for _, m in rows]),
    )


def _variant(rules: RuleSet, rng: random.Random, n: int) -> RuleSet:
    """A rule set with other parameters throughout (still a valid one)."""
    data = orjson.loads(rules.canonical_json())
    data["id"] = f"variant-{n}"
    pkh = data["pkh"]
    pkh["max_members"] = rng.choice((1, 2, 3, 5))
    lo = rng.randint(1, 4)
    pkh["deciles"] = [lo, rng.randint(lo, 10)]
    for component in pkh["components"]:
        component["yearly_rupiah"] = rng.choice((900_000, 2_000_000, 3_000_000))  # ties too
        component["cap"] = rng.choice((None, 1, 2, 3))
        if component.get("ages"):
            a = rng.randint(0, 8)
            component["ages"] = [a, rng.randint(a, 21)]
        if component.get("min_age") is not None:
            component["min_age"] = rng.choice((60, 70))
    for program in ("bpnt", "pbi", "sekolah_rakyat"):
        lo = rng.randint(1, 5)
        data[program]["deciles"] = [lo, rng.randint(lo, 10)]
    sr = data["sekolah_rakyat"]
    sr["ages"] = [rng.randint(5, 7), rng.randint(16, 19)]
    sr["levels"] = {"SD": [sr["ages"][0], 12], "SMP": [13, 15], "SMA": [16, sr["ages"][1]]}
    return RuleSet.from_canonical(data)


def _assert_equal(families: list[Family], rules: RuleSet) -> int:
    people = _columns(families)
    out = evaluate_people(people, rules, ON)
    row = 0
    for fam in families:
        evaluation = evaluate_family(fam, rules, ON)
        pkh, bpnt = evaluation.family
        heads = [m.nik for m in fam.members if m.relationship == 1]
        for m in sorted(fam.members, key=lambda m: m.nik):
            pbi, sr = evaluation.people[m.nik]
            expected = {
                "pkh_eligible": pkh.eligible,
                "pkh_yearly": (pkh.benefit or {}).get("yearly_rupiah", 0) if pkh.eligible else 0,
                "bpnt_eligible": bpnt.eligible,
                "pbi_eligible": pbi.eligible,
                "sr_eligible": sr.eligible,
                "sr_level": SCHOOL_LEVELS[sr.level] if sr.level else NO_LEVEL,
                "sr_priority": sr.priority or 0,
                "head": m.nik == min(heads, default=None),
            }
            got = {name: getattr(out, name)[row].item() for name in expected}
            assert got == expected, (fam, m.nik)
            for decision in (pkh, bpnt, pbi, sr):
                for c in decision.criteria:
                    assert out.passed[str(decision.program), c.id][row] == c.passed, (
                        fam,
                        m.nik,
                        decision.program,
                        c.id,
                    )
            row += 1
    assert row == len(people.nik)
    return row


def test_equal_to_the_engine_under_the_shipped_rule_set(rules: RuleSet) -> None:
    rng = random.Random(20261205)
    families = [_family(rng, 3201010000000000 + i) for i in range(3000)]
    assert _assert_equal(families, rules) > 9000


@pytest.mark.parametrize("n", range(12))
def test_equal_to_the_engine_under_other_parameters(rules: RuleSet, n: int) -> None:
    rng = random.Random(n)
    variant = _variant(rules, rng, n)
    families = [_family(rng, 3201010000000000 + i) for i in range(600)]
    _assert_equal(families, variant)


def test_pkh_walk_of_a_crowded_family(rules: RuleSet) -> None:
    """Three toddlers (cap 2), the third attending SD, two pregnant, an elderly: the member
    limit of 4 falls inside SD, after the capped ones; the engine and the columns agree."""
    toddler = ON.replace(year=ON.year - 6)
    specs = [
        ("3201000000000001", toddler, False, True),  # also attends SD
        ("3201000000000002", toddler, False, False),
        ("3201000000000003", toddler, False, False),
        ("3201000000000004", date(1990, 1, 1), True, False),
        ("3201000000000005", date(1991, 1, 1), True, False),
        ("3201000000000006", date(1950, 1, 1), False, False),
    ]
    members = tuple(
        Member(
            nik=nik,
            relationship=1 if i == 3 else 3,
            sex=2,
            birth_date=birth,
            pregnant=pregnant,
            school_status=1 if at_sd else None,
            school_level="SD" if at_sd else None,
            disability=None,
            pbi_recipient=None,
        )
        for i, (nik, birth, pregnant, at_sd) in enumerate(specs)
    )
    fam = Family("3201000000000099", 1, False, None, None, members)
    pkh = evaluate_family(fam, rules, ON, (Program.PKH,)).family[0]
    assert pkh.eligible and sum(c.taken for c in pkh.components or ()) == 4
    _assert_equal([fam], rules)
