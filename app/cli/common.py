"""Shared pieces of the CLI's command modules."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, TypeVar

import typer
from rich.markup import escape

from app import embedded
from app.config import Settings, get_settings
from app.console import err
from app.errors import TepatError

T = TypeVar("T")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON document for machines.")]


def run(fn: Callable[[Settings], Coroutine[Any, Any, T]]) -> T:
    """Run one async CLI action; domain errors become a clear message and exit code 1."""
    settings = get_settings()
    # Stop only an embedded server this action starts, never one its caller (a test) holds.
    had_server = embedded.owns_server()
    try:
        return asyncio.run(fn(settings))
    except TepatError as e:
        err.print(f"[red]error:[/red] {escape(str(e.detail))}")
        raise typer.Exit(1) from None
    except Exception as e:
        from app import resilience  # here: it imports SQLAlchemy, which most commands never use

        if not resilience.is_unmigrated(e):
            raise
        err.print(
            "[red]error:[/red] the database's schema is behind this version of tepat "
            "(a table or column is missing): run `tepat db upgrade`"
        )
        raise typer.Exit(1) from None
    finally:
        if not had_server:
            embedded.stop()
