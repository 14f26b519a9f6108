"""REST dependencies: the app's shared state and the caller, as FastAPI sees them (documented
in /docs); the checks themselves are the transport's (app.http.caller)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.auth.principal import Principal
from app.http.caller import authenticate, authenticate_key
from app.http.state import AppState, state_of
from app.services.lookup import Caller


async def get_state(request: Request) -> AppState:  # async: no thread-pool hop per request
    return state_of(request.scope)


bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="The client's API key: `Authorization: Bearer tepat_...` (shown once by "
    "`tepat client create`), or an OAuth2 access token from `POST /oauth2/client/token` "
    "(docs/oauth2.md).",
)


async def caller(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
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
    return await authenticate(request.scope, request.headers.get("authorization"), x_purpose)


async def client(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    return await authenticate_key(request.scope, request.headers.get("authorization"))


State = Annotated[AppState, Depends(get_state)]
ClientDep = Annotated[Principal, Depends(client)]
CallerDep = Annotated[Caller, Depends(caller)]
