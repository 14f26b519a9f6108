"""GraphQL types: views over the dicts the services shape for REST, so both faces agree."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from enum import Enum
from typing import Annotated, Any, TypeVar, cast

import strawberry
from strawberry.scalars import JSON

from app import codes
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
    description: str,
    *,
    group: str | Iterable[str] | None = None,
    personal: bool = False,
    deprecation_reason: str | None = None,
) -> Callable[[R], R]:
    """`strawberry.field` for a resolver, typed (its decorator form is untyped), with the
    metadata the permission check reads: the field group(s) it needs, all of them."""
    description, metadata = _metadata(description, group, personal)

    def wrap(resolver: R) -> R:
        return cast(
            R,
            strawberry.field(
                resolver,
                description=description,
                metadata=metadata,
                deprecation_reason=deprecation_reason,
            ),
        )

    return wrap


def _field(description: str) -> Any:
    """A plain field with its description (every field of the schema has one)."""
    return strawberry.field(description=description)


def _coded(what: str, table: codes.CodeTable) -> str:
    """A coded integer's description: what it is, then every code with its meaning in English
    and Indonesian, from the one code table REST's enums and docs/codes.md are made of. The
    values stay REST's integers, so both faces answer the same JSON."""
    return f"{what}. {table.describe()}"


# Enum values are REST's own (app.schemas): the same strings in both faces' JSON.


@strawberry.enum(description="The four programs (docs/rules.md)")
class ProgramId(Enum):
    PKH = strawberry.enum_value("PKH", description="Program Keluarga Harapan (family)")
    BPNT = strawberry.enum_value("BPNT", description="Bantuan Pangan Non Tunai (family)")
    PBI_JK = strawberry.enum_value(
        "PBI_JK", description="Penerima Bantuan Iuran Jaminan Kesehatan (person)"
    )
    SEKOLAH_RAKYAT = strawberry.enum_value(
        "SEKOLAH_RAKYAT", description="Sekolah Rakyat boarding school place (person)"
    )


@strawberry.enum(description="Whom a program's decision is about")
class Unit(Enum):
    family = strawberry.enum_value("family", description="The family (Kartu Keluarga)")
    person = strawberry.enum_value("person", description="One person")


@strawberry.enum(description="A school level (Sekolah Rakyat places)")
class SchoolLevel(Enum):
    SD = strawberry.enum_value("SD", description="Sekolah Dasar, primary school")
    SMP = strawberry.enum_value("SMP", description="Sekolah Menengah Pertama, lower secondary")
    SMA = strawberry.enum_value("SMA", description="Sekolah Menengah Atas, upper secondary")


@strawberry.enum(description="Where a snapshot is in its life")
class SnapshotStatus(Enum):
    loading = strawberry.enum_value("loading", description="Being imported; not served")
    published = strawberry.enum_value("published", description="Served")
    retired = strawberry.enum_value("retired", description="No longer served")


@strawberry.enum(description="A PKH component kind")
class ComponentKind(Enum):
    HAMIL = strawberry.enum_value("HAMIL", description="A pregnant member")
    USIA_DINI = strawberry.enum_value("USIA_DINI", description="A child under six")
    DISABILITAS_BERAT = strawberry.enum_value(
        "DISABILITAS_BERAT", description="A member with a severe disability"
    )
    LANSIA = strawberry.enum_value("LANSIA", description="An elderly member")
    SD = strawberry.enum_value("SD", description="A child in primary school")
    SMP = strawberry.enum_value("SMP", description="A child in lower secondary school")
    SMA = strawberry.enum_value("SMA", description="A child in upper secondary school")


def _utc(value: dt.datetime) -> str:
    """As REST writes a timestamp: ISO 8601 in UTC with a `Z`."""
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC)
    return value.replace(tzinfo=None).isoformat() + "Z"


DATETIME = strawberry.scalar(
    name="DateTime",
    description="A UTC instant, ISO 8601 with a `Z` (as REST), e.g. 2026-01-23T08:00:00Z",
    serialize=_utc,
    parse_value=dt.datetime.fromisoformat,
)


def _names(programs: list[ProgramId] | None) -> list[str] | None:
    return None if programs is None else [p.name for p in programs]  # names are the values


