"""API clients: registering, listing, revoking, and authenticating a request's key."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
import string
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.auth import keys
from app.auth.principal import FIELD_GROUPS, PROGRAMS, PURPOSE_PATTERN, ClientInfo, Principal
from app.config import Settings
from app.errors import (
    ClientNotFound,
    ClientSuspended,
    Unauthenticated,
    Unavailable,
    ValidationFailed,
)
from app.repositories import allowance as allowance_repo
from app.repositories import clients as repo
from app.services import signatures
from app.services.audit.records import AuditEntry, new_audit_id
from app.services.audit.writer import AuditWriter
from app.services.oauth2 import AccessTokens, narrowed

# One message for unknown, revoked and expired keys: the answer must not tell a key holder
# (or a thief) which of the three it is.
NOT_ACCEPTED = "the API key is not valid"

_SLUG_DROP = re.compile(r"[^a-z0-9]+")
_ID_SUFFIX = string.ascii_lowercase + string.digits


def _checked(
    values: Iterable[str], allowed: tuple[str, ...] | None, field: str, *, empty_ok: bool = False
) -> list[str]:
    items = [v.strip() for v in values if v.strip()]
    if not items and not empty_ok:
        raise ValidationFailed(f"{field} must name at least one", field=field)
    for v in items:
        if allowed is not None and v not in allowed:
            raise ValidationFailed(
                f"unknown {field} value {v!r}; one of {', '.join(allowed)}", field=field, value=v
            )
        if allowed is None and not PURPOSE_PATTERN.match(v):
            raise ValidationFailed(
                f"purpose {v!r} must match {PURPOSE_PATTERN.pattern}", field=field, value=v
            )
    if allowed is None:
        return sorted(set(items))
    return [a for a in allowed if a in items]  # canonical order, no duplicates


def _new_id(name: str) -> str:
    slug = _SLUG_DROP.sub("-", name.lower()).strip("-")[:40].rstrip("-") or "client"
    # A random suffix: the same system may be registered again (key rotation) under its name.
    return f"{slug}-{''.join(secrets.choice(_ID_SUFFIX) for _ in range(6))}"


async def create_client(
    conn: AsyncConnection,
    *,
    name: str,
    programs: Iterable[str],
    field_groups: Iterable[str],
    purposes: Iterable[str],
    expires_at: dt.datetime | None = None,
    bulk: bool = False,
    daily_quota: int | None = None,
    callback_url_prefix: str | None = None,
    jwks: Mapping[str, Any] | None = None,
    signatures_required: bool = False,
) -> tuple[ClientInfo, str]:
    """Register a client; returns it and its key in plain text, which is never available again."""
    name = name.strip()
    if not name or len(name) > 200:
        raise ValidationFailed("name must be 1 to 200 characters", field="name")
    checked_programs = _checked(programs, PROGRAMS, "programs")
    checked_groups = _checked(field_groups, FIELD_GROUPS, "field_groups")
    checked_purposes = _checked(purposes, None, "purposes")
    if expires_at is not None:
        if expires_at.tzinfo is None:
            raise ValidationFailed("expires_at must carry a time zone", field="expires_at")
        if expires_at <= dt.datetime.now(dt.UTC):
            raise ValidationFailed("expires_at must be in the future", field="expires_at")
    if daily_quota is not None and daily_quota < 0:
        raise ValidationFailed("daily_quota must be 0 (none) or more NIKs", field="daily_quota")
    if callback_url_prefix is not None:
        callback_url_prefix = checked_callback_prefix(callback_url_prefix)
    checked_keys = signatures.checked_jwks(jwks) if jwks is not None else None
    if signatures_required and checked_keys is None:
        raise ValidationFailed(
            "signatures_required needs the client's public keys (jwks)", field="jwks"
        )
    client_id = _new_id(name)
    while await repo.exists(conn, client_id):
        client_id = _new_id(name)
    key = keys.generate_key()
    info = await repo.create(
        conn,
        client_id=client_id,
        name=name,
        programs=checked_programs,
        field_groups=checked_groups,
        purposes=checked_purposes,
        key_hash=keys.key_hash(key),
        key_prefix=keys.key_prefix(key),
        expires_at=expires_at,
        bulk=bulk,
        daily_quota=daily_quota,
        callback_url_prefix=callback_url_prefix,
        jwks=checked_keys,
        signatures_required=signatures_required,
    )
    return info, key


def checked_callback_prefix(prefix: str) -> str:
    """An absolute http(s) URL with a host and no query or fragment: where the client's DCI
    callbacks may be sent (app.services.dci.callback_url holds each sender_uri to it)."""
    url = urllib.parse.urlsplit(prefix.strip())
    if url.scheme not in ("http", "https") or not url.hostname or url.query or url.fragment:
        raise ValidationFailed(
            "callback_url_prefix must be an absolute http(s) URL with a host and no query or "
            "fragment, e.g. https://spmis.example.go.id/dci",
            field="callback_url_prefix",
        )
    return urllib.parse.urlunsplit((url.scheme, url.netloc.lower(), url.path.rstrip("/"), "", ""))


async def list_clients(conn: AsyncConnection) -> list[ClientInfo]:
    return await repo.list_all(conn)


async def revoke_client(conn: AsyncConnection, client_id: str) -> ClientInfo:
    """Revoke a client's key (idempotent: a revoked client keeps its first revocation time)."""
    await repo.mark_revoked(conn, client_id)
    info = await repo.get_by_id(conn, client_id)
    if info is None:
        raise ClientNotFound(f"no client {client_id!r}", client=client_id)
    return info


