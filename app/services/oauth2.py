"""OAuth2 client credentials (RFC 6749 4.4): short-lived access tokens for registered clients.

A client authenticates at the token endpoint with a JWT assertion signed by a key it registered
(`tepat client create ... --jwks FILE`; `private_key_jwt`, RFC 7523 2.2 and 3: iss = sub = its
id, aud = the token endpoint's URL, exp at most five minutes ahead, a `jti` used once), or with
its API key as client secret (`client_secret_post` or HTTP Basic). It gets an access token: a
JWT (RFC 9068 shape, `typ` at+jwt) signed with the service's Ed25519 key, the one that signs
the receipts and is published at /.well-known/jwks.json, carrying the granted scope (programs
and field groups) and purposes, valid five minutes.

Every face accepts the token as `Authorization: Bearer <token>` next to API keys
(app.services.clients.Authenticator tells them apart by shape): the client's record is read as
for a key, so a revoked, expired or suspended client's tokens stop working with its keys.

All JOSE is joserfc's. Nothing here logs a token or an assertion.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import secrets
import time
import warnings
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any

import orjson
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth import keys
from app.auth.principal import FIELD_GROUPS, PROGRAMS, Principal
from app.errors import Unauthenticated, Unavailable
from app.repositories import clients as repo
from app.services.receipts import ALG, Keyring

warnings.filterwarnings("ignore", message="EdDSA is deprecated", module="joserfc")

GRANT_TYPE = "client_credentials"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TOKEN_PATHS = ("/oauth2/client/token", "/dci/oauth2/client/token")
TOKEN_TTL = 300  # seconds an access token lives
MAX_ASSERTION_TTL = 300  # an assertion may not be valid further ahead than this
LEEWAY = 30  # clock skew allowed on a client's `iat`/`nbf`
TOKEN_TYP = "at+jwt"  # noqa: S105 (a media type, not a secret)
ISSUER = "tepat"
AUDIENCE = "tepat"
# What a client may sign its assertions with (asymmetric only: its key never reaches us).
ASSERTION_ALGS = ("EdDSA", "Ed25519", "ES256", "ES384", "PS256", "RS256")
PURPOSE_SCOPE = "purpose:"

NOT_ACCEPTED = "the access token is not valid"


class OAuthError(Exception):
    """An RFC 6749 5.2 error: its `error` code, a description and the HTTP status."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


@dataclass(frozen=True, slots=True)
class Grant:
    """What a token carries: the programs, field groups and purposes it was issued for."""

    programs: frozenset[str]
    field_groups: frozenset[str]
    purposes: frozenset[str]

    @property
    def scope(self) -> str:
        return " ".join(
            [p for p in PROGRAMS if p in self.programs]
            + [g for g in FIELD_GROUPS if g in self.field_groups]
        )


def requested_grant(scope: str | None, principal: Principal) -> Grant:
    """The grant a `scope` parameter asks for, within the client's (invalid_scope otherwise).

    Scope tokens are program names, field group names and `purpose:NAME`; a kind not named is
    granted whole. Unknown or ungranted tokens are refused, not dropped (RFC 6749 3.3 allows
    either; refusing tells the integrator at once)."""
    programs: set[str] = set()
    groups: set[str] = set()
    purposes: set[str] = set()
    for token in (scope or "").split():
        if token in PROGRAMS:
            target, granted = programs, principal.programs
        elif token in FIELD_GROUPS:
            target, granted = groups, principal.field_groups
        elif token.startswith(PURPOSE_SCOPE):
            target, granted = purposes, principal.purposes
            token = token[len(PURPOSE_SCOPE) :]
        else:
            raise OAuthError("invalid_scope", f"unknown scope {token!r}")
        if token not in granted:
            raise OAuthError("invalid_scope", f"scope {token!r} is not granted to this client")
        target.add(token)
    return Grant(
        frozenset(programs or principal.programs),
        frozenset(groups or principal.field_groups),
        frozenset(purposes or principal.purposes),
    )


