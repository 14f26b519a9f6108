"""API clients: registering, listing, revoking, and authenticating a request's key."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
import string
import time
from collections.abc import Iterable

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.auth import keys
from app.auth.principal import FIELD_GROUPS, PROGRAMS, PURPOSE_PATTERN, ClientInfo, Principal
from app.errors import ClientNotFound, Unauthenticated, Unavailable, ValidationFailed
from app.repositories import clients as repo

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
    )
    return info, key


async def list_clients(conn: AsyncConnection) -> list[ClientInfo]:
    return await repo.list_all(conn)


async def revoke_client(conn: AsyncConnection, client_id: str) -> ClientInfo:
    """Revoke a client's key (idempotent: a revoked client keeps its first revocation time)."""
    await repo.mark_revoked(conn, client_id)
    info = await repo.get_by_id(conn, client_id)
    if info is None:
        raise ClientNotFound(f"no client {client_id!r}", client=client_id)
    return info


# An accepted key: its principal, when it was read from the database, the key's hash.
_Entry = tuple[Principal, float, bytes]


class Authenticator:
    """Turns an `Authorization: Bearer <key>` header into a Principal. One per app.

    Accepted keys are cached by their hash for `ttl` seconds (bounded to `maxsize` entries), so
    a revocation takes effect within `ttl` seconds in every process; expiry is checked on each
    call, cached or not. Refused keys are not cached: a flood of made-up keys must not evict
    the real ones. Nothing here logs a key.
    """

    def __init__(self, engine: AsyncEngine, ttl: float = 30.0, maxsize: int = 10_000) -> None:
        self._engine = engine
        self._ttl = ttl
        self._maxsize = maxsize
        # key hash -> (principal, when it was read from the database); and the same entries by
        # a hash of the whole header, so a repeat caller skips parsing and checking the key.
        # Plain dicts (emptied when full): cheaper per request than a TTLCache.
        self._by_key: dict[bytes, _Entry] = {}
        self._by_header: dict[bytes, _Entry] = {}

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
            raise Unauthenticated(NOT_ACCEPTED)
        return principal

    async def _authenticate(self, authorization_header: str, header: bytes) -> _Entry:
        scheme, _, credentials = authorization_header.strip().partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise Unauthenticated("send the API key as `Authorization: Bearer <key>`")
        try:
            key = keys.parse_key(credentials.strip())
        except keys.MalformedKey as e:
            raise Unauthenticated(str(e)) from None
        digest = keys.key_hash(key)
        entry = self._by_key.get(digest)
        if self._fresh(entry) is None:
            entry = (await self._load(digest), time.monotonic(), digest)
            if len(self._by_key) >= self._maxsize:
                self._by_key.clear()
            self._by_key[digest] = entry
        assert entry is not None
        if len(self._by_header) >= self._maxsize:
            self._by_header.clear()
        self._by_header[header] = entry  # same load time: revocation still within `ttl`
        return entry

    async def _load(self, digest: bytes) -> Principal:
        try:
            async with self._engine.connect() as conn:
                info = await repo.get_active_by_key_hash(conn, digest)
        except (TimeoutError, SQLAlchemyError, OSError):
            raise Unavailable("cannot check the API key now; retry later") from None
        if info is None:
            raise Unauthenticated(NOT_ACCEPTED)
        return Principal.from_client(info)

    def forget(self) -> None:
        """Drop every cached key (tests; an operator's immediate revocation in one process)."""
        self._by_key.clear()
        self._by_header.clear()
