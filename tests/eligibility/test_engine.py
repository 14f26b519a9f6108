"""The engine against docs/rules.md: every criterion at its boundary, PKH selection, Sekolah Rakyat."""

from __future__ import annotations

import random
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.eligibility import (
    Decision,
    Family,
    Member,
    Program,
    RuleSet,
    age_on,
    evaluate_family,
)
from tests.eligibility.eligibility_builders import EVALUATION_DATE, born, family, member

PKH, BPNT, PBI, SR = Program.PKH, Program.BPNT, Program.PBI_JK, Program.SEKOLAH_RAKYAT
HEAD = "3201010101900001"
TODDLER = member("3201010101200009", age=3, relationship=3)


def decide(fam: Family, rules: RuleSet, program: Program, on: date = EVALUATION_DATE) -> Decision:
    """The decision of `program` for the family (PKH, BPNT) or its first member (PBI, SR)."""
    evaluation = evaluate_family(fam, rules, on, [program])
    decisions = evaluation.for_person(fam.members[0].nik)
    assert [d.program for d in decisions] == [program]
    return decisions[0]


def criterion(decision: Decision, criterion_id: str) -> tuple[object, object, bool]:
    (found,) = [c for c in decision.criteria if c.id == criterion_id]
    return found.observed, found.required, found.passed


def with_elderly_age(rules: RuleSet, min_age: int) -> RuleSet:
    data = orjson.loads(rules.canonical_json())
    data["id"] = f"elderly-{min_age}"
    data["pkh"]["components"][3]["min_age"] = min_age
    return RuleSet.from_canonical(data)


# --- age ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("birth", "on", "age"),
    [
        (date(2000, 5, 10), date(2026, 5, 9), 25),  # the day before the birthday
        (date(2000, 5, 10), date(2026, 5, 10), 26),  # the birthday
        (date(2000, 5, 10), date(2026, 5, 11), 26),  # the day after
        (date(2000, 12, 31), date(2026, 1, 1), 25),
        (date(2026, 1, 23), date(2026, 1, 23), 0),  # born on the evaluation date
        (date(2000, 2, 29), date(2001, 2, 28), 0),  # common year: not yet on 28 Feb
        (date(2000, 2, 29), date(2001, 3, 1), 1),  # ... a year older on 1 Mar
        (date(2000, 2, 29), date(2004, 2, 28), 3),  # leap year: not yet on 28 Feb
        (date(2000, 2, 29), date(2004, 2, 29), 4),  # ... a year older on 29 Feb
    ],
)
def test_age_on(birth: date, on: date, age: int) -> None:
    assert age_on(birth, on) == age


def test_ages_come_from_the_evaluation_date_never_the_clock(rules: RuleSet) -> None:
    child = member(HEAD, birth_date=date(2016, 3, 1))
    fam = family(child)
    assert criterion(decide(fam, rules, SR, date(2026, 2, 28)), "age_in_range")[0] == 9
    assert criterion(decide(fam, rules, SR, date(2026, 3, 1)), "age_in_range")[0] == 10
    assert criterion(decide(fam, rules, SR, date(2040, 1, 1)), "age_in_range")[0] == 23
    source = (Path(__file__).resolve().parents[2] / "app/eligibility/engine.py").read_text()
    for clock in ("today(", "now(", "time.time", "utcnow"):
        assert clock not in source


# --- the shared criteria: decile and exclusion --------------------------------------------

SCHOOL_CHILD = member(HEAD, age=10)  # not attending: Sekolah Rakyat level by age (SD)


