"""SQL over PostgreSQL's roles: what the login role may do to the audit trail, and the
service's own login role."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

SERVICE_ROLE = "tepat_service"  # NOLOGIN, created by the migrations: what the API may do
AUDIT_TABLES = ("audit_log", "audit_head", "audit_subjects", "audit_index")


@dataclass(frozen=True, slots=True)
class LoginRole:
    """What the role this session logged in as (session_user) can do, directly or by SET ROLE."""

    name: str
    superuser: bool
    can_become_superuser: bool
    owns_audit: list[str]
    can_become_owner: list[str]
    can_rewrite: list[str]  # UPDATE, DELETE or TRUNCATE on audit_log


async def login_role(conn: asyncpg.Connection) -> LoginRole:
    row = await conn.fetchrow(
        """
        SELECT r.rolname AS name, r.rolsuper AS superuser,
               EXISTS (SELECT 1 FROM pg_roles s
                        WHERE s.rolsuper AND s.oid <> r.oid
                          AND pg_has_role(r.oid, s.oid, 'MEMBER')) AS can_become_superuser,
               ARRAY(SELECT c.relname::text FROM pg_class c
                      WHERE c.relname = ANY($1::text[]) AND c.relkind IN ('r', 'p')
                        AND c.relnamespace = 'public'::regnamespace AND c.relowner = r.oid
                      ORDER BY 1) AS owns_audit,
               ARRAY(SELECT c.relname::text FROM pg_class c
                      WHERE c.relname = ANY($1::text[]) AND c.relkind IN ('r', 'p')
                        AND c.relnamespace = 'public'::regnamespace AND c.relowner <> r.oid
                        AND pg_has_role(r.oid, c.relowner, 'MEMBER')
                      ORDER BY 1) AS can_become_owner,
               ARRAY(SELECT p FROM unnest(ARRAY['UPDATE', 'DELETE', 'TRUNCATE']) AS p
                      WHERE to_regclass('public.audit_log') IS NOT NULL
                        AND has_table_privilege(r.oid, 'public.audit_log', p)) AS can_rewrite
          FROM pg_roles r
         WHERE r.rolname = session_user
        """,
        list(AUDIT_TABLES),
    )
    assert row is not None
    return LoginRole(
        row["name"], row["superuser"], row["can_become_superuser"], list(row["owns_audit"]),
        list(row["can_become_owner"]), list(row["can_rewrite"]),
    )  # fmt: skip


async def ensure_service_login(conn: asyncpg.Connection, name: str, password: str | None) -> None:
    """Create or update `name`: LOGIN, no special attributes, a member of tepat_service only."""
    async with conn.transaction():
        exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", name)
        attributes = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT"
        ident = await conn.fetchval("SELECT quote_ident($1)", name)
        verb = "ALTER" if exists else "CREATE"
        await conn.execute(f"{verb} ROLE {ident} {attributes}")
        if password is not None:
            literal = await conn.fetchval("SELECT quote_literal($1)", password)
            await conn.execute(f"ALTER ROLE {ident} PASSWORD {literal}")
        others = await conn.fetch(
            """
            SELECT g.rolname FROM pg_auth_members m
              JOIN pg_roles g ON g.oid = m.roleid
              JOIN pg_roles u ON u.oid = m.member
             WHERE u.rolname = $1 AND g.rolname <> $2
            """,
            name,
            SERVICE_ROLE,
        )
        for other in others:
            group = await conn.fetchval("SELECT quote_ident($1)", other["rolname"])
            await conn.execute(f"REVOKE {group} FROM {ident}")
        await conn.execute(f"GRANT {SERVICE_ROLE} TO {ident}")