def _basic(authorization: str | None) -> tuple[str, str] | None:
    """HTTP Basic client credentials (RFC 6749 2.3.1), if sent."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise OAuthError("invalid_client", "malformed Basic credentials", 401) from None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise OAuthError("invalid_client", "malformed Basic credentials", 401)
    return client_id, secret


def _unverified_subject(assertion: str) -> str:
    """The assertion's `sub` before its signature is checked: only to find whose key checks it."""
    try:
        part = assertion.split(".")[1]
        payload = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        claims = orjson.loads(payload)
    except (IndexError, ValueError, binascii.Error, orjson.JSONDecodeError):
        raise OAuthError("invalid_client", "client_assertion is not a JWT", 401) from None
    sub = claims.get("sub") if isinstance(claims, dict) else None
    if not isinstance(sub, str) or not sub:
        raise OAuthError("invalid_client", "client_assertion has no `sub` (the client id)", 401)
    return sub


class TokenIssuer:
    """The token endpoint's work: authenticate the client, check the grant, sign the token."""

    def __init__(self, engine: AsyncEngine, keyring: Keyring) -> None:
        self._engine = engine
        self._keyring = keyring

    async def issue(
        self, form: Mapping[str, str], authorization: str | None, endpoint_urls: Collection[str]
    ) -> dict[str, Any]:
        """The token response (RFC 6749 5.1) or OAuthError (5.2). `endpoint_urls`: the URLs an
        assertion's `aud` may name (this endpoint as the request reached it)."""
        grant_type = form.get("grant_type")
        if not grant_type:
            raise OAuthError("invalid_request", "grant_type is required")
        if grant_type != GRANT_TYPE:
            raise OAuthError("unsupported_grant_type", f"only grant_type={GRANT_TYPE} is supported")
        principal = await self._client(form, authorization, endpoint_urls)
        grant = requested_grant(form.get("scope"), principal)
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": principal.client_id,
            "aud": AUDIENCE,
            "client_id": principal.client_id,
            "iat": now,
            "exp": now + TOKEN_TTL,
            "jti": secrets.token_urlsafe(16),
            "scope": grant.scope,
            "purposes": sorted(grant.purposes),
        }
        key = self._keyring.current
        token = jwt.encode(
            {"alg": ALG, "kid": key.kid, "typ": TOKEN_TYP}, claims, key.jwk, algorithms=[ALG]
        )
        return {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": TOKEN_TTL,
            "scope": grant.scope,
        }

    async def _client(
        self, form: Mapping[str, str], authorization: str | None, endpoint_urls: Collection[str]
    ) -> Principal:
        assertion = form.get("client_assertion")
        basic = _basic(authorization)
        if assertion is not None:
            if form.get("client_assertion_type") != ASSERTION_TYPE:
                raise OAuthError(
                    "invalid_client", f"client_assertion_type must be {ASSERTION_TYPE}", 401
                )
            return await self._by_assertion(assertion, form.get("client_id"), endpoint_urls)
        if basic is not None:
            return await self._by_secret(*basic)
        client_id, secret = form.get("client_id"), form.get("client_secret")
        if client_id and secret:
            return await self._by_secret(client_id, secret)
        raise OAuthError(
            "invalid_client",
            "authenticate the client: client_assertion (private_key_jwt) or client_secret",
            401,
        )

    async def _load(self, client_id: str) -> tuple[Principal, bytes, dict[str, Any] | None]:
        try:
            async with self._engine.connect() as conn:
                found = await repo.get_active_credentials(conn, client_id)
        except (TimeoutError, SQLAlchemyError, OSError):
            raise Unavailable("cannot check the client now; retry later") from None
        if found is None:
            raise OAuthError("invalid_client", "the client is not known or not active", 401)
        info, key_hash, jwks = found
        return Principal.from_client(info), key_hash, jwks

    async def _by_secret(self, client_id: str, secret: str) -> Principal:
        try:
            key = keys.parse_key(secret)
        except keys.MalformedKey:
            raise OAuthError(
                "invalid_client", "the client credentials are not valid", 401
            ) from None
        principal, key_hash, _ = await self._load(client_id)
        if not secrets.compare_digest(keys.key_hash(key), key_hash):
            raise OAuthError("invalid_client", "the client credentials are not valid", 401)
        return self._usable(principal)

    async def _by_assertion(
        self, assertion: str, client_id: str | None, endpoint_urls: Collection[str]
    ) -> Principal:
        sub = _unverified_subject(assertion)
        if client_id is not None and client_id != sub:
            raise OAuthError("invalid_client", "client_id and the assertion's sub differ", 401)
        principal, _, jwks = await self._load(sub)
        if not jwks:
            raise OAuthError("invalid_client", "the client has no registered public key", 401)
        try:
            token = jwt.decode(assertion, KeySet.import_key_set(jwks), algorithms=ASSERTION_ALGS)  # type: ignore[arg-type]
        except (JoseError, ValueError):
            raise OAuthError(
                "invalid_client", "the assertion's signature does not verify", 401
            ) from None
        registry = JWTClaimsRegistry(
            leeway=LEEWAY,
            iss={"essential": True, "value": sub},
            sub={"essential": True, "value": sub},
            aud={"essential": True, "values": list(endpoint_urls)},
            exp={"essential": True},
            jti={"essential": True},
        )
        try:
            registry.validate(token.claims)
        except JoseError as e:
            raise OAuthError(
                "invalid_client", f"the assertion is not valid: {e.description or e.error}", 401
            ) from None
        exp = int(token.claims["exp"])
        if exp > time.time() + MAX_ASSERTION_TTL + LEEWAY:
            raise OAuthError(
                "invalid_client",
                f"the assertion's exp is more than {MAX_ASSERTION_TTL} s ahead",
                401,
            )
        jti = token.claims["jti"]
        if not isinstance(jti, str) or not 1 <= len(jti) <= 200:
            raise OAuthError(
                "invalid_client", "the assertion's jti must be 1 to 200 characters", 401
            )
        expires = dt.datetime.fromtimestamp(exp + LEEWAY, dt.UTC)
        try:
            async with self._engine.begin() as conn:
                fresh = await repo.use_assertion(conn, sub, jti, expires)
        except (TimeoutError, SQLAlchemyError, OSError):
            raise Unavailable("cannot check the client now; retry later") from None
        if not fresh:
            raise OAuthError("invalid_client", "the assertion's jti was used before", 401)
        return self._usable(principal)

    @staticmethod
    def _usable(principal: Principal) -> Principal:
        if principal.suspended:
            raise OAuthError("invalid_client", "the client is suspended", 401)
        return principal


