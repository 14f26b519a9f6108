"""`POST /oauth2/client/token` (and `/dci/oauth2/client/token`): OAuth2 client credentials.

The form is read here (application/x-www-form-urlencoded, RFC 6749 4.4.2), the work is
app.services.oauth2's. Answers follow RFC 6749 5.1 and 5.2, not the problem format: OAuth2
client libraries read `error` and `error_description`. Neither the form nor the token is
logged.
"""

from __future__ import annotations

import urllib.parse
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.responses import JSONResponse

from app.api.deps import State
from app.services.oauth2 import TOKEN_PATHS, OAuthError, TokenIssuer

router = APIRouter(tags=["oauth2"])

FORM = "application/x-www-form-urlencoded"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class TokenResponse(BaseModel):
    """RFC 6749 5.1: a bearer access token (a JWT signed with the key at
    /.well-known/jwks.json)."""

    access_token: str = Field(description="Send as `Authorization: Bearer <access_token>`")
    token_type: Literal["Bearer"]
    expires_in: int = Field(description="Seconds the token is valid", examples=[300])
    scope: str = Field(description="Programs and field groups granted", examples=["PKH decision"])


class TokenError(BaseModel):
    """RFC 6749 5.2."""

    error: Literal["invalid_request", "invalid_client", "unsupported_grant_type", "invalid_scope"]
    error_description: str


_FORM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["grant_type"],
    "properties": {
        "grant_type": {"type": "string", "enum": ["client_credentials"]},
        "scope": {
            "type": "string",
            "description": "Space-separated programs, field groups and `purpose:NAME`, within "
            "the client's; omitted kinds are granted whole",
            "examples": ["PKH decision purpose:pbi-verification"],
        },
        "client_assertion_type": {
            "type": "string",
            "enum": ["urn:ietf:params:oauth:client-assertion-type:jwt-bearer"],
        },
        "client_assertion": {
            "type": "string",
            "description": "private_key_jwt (RFC 7523): a JWT signed with the key registered "
            "by `tepat client create --jwks`; iss = sub = the client id, aud = this URL, "
            "exp at most 5 minutes ahead, jti used once",
        },
        "client_id": {"type": "string"},
        "client_secret": {
            "type": "string",
            "description": "client_secret_post: the client's API key (HTTP Basic also works)",
        },
    },
}

_DOC: dict[str, Any] = {
    "requestBody": {"required": True, "content": {FORM: {"schema": _FORM_SCHEMA}}},
}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": TokenError, "description": "A bad request, grant type or scope"},
    401: {
        "model": TokenError,
        "description": "The client did not authenticate (`invalid_client`)",
        "headers": {
            "WWW-Authenticate": {
                "description": 'RFC 6749 5.2: `Basic realm="tepat"`',
                "schema": {"type": "string"},
                "required": True,
            }
        },
    },
}


PARAMETERS = frozenset(_FORM_SCHEMA["properties"])


async def _token(request: Request, state: State) -> JSONResponse:
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != FORM:
        return _error(OAuthError("invalid_request", f"send the parameters as {FORM}"))
    try:
        pairs = urllib.parse.parse_qsl(
            (await request.body()).decode("utf-8"), keep_blank_values=True, strict_parsing=False
        )
    except UnicodeDecodeError:
        return _error(OAuthError("invalid_request", "the form is not UTF-8"))
    form: dict[str, str] = {}
    for name, value in pairs:
        if name not in PARAMETERS:
            continue  # RFC 6749 3.1: unrecognized parameters are ignored
        if name in form:  # RFC 6749 3.1: parameters must not repeat
            return _error(OAuthError("invalid_request", f"{name} is given more than once"))
        form[name] = value
    base = str(request.base_url).rstrip("/")
    urls = [base + p for p in TOKEN_PATHS]
    try:
        body = await TokenIssuer(state.engine, state.keyring).issue(
            form, request.headers.get("authorization"), urls
        )
    except OAuthError as e:
        return _error(e)
    return JSONResponse(body, headers=NO_STORE)


def _error(error: OAuthError) -> JSONResponse:
    headers = dict(NO_STORE)
    if error.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="tepat"'
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


_SUMMARY = "An access token for a client (OAuth2 client credentials, private_key_jwt)"


@router.post(
    "/oauth2/client/token",
    summary=_SUMMARY,
    response_model=TokenResponse,
    responses=_RESPONSES,
    openapi_extra=_DOC,
)
async def create_token(request: Request, state: State) -> JSONResponse:
    return await _token(request, state)


@router.post(
    "/dci/oauth2/client/token",
    summary=_SUMMARY + " (the DCI path)",
    response_model=TokenResponse,
    responses=_RESPONSES,
    openapi_extra=_DOC,
)
async def create_dci_token(request: Request, state: State) -> JSONResponse:
    return await _token(request, state)