@pytest.mark.parametrize(
    ("program", "decile", "eligible", "required"),
    [
        (PKH, 1, True, [1, 4]),
        (PKH, 4, True, [1, 4]),
        (PKH, 5, False, [1, 4]),
        (PKH, 10, False, [1, 4]),
        (PKH, None, False, [1, 4]),
        (BPNT, 1, True, [1, 5]),
        (BPNT, 5, True, [1, 5]),
        (BPNT, 6, False, [1, 5]),
        (BPNT, None, False, [1, 5]),
        (PBI, 5, True, [1, 5]),
        (PBI, 6, False, [1, 5]),
        (PBI, None, False, [1, 5]),
        (SR, 1, True, [1, 2]),
        (SR, 2, True, [1, 2]),
        (SR, 3, False, [1, 2]),
        (SR, None, False, [1, 2]),
    ],
)
def test_decile_in_range_at_its_edges(
    rules: RuleSet, program: Program, decile: int | None, eligible: bool, required: list[int]
) -> None:
    fam = family(SCHOOL_CHILD, TODDLER, decile=decile)
    decision = decide(fam, rules, program)
    assert decision.eligible is eligible
    assert (decision.benefit is not None) is (eligible and program is not SR)
    assert criterion(decision, "decile_in_range") == (decile, tuple(required), eligible)
    assert decision.to_dict(explain=True)["criteria"][0] == {
        "id": "decile_in_range",
        "observed": decile,
        "required": required,
        "passed": eligible,
    }


@pytest.mark.parametrize(
    ("program", "excluded", "eligible"),
    [
        (PKH, False, True),
        (PKH, True, False),
        (BPNT, False, True),
        (BPNT, True, False),
        (PBI, False, True),
        (PBI, True, False),
        # docs/rules.md excludes ASN/TNI/Polri families from PKH, BPNT and PBI JK only.
        (SR, True, True),
    ],
)
def test_exclusion(rules: RuleSet, program: Program, excluded: bool, eligible: bool) -> None:
    decision = decide(family(SCHOOL_CHILD, TODDLER, excluded=excluded), rules, program)
    assert decision.eligible is eligible
    if program is SR:
        assert "not_excluded" not in [c.id for c in decision.criteria]
    else:
        assert criterion(decision, "not_excluded") == (excluded, False, not excluded)


def test_monthly_benefits_come_from_the_rule_set(rules: RuleSet) -> None:
    fam = family(SCHOOL_CHILD)
    assert decide(fam, rules, BPNT).benefit == {"monthly_rupiah": 200_000}
    assert decide(fam, rules, PBI).benefit == {"monthly_rupiah": 42_000}
    assert decide(fam, rules, SR).benefit is None  # a place, not money


@pytest.mark.parametrize(
    ("program", "decile", "flags", "recipient", "eligible"),
    [
        (PKH, 9, {"pkh_recipient": True}, True, False),  # inclusion error: reported, not used
        (PKH, 1, {"pkh_recipient": False}, False, True),  # exclusion error
        (BPNT, 9, {"bpnt_recipient": True}, True, False),
        (BPNT, 1, {}, None, True),
        (PBI, 9, {"pbi_recipient": True}, True, False),
        (PBI, 1, {"pbi_recipient": False}, False, True),
        (SR, 1, {"pkh_recipient": True, "pbi_recipient": True}, None, False),  # age 4
    ],
)
def test_recipient_flags_are_reported_never_used(
    rules: RuleSet,
    program: Program,
    decile: int,
    flags: dict[str, bool],
    recipient: bool | None,
    eligible: bool,
) -> None:
    child = member(HEAD, age=4, pbi_recipient=flags.get("pbi_recipient"))
    fam = family(
        child,
        decile=decile,
        pkh_recipient=flags.get("pkh_recipient"),
        bpnt_recipient=flags.get("bpnt_recipient"),
    )
    decision = decide(fam, rules, program)
    assert (decision.recipient, decision.eligible) == (recipient, eligible)
    assert ("recipient" in decision.to_dict(explain=False)) is (recipient is not None)


# --- PKH component conditions ---------------------------------------------------------------


def taken(decision: Decision) -> list[tuple[str, str]]:
    assert decision.components is not None
    return [(c.nik, c.component) for c in decision.components if c.taken]


def pkh_components_of(rules: RuleSet, one: Member) -> list[str]:
    """The components the single member `one` is a candidate for, taken or not."""
    decision = decide(family(one), rules, PKH)
    assert decision.components is not None
    return [c.component for c in decision.components]


ON = EVALUATION_DATE


