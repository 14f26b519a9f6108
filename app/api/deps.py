"""Request dependencies: the app's shared state, and the caller (API key, purpose, request id)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncEngine

from app.api.request_ids import request_id_of
from app.auth.principal import Principal
from app.config import Settings
from app.services.audit import AuditWriter
from app.services.catalog import Reads
from app.services.clients import Authenticator
from app.services.lookup import Caller


@dataclass
class AppState:
    """Built once by the lifespan; everything a request needs that outlives it."""

    settings: Settings
    engine: AsyncEngine
    authenticator: Authenticator
    audit: AuditWriter
    reads: Reads


async def get_state(request: Request) -> AppState:  # async: no thread-pool hop per request
    state: AppState = request.app.state.tepat
    return state


def request_id(request: Request) -> str:
    return request_id_of(request.scope)


bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="The client's API key: `Authorization: Bearer tepat_...` (shown once by "
    "`tepat client create`).",
)


async def principal(
    request: Request,
    state: Annotated[AppState, Depends(get_state)],
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    found = await state.authenticator.authenticate(request.headers.get("authorization"))
    request.scope.setdefault("state", {})["client_id"] = found.client_id
    return found


async def caller(
    request: Request,
    who: Annotated[Principal, Depends(principal)],
    x_purpose: Annotated[
        str | None,
        Header(
            alias="X-Purpose",
            description="Why this data is processed: a purpose code registered for the client "
            "(UU 27/2022 purpose limitation).",
            examples=["pbi-verification"],
        ),
    ] = None,
) -> Caller:
    return Caller(who, who.require_purpose(x_purpose), request_id(request))


State = Annotated[AppState, Depends(get_state)]
CallerDep = Annotated[Caller, Depends(caller)]
