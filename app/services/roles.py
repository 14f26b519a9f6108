"""The service's database role: one that can append to the audit trail and never rewrite it.

The migrations create `tepat_service` (NOLOGIN): read the registry, INSERT into audit_log, never
UPDATE, DELETE or TRUNCATE it. `tepat db service-role NAME` makes the role the service logs in
as: LOGIN, a member of tepat_service only, so it can become neither the owner of the audit
tables nor a superuser. In production the service refuses to start on any other login role;
in dev it warns.
"""

from __future__ import annotations

import re

import asyncpg

from app.repositories import roles as repo
from app.repositories.roles import SERVICE_ROLE

_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def problems(role: repo.LoginRole) -> list[str]:
    """Why this login role could rewrite the audit trail (empty: it cannot)."""
    out = []
    if role.superuser:
        out.append(f"the login role {role.name!r} is a superuser")
    elif role.can_become_superuser:
        out.append(f"the login role {role.name!r} can SET ROLE to a superuser")
    if role.owns_audit:
        out.append(f"the login role {role.name!r} owns {', '.join(role.owns_audit)}")
    if role.can_become_owner:
        out.append(
            f"the login role {role.name!r} can SET ROLE to the owner of "
            + ", ".join(role.can_become_owner)
        )
    if role.can_rewrite:
        out.append(f"the login role {role.name!r} may {'/'.join(role.can_rewrite)} audit_log")
    return out


async def check_login(conn: asyncpg.Connection) -> list[str]:
    return problems(await repo.login_role(conn))


def advice(found: list[str]) -> str:
    return (
        "; ".join(found)
        + ". Log in as a role made by `tepat db service-role NAME` (run as the database owner), "
        "e.g. TEPAT_DATABASE_URL=postgresql://NAME@HOST/DB"
    )


async def make_service_login(conn: asyncpg.Connection, name: str, password: str | None) -> None:
    """Create or update the service's login role `name` (see the module's docstring)."""
    if not _NAME.fullmatch(name):
        raise ValueError("a role name is 1 to 63 of a-z, 0-9 and _, not starting with a digit")
    if name == SERVICE_ROLE:
        raise ValueError(f"{SERVICE_ROLE} is the group role; choose another name for the login")
    current = await conn.fetchval("SELECT current_user")
    if name == current:
        raise ValueError(f"{name} is the role running this command (the owner); choose another")
    await repo.ensure_service_login(conn, name, password)
    found = await _problems_of(conn, name)
    if found:  # e.g. the name was an existing owner or superuser: refuse to leave it so
        raise ValueError("; ".join(found))


async def _problems_of(conn: asyncpg.Connection, name: str) -> list[str]:
    """The problems `name` would have as a login role (checked with SET SESSION AUTHORIZATION
    where allowed, else from the catalog as the owner sees it)."""
    superuser = await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    if not superuser:
        return []  # only a superuser may switch session authorization; the grants were set
    ident = await conn.fetchval("SELECT quote_ident($1)", name)
    async with conn.transaction():
        await conn.execute(f"SET LOCAL SESSION AUTHORIZATION {ident}")
        found = await check_login(conn)
        await conn.execute("RESET SESSION AUTHORIZATION")
    return found


class UnsafeLoginRole(RuntimeError):
    """Production start-up refused: the login role could rewrite the audit trail."""


async def startup_check(conn: asyncpg.Connection, *, production: bool) -> list[str]:
    """Production: raise UnsafeLoginRole naming each problem. Elsewhere: return them (warned)."""
    found = await check_login(conn)
    if found and production:
        raise UnsafeLoginRole(advice(found))
    return found