@pytest.mark.parametrize(
    ("kwargs", "components"),
    [
        # USIA_DINI: ages 0-6 inclusive
        ({"birth_date": ON}, ["USIA_DINI"]),  # born on the evaluation date: age 0
        ({"birth_date": born(6)}, ["USIA_DINI"]),  # sixth birthday today
        ({"birth_date": date(2019, 1, 24)}, ["USIA_DINI"]),  # 7 tomorrow: still 6
        ({"birth_date": born(7)}, []),  # seventh birthday today
        # LANSIA: 60 and over
        ({"birth_date": date(1966, 1, 24)}, []),  # 60 tomorrow
        ({"birth_date": born(60)}, ["LANSIA"]),
        ({"age": 95}, ["LANSIA"]),
        # HAMIL and DISABILITAS_BERAT
        ({"pregnant": True}, ["HAMIL"]),
        ({"pregnant": False}, []),
        ({"pregnant": None}, []),
        ({"disability": 2}, ["DISABILITAS_BERAT"]),
        ({"disability": 1}, []),  # mild or moderate
        ({"disability": 0}, []),
        # school components: attending, that level, age 6-21
        ({"age": 6, "school_status": 1, "school_level": "SD"}, ["USIA_DINI", "SD"]),
        ({"age": 5, "school_status": 1, "school_level": "SD"}, ["USIA_DINI"]),
        ({"age": 13, "school_status": 1, "school_level": "SMP"}, ["SMP"]),
        ({"age": 21, "school_status": 1, "school_level": "SMA"}, ["SMA"]),
        ({"age": 22, "school_status": 1, "school_level": "SMA"}, []),
        ({"age": 19, "school_status": 1, "school_level": "PT"}, []),
        ({"age": 10, "school_status": 2, "school_level": "SD"}, []),  # no longer attending
        ({"age": 10, "school_status": 0, "school_level": None}, []),
        ({"age": 10, "school_status": 1, "school_level": None}, []),
        # several conditions: every one is a candidate
        ({"age": 70, "disability": 2}, ["DISABILITAS_BERAT", "LANSIA"]),
        (
            {"age": 17, "pregnant": True, "school_status": 1, "school_level": "SMA"},
            ["HAMIL", "SMA"],
        ),
    ],
)
def test_component_conditions(
    rules: RuleSet, kwargs: dict[str, Any], components: list[str]
) -> None:
    assert pkh_components_of(rules, member(HEAD, **kwargs)) == components


@pytest.mark.parametrize(
    ("min_age", "age", "lansia"), [(70, 60, False), (70, 69, False), (70, 70, True)]
)
def test_the_elderly_age_is_a_parameter(
    rules: RuleSet, min_age: int, age: int, lansia: bool
) -> None:
    variant = with_elderly_age(rules, min_age)
    decision = decide(family(member(HEAD, age=age)), variant, PKH)
    assert (taken(decision) == [(HEAD, "LANSIA")]) is lansia
    assert decision.eligible is lansia
    assert decide(family(member(HEAD, age=age)), rules, PKH).eligible  # 60 in the shipped set


# --- PKH selection ------------------------------------------------------------------------


def nik(n: int) -> str:
    return f"32010101019000{n:02d}"


def left_out(decision: Decision) -> list[tuple[str, str, str | None]]:
    assert decision.components is not None
    return [(c.nik, c.component, c.reason) for c in decision.components if not c.taken]