class AccessTokens:
    """Checks the access tokens this service issued (signature, issuer, audience, expiry)."""

    def __init__(self, keyring: Keyring) -> None:
        self._keys = KeySet.import_key_set(keyring.document)  # type: ignore[arg-type]
        self._registry = JWTClaimsRegistry(
            iss={"essential": True, "value": ISSUER},
            aud={"essential": True, "value": AUDIENCE},
            sub={"essential": True},
            exp={"essential": True},
        )

    @staticmethod
    def looks_like(credentials: str) -> bool:
        """A JWT (three base64url parts), not an API key: the shapes cannot be confused."""
        return credentials.startswith("eyJ") and credentials.count(".") == 2

    def verify(self, token: str) -> tuple[str, Grant, int]:
        """The client id, grant and expiry of a valid token; Unauthenticated otherwise."""
        try:
            decoded = jwt.decode(token, self._keys, algorithms=[ALG])
            if decoded.header.get("typ") != TOKEN_TYP:
                raise Unauthenticated(NOT_ACCEPTED)
            self._registry.validate(decoded.claims)
        except (JoseError, ValueError):
            raise Unauthenticated(NOT_ACCEPTED) from None
        claims = decoded.claims
        scope = str(claims.get("scope") or "").split()
        purposes = claims.get("purposes") or []
        grant = Grant(
            frozenset(s for s in scope if s in PROGRAMS),
            frozenset(s for s in scope if s in FIELD_GROUPS),
            frozenset(p for p in purposes if isinstance(p, str)),
        )
        return str(claims["sub"]), grant, int(claims["exp"])


def narrowed(principal: Principal, grant: Grant, exp: int) -> Principal:
    """The client as a token presents it: its current grants within the token's, and expiring
    when the token does (so every call checks it, as for a key's expiry)."""
    token_expiry = dt.datetime.fromtimestamp(exp, dt.UTC)
    expires_at = principal.expires_at
    if expires_at is None or token_expiry < expires_at:
        expires_at = token_expiry
    return replace(
        principal,
        programs=principal.programs & grant.programs,
        field_groups=principal.field_groups & grant.field_groups,
        purposes=principal.purposes & grant.purposes,
        expires_at=expires_at,
    )