@strawberry.type(description="A loaded DTSEN release")
class Snapshot:
    id: str = _field("The DTSEN release id (cut-off date, -rN for a reissue), e.g. 2026-01-23")
    label: str = _field("A label in words, e.g. DTSEN per 23 Januari 2026")
    cutoff_date: dt.date = _field("Evaluation date of every decision")
    status: SnapshotStatus = _field("Where the snapshot is in its life")
    family_count: int = _field("Families (Kartu Keluarga) in the snapshot")
    people_count: int = _field("People in the snapshot")
    checksum: str | None = _field("sha256 of the snapshot's content (order-independent)")
    created_at: dt.datetime = _field("When the import began")
    published_at: dt.datetime | None = _field("When it was published; null while loading")
    retired_at: dt.datetime | None = _field("When it was retired; null unless retired")

    @classmethod
    def of(cls, s: SnapshotDto) -> Snapshot:
        return cls(
            id=s.id,
            label=s.label,
            cutoff_date=s.cutoff_date,
            status=SnapshotStatus(s.status),
            family_count=s.family_count,
            people_count=s.people_count,
            checksum=s.checksum,
            created_at=s.created_at,
            published_at=s.published_at,
            retired_at=s.retired_at,
        )


@strawberry.type(description="A program, its unit and its criteria in words")
class Program:
    id: ProgramId = _field("The program's id, as REST's")
    name: str = _field("The program's name")
    unit: Unit = _field("Whom its decision is about")
    benefit: str = _field("What an eligible unit receives, in words")
    criteria: list[str] = _field("Its criteria in words")

    @classmethod
    def of(cls, p: ProgramInfo) -> Program:
        return cls(
            id=ProgramId(p.id),
            name=p.name,
            unit=Unit(p.unit),
            benefit=p.benefit,
            criteria=p.criteria,
        )


@strawberry.type(description="A rule set: the numbers the programs' criteria use")
class RuleSet:
    id: str = _field("The rule set's id")
    effective_from: dt.date = _field("In force for snapshots cut off on or after this date")
    title: str = _field("Its title (the regulation it follows)")
    source: str = _field("Where its numbers come from")
    checksum: str = _field("sha256 of the canonical parameters")
    parameters: JSON = _field("pkh, bpnt, pbi, sekolah_rakyat")

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
    id: str = _field("decile_in_range, not_excluded, age_in_range, ...")
    required: JSON = _field("What the rule set requires")
    passed: bool = _field("Whether the criterion holds")
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

    @resolved("The component's kind", group=ANY_COMPONENT_GROUPS)
    def component(self) -> ComponentKind:
        return ComponentKind(self.shaped["component"])

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


@strawberry.type(
    description="What an eligible unit receives. An amount a program does not have is null "
    "here; REST leaves its key out (docs/graphql.md)"
)
class Benefit:
    monthly_rupiah: int | None = strawberry.field(
        default=None, description="BPNT, PBI JK: a month; null for the others"
    )
    yearly_rupiah: int | None = strawberry.field(
        default=None, description="PKH: a year's total; null for the others"
    )
    per_tranche_rupiah: int | None = strawberry.field(
        default=None, description="PKH: each of the rule set's tranches; null for the others"
    )


@strawberry.type(description="One program's decision for a person or a family")
class Decision:
    program: ProgramId = _field("The program decided")
    unit: Unit = _field("Whom the decision is about")
    eligible: bool = _field("Whether the unit is eligible")
    recipient: bool | None = strawberry.field(
        description="The snapshot's recipient flag, where it has one"
    )
    benefit: Benefit | None = _field(
        "Null when not eligible, and for Sekolah Rakyat (a place, no amount)"
    )
    level: SchoolLevel | None = _field("Sekolah Rakyat only: the school level")
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
            unit=Unit(d["unit"]),
            eligible=d["eligible"],
            recipient=d.get("recipient"),
            benefit=None if benefit is None else Benefit(**benefit),
            level=None if d.get("level") is None else SchoolLevel(d["level"]),
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
    name: str = _field("The name as registered")
    sex: int = _field(_coded("Sex", codes.SEX))
    birth_date: dt.date = _field("The birth date")


@strawberry.type(description="Socio-economic variables of a person (field group attributes)")
class PersonAttributes:
    marital_status: int | None = _field(_coded("Marital status", codes.MARITAL_STATUS))
    school_status: int | None = _field(_coded("School attendance", codes.SCHOOL_STATUS))
    school_level: str | None = _field("The school level attended (docs/codes.md)")
    working: bool | None = _field("Whether the person works")


@strawberry.type(description="Health variables of a person (field group health)")
class Health:
    disability: int | None = _field(_coded("Disability", codes.DISABILITY))
    chronic_illness: bool | None = _field("Whether the person has a chronic illness")
    pregnant: bool | None = _field("Whether the person is pregnant")