@pytest.mark.parametrize(
    ("members", "taken_pairs", "left_out_pairs"),
    [
        pytest.param(
            [
                member(nik(3), pregnant=True),
                member(nik(1), pregnant=True),
                member(nik(2), pregnant=True),
            ],
            [(nik(1), "HAMIL"), (nik(2), "HAMIL")],
            [(nik(3), "HAMIL", "cap")],
            id="three pregnant: cap 2, the highest NIK left out",
        ),
        pytest.param(
            [member(nik(i), age=8, school_status=1, school_level="SD") for i in (5, 4, 3, 2, 1)],
            [(nik(i), "SD") for i in (1, 2, 3, 4)],
            [(nik(5), "SD", "member_limit")],
            id="five pupils: the fifth member is past the limit",
        ),
        pytest.param(
            [member(nik(i), age=6, school_status=1, school_level="SD") for i in (3, 2, 1)],
            [(nik(1), "USIA_DINI"), (nik(2), "USIA_DINI"), (nik(3), "SD")],
            [
                (nik(3), "USIA_DINI", "cap"),
                (nik(1), "SD", "member_has_component"),
                (nik(2), "SD", "member_has_component"),
            ],
            id="a third toddler who attends SD gets SD",
        ),
        pytest.param(
            [member(nik(1), age=3), member(nik(2), pregnant=True)],
            [(nik(2), "HAMIL"), (nik(1), "USIA_DINI")],
            [],
            id="equal amounts: table order before NIK",
        ),
        pytest.param(
            [member(nik(2), age=65), member(nik(1), age=70, disability=2)],
            [(nik(1), "DISABILITAS_BERAT"), (nik(2), "LANSIA")],
            [(nik(1), "LANSIA", "member_has_component")],
            id="an elderly disabled member takes the disability; the other elderly LANSIA",
        ),
        pytest.param(
            [member(nik(1), age=70), member(nik(2), age=80)],
            [(nik(1), "LANSIA")],
            [(nik(2), "LANSIA", "cap")],
            id="one LANSIA a family, by NIK",
        ),
        pytest.param(
            [member(nik(1), age=17, pregnant=True, school_status=1, school_level="SMA")],
            [(nik(1), "HAMIL")],
            [(nik(1), "SMA", "member_has_component")],
            id="a member takes their highest component only",
        ),
        pytest.param(
            [
                member(nik(1), age=16, school_status=1, school_level="SMA"),
                member(nik(2), age=14, school_status=1, school_level="SMP"),
                member(nik(3), age=9, school_status=1, school_level="SD"),
                member(nik(4), age=2),
                member(nik(5), age=4),
                member(nik(6), age=1),
            ],
            [(nik(4), "USIA_DINI"), (nik(5), "USIA_DINI"), (nik(1), "SMA"), (nik(2), "SMP")],
            [(nik(6), "USIA_DINI", "cap"), (nik(3), "SD", "member_limit")],
            id="the limit falls on the lowest amount",
        ),
    ],
)
def test_pkh_selection(
    rules: RuleSet,
    members: list[Member],
    taken_pairs: list[tuple[str, str]],
    left_out_pairs: list[tuple[str, str, str]],
) -> None:
    fam = family(*members)
    decision = decide(fam, rules, PKH)
    assert taken(decision) == taken_pairs
    assert left_out(decision) == left_out_pairs
    assert criterion(decision, "has_component") == (len(taken_pairs), (1, None), True)
    # The selection depends on the data, never on the order members are listed in.
    shuffled = list(fam.members)
    random.Random(3).shuffle(shuffled)
    again = decide(family(*shuffled), rules, PKH)
    assert again.components == decision.components


