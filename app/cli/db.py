"""`tepat db ...`: the database schema."""

from __future__ import annotations

import typer

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
