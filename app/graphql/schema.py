"""The GraphQL schema: the Query root and how the schema is built for an environment."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import strawberry
from graphql import GraphQLError
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

from app.config import MAX_BATCH
from app.graphql.extensions import extensions
from app.graphql.types import (
    DATETIME,
    Family,
    Info,
    Person,
    Program,
    RuleSet,
    Snapshot,
    resolved,
)
from app.schemas.meta import RuleSetInfo
from app.services import programs as programs_svc

SnapshotArg = Annotated[
    str | None,
    strawberry.argument(
        description="Pin a snapshot (DTSEN release id). Default: the current one. A request "
        "reads one snapshot."
    ),
]
NikArg = Annotated[
    str, strawberry.argument(description="The NIK (16 digits); send it in a variable")
]
NiksArg = Annotated[
    list[str],
    strawberry.argument(description=f"1 to {MAX_BATCH:,} NIKs; send them in a variable"),
]
NoKkArg = Annotated[
    str, strawberry.argument(description="The No. KK (16 digits); send it in a variable")
]
NoKksArg = Annotated[
    list[str],
    strawberry.argument(description=f"1 to {MAX_BATCH:,} No. KKs; send them in a variable"),
]
SnapshotIdArg = Annotated[str, strawberry.argument(description="The DTSEN release id")]


@strawberry.type(
    description="Tepat: decile, family and program decisions over DTSEN snapshots. Personal "
    "fields need `Authorization: Bearer <key>` and `X-Purpose`; identifiers go in variables."
)
class Query:
    @resolved("One loaded DTSEN release")
    async def snapshot(self, info: Info, id: SnapshotIdArg) -> Snapshot:
        return Snapshot.of(await info.context.snapshot(id))

    @resolved("Loaded DTSEN releases, newest cut-off first")
    async def snapshots(self, info: Info) -> list[Snapshot]:
        return [Snapshot.of(s) for s in await info.context.snapshots()]

    @resolved("The four programs, their unit and criteria in words")
    def programs(self) -> list[Program]:
        return [Program.of(p) for p in programs_svc.PROGRAMS]

    @resolved("Loaded rule sets: effective date, parameters, checksum")
    async def rule_sets(self, info: Info) -> list[RuleSet]:
        return [RuleSet.of(RuleSetInfo.of(r)) for r in await info.context.rule_sets()]

    @resolved("A person by NIK; `found: false` when the NIK is not in the snapshot", personal=True)
    async def person(self, info: Info, nik: NikArg, snapshot: SnapshotArg = None) -> Person:
        return Person.of(info, nik, await info.context.person(nik, snapshot))

    @resolved(f"1 to {MAX_BATCH:,} people by NIK, one per NIK in the order asked", personal=True)
    async def people(self, info: Info, niks: NiksArg, snapshot: SnapshotArg = None) -> list[Person]:
        entries = await info.context.people(niks, snapshot)
        return [Person.of(info, nik, e) for nik, e in zip(niks, entries, strict=True)]

    @resolved("A family by No. KK with its members", personal=True)
    async def family(self, info: Info, no_kk: NoKkArg, snapshot: SnapshotArg = None) -> Family:
        return Family.of(info, no_kk, await info.context.family(no_kk, snapshot))

    @resolved(
        f"1 to {MAX_BATCH:,} families by No. KK with their members, one per No. KK in the order "
        "asked (as REST's families lookup)",
        personal=True,
    )
    async def families(
        self, info: Info, no_kks: NoKksArg, snapshot: SnapshotArg = None
    ) -> list[Family]:
        entries = await info.context.families(no_kks, snapshot)
        return [Family.of(info, n, e) for n, e in zip(no_kks, entries, strict=True)]


class TepatSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """Quiet: the router logs unexpected errors once; client errors are not server events."""


def build_schema(production: bool) -> strawberry.Schema:
    return TepatSchema(
        query=Query,
        extensions=extensions(production),
        config=StrawberryConfig(
            disable_field_suggestions=production, scalar_map={dt.datetime: DATETIME}
        ),
    )


def sdl() -> str:
    """The schema as committed in schema.graphql (the same in every environment)."""
    return build_schema(production=False).as_str() + "\n"