@strawberry.type(description="Housing and exclusion variables of a family (field group attributes)")
class FamilyAttributes:
    asn_tni_polri: bool = _field("A member is a civil servant, soldier or police officer")
    home_ownership: int | None = _field(_coded("Home ownership", codes.HOME_OWNERSHIP))
    floor_area_m2: int | None = _field("Floor area in square metres")
    drinking_water: int | None = _field(_coded("Drinking water source", codes.DRINKING_WATER))
    toilet: int | None = _field(_coded("Toilet facility", codes.TOILET))
    lighting: int | None = _field(_coded("Lighting source", codes.LIGHTING))
    power_va: int | None = _field("Installed electric power in VA")


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


NAMED_DECISIONS = "Named `decisions` as in REST; this name will be removed (docs/graphql.md)"


@strawberry.type(description="A person of the snapshot; fields need the client's field groups")
class Person:
    nik: str = _field("The NIK asked (16 digits)")
    found: bool = _field("false: the NIK is not in the snapshot")
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

    @resolved(
        _coded(
            "Relationship to the head of the family: as REST, a family's member carries it "
            "here and a person asked by NIK also under `family`",
            codes.RELATIONSHIP,
        ),
        group="membership",
    )
    def relationship(self) -> int | None:
        return _relationship(self.shaped)

    @resolved("The person's family (Kartu Keluarga)", group="membership")
    def family(self, info: Info) -> Family | None:
        if self.entry is None:
            return None
        family = Family.of(info, as_str(self.entry[0].no_kk), self.entry)
        family.related = _relationship(self.shaped)
        return family

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
    async def decisions(
        self,
        info: Info,
        programs: ProgramsArg = None,
        rule_set: RuleSetArg = None,
        explain: ExplainArg = False,
    ) -> list[Decision] | None:
        return await _person_decisions(self, info, programs, rule_set, explain)

    @resolved(
        "The same as `decisions`",
        group="decision",
        deprecation_reason=NAMED_DECISIONS,
    )
    async def eligibility(
        self,
        info: Info,
        programs: ProgramsArg = None,
        rule_set: RuleSetArg = None,
        explain: ExplainArg = False,
    ) -> list[Decision] | None:
        return await _person_decisions(self, info, programs, rule_set, explain)


async def _person_decisions(
    person: Person,
    info: Info,
    programs: list[ProgramId] | None,
    rule_set: str | None,
    explain: bool,
) -> list[Decision] | None:
    if person.entry is None:
        return None
    shaped = await info.context.person_decisions(
        person.nik, person.entry, _names(programs), rule_set, explain
    )
    return [Decision.of(d) for d in shaped]


def _relationship(shaped: dict[str, Any]) -> int | None:
    family = shaped.get("family")
    return None if family is None else int(family["relationship"])


@strawberry.type(description="A family (Kartu Keluarga) of the snapshot")
class Family:
    no_kk: str = _field("The No. KK (16 digits)")
    found: bool = _field("false: the No. KK is not in the snapshot")
    entry: strawberry.Private[Entry | None]
    shaped: strawberry.Private[dict[str, Any]]
    related: strawberry.Private[int | None] = None

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

    @resolved(
        _coded(
            "The person's relationship to the head, as REST's family.relationship; null on a "
            "family asked by No. KK",
            codes.RELATIONSHIP,
        ),
        group="membership",
    )
    def relationship(self) -> int | None:
        return self.related

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
    async def decisions(
        self,
        info: Info,
        programs: ProgramsArg = None,
        rule_set: RuleSetArg = None,
        explain: ExplainArg = False,
    ) -> list[Decision] | None:
        return await _family_decisions(self, info, programs, rule_set, explain)

    @resolved(
        "The same as `decisions`",
        group="decision",
        deprecation_reason=NAMED_DECISIONS,
    )
    async def eligibility(
        self,
        info: Info,
        programs: ProgramsArg = None,
        rule_set: RuleSetArg = None,
        explain: ExplainArg = False,
    ) -> list[Decision] | None:
        return await _family_decisions(self, info, programs, rule_set, explain)


async def _family_decisions(
    family: Family,
    info: Info,
    programs: list[ProgramId] | None,
    rule_set: str | None,
    explain: bool,
) -> list[Decision] | None:
    if family.entry is None:
        return None
    shaped = await info.context.family_decisions(family.entry, _names(programs), rule_set, explain)
    return [Decision.of(d) for d in shaped]
