"""The pure rule engine: one family, one rule set, one evaluation date in; decisions out.

docs/rules.md is the contract. Nothing here reads the clock, a file or a database: the same inputs
give the same decisions today and in a year.

Criteria (id: observed / required), in the order a decision lists them:

- `decile_in_range`: the family's decile (None = unranked, which fails everything) / [lo, hi].
- `not_excluded`: the family's `asn_tni_polri` flag / False. PKH, BPNT and PBI JK only:
  docs/rules.md does not exclude ASN/TNI/Polri families from Sekolah Rakyat.
- PKH `has_component`: the number of members taken for a component / [1, None] (at least one).
- Sekolah Rakyat `age_in_range`: age on the evaluation date / [lo, hi]; `school_level`: the
  level attended when the child attends school (e.g. "PT", or None when the level is unknown),
  otherwise the level of the child's age (None outside every level) / ["SD", "SMP", "SMA"].

PKH components are selected whatever the decile or exclusion, so the explanation shows what the
family would get; the benefit is only given when the family is eligible. A left-out candidate
carries the first condition it failed, in docs/rules.md's order: "member_has_component", "cap",
"member_limit". Sekolah Rakyat's `level` and `priority` are set only on an eligible decision.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Any, Final

from app.eligibility.rule_set import SCHOOL_COMPONENTS, RuleSet


class Program(StrEnum):
    PKH = "PKH"
    BPNT = "BPNT"
    PBI_JK = "PBI_JK"
    SEKOLAH_RAKYAT = "SEKOLAH_RAKYAT"

    @property
    def unit(self) -> str:
        return _UNITS[self]


_UNITS: Final = {
    Program.PKH: "family",
    Program.BPNT: "family",
    Program.PBI_JK: "person",
    Program.SEKOLAH_RAKYAT: "person",
}
# Decisions are always listed in this order (Program's declaration order).
PROGRAM_ORDER: Final = tuple(Program)
FAMILY_PROGRAMS: Final = (Program.PKH, Program.BPNT)
PERSON_PROGRAMS: Final = (Program.PBI_JK, Program.SEKOLAH_RAKYAT)

SR_LEVELS: Final = ("SD", "SMP", "SMA")
# The school levels and their codes (docs/snapshot-format.md `jenjang_sekolah`): one table for the
# importer (name to code), the registry's rows and the stored decisions (code to name).
SCHOOL_LEVELS: Final[Mapping[str, int]] = {"SD": 1, "SMP": 2, "SMA": 3, "PT": 4}
SCHOOL_LEVEL_NAMES: Final[Mapping[int, str]] = {v: k for k, v in SCHOOL_LEVELS.items()}
REASON_MEMBER_HAS_COMPONENT: Final = "member_has_component"
REASON_CAP: Final = "cap"
REASON_MEMBER_LIMIT: Final = "member_limit"


@dataclass(frozen=True, slots=True)
class Member:
    nik: str
    relationship: int  # 1 head .. 8 other
    sex: int  # 1 male, 2 female
    birth_date: date
    pregnant: bool | None  # hamil
    school_status: int | None  # 0 never, 1 attending, 2 no longer
    school_level: str | None  # "SD" | "SMP" | "SMA" | "PT"
    disability: int | None  # 0 none, 1 mild/moderate, 2 severe
    pbi_recipient: bool | None  # penerima_pbi


@dataclass(frozen=True, slots=True)
class Family:
    no_kk: str
    decile: int | None  # None = unranked
    asn_tni_polri: bool
    pkh_recipient: bool | None
    bpnt_recipient: bool | None
    members: tuple[Member, ...]


@dataclass(frozen=True, slots=True)
class Criterion:
    id: str
    observed: object
    required: object
    passed: bool

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "observed": _jsonable(self.observed),
            "required": _jsonable(self.required),
            "passed": self.passed,
        }


@dataclass(frozen=True, slots=True)
class Component:
    nik: str
    component: str
    yearly_rupiah: int
    taken: bool
    reason: str | None  # None when taken, else "member_has_component", "cap" or "member_limit"

    def to_dict(self) -> dict[str, object]:
        return {
            "nik": self.nik,
            "component": self.component,
            "yearly_rupiah": self.yearly_rupiah,
            "taken": self.taken,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class Decision:
    program: Program
    unit: str
    eligible: bool
    recipient: bool | None
    benefit: dict[str, int] | None  # None when not eligible
    criteria: tuple[Criterion, ...]
    components: tuple[Component, ...] | None = None  # PKH only
    level: str | None = None  # Sekolah Rakyat only
    priority: int | None = None  # Sekolah Rakyat only
    subject: str = ""  # no_kk for family decisions, nik for person decisions

    def to_dict(self, explain: bool) -> dict[str, Any]:
        """The API shape (docs/architecture.md). `recipient` is left out when unknown.

        `criteria` and PKH `components` (every candidate, taken and left out, with the reason)
        come only with `explain`: components name the family's other members and reveal
        conditions such as pregnancy or disability (health data, UU 27/2022), so a plain answer
        carries the decision and the benefit only.
        """
        out: dict[str, Any] = {
            "program": str(self.program),
            "unit": self.unit,
            "eligible": self.eligible,
        }
        if self.recipient is not None:
            out["recipient"] = self.recipient
        out["benefit"] = None if self.benefit is None else dict(self.benefit)
        if self.program is Program.SEKOLAH_RAKYAT:
            out["level"] = self.level
            out["priority"] = self.priority
        if explain:
            if self.components is not None:
                out["components"] = [c.to_dict() for c in self.components]
            out["criteria"] = [c.to_dict() for c in self.criteria]
        return out


@dataclass(frozen=True, slots=True)
class FamilyEvaluation:
    no_kk: str
    rule_set_id: str
    rule_set_checksum: str
    evaluation_date: date
    family: tuple[Decision, ...]  # PKH, BPNT (those asked for)
    people: Mapping[str, tuple[Decision, ...]]  # nik -> PBI_JK, SEKOLAH_RAKYAT (those asked for)

    def for_person(self, nik: str) -> list[Decision]:
        """The person's family decisions then their own, in program order; KeyError if absent."""
        return [*self.family, *self.people[nik]]


