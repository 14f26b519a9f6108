"""The service's login role cannot rewrite the audit trail; production refuses one that can."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app import db
from app.config import Settings
from app.main import check_login_role
from app.services import roles

NAME = f"tepat_api_test_{os.getpid()}"


def _as(url: str, user: str) -> str:
    return db.asyncpg_dsn(
        db.sqlalchemy_url(url).set(username=user).render_as_string(hide_password=False)
    )


@pytest.fixture
async def admin(database_url: str, engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(db.asyncpg_dsn(database_url))
    try:
        yield conn
    finally:
        await conn.execute(f"DROP ROLE IF EXISTS {NAME}")
        await conn.close()


async def test_the_owner_login_is_refused_for_what_it_could_do(admin: asyncpg.Connection) -> None:
    found = await roles.check_login(admin)  # the test server's superuser, owner of the tables
    text = " | ".join(found)
    assert "is a superuser" in text
    assert "owns audit_head, audit_index, audit_log, audit_subjects" in text
    assert "UPDATE/DELETE/TRUNCATE audit_log" in text


async def test_service_role_can_append_and_read_never_rewrite_or_escalate(
    admin: asyncpg.Connection, database_url: str
) -> None:
    await roles.make_service_login(admin, NAME, "s3cret")
    await roles.make_service_login(admin, NAME, None)  # again: an update, not an error
    conn = await asyncpg.connect(_as(database_url, NAME))
    try:
        assert await roles.check_login(conn) == []
        await conn.execute("SET ROLE tepat_service")  # what the app does on every connection
        for statement in ("UPDATE audit_log SET found_count = 0", "DELETE FROM audit_log",
                          "TRUNCATE audit_log", "UPDATE audit_head SET seq = 0 WHERE false",
                          "SET ROLE postgres"):  # fmt: skip
            if statement.startswith("UPDATE audit_head"):
                await conn.execute(statement)  # the writer moves the head: allowed
                continue
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(statement)
        await conn.execute("RESET ROLE")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("SET ROLE postgres")
    finally:
        await conn.close()
    member_of = await admin.fetch(
        "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
        "JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = $1",
        NAME,
    )
    assert [r["rolname"] for r in member_of] == ["tepat_service"]


async def test_service_role_refuses_names_that_would_keep_power(admin: asyncpg.Connection) -> None:
    current = await admin.fetchval("SELECT current_user")
    for bad in (current, "tepat_service", "Robert'); DROP TABLE x; --", "1abc"):
        with pytest.raises(ValueError, match=r"role name|group role|running this command"):
            await roles.make_service_login(admin, bad, None)


async def test_an_existing_group_membership_is_revoked(admin: asyncpg.Connection) -> None:
    await admin.execute(f"CREATE ROLE {NAME} LOGIN")
    await admin.execute(f"GRANT pg_read_all_data TO {NAME}")
    await roles.make_service_login(admin, NAME, None)
    groups = await admin.fetch(
        "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
        "JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = $1",
        NAME,
    )
    assert [r["rolname"] for r in groups] == ["tepat_service"]


async def test_production_start_refuses_a_superuser_and_dev_only_warns(
    settings: Settings, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    production = settings.model_copy(update={"env": "production"})
    with pytest.raises(roles.UnsafeLoginRole, match=r"is a superuser.*tepat db service-role"):
        await check_login_role(production, database_url)
    await check_login_role(settings, database_url)
    assert "production refuses to start so" in caplog.text


async def test_production_start_refuses_an_owner_login(
    settings: Settings, scratch: AsyncEngine, admin: asyncpg.Connection
) -> None:
    """A login that owns the audit tables (not a superuser) is refused too, and accepted once
    it is the service's role."""
    from app import migrate

    await migrate.run(scratch, "upgrade", "head")
    url = scratch.url.render_as_string(hide_password=False)
    await admin.execute(f"CREATE ROLE {NAME} LOGIN")
    raw = await asyncpg.connect(db.asyncpg_dsn(url))
    try:
        await raw.execute(f"GRANT USAGE ON SCHEMA public TO {NAME}")
        await raw.execute(f"ALTER TABLE audit_log OWNER TO {NAME}")
        production = settings.model_copy(update={"env": "production"})
        owner_url = db.sqlalchemy_url(url).set(username=NAME).render_as_string(hide_password=False)
        with pytest.raises(roles.UnsafeLoginRole, match=f"{NAME}' owns audit_log"):
            await check_login_role(production, owner_url)
        await raw.execute("ALTER TABLE audit_log OWNER TO CURRENT_USER")
        await roles.make_service_login(raw, NAME, None)
        await check_login_role(production, owner_url)  # no exception: accepted
    finally:
        await raw.execute(f"REVOKE ALL ON SCHEMA public FROM {NAME}")
        await raw.close()
