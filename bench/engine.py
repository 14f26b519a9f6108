"""Throughput of the rule engine over synthetic families (a script, never a timed test).

Run: `.venv/bin/python -m bench.engine [families]`. Prints families/s and
members/s for all four programs, for decisions rendered with `to_dict`, and, as a same-run
baseline, a loop that only computes every member's age (the least any evaluation must do).
"""

from __future__ import annotations

import random
import sys
import time
from datetime import date, timedelta

from app.eligibility import (
    Family,
    Member,
    age_on,
    evaluate_family,
    load_rule_set,
    shipped_rule_sets,
)

EVALUATION_DATE = date(2026, 1, 23)


def synthetic_families(count: int, seed: int = 7) -> list[Family]:
    rng = random.Random(seed)
    families = []
    serial = 0
    for f in range(count):
        size = rng.choice((1, 2, 2, 3, 3, 3, 4, 4, 5, 6))
        members = []
        for i in range(size):
            serial += 1
            age_days = rng.randrange(0, 85 * 365) if i else rng.randrange(18 * 365, 85 * 365)
            birth = EVALUATION_DATE - timedelta(days=age_days)
            age = age_on(birth, EVALUATION_DATE)
            attending = 6 <= age <= 22 and rng.random() < 0.85
            level = (
                None
                if not attending
                else "SD"
                if age <= 12
                else "SMP"
                if age <= 15
                else "SMA"
                if age <= 18
                else "PT"
            )
            members.append(
                Member(
                    nik=f"3201{serial:012d}",
                    relationship=1 if i == 0 else rng.choice((2, 3, 3, 3, 5, 6)),
                    sex=rng.choice((1, 2)),
                    birth_date=birth,
                    pregnant=rng.random() < 0.03,
                    school_status=1 if attending else rng.choice((0, 2, None)),
                    school_level=level,
                    disability=rng.choice((0, 0, 0, 0, 0, 0, 0, 0, 1, 2)),
                    pbi_recipient=rng.random() < 0.4,
                )
            )
        families.append(
            Family(
                no_kk=f"3201{f:012d}",
                decile=None if rng.random() < 0.03 else rng.randint(1, 10),
                asn_tni_polri=rng.random() < 0.03,
                pkh_recipient=rng.random() < 0.15,
                bpnt_recipient=rng.random() < 0.2,
                members=tuple(members),
            )
        )
    return families


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    rule_set = load_rule_set(shipped_rule_sets()[0])
    families = synthetic_families(count)
    n_members = sum(len(f.members) for f in families)
    print(f"{count:,} families, {n_members:,} members, rule set {rule_set.id}")

    def ages_only() -> None:
        for family in families:
            for member in family.members:
                age_on(member.birth_date, EVALUATION_DATE)

    def evaluate() -> None:
        for family in families:
            evaluate_family(family, rule_set, EVALUATION_DATE)

    def evaluate_and_render() -> None:
        for family in families:
            evaluation = evaluate_family(family, rule_set, EVALUATION_DATE)
            for member in family.members:
                for decision in evaluation.for_person(member.nik):
                    decision.to_dict(explain=True)

    results = {}
    for name, run in (
        ("baseline: ages only", ages_only),
        ("evaluate_family, all programs", evaluate),
        ("evaluate + for_person + to_dict(explain)", evaluate_and_render),
    ):
        best = min(_timed(run) for _ in range(3))
        results[name] = best
        print(
            f"{name:42s} {best:6.3f} s  {count / best:10,.0f} families/s  "
            f"{n_members / best:10,.0f} members/s"
        )
    ratio = results["baseline: ages only"] / results["evaluate_family, all programs"]
    print(f"evaluate_family runs at {ratio:.2f} x the ages-only baseline")


def _timed(run: object) -> float:
    assert callable(run)
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