# --- suspension ---------------------------------------------------------------------------------

SUSPENDED = "client.suspended"
REINSTATED = "client.reinstated"
OPERATOR_PURPOSE = "operator"


class ClientEvent(BaseModel):
    """A suspension or reinstatement as the audit trail holds it."""

    at: dt.datetime
    operation: str
    audit_id: str
    request_id: str


class ClientShown(BaseModel):
    """`tepat client show`: the client, its quota, today's usage and its suspension events."""

    client: ClientInfo
    daily_quota: int = Field(description="NIKs a day in force (0: none)")
    day: dt.date = Field(description="Today in WIB")
    used_today: int = Field(description="NIKs counted today (leased by the servers, less returns)")
    events: list[ClientEvent]


async def _audit_event(
    audit: AuditWriter, client_id: str, operation: str, purpose: str, request_id: str, detail: str
) -> str:
    """An audit record of an event about a client (no data subject): durable when it returns."""
    audit_id = new_audit_id()
    body = orjson.dumps({"client": client_id, "event": operation, "detail": detail})
    await audit.record(
        AuditEntry(
            id=audit_id,
            client_id=client_id,
            purpose=purpose,
            operation=operation,
            snapshot_id=None,
            rule_set_id=None,
            subjects=(),
            found=0,
            response_digest=hashlib.sha256(body).digest(),
            request_id=request_id,
        )
    )
    return audit_id


async def suspend_client(
    engine: AsyncEngine,
    audit: AuditWriter,
    client_id: str,
    reason: str,
    *,
    purpose: str,
    request_id: str,
) -> bool:
    """Suspend a client (every request refused until reinstated) and audit it. False: it was
    suspended already (the first suspension is kept, nothing new is audited)."""
    async with engine.begin() as conn:
        changed = await repo.mark_suspended(conn, client_id, reason)
    if changed:
        await _audit_event(audit, client_id, SUSPENDED, purpose, request_id, reason)
    return changed


async def reinstate_client(
    engine: AsyncEngine, audit: AuditWriter, client_id: str, request_id: str
) -> ClientInfo:
    """Lift a suspension (audited); servers accept the client again within their key-cache TTL."""
    async with engine.begin() as conn:
        info = await repo.get_by_id(conn, client_id)
        if info is None:
            raise ClientNotFound(f"no client {client_id!r}", client=client_id)
        changed = await repo.clear_suspension(conn, client_id)
        info = await repo.get_by_id(conn, client_id)
        assert info is not None
    if changed:
        await _audit_event(
            audit, client_id, REINSTATED, OPERATOR_PURPOSE, request_id, "reinstated by an operator"
        )
    return info


async def show_client(conn: AsyncConnection, client_id: str, settings: Settings) -> ClientShown:
    info = await repo.get_by_id(conn, client_id)
    if info is None:
        raise ClientNotFound(f"no client {client_id!r}", client=client_id)
    day, used = await allowance_repo.usage_today(conn, client_id)
    if info.daily_quota is not None:
        quota = info.daily_quota
    else:
        quota = settings.daily_quota_bulk if info.bulk else settings.daily_quota
    events = [
        ClientEvent(at=at, operation=op, audit_id=audit_id, request_id=rid)
        for at, op, audit_id, rid in await repo.events(conn, client_id, (SUSPENDED, REINSTATED))
    ]
    return ClientShown(client=info, daily_quota=quota, day=day, used_today=used, events=events)


# An accepted key: its principal, when it was read from the database, the key's hash.
_Entry = tuple[Principal, float, bytes]