@pytest.mark.parametrize(
    ("members", "yearly"),
    [
        ([member(nik(1), age=3)], 3_000_000),
        (
            [
                member(nik(1), age=3),
                member(nik(2), age=13, school_status=1, school_level="SMP"),
                member(nik(3), age=61),
            ],
            6_900_000,
        ),
        (
            [member(nik(i), age=9, school_status=1, school_level="SD") for i in range(1, 6)],
            3_600_000,
        ),
    ],
)
def test_pkh_benefit_is_the_yearly_sum_in_four_tranches(
    rules: RuleSet, members: list[Member], yearly: int
) -> None:
    decision = decide(family(*members), rules, PKH)
    assert decision.eligible
    assert decision.benefit == {"yearly_rupiah": yearly, "per_tranche_rupiah": yearly // 4}
    assert yearly % 4 == 0


def test_pkh_needs_a_component(rules: RuleSet) -> None:
    decision = decide(family(member(HEAD, age=30)), rules, PKH)
    assert not decision.eligible
    assert decision.benefit is None
    assert decision.components == ()
    assert criterion(decision, "has_component") == (0, (1, None), False)


@pytest.mark.parametrize(("decile", "excluded"), [(5, False), (None, False), (1, True)])
def test_pkh_lists_the_selection_even_when_refused(
    rules: RuleSet, decile: int | None, excluded: bool
) -> None:
    decision = decide(family(TODDLER, decile=decile, excluded=excluded), rules, PKH)
    assert not decision.eligible
    assert decision.benefit is None
    assert taken(decision) == [(TODDLER.nik, "USIA_DINI")]
    assert criterion(decision, "has_component")[2]


# --- Sekolah Rakyat -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "decile", "eligible", "level", "observed_level"),
    [
        # attending: the level attended, whatever the age
        ({"age": 10, "school_status": 1, "school_level": "SD"}, 1, True, "SD", "SD"),
        ({"age": 10, "school_status": 1, "school_level": "SMP"}, 1, True, "SMP", "SMP"),
        ({"age": 18, "school_status": 1, "school_level": "SMA"}, 2, True, "SMA", "SMA"),
        ({"age": 18, "school_status": 1, "school_level": "PT"}, 1, False, None, "PT"),
        ({"age": 10, "school_status": 1, "school_level": None}, 1, False, None, None),
        # not attending (never, no longer, unknown): the level of the age
        ({"age": 6, "school_status": 0}, 1, True, "SD", "SD"),
        ({"age": 12, "school_status": 2, "school_level": "SMP"}, 1, True, "SD", "SD"),
        ({"age": 13, "school_status": None}, 1, True, "SMP", "SMP"),
        ({"age": 15, "school_status": 0}, 1, True, "SMP", "SMP"),
        ({"age": 16, "school_status": 0}, 1, True, "SMA", "SMA"),
        ({"age": 18, "school_status": 2}, 2, True, "SMA", "SMA"),
        # ages outside 6-18
        ({"age": 5, "school_status": 1, "school_level": "SD"}, 1, False, None, "SD"),
        ({"age": 5, "school_status": 0}, 1, False, None, None),
        ({"age": 19, "school_status": 0}, 1, False, None, None),
        ({"age": 19, "school_status": 1, "school_level": "SMA"}, 1, False, None, "SMA"),
        # decile out of range: no level, no priority
        ({"age": 10, "school_status": 0}, 3, False, None, "SD"),
    ],
)
def test_sekolah_rakyat(
    rules: RuleSet,
    kwargs: dict[str, Any],
    decile: int,
    eligible: bool,
    level: str | None,
    observed_level: str | None,
) -> None:
    child = member(HEAD, **kwargs)
    decision = decide(family(child, decile=decile), rules, SR)
    assert decision.unit == "person"
    assert (decision.eligible, decision.level) == (eligible, level)
    assert decision.priority == (decile if eligible else None)
    age = age_on(child.birth_date, EVALUATION_DATE)
    assert criterion(decision, "age_in_range") == (age, (6, 18), 6 <= age <= 18)
    observed, required, _ = criterion(decision, "school_level")
    assert (observed, required) == (observed_level, ("SD", "SMP", "SMA"))
    assert [c.id for c in decision.criteria] == ["decile_in_range", "age_in_range", "school_level"]


# --- the evaluation as a whole, and its rendering -----------------------------------------


def test_for_person_lists_family_then_own_decisions_in_program_order(rules: RuleSet) -> None:
    head, child = member(HEAD, age=40), member(nik(9), age=4, relationship=3)
    fam = family(head, child)
    evaluation = evaluate_family(fam, rules, EVALUATION_DATE, [SR, PBI, BPNT, PKH])
    assert (evaluation.rule_set_id, evaluation.rule_set_checksum) == (rules.id, rules.checksum)
    assert evaluation.evaluation_date == EVALUATION_DATE
    for person in (head, child):
        decisions = evaluation.for_person(person.nik)
        assert [d.program for d in decisions] == [PKH, BPNT, PBI, SR]
        assert [d.unit for d in decisions] == ["family", "family", "person", "person"]
        assert [d.subject for d in decisions] == [fam.no_kk, fam.no_kk, person.nik, person.nik]
    assert evaluation.for_person(head.nik)[:2] == evaluation.for_person(child.nik)[:2]
    with pytest.raises(KeyError):
        evaluation.for_person("3201010101900099")


