"""Rule sets: the versioned, checksummed parameters of the four programs (docs/rules.md)."""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Iterable
from datetime import date
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from app.identifiers import RULE_SET_ID_PATTERN

# docs/rules.md's PKH table, in its order: that order is the second sort key of the selection, so a
# rule set must list the components exactly so (the order is logic, not a parameter).
COMPONENT_ORDER: Final = ("HAMIL", "USIA_DINI", "DISABILITAS_BERAT", "LANSIA", "SMA", "SMP", "SD")
SCHOOL_COMPONENTS: Final = frozenset({"SMA", "SMP", "SD"})
_AGE_RANGE_COMPONENTS: Final = SCHOOL_COMPONENTS | {"USIA_DINI"}
_MAX_AGE: Final = 130

ComponentId = Literal["HAMIL", "USIA_DINI", "DISABILITAS_BERAT", "LANSIA", "SMA", "SMP", "SD"]


class RuleSetError(ValueError):
    """A rule set that cannot be loaded; the message names the file (if any) and each bad field."""


def _ordered_pair(value: tuple[int, int]) -> tuple[int, int]:
    if value[0] > value[1]:
        raise ValueError(f"must be [lo, hi] with lo <= hi, got [{value[0]}, {value[1]}]")
    return value


def _none_as_null(value: object) -> object:
    # TOML has no null: an uncapped component says `cap = "none"`, so a forgotten cap is an error.
    return None if value == "none" else value