def age_on(birth: date, on: date) -> int:
    """Age in whole years (docs/rules.md): born 29 Feb, a year older on 1 Mar in common years."""
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def _jsonable(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


class _DecileCriteria:
    """`decile_in_range` criteria of one program, made once per decile value and shared."""

    __slots__ = ("by_decile", "hi", "lo", "required")

    def __init__(self, deciles: tuple[int, int]) -> None:
        self.lo, self.hi = deciles
        self.required = deciles
        self.by_decile: dict[int | None, Criterion] = {}

    def get(self, decile: int | None) -> Criterion:
        criterion = self.by_decile.get(decile)
        if criterion is None:
            passed = decile is not None and self.lo <= decile <= self.hi
            criterion = Criterion("decile_in_range", decile, self.required, passed)
            self.by_decile[decile] = criterion
        return criterion


@dataclass(frozen=True, slots=True)
class _PkhComponent:
    id: str
    rank: int  # position in the selection order: amount descending, then table order
    yearly_rupiah: int
    cap: int  # a large number when uncapped
    lo: int  # age range (or min age with a huge hi); unused for HAMIL and DISABILITAS_BERAT
    hi: int


class _Compiled:
    """Everything derived from one rule set that the hot loop needs, computed once."""

    def __init__(self, rule_set: RuleSet) -> None:
        self.rule_set_id = rule_set.id
        self.checksum = rule_set.checksum
        pkh = rule_set.pkh
        ordered = sorted(
            enumerate(pkh.components), key=lambda pair: (-pair[1].yearly_rupiah, pair[0])
        )
        by_id: dict[str, _PkhComponent] = {}
        for rank, (_, params) in enumerate(ordered):
            lo, hi = params.ages if params.ages is not None else (params.min_age or 0, 1 << 30)
            cap = params.cap if params.cap is not None else 1 << 30
            by_id[params.id] = _PkhComponent(params.id, rank, params.yearly_rupiah, cap, lo, hi)
        self.hamil = by_id["HAMIL"]
        self.usia_dini = by_id["USIA_DINI"]
        self.disabilitas_berat = by_id["DISABILITAS_BERAT"]
        self.lansia = by_id["LANSIA"]
        self.school = {level: by_id[level] for level in SCHOOL_COMPONENTS}
        self.n_components = len(by_id)
        self.max_members = pkh.max_members
        self.tranches = pkh.tranches_per_year
        self.has_component = tuple(
            Criterion("has_component", taken, (1, None), taken >= 1)
            for taken in range(pkh.max_members + 1)
        )

        self.pkh_decile = _DecileCriteria(pkh.deciles)
        self.bpnt_decile = _DecileCriteria(rule_set.bpnt.deciles)
        self.pbi_decile = _DecileCriteria(rule_set.pbi.deciles)
        self.sr_decile = _DecileCriteria(rule_set.sekolah_rakyat.deciles)
        self.not_excluded = {
            flag: Criterion("not_excluded", flag, False, not flag) for flag in (False, True)
        }
        self.bpnt_monthly = rule_set.bpnt.monthly_rupiah
        self.pbi_monthly = rule_set.pbi.monthly_rupiah

        sr = rule_set.sekolah_rakyat
        self.sr_ages = sr.ages
        self.sr_age_criteria: dict[int, Criterion] = {}
        levels = sr.levels
        self.level_by_age = {
            age: level
            for level, (lo, hi) in (("SD", levels.SD), ("SMP", levels.SMP), ("SMA", levels.SMA))
            for age in range(lo, hi + 1)
        }
        self.sr_level_criteria = {
            level: Criterion("school_level", level, SR_LEVELS, level in SR_LEVELS)
            for level in (*SR_LEVELS, "PT", None)
        }

    def sr_age(self, age: int) -> Criterion:
        criterion = self.sr_age_criteria.get(age)
        if criterion is None:
            lo, hi = self.sr_ages
            criterion = Criterion("age_in_range", age, self.sr_ages, lo <= age <= hi)
            self.sr_age_criteria[age] = criterion
        return criterion

    def sr_level(self, observed: str | None) -> Criterion:
        criterion = self.sr_level_criteria.get(observed)
        if criterion is None:  # a value outside the snapshot's codes; refused, never cached
            criterion = Criterion("school_level", observed, SR_LEVELS, False)
        return criterion


# Keyed by checksum: equal parameters compile once, whichever RuleSet object carries them.
_COMPILED: dict[str, _Compiled] = {}


def _compiled(rule_set: RuleSet) -> _Compiled:
    compiled = _COMPILED.get(rule_set.checksum)
    if compiled is None:
        compiled = _COMPILED[rule_set.checksum] = _Compiled(rule_set)
    return compiled


_ALL_PROGRAMS: Final = frozenset(Program)


def evaluate_family(
    family: Family,
    rule_set: RuleSet,
    evaluation_date: date,
    programs: Collection[Program] | None = None,
) -> FamilyEvaluation:
    """Decide the requested programs (all when None) for a family and each of its members."""
    rules = _compiled(rule_set)
    wanted = _ALL_PROGRAMS if programs is None else programs
    want_pkh = Program.PKH in wanted
    want_bpnt = Program.BPNT in wanted
    want_pbi = Program.PBI_JK in wanted
    want_sr = Program.SEKOLAH_RAKYAT in wanted

    decile = family.decile
    excluded = family.asn_tni_polri
    not_excluded = rules.not_excluded[excluded]
    # One age per member, shared by PKH and Sekolah Rakyat.
    ages = [age_on(member.birth_date, evaluation_date) for member in family.members]

    family_decisions: list[Decision] = []
    if want_pkh:
        family_decisions.append(_pkh(family, ages, rules, not_excluded))
    if want_bpnt:
        criterion = rules.bpnt_decile.get(decile)
        eligible = criterion.passed and not excluded
        family_decisions.append(
            Decision(
                Program.BPNT,
                "family",
                eligible,
                family.bpnt_recipient,
                _benefit(Program.BPNT, rules, eligible, 0),
                (criterion, not_excluded),
                subject=family.no_kk,
            )
        )

    people: dict[str, tuple[Decision, ...]] = {}
    if want_pbi or want_sr:
        pbi_criteria = (rules.pbi_decile.get(decile), not_excluded)
        pbi_eligible = pbi_criteria[0].passed and not excluded
        sr_decile = rules.sr_decile.get(decile)
        level_by_age = rules.level_by_age
        for member, age in zip(family.members, ages, strict=True):
            own: list[Decision] = []
            if want_pbi:
                own.append(
                    Decision(
                        Program.PBI_JK,
                        "person",
                        pbi_eligible,
                        member.pbi_recipient,
                        _benefit(Program.PBI_JK, rules, pbi_eligible, 0),
                        pbi_criteria,
                        subject=member.nik,
                    )
                )
            if want_sr:
                age_criterion = rules.sr_age(age)
                if member.school_status == 1:
                    observed = member.school_level
                    level = observed if observed in SR_LEVELS else None
                else:
                    level = observed = level_by_age.get(age)
                eligible = sr_decile.passed and age_criterion.passed and level is not None
                own.append(
                    Decision(
                        Program.SEKOLAH_RAKYAT,
                        "person",
                        eligible,
                        None,
                        None,
                        (sr_decile, age_criterion, rules.sr_level(observed)),
                        level=level if eligible else None,
                        priority=decile if eligible else None,
                        subject=member.nik,
                    )
                )
            people[member.nik] = tuple(own)
    else:
        people = {member.nik: () for member in family.members}

    return FamilyEvaluation(
        family.no_kk,
        rules.rule_set_id,
        rules.checksum,
        evaluation_date,
        tuple(family_decisions),
        people,
    )


def _pkh(family: Family, ages: list[int], rules: _Compiled, not_excluded: Criterion) -> Decision:
    """docs/rules.md PKH steps 1-4: candidates, the deterministic walk, the decision."""
    usia_dini, lansia, school = rules.usia_dini, rules.lansia, rules.school
    # (rank, nik, index) sorts as docs/rules.md asks: amount desc, table order, NIK asc.
    candidates: list[tuple[int, str, int, _PkhComponent]] = []
    for index, (member, age) in enumerate(zip(family.members, ages, strict=True)):
        nik = member.nik
        if member.pregnant:
            candidates.append((rules.hamil.rank, nik, index, rules.hamil))
        if usia_dini.lo <= age <= usia_dini.hi:
            candidates.append((usia_dini.rank, nik, index, usia_dini))
        if member.disability == 2:
            candidates.append((rules.disabilitas_berat.rank, nik, index, rules.disabilitas_berat))
        if age >= lansia.lo:
            candidates.append((lansia.rank, nik, index, lansia))
        if member.school_status == 1 and member.school_level is not None:
            component = school.get(member.school_level)
            if component is not None and component.lo <= age <= component.hi:
                candidates.append((component.rank, nik, index, component))
    candidates.sort()

    components: list[Component] = []
    taken_per_component = [0] * rules.n_components
    members_taken: set[int] = set()
    yearly = 0
    for rank, nik, index, component in candidates:
        if index in members_taken:
            reason: str | None = REASON_MEMBER_HAS_COMPONENT
        elif taken_per_component[rank] >= component.cap:
            reason = REASON_CAP
        elif len(members_taken) >= rules.max_members:
            reason = REASON_MEMBER_LIMIT
        else:
            reason = None
            members_taken.add(index)
            taken_per_component[rank] += 1
            yearly += component.yearly_rupiah
        components.append(
            Component(nik, component.id, component.yearly_rupiah, reason is None, reason)
        )

    decile_criterion = rules.pkh_decile.get(family.decile)
    has_component = rules.has_component[len(members_taken)]
    eligible = decile_criterion.passed and not_excluded.passed and has_component.passed
    return Decision(
        Program.PKH,
        "family",
        eligible,
        family.pkh_recipient,
        _benefit(Program.PKH, rules, eligible, yearly),
        (decile_criterion, not_excluded, has_component),
        tuple(components),
        subject=family.no_kk,
    )


def _benefit(
    program: Program, rules: _Compiled, eligible: bool, yearly: int
) -> dict[str, int] | None:
    """What an eligible unit receives (docs/rules.md), None when not eligible. `yearly`: the sum of
    PKH's taken components (PKH only), paid in the rule set's tranches."""
    if not eligible:
        return None
    if program is Program.PKH:
        return {"yearly_rupiah": yearly, "per_tranche_rupiah": yearly // rules.tranches}
    if program is Program.BPNT:
        return {"monthly_rupiah": rules.bpnt_monthly}
    if program is Program.PBI_JK:
        return {"monthly_rupiah": rules.pbi_monthly}
    return None  # Sekolah Rakyat: a place, no amount


def stored_decision(
    program: Program,
    rule_set: RuleSet,
    *,
    eligible: bool,
    recipient: bool | None,
    pkh_yearly: int = 0,
    level: str | None = None,
    priority: int | None = None,
    subject: str = "",
) -> Decision:
    """A decision rebuilt from what app.services.materialize stores of the engine's: the outcome,
    the snapshot's recipient flag, PKH's yearly amount, Sekolah Rakyat's level and priority.
    The benefit follows the engine's own formula; criteria and components are not stored, so
    the decision renders as a plain answer only (`to_dict(False)`)."""
    rules = _compiled(rule_set)
    sr = program is Program.SEKOLAH_RAKYAT
    return Decision(
        program,
        program.unit,
        eligible,
        None if sr else recipient,
        _benefit(program, rules, eligible, pkh_yearly),
        (),
        level=level if sr else None,
        priority=priority if sr else None,
        subject=subject,
    )
