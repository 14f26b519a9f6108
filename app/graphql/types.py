"""GraphQL types: views over the dicts the services shape for REST, so both faces agree."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from enum import Enum
from typing import Annotated, Any, TypeVar, cast

import strawberry
from strawberry.scalars import JSON

from app.errors import Forbidden
from app.graphql.context import Entry, GraphContext
from app.identifiers import as_str
from app.schemas.meta import ProgramInfo, RuleSetInfo
from app.schemas.snapshots import Snapshot as SnapshotDto
from app.services.disclosure import (
    ANY_COMPONENT_GROUPS,
    OTHER_MEMBER,
    PRIORITY_GROUPS,
    SELECTION_GROUPS,
)

# Field metadata read by app.graphql.permissions before execution: the field groups a field
# needs, all of them (docs/disclosure.md; app.services.disclosure for the values derived from
# several), and whether a field reads personal data (key and purpose required).
GROUP = "tepat.field_group"
PERSONAL = "tepat.personal"

Info = strawberry.Info[GraphContext, None]

R = TypeVar("R", bound=Callable[..., Any])


def _metadata(
    description: str, group: str | Iterable[str] | None, personal: bool
) -> tuple[str, dict[str, Any]]:
    metadata: dict[str, Any] = {}
    if group is not None:
        groups = (group,) if isinstance(group, str) else tuple(sorted(group))
        metadata[GROUP] = groups
        plural = "s" if len(groups) > 1 else ""
        description = f"{description} (field group{plural} {', '.join(groups)})"
    if personal:
        metadata[PERSONAL] = True
    return description, metadata


def resolved(
    description: str, *, group: str | Iterable[str] | None = None, personal: bool = False
) -> Callable[[R], R]:
    """`strawberry.field` for a resolver, typed (its decorator form is untyped), with the
    metadata the permission check reads: the field group(s) it needs, all of them."""
    description, metadata = _metadata(description, group, personal)

    def wrap(resolver: R) -> R:
        return cast(R, strawberry.field(resolver, description=description, metadata=metadata))

    return wrap


@strawberry.enum(description="The four programs (docs/rules.md)")
class ProgramId(Enum):
    PKH = "PKH"
    BPNT = "BPNT"
    PBI_JK = "PBI_JK"
    SEKOLAH_RAKYAT = "SEKOLAH_RAKYAT"


def _names(programs: list[ProgramId] | None) -> list[str] | None:
    return None if programs is None else [p.value for p in programs]


@strawberry.type(description="A loaded DTSEN release")
class Snapshot:
    id: str = strawberry.field(description="The DTSEN release id, e.g. 2026-01-23")
    label: str
    cutoff_date: dt.date = strawberry.field(description="Evaluation date of every decision")
    status: str = strawberry.field(description="published or retired")
    family_count: int
    people_count: int
    checksum: str | None
    created_at: dt.datetime
    published_at: dt.datetime | None
    retired_at: dt.datetime | None

    @classmethod
    def of(cls, s: SnapshotDto) -> Snapshot:
        return cls(
            id=s.id,
            label=s.label,
            cutoff_date=s.cutoff_date,
            status=s.status,
            family_count=s.family_count,
            people_count=s.people_count,
            checksum=s.checksum,
            created_at=s.created_at,
            published_at=s.published_at,
            retired_at=s.retired_at,
        )


@strawberry.type(description="A program, its unit and its criteria in words")
class Program:
    id: ProgramId
    name: str
    unit: str = strawberry.field(description="family or person")
    benefit: str
    criteria: list[str]

    @classmethod
    def of(cls, p: ProgramInfo) -> Program:
        return cls(
            id=ProgramId(p.id), name=p.name, unit=p.unit, benefit=p.benefit, criteria=p.criteria
        )


@strawberry.type(description="A rule set: the numbers the programs' criteria use")
class RuleSet:
    id: str
    effective_from: dt.date
    title: str
    source: str
    checksum: str = strawberry.field(description="sha256 of the canonical parameters")
    parameters: JSON = strawberry.field(description="pkh, bpnt, pbi, sekolah_rakyat")

    @classmethod
    def of(cls, r: RuleSetInfo) -> RuleSet:
        return cls(
            id=r.id,
            effective_from=r.effective_from,
            title=r.title,
            source=r.source,
            checksum=r.checksum,
            parameters=cast(JSON, r.parameters),
        )


@strawberry.type(description="A criterion of a decision: what was observed, what is required")
class Criterion:
    id: str = strawberry.field(description="decile_in_range, not_excluded, age_in_range, ...")
    required: JSON
    passed: bool
    shaped: strawberry.Private[dict[str, Any]]

    @resolved(
        "The observed value. Refused (code forbidden) unless the client holds every field "
        "group it comes from: decile_in_range decile; not_excluded attributes; age_in_range "
        "identity; school_level attributes and identity; has_component membership, health, "
        "identity and attributes."
    )
    def observed(self) -> JSON | None:
        if "observed" not in self.shaped:
            raise Forbidden(f"the observed value of {self.id} is not granted to this client")
        value: JSON = self.shaped["observed"]
        return value


@strawberry.type(
    description="A PKH component a family member brings. With explain, every candidate the "
    "client may see (docs/disclosure.md): a component is listed only when the client holds the "
    "groups of its kind and, for another member than the person asked about, membership."
)
class Component:
    shaped: strawberry.Private[dict[str, Any]]

    @resolved("The member's NIK", group=OTHER_MEMBER)
    def nik(self, info: Info) -> str:
        nik: str = self.shaped["nik"]
        info.context.disclose(nik)  # named in the answer: named in the audit record
        return nik

    @resolved(
        "HAMIL, USIA_DINI, DISABILITAS_BERAT, LANSIA, SD, SMP or SMA", group=ANY_COMPONENT_GROUPS
    )
    def component(self) -> str:
        value: str = self.shaped["component"]
        return value

    @resolved("The component's yearly amount")
    def yearly_rupiah(self) -> int:
        value: int = self.shaped["yearly_rupiah"]
        return value

    @resolved("Whether the candidate was taken", group=SELECTION_GROUPS)
    def taken(self) -> bool:
        return bool(_selection(self.shaped, "taken"))

    @resolved(
        "Why a candidate was left out: cap, member_limit, member_has_component",
        group=SELECTION_GROUPS,
    )
    def reason(self) -> str | None:
        value: str | None = _selection(self.shaped, "reason")
        return value


def _selection(shaped: dict[str, Any], name: str) -> Any:
    if name not in shaped:  # refused before execution; never reached without the groups
        raise Forbidden(f"{name} of a component is not granted to this client")
    return shaped[name]


@strawberry.type(description="What an eligible unit receives")
class Benefit:
    monthly_rupiah: int | None = None
    yearly_rupiah: int | None = None
    per_tranche_rupiah: int | None = None


@strawberry.type(description="One program's decision for a person or a family")
class Decision:
    program: ProgramId
    unit: str = strawberry.field(description="family or person")
    eligible: bool
    recipient: bool | None = strawberry.field(
        description="The snapshot's recipient flag, where it has one"
    )
    benefit: Benefit | None
    level: str | None = strawberry.field(description="Sekolah Rakyat only: SD, SMP or SMA")
    priority: int | None = strawberry.field(
        description="Sekolah Rakyat only: 1 first; the family's decile (field group decile)",
        metadata={GROUP: tuple(sorted(PRIORITY_GROUPS))},
    )
    components: list[Component] | None = strawberry.field(
        description="PKH only: the taken components; with explain, every candidate"
    )
    criteria: list[Criterion] | None = strawberry.field(description="With explain only")

    @classmethod
    def of(cls, d: dict[str, Any]) -> Decision:
        benefit = d["benefit"]
        components = d.get("components")
        criteria = d.get("criteria")
        return cls(
            program=ProgramId(d["program"]),
            unit=d["unit"],
            eligible=d["eligible"],
            recipient=d.get("recipient"),
            benefit=None if benefit is None else Benefit(**benefit),
            level=d.get("level"),
            priority=d.get("priority"),
            components=None if components is None else [Component(shaped=c) for c in components],
            criteria=None
            if criteria is None
            else [
                Criterion(id=c["id"], required=c["required"], passed=c["passed"], shaped=c)
                for c in criteria
            ],
        )


@strawberry.type(description="Name, sex and birth date (field group identity)")
class Identity:
    name: str
    sex: int = strawberry.field(description="1 male, 2 female")
    birth_date: dt.date


@strawberry.type(description="Socio-economic variables of a person (field group attributes)")
class PersonAttributes:
    marital_status: int | None
    school_status: int | None
    school_level: str | None
    working: bool | None


@strawberry.type(description="Health variables of a person (field group health)")
class Health:
    disability: int | None
    chronic_illness: bool | None
    pregnant: bool | None


@strawberry.type(description="Housing and exclusion variables of a family (field group attributes)")
class FamilyAttributes:
    asn_tni_polri: bool
    home_ownership: int | None
    floor_area_m2: int | None
    drinking_water: int | None
    toilet: int | None
    lighting: int | None
    power_va: int | None


ProgramsArg = Annotated[
    list[ProgramId] | None,
    strawberry.argument(
        description="Only these programs (each must be granted). Default: all granted."
    ),
]
RuleSetArg = Annotated[
    str | None,
    strawberry.argument(
        description="Pin a rule set. Default: the one in force on the snapshot's cut-off "
        "date. A request uses one rule set."
    ),
]
ExplainArg = Annotated[
    bool,
    strawberry.argument(
        description="Include every criterion and, for PKH, every candidate component the "
        "client's field groups cover: a component needs the groups of its kind and, naming "
        "another member than the person asked about, membership (a family's: always)."
    ),
]


@strawberry.type(description="A person of the snapshot; fields need the client's field groups")
class Person:
    nik: str
    found: bool = strawberry.field(description="false: the NIK is not in the snapshot")
    entry: strawberry.Private[Entry | None]
    shaped: strawberry.Private[dict[str, Any]]

    @classmethod
    def of(cls, info: Info, nik: str, entry: Entry | None) -> Person:
        return cls(
            nik=nik,
            found=entry is not None,
            entry=entry,
            shaped=info.context.person_fields(nik, entry),
        )

    @resolved("The family's welfare decile, 1 poorest", group="decile")
    def decile(self) -> int | None:
        value: int | None = self.shaped.get("decile")
        return value

    @resolved("Relationship to the head of the family", group="membership")
    def relationship(self) -> int | None:
        family = self.shaped.get("family")
        return None if family is None else int(family["relationship"])

    @resolved("The person's family (Kartu Keluarga)", group="membership")
    def family(self, info: Info) -> Family | None:
        if self.entry is None:
            return None
        return Family.of(info, as_str(self.entry[0].no_kk), self.entry)

    @resolved("Name, sex and birth date", group="identity")
    def identity(self) -> Identity | None:
        i = self.shaped.get("identity")
        if i is None:
            return None
        birth = dt.date.fromisoformat(i["birth_date"])
        return Identity(name=i["name"], sex=i["sex"], birth_date=birth)

    @resolved("Socio-economic variables", group="attributes")
    def attributes(self) -> PersonAttributes | None:
        a = self.shaped.get("attributes")
        return None if a is None else PersonAttributes(**a)

    @resolved("Health variables", group="health")
    def health(self) -> Health | None:
        h = self.shaped.get("health")
        return None if h is None else Health(**h)

    @resolved("The family's decisions (PKH, BPNT) then the person's own", group="decision")
    async def eligibility(
        self,
        info: Info,
        programs: ProgramsArg = None,
        rule_set: RuleSetArg = None,
        explain: ExplainArg = False,
    ) -> list[Decision] | None:
        if self.entry is None:
            return None
        shaped = await info.context.person_decisions(
            self.nik, self.entry, _names(programs), rule_set, explain
        )
        return [Decision.of(d) for d in shaped]


@strawberry.type(description="A family (Kartu Keluarga) of the snapshot")
class Family:
    no_kk: str
    found: bool = strawberry.field(description="false: the No. KK is not in the snapshot")
    entry: strawberry.Private[Entry | None]
    shaped: strawberry.Private[dict[str, Any]]

    @classmethod
    def of(cls, info: Info, no_kk: str, entry: Entry | None) -> Family:
        shaped = {} if entry is None else info.context.family_fields(entry)
        return cls(no_kk=no_kk, found=entry is not None, entry=entry, shaped=shaped)

    @resolved("The family's welfare decile, 1 poorest", group="decile")
    def decile(self) -> int | None:
        value: int | None = self.shaped.get("decile")
        return value

    @resolved("Region code (kode wilayah, 10 digits)", group="membership")
    def kode_wilayah(self) -> str | None:
        value: str | None = self.shaped.get("kode_wilayah")
        return value

    @resolved("Housing and exclusion variables", group="attributes")
    def attributes(self) -> FamilyAttributes | None:
        a = self.shaped.get("attributes")
        return None if a is None else FamilyAttributes(**a)

    @resolved("The members, head first", group="membership")
    def members(self, info: Info) -> list[Person] | None:
        if self.entry is None:
            return None
        return [
            Person(nik=nik, found=True, entry=self.entry, shaped=shaped)
            for nik, shaped in info.context.members(self.entry)
        ]

    @resolved("The family's decisions (PKH, BPNT)", group="decision")
    async def eligibility(
        self,
        info: Info,
        programs: ProgramsArg = None,
        rule_set: RuleSetArg = None,
        explain: ExplainArg = False,
    ) -> list[Decision] | None:
        if self.entry is None:
            return None
        shaped = await info.context.family_decisions(
            self.entry, _names(programs), rule_set, explain
        )
        return [Decision.of(d) for d in shaped]
