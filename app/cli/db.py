"""`tepat db ...`: the database schema."""

from __future__ import annotations

import typer
from rich.markup import escape

from app import db
from app.cli.common import run
from app.config import Settings
from app.console import err

db_app = typer.Typer(help="Database schema.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head")) -> None:
    """Migrate the database schema up to REVISION (default: the newest)."""
    from app import migrate

    async def go(settings: Settings) -> None:
        async with db.engine_scope(settings) as engine:
            await migrate.run(engine, "upgrade", revision)
            err.print(f"schema at {await migrate.current(engine)}")

    run(go)


@db_app.command("downgrade")
def db_downgrade(revision: str = typer.Argument(..., help="e.g. -1 or base")) -> None:
    """Migrate the schema down to REVISION."""
    from app import migrate

    async def go(settings: Settings) -> None:
        async with db.engine_scope(settings) as engine:
            await migrate.run(engine, "downgrade", revision)
            err.print(f"schema at {await migrate.current(engine)}")

    run(go)


@db_app.command("service-role")
def db_service_role(
    name: str = typer.Argument(..., help="The login role to create or update, e.g. tepat_api"),
    password_env: str | None = typer.Option(
        None,
        "--password-env",
        help="Set the role's password from this environment variable (never on the command line).",
    ),
) -> None:
    """Create or update the service's login role: LOGIN, a member of tepat_service only, unable
    to become the owner or a superuser. Run it as the database owner; the service then logs in
    as NAME (TEPAT_DATABASE_URL=postgresql://NAME@HOST/DB)."""
    import os

    from app.services import roles

    password = None
    if password_env is not None:
        password = os.environ.get(password_env)
        if not password:
            err.print(
                f"[red]error[/red]: the environment variable {password_env} is empty or unset"
            )
            raise typer.Exit(2)

    async def go(settings: Settings) -> None:
        conn = await db.connect_raw(settings)
        try:
            await roles.make_service_login(conn, name, password)
        finally:
            await conn.close()

    try:
        run(go)
    except ValueError as e:
        err.print(f"[red]error[/red]: {escape(str(e))}")
        raise typer.Exit(1) from None
    err.print(f"login role {name}: a member of tepat_service only; the service may log in as it")