@pytest.mark.parametrize(
    ("programs", "expected"),
    [
        (None, [PKH, BPNT, PBI, SR]),
        ([PBI], [PBI]),
        ({SR, PKH}, [PKH, SR]),
        (["BPNT"], [BPNT]),
        ([], []),
    ],
)
def test_only_the_requested_programs_are_decided(
    rules: RuleSet, programs: list[Program] | None, expected: list[Program]
) -> None:
    evaluation = evaluate_family(family(TODDLER), rules, EVALUATION_DATE, programs)
    assert [d.program for d in evaluation.for_person(TODDLER.nik)] == expected


def test_to_dict_matches_the_api_shape(rules: RuleSet) -> None:
    person = member("3201014501900001", age=30, pbi_recipient=False)
    evaluation = evaluate_family(family(person, decile=3), rules, EVALUATION_DATE, [PBI])
    (decision,) = evaluation.for_person(person.nik)
    assert decision.to_dict(explain=True) == {
        "program": "PBI_JK",
        "unit": "person",
        "eligible": True,
        "recipient": False,
        "benefit": {"monthly_rupiah": 42000},
        "criteria": [
            {"id": "decile_in_range", "observed": 3, "required": [1, 5], "passed": True},
            {"id": "not_excluded", "observed": False, "required": False, "passed": True},
        ],
    }
    assert decision.to_dict(explain=False) == {
        "program": "PBI_JK",
        "unit": "person",
        "eligible": True,
        "recipient": False,
        "benefit": {"monthly_rupiah": 42000},
    }


def test_to_dict_of_pkh_and_sekolah_rakyat(rules: RuleSet) -> None:
    pupils = [member(nik(i), age=9, school_status=1, school_level="SD") for i in range(1, 6)]
    evaluation = evaluate_family(family(*pupils, decile=2), rules, EVALUATION_DATE)
    pkh, _, _, sr = evaluation.for_person(nik(1))
    brief = pkh.to_dict(explain=False)
    assert "criteria" not in brief
    assert brief["benefit"] == {"yearly_rupiah": 3_600_000, "per_tranche_rupiah": 900_000}
    assert "components" not in brief  # they name other members: only with explain
    full = pkh.to_dict(explain=True)
    assert [c["nik"] for c in full["components"] if c["taken"]] == [nik(i) for i in range(1, 5)]
    assert full["components"][0] == {
        "nik": nik(1),
        "component": "SD",
        "yearly_rupiah": 900_000,
        "taken": True,
        "reason": None,
    }
    assert full["components"][-1]["reason"] == "member_limit"
    assert len(full["components"]) == 5
    assert full["criteria"][-1] == {
        "id": "has_component",
        "observed": 4,
        "required": [1, None],
        "passed": True,
    }
    assert sr.to_dict(explain=False) == {
        "program": "SEKOLAH_RAKYAT",
        "unit": "person",
        "eligible": True,
        "benefit": None,
        "level": "SD",
        "priority": 2,
    }
    # Rendered dicts are the caller's: changing one leaves the decision as it was.
    brief["benefit"]["yearly_rupiah"] = 0
    assert pkh.benefit == {"yearly_rupiah": 3_600_000, "per_tranche_rupiah": 900_000}
    orjson.dumps(full)  # serialisable as is


def test_equal_rule_sets_give_equal_decisions(rules: RuleSet) -> None:
    fam = family(TODDLER, member(nik(2), age=70, disability=2))
    copy = RuleSet.from_canonical(rules.canonical_json())
    assert copy is not rules
    first = evaluate_family(fam, rules, EVALUATION_DATE)
    assert evaluate_family(fam, copy, EVALUATION_DATE) == first
    elderly_70 = with_elderly_age(rules, 70)
    assert evaluate_family(fam, elderly_70, EVALUATION_DATE).rule_set_id == "elderly-70"
