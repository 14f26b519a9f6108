"""Who is asking: the one caller check every face runs (REST routes, the fast paths, GraphQL,
bulk), and the one charge of the client's allowance.

`authenticate` checks, in this order, the API key (401), the purpose registered for the client
(403) and, when the face knows them before running, the field groups the request selects
(403): a bad key is refused before anything else is looked at. It notes the client id for the
access log (refused or not, once the key is known). `charge` then takes the identifiers about
to be looked up from the client's rate and daily quota (429) before any SQL.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.types import Scope

from app.auth.principal import FIELD_GROUPS, Principal
from app.errors import Forbidden
from app.http.limits import RATE_LIMITED, allowance_of
from app.http.request_ids import request_id_of
from app.http.state import state_of
from app.services.lookup import Caller


async def authenticate(
    scope: Scope,
    authorization: str | None,
    purpose: str | None,
    groups: Mapping[str, str] | None = None,
) -> Caller:
    """The caller of this request: key, then purpose, then field groups (`groups` maps each
    group the request selects to the fields that select it, named in the refusal)."""
    principal = await state_of(scope).authenticator.authenticate(authorization)
    state: dict[str, Any] = scope.setdefault("state", {})
    state["client_id"] = principal.client_id
    state[RATE_LIMITED] = principal  # the answer carries its RateLimit headers (app.http.limits)
    granted = principal.require_purpose(purpose)
    if groups:
        require_groups(principal, groups)
    return Caller(principal, granted, request_id_of(scope))


async def authenticate_key(scope: Scope, authorization: str | None) -> Principal:
    """The key alone (401), for calls about the client's own records (no personal data, so no
    purpose): the audit log's proofs."""
    principal = await state_of(scope).authenticator.authenticate(authorization)
    state: dict[str, Any] = scope.setdefault("state", {})
    state["client_id"] = principal.client_id
    return principal


def require_groups(principal: Principal, groups: Mapping[str, str]) -> None:
    """403 naming every selected field group the client was not granted, and its fields."""
    missing = [g for g in FIELD_GROUPS if g in groups and not principal.can_see(g)]
    if missing:
        fields = ", ".join(groups[g] for g in missing)
        raise Forbidden(
            f"field group(s) {', '.join(missing)} not granted to this client ({fields})",
            field_groups=missing,
        )


async def charge(scope: Scope, principal: Principal, n: int) -> None:
    """Charge `n` looked-up identifiers to the client before the lookup runs; 429 when over.

    After authentication (a bad key cannot drain a client's bucket). Usually no await at all:
    the process spends from the slice it leased (app.services.allowance).
    """
    allowance = allowance_of(scope["app"])
    if allowance is not None and not allowance.try_spend(principal, n):
        await allowance.charge(principal, n)
