"""Lookup requests and answers: the public shapes, used for validation and the OpenAPI docs."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from app.config import MAX_BATCH
from app.identifiers import (
    NIK_PATTERN,
    NO_KK_PATTERN,
    RULE_SET_ID_PATTERN,
    SNAPSHOT_ID_PATTERN,
    IdentifierError,
    check_no_kk,
    echo,
    is_nik,
    parse_nik,
)
from app.schemas.codes import (
    Disability,
    DrinkingWater,
    HomeOwnership,
    Lighting,
    MaritalStatus,
    Relationship,
    SchoolStatus,
    Sex,
    Toilet,
)

# What `explain` adds and what it leaves out (app.services.disclosure; docs/disclosure.md).
EXPLAIN = (
    "Include every criterion (observed, required, passed) and, for PKH, every candidate "
    "component. A value appears only if the client holds the field group of every field it was "
    "computed from: a component needs the groups of its kind (HAMIL, DISABILITAS_BERAT: health; "
    "USIA_DINI, LANSIA: identity; SD, SMP, SMA: attributes and identity) and, when it names "
    "another member than the person asked about, membership; otherwise it is left out. A "
    "component's taken and reason need membership, health, identity and attributes. A "
    "criterion's observed value needs the groups of the field it observes (decile_in_range: "
    "decile; not_excluded: attributes; age_in_range: identity; school_level: attributes and "
    "identity; has_component: membership, health, identity and attributes); required and "
    "passed stay. Sekolah Rakyat priority (the decile) needs decile, with or without explain."
)
ProgramName = Literal["PKH", "BPNT", "PBI_JK", "SEKOLAH_RAKYAT"]
_ONE_PROGRAM = "(PKH|BPNT|PBI_JK|SEKOLAH_RAKYAT)"
_PROGRAMS = re.compile(f" *{_ONE_PROGRAM} *(, *{_ONE_PROGRAM} *)*")


def _programs(value: str) -> str:
    if _PROGRAMS.fullmatch(value) is None:
        raise PydanticCustomError(
            "invalid_programs",
            "unknown program in '{value}'; one or more of PKH, BPNT, PBI_JK, SEKOLAH_RAKYAT, "
            "separated by commas",
            {"value": echo(value)},
        )
    return value


# A query parameter of the streams and jobs: one program, or several separated by commas.
ProgramsParam = Annotated[
    str,
    AfterValidator(_programs),
    WithJsonSchema({"type": "string", "pattern": f"^{_PROGRAMS.pattern}$"}),
]


def _nik(value: str) -> str:
    if is_nik(value):  # the fast check; parse_nik names the rule a bad one breaks
        return value
    try:
        parse_nik(value)
    except IdentifierError as e:
        raise PydanticCustomError(
            "invalid_nik",
            "{message} ({rule})",
            {"message": str(e), "rule": e.rule, "masked": echo(value, identifier=True)},
        ) from None
    return value


def _no_kk(value: str) -> str:
    try:
        check_no_kk(value)
    except IdentifierError as e:
        raise PydanticCustomError(
            "invalid_no_kk", "{message} ({rule})", {"message": str(e), "rule": e.rule}
        ) from None
    return value


Nik = Annotated[
    str,
    AfterValidator(_nik),
    Field(
        description="16 digits: the district (6, not checked against the list of districts: a "
        "NIK of an unknown district is simply not found), the birth date DDMMYY (day + 40 for "
        "women; a real date, 29 February only in a year divisible by 4 since a NIK has no "
        "century), a serial 0001-9999. The pattern says all of it; a refusal names the rule "
        "broken: nik_format, nik_date, nik_serial.",
        examples=["3201014501900001"],
        json_schema_extra={"pattern": NIK_PATTERN},
    ),
]
NoKk = Annotated[
    str,
    AfterValidator(_no_kk),
    Field(
        description="No. KK: 16 digits (any; a number that names no family is not found)",
        examples=["3201010101200001"],
        json_schema_extra={"pattern": NO_KK_PATTERN},
    ),
]

SnapshotId = Annotated[
    str | None,
    Field(
        description="Pin a snapshot (DTSEN release id). Default: the current one.",
        examples=["2026-01-23"],
        pattern=SNAPSHOT_ID_PATTERN,
    ),
]
RuleSetId = Annotated[
    str | None,
    Field(
        description="Pin a rule set. Default: the one in force on the snapshot's cut-off date.",
        examples=["kepmensos-79-2025"],
        pattern=RULE_SET_ID_PATTERN,
    ),
]


class _Request(BaseModel):
    # Strict: `"explain": 0` or a number for a NIK is refused (422 naming the field), never
    # coerced; the schema says what is accepted.
    model_config = ConfigDict(extra="forbid", strict=True)

    snapshot: SnapshotId = None
    rule_set: RuleSetId = None
    programs: list[ProgramName] | None = Field(
        None,
        description="Only these programs' decisions (each must be granted). Default: all granted.",
        min_length=1,
    )
    explain: bool = Field(False, description=EXPLAIN)


class PeopleLookup(_Request):
    niks: list[Nik] = Field(
        min_length=1,
        max_length=MAX_BATCH,
        description="1 to 1,000 NIKs; answers come in this order",
    )


class FamiliesLookup(_Request):
    no_kks: list[NoKk] = Field(min_length=1, max_length=MAX_BATCH, description="1 to 1,000 No. KKs")


# --- answers (documentation of what the service renders) -------------------------------------


class Criterion(BaseModel):
    id: str = Field(examples=["decile_in_range"])
    observed: Any = Field(
        None,
        description="Left out unless the client holds the groups of the fields it comes from: "
        "decile_in_range decile; not_excluded attributes; age_in_range identity; school_level "
        "attributes and identity; has_component membership, health, identity and attributes",
    )
    required: Any
    passed: bool


class Component(BaseModel):
    """A candidate, listed only when the client may see it (docs/disclosure.md)."""

    nik: str = Field(description="The member; another member than the one asked needs membership")
    component: Literal["HAMIL", "USIA_DINI", "DISABILITAS_BERAT", "LANSIA", "SMA", "SMP", "SD"]
    yearly_rupiah: int
    taken: bool | None = Field(
        None,
        description="Left out unless the client holds membership, health, identity and "
        "attributes (the selection reads every member)",
    )
    reason: str | None = Field(
        None,
        description="Why a candidate was not taken: cap, member_limit, "
        "member_has_component; null when taken; left out as taken is",
    )


class Benefit(BaseModel):
    """What an eligible unit receives (no amount for Sekolah Rakyat: a place)."""

    yearly_rupiah: int | SkipJsonSchema[None] = Field(None, description="PKH: a year's total")
    per_tranche_rupiah: int | SkipJsonSchema[None] = Field(
        None, description="PKH: each of the rule set's tranches"
    )
    monthly_rupiah: int | SkipJsonSchema[None] = Field(None, description="BPNT, PBI JK: a month")


class Decision(BaseModel):
    program: ProgramName
    unit: Literal["family", "person"]
    eligible: bool
    recipient: bool | None = Field(
        None, description="The snapshot's recipient flag, where it has one"
    )
    benefit: Benefit | None = Field(
        description="Null when not eligible, and for Sekolah Rakyat (a place, no amount)"
    )
    level: Literal["SD", "SMP", "SMA"] | None = Field(None, description="Sekolah Rakyat only")
    priority: int | None = Field(
        None, description="Sekolah Rakyat only: 1 first (the decile: left out without decile)"
    )
    components: list[Component] | None = Field(
        None, description="PKH with explain only: the candidates the client may see"
    )
    criteria: list[Criterion] | None = Field(None, description="With explain only")


class Identity(BaseModel):
    name: str
    sex: Sex
    birth_date: dt.date


class PersonAttributes(BaseModel):
    marital_status: MaritalStatus | None
    school_status: SchoolStatus | None
    school_level: str | None
    working: bool | None


class Health(BaseModel):
    disability: Disability | None
    chronic_illness: bool | None
    pregnant: bool | None


class Membership(BaseModel):
    no_kk: str
    relationship: Relationship
    kode_wilayah: str


class PersonResult(BaseModel):
    """One asked NIK. Fields outside the client's field groups are left out, not nulled."""

    nik: str
    found: bool
    decile: int | None = None
    family: Membership | None = None
    identity: Identity | None = None
    attributes: PersonAttributes | None = None
    health: Health | None = None
    decisions: list[Decision] | None = None


class FamilyAttributes(BaseModel):
    asn_tni_polri: bool
    home_ownership: HomeOwnership | None
    floor_area_m2: int | None
    drinking_water: DrinkingWater | None
    toilet: Toilet | None
    lighting: Lighting | None
    power_va: int | None


class Member(BaseModel):
    nik: str
    relationship: Relationship
    identity: Identity | None = None
    attributes: PersonAttributes | None = None
    health: Health | None = None
    decisions: list[Decision] | None = None


class FamilyResult(BaseModel):
    no_kk: str
    found: bool
    decile: int | None = None
    kode_wilayah: str | None = None
    attributes: FamilyAttributes | None = None
    members: list[Member] | None = None
    decisions: list[Decision] | None = None


class Pin(BaseModel):
    id: str
    checksum: str


class Meta(BaseModel):
    """What produced this answer: enough to audit it and reproduce it a year later."""

    snapshot: Pin
    rule_set: Pin
    evaluation_date: dt.date
    request_id: str
    audit_id: str


class PeopleAnswer(BaseModel):
    meta: Meta
    results: list[PersonResult]


class FamiliesAnswer(BaseModel):
    meta: Meta
    results: list[FamilyResult]