class Authenticator:
    """Turns an `Authorization: Bearer <key>` header into a Principal. One per app.

    Accepted keys are cached by their hash for `ttl` seconds (bounded to `maxsize` entries), so
    a revocation takes effect within `ttl` seconds in every process; expiry is checked on each
    call, cached or not. Refused keys are not cached: a flood of made-up keys must not evict
    the real ones. Nothing here logs a key.

    A suspended client is refused (403) whoever noticed it first: the database's record (read
    with the key, so within `ttl`), or this process's allowance, which learns it at its next
    lease (within TEPAT_RATE_LIMIT_LEASE_SECONDS for a client that looks anything up) or
    suspended the client itself (at once). That note is trusted for `ttl` seconds, by which
    time the key's cached record has been read again.

    With `tokens`, a bearer credential shaped like a JWT is an OAuth2 access token instead
    (app.services.oauth2): checked in the process, then its client's record is read and cached
    as for a key, so revocation and suspension end tokens within `ttl` as well.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        ttl: float = 30.0,
        maxsize: int = 10_000,
        tokens: AccessTokens | None = None,
    ) -> None:
        self._engine = engine
        # OAuth2 access tokens (app.services.oauth2): accepted next to keys when set.
        self._tokens = tokens
        self._ttl = ttl
        self._maxsize = maxsize
        # key hash -> (principal, when it was read from the database); and the same entries by
        # a hash of the whole header, so a repeat caller skips parsing and checking the key.
        # Plain dicts (emptied when full): cheaper per request than a TTLCache.
        self._by_key: dict[bytes, _Entry] = {}
        self._by_header: dict[bytes, _Entry] = {}
        # client id -> when this process learnt that it is suspended (monotonic)
        self._suspended: dict[str, float] = {}

    def note_suspended(self, client_id: str) -> None:
        self._suspended[client_id] = time.monotonic()

    def note_active(self, client_id: str) -> None:
        if self._suspended:
            self._suspended.pop(client_id, None)

    def _noted_suspended(self, client_id: str) -> bool:
        noted = self._suspended.get(client_id)
        if noted is None:
            return False
        if time.monotonic() - noted < self._ttl:
            return True
        del self._suspended[client_id]  # the cached record is fresher by now: it decides
        return False

    def _fresh(self, entry: _Entry | None) -> Principal | None:
        if entry is None or time.monotonic() - entry[1] >= self._ttl:
            return None
        return entry[0]

    async def authenticate(self, authorization_header: str | None) -> Principal:
        if not authorization_header:
            raise Unauthenticated("send the API key as `Authorization: Bearer <key>`")
        header = hashlib.sha256(authorization_header.encode("utf-8", "surrogateescape")).digest()
        entry = self._by_header.get(header)
        principal = self._fresh(entry)
        if principal is None:
            entry = await self._authenticate(authorization_header, header)
            principal = entry[0]
        if principal.expires_at is not None and principal.expires_at <= dt.datetime.now(dt.UTC):
            assert entry is not None
            self._by_header.pop(header, None)
            self._by_key.pop(entry[2], None)
            token = AccessTokens.looks_like(authorization_header.strip().partition(" ")[2].strip())
            raise Unauthenticated("the access token has expired" if token else NOT_ACCEPTED)
        if principal.suspended or (self._suspended and self._noted_suspended(principal.client_id)):
            raise ClientSuspended(
                "the client is suspended; an operator must reinstate it (tepat client reinstate)"
            )
        return principal

    async def _authenticate(self, authorization_header: str, header: bytes) -> _Entry:
        scheme, _, credentials = authorization_header.strip().partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise Unauthenticated("send the API key as `Authorization: Bearer <key>`")
        credentials = credentials.strip()
        if self._tokens is not None and self._tokens.looks_like(credentials):
            return self._remember(header, await self._token(credentials))
        try:
            key = keys.parse_key(credentials)
        except keys.MalformedKey as e:
            raise Unauthenticated(str(e)) from None
        digest = keys.key_hash(key)
        entry = self._by_key.get(digest)
        if self._fresh(entry) is None:
            entry = self._cached(digest, await self._load(digest))
        assert entry is not None
        return self._remember(header, entry)

    def _cached(self, cache_key: bytes, principal: Principal) -> _Entry:
        entry = (principal, time.monotonic(), cache_key)
        if len(self._by_key) >= self._maxsize:
            self._by_key.clear()
        self._by_key[cache_key] = entry
        return entry

    def _remember(self, header: bytes, entry: _Entry) -> _Entry:
        if len(self._by_header) >= self._maxsize:
            self._by_header.clear()
        self._by_header[header] = entry  # same load time: revocation still within `ttl`
        return entry

    async def _token(self, token: str) -> _Entry:
        """An OAuth2 access token: its client's record, read as for a key (cached by client id
        for `ttl`, so a revocation or suspension ends the token as it ends the keys), narrowed
        to the token's grant and expiring with it. Its record is cached under b"c" + client id
        next to the key hashes (a clash would take a SHA-256 preimage)."""
        assert self._tokens is not None
        client_id, grant, exp = self._tokens.verify(token)
        cache_key = b"c" + client_id.encode("utf-8")
        entry = self._by_key.get(cache_key)
        if self._fresh(entry) is None:
            entry = self._cached(cache_key, await self._load(client_id=client_id))
        assert entry is not None
        return narrowed(entry[0], grant, exp), entry[1], cache_key

    async def _load(self, digest: bytes | None = None, client_id: str | None = None) -> Principal:
        try:
            async with self._engine.connect() as conn:
                if client_id is not None:
                    info = await repo.get_active_by_id(conn, client_id)
                else:
                    assert digest is not None
                    info = await repo.get_active_by_key_hash(conn, digest)
        except (TimeoutError, SQLAlchemyError, OSError):
            raise Unavailable("cannot check the API key now; retry later") from None
        if info is None:
            raise Unauthenticated(NOT_ACCEPTED)
        if info.suspended_at is None:
            self.note_active(info.id)
        return Principal.from_client(info)

    def forget(self) -> None:
        """Drop every cached key (tests; an operator's immediate revocation in one process)."""
        self._by_key.clear()
        self._by_header.clear()
        self._suspended.clear()
