"""Lookups of people and families: the request body carries the identifiers, never the URL."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.api.deps import CallerDep, State
from app.api.examples import FAMILIES_EXAMPLE, PEOPLE_EXAMPLE
from app.api.openapi import DATA_PROBLEMS, RECEIPT_HEADER, answered
from app.errors import ValidationFailed
from app.http import limits
from app.http.bodies import JsonRoute
from app.http.caller import charge
from app.http.state import AppState
from app.schemas.lookup import FamiliesAnswer, FamiliesLookup, PeopleAnswer, PeopleLookup
from app.services import lookup

router = APIRouter(tags=["lookup"], route_class=JsonRoute)


def _within_batch(state: AppState, count: int, field: str) -> None:
    """The configured limit (TEPAT_MAX_BATCH), when it is below the model's MAX_BATCH."""
    limit = state.settings.max_batch
    if count > limit:
        raise ValidationFailed(f"{field}: at most {limit} per request", field=field)


@router.post(
    "/people/lookup",
    summary="Decile, family and program decisions for 1 to 1,000 NIKs",
    description=(
        "One result per NIK, **in request order**; a NIK not in the snapshot gives "
        '`{"nik": ..., "found": false}` in its place. `meta` pins the snapshot and the rule '
        "set that produced the answer and names the audit record written for it. With "
        "`explain`, every criterion carries its observed and required value and PKH lists its "
        "candidate components, **only as far as the client's field groups cover the data they "
        "come from**: another member's NIK needs `membership`, a HAMIL or DISABILITAS_BERAT "
        "component `health`, and so on (see `explain` below)."
    ),
    response_model=PeopleAnswer,
    responses={
        **DATA_PROBLEMS,
        200: {
            "content": {"application/json": {"example": PEOPLE_EXAMPLE}},
            "headers": RECEIPT_HEADER,
        },
    },
)
async def lookup_people(
    body: PeopleLookup, state: State, caller: CallerDep, request: Request
) -> Response:
    _within_batch(state, len(body.niks), "niks")
    await charge(request.scope, caller.principal, len(body.niks))  # 429 before any SQL
    return answered(await lookup.people_lookup(state.reads, state.audit, caller, body))


@router.post(
    "/families/lookup",
    summary="Families (No. KK) with their members, relationships and decisions",
    description=(
        "One result per No. KK in request order: the family's decile and decisions (PKH, "
        "BPNT) and each member with their relationship to the head and their own decisions "
        "(PBI JK, Sekolah Rakyat). With `explain`, every PKH component names a member: "
        "components need `membership` as well as the groups of their kind."
    ),
    response_model=FamiliesAnswer,
    responses={
        **DATA_PROBLEMS,
        200: {
            "content": {"application/json": {"example": FAMILIES_EXAMPLE}},
            "headers": RECEIPT_HEADER,
        },
    },
)
async def lookup_families(
    body: FamiliesLookup, state: State, caller: CallerDep, request: Request
) -> Response:
    # One per family before the lookup (429 before any SQL); then a family costs the members
    # the answer discloses (docs/quotas.md): charged once known, the debt paid at the next lease.
    _within_batch(state, len(body.no_kks), "no_kks")
    await charge(request.scope, caller.principal, len(body.no_kks))

    def cost(members: int) -> None:
        limits.debit(request.scope, caller.principal, members - len(body.no_kks))

    return answered(await lookup.families_lookup(state.reads, state.audit, caller, body, cost))