# Strict ints: a quoted "3000000" in a TOML file is a mistake, not a number.
Decile = Annotated[int, Strict(), Field(ge=1, le=10)]
Age = Annotated[int, Strict(), Field(ge=0, le=_MAX_AGE)]
Rupiah = Annotated[int, Strict(), Field(gt=0)]
Count = Annotated[int, Strict(), Field(ge=1)]
DecileRange = Annotated[tuple[Decile, Decile], AfterValidator(_ordered_pair)]
AgeRange = Annotated[tuple[Age, Age], AfterValidator(_ordered_pair)]
Cap = Annotated[Count | None, BeforeValidator(_none_as_null)]
Slug = Annotated[str, StringConstraints(pattern=RULE_SET_ID_PATTERN)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PkhComponent(_Frozen):
    """One PKH component: its amount, its per-family cap and the parameters of its condition."""

    id: ComponentId
    yearly_rupiah: Rupiah
    cap: Cap = Field(description='members per family; "none" in TOML (null in JSON) = no cap')
    ages: AgeRange | None = Field(default=None, description="USIA_DINI, SMA, SMP, SD: [lo, hi]")
    min_age: Age | None = Field(default=None, description="LANSIA: from this age on")

    @model_validator(mode="after")
    def _condition_parameters(self) -> PkhComponent:
        needs_ages = self.id in _AGE_RANGE_COMPONENTS
        needs_min_age = self.id == "LANSIA"
        if needs_ages and self.ages is None:
            raise ValueError(f"{self.id} needs `ages` = [lo, hi]")
        if not needs_ages and self.ages is not None:
            raise ValueError(f"{self.id} takes no `ages`")
        if needs_min_age and self.min_age is None:
            raise ValueError(f"{self.id} needs `min_age`")
        if not needs_min_age and self.min_age is not None:
            raise ValueError(f"{self.id} takes no `min_age`")
        return self


class PkhParams(_Frozen):
    deciles: DecileRange
    max_members: Count
    tranches_per_year: Count
    components: tuple[PkhComponent, ...]

    @field_validator("components")
    @classmethod
    def _all_seven_in_table_order(
        cls, components: tuple[PkhComponent, ...]
    ) -> tuple[PkhComponent, ...]:
        ids = tuple(c.id for c in components)
        if ids != COMPONENT_ORDER:
            raise ValueError(
                f"must list each of {', '.join(COMPONENT_ORDER)} exactly once and in that order "
                f"(docs/rules.md's table order breaks ties), got {', '.join(ids) or 'none'}"
            )
        return components

    @model_validator(mode="after")
    def _whole_tranches(self) -> PkhParams:
        # A tranche is yearly // tranches_per_year: only exact when every amount divides.
        for index, component in enumerate(self.components):
            if component.yearly_rupiah % self.tranches_per_year:
                raise ValueError(
                    f"components.{index}.yearly_rupiah ({component.id}, "
                    f"{component.yearly_rupiah}) is not divisible by tranches_per_year "
                    f"({self.tranches_per_year})"
                )
        return self


class MonthlyBenefitParams(_Frozen):
    """BPNT and PBI JK: a decile range and a monthly amount."""

    deciles: DecileRange
    monthly_rupiah: Rupiah


class SchoolLevels(_Frozen):
    SD: AgeRange
    SMP: AgeRange
    SMA: AgeRange


class SekolahRakyatParams(_Frozen):
    deciles: DecileRange
    ages: AgeRange
    levels: SchoolLevels = Field(description="the level of a child not attending, by age")

    @model_validator(mode="after")
    def _levels_tile_the_ages(self) -> SekolahRakyatParams:
        # Every age in `ages` must map to exactly one level, or a child would have none.
        levels = self.levels
        if levels.SD[0] != self.ages[0] or levels.SMA[1] != self.ages[1]:
            raise ValueError(
                f"levels must span ages [{self.ages[0]}, {self.ages[1]}]: levels.SD starts at "
                f"{levels.SD[0]}, levels.SMA ends at {levels.SMA[1]}"
            )
        if levels.SMP[0] != levels.SD[1] + 1 or levels.SMA[0] != levels.SMP[1] + 1:
            raise ValueError(
                "levels must be contiguous: SD, then SMP from the age after SD, then SMA "
                f"(got SD {list(levels.SD)}, SMP {list(levels.SMP)}, SMA {list(levels.SMA)})"
            )
        return self


class RuleSet(_Frozen):
    """One immutable rule set; `checksum` identifies its parameters, not its file's bytes."""

    id: Slug
    effective_from: date
    title: Annotated[str, StringConstraints(min_length=1)]
    source: Annotated[str, StringConstraints(min_length=1)] = Field(
        description="the legal basis, in words"
    )
    pkh: PkhParams
    bpnt: MonthlyBenefitParams
    pbi: MonthlyBenefitParams
    sekolah_rakyat: SekolahRakyatParams

    def canonical_json(self) -> bytes:
        """The content the checksum covers: sorted keys, no whitespace, checksum left out."""
        return orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)

    @cached_property
    def checksum(self) -> str:
        return "sha256:" + hashlib.sha256(self.canonical_json()).hexdigest()

    @classmethod
    def from_canonical(cls, data: bytes | dict[str, Any]) -> RuleSet:
        """Rebuild a rule set stored as `canonical_json()` (or its parsed dict)."""
        try:
            raw = orjson.loads(data) if isinstance(data, bytes) else data
        except orjson.JSONDecodeError as exc:
            raise RuleSetError(f"rule set JSON: {exc}") from exc
        return _validate(raw, "rule set JSON")


def _validate(raw: object, where: str) -> RuleSet:
    try:
        return RuleSet.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '(top)'}: {error['msg']}"
            for error in exc.errors()
        )
        raise RuleSetError(f"{where}: {problems}") from exc


def load_rule_set(path: Path) -> RuleSet:
    """Read and validate one TOML rule set; errors raise RuleSetError naming the file and field."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise RuleSetError(f"{path}: not valid TOML: {exc}") from exc
    return _validate(raw, str(path))


def shipped_rule_sets() -> list[Path]:
    """The rule set files bundled with the package, in name order."""
    return sorted((Path(__file__).parent / "rule_sets").glob("*.toml"))


def rule_set_in_force(rule_sets: Iterable[RuleSet], on: date) -> RuleSet | None:
    """The rule set with the latest `effective_from` on or before `on` (docs/rules.md), or None.

    Never "the newest one": an answer about an old release must stay the same next year. Two
    rule sets taking effect on the same latest day are ambiguous and refused.
    """
    in_force = [r for r in rule_sets if r.effective_from <= on]
    if not in_force:
        return None
    latest = max(r.effective_from for r in in_force)
    winners = list({r.checksum: r for r in in_force if r.effective_from == latest}.values())
    if len(winners) > 1:
        ids = ", ".join(sorted(r.id for r in winners))
        raise RuleSetError(f"rule sets {ids} all take effect on {latest}: name one")
    return winners[0]
