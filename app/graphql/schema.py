"""The GraphQL schema: the Query root and how the schema is built for an environment."""

from __future__ import annotations

from typing import Annotated

import strawberry
from graphql import GraphQLError
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

from app.graphql.extensions import extensions
from app.graphql.types import (
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


@strawberry.type(
    description="Tepat: decile, family and program decisions over DTSEN snapshots. Personal "
    "fields need `Authorization: Bearer <key>` and `X-Purpose`; identifiers go in variables."
)
class Query:
    @resolved("One loaded DTSEN release")
    async def snapshot(self, info: Info, id: str) -> Snapshot:
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
    async def person(self, info: Info, nik: str, snapshot: SnapshotArg = None) -> Person:
        return Person.of(info, nik, await info.context.person(nik, snapshot))

    @resolved("1 to 1,000 people by NIK, one per NIK in the order asked", personal=True)
    async def people(
        self, info: Info, niks: list[str], snapshot: SnapshotArg = None
    ) -> list[Person]:
        entries = await info.context.people(niks, snapshot)
        return [Person.of(info, nik, e) for nik, e in zip(niks, entries, strict=True)]

    @resolved("A family by No. KK with its members", personal=True)
    async def family(self, info: Info, no_kk: str, snapshot: SnapshotArg = None) -> Family:
        return Family.of(info, no_kk, await info.context.family(no_kk, snapshot))


class TepatSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """Quiet: the router logs unexpected errors once; client errors are not server events."""


def build_schema(production: bool) -> strawberry.Schema:
    return TepatSchema(
        query=Query,
        extensions=extensions(production),
        config=StrawberryConfig(disable_field_suggestions=production),
    )


def sdl() -> str:
    """The schema as committed in schema.graphql (the same in every environment)."""
    return build_schema(production=False).as_str() + "\n"
