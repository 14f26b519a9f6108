"""The `tepat` command line: one module per command group, registered on the root `app` here.

common       run (one async action, clear errors), JsonOpt
db           tepat db upgrade|downgrade|service-role
snapshot     tepat snapshot import|list|show|verify|retire
rule_set     tepat rule-set load|list|show
eligibility  tepat eligibility explain|materialize|report
client       tepat client create|list|show|revoke|reinstate
audit        tepat audit verify|index|trail|keygen|checkpoint
receipt      tepat receipt verify
bulk         tepat bulk
changes      tepat changes list|report
generate     tepat generate
serve        tepat serve, tepat demo
worker       tepat worker (bulk jobs)

A run imports only the module of the command it runs (`main`): importing all of them (the web
faces, SQLAlchemy, the job queue) cost about a second at every start of `tepat snapshot import`
or `tepat eligibility materialize`. `tepat --help` and anything else not naming a command, and
`app` (the whole command line, for tests), import them all.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import typer

# name: (module under app.cli, attribute); commands first, then groups, in `tepat --help`'s order.
_COMMANDS = {
    "bulk": ("bulk", "bulk_command"),
    "generate": ("generate", "generate"),
    "serve": ("serve", "serve"),
    "demo": ("serve", "demo"),
    "worker": ("worker", "worker"),
}
_GROUPS = {
    "db": ("db", "db_app"),
    "snapshot": ("snapshot", "snapshot_app"),
    "rule-set": ("rule_set", "rule_set_app"),
    "eligibility": ("eligibility", "eligibility_app"),
    "changes": ("changes", "changes_app"),
    "client": ("client", "client_app"),
    "audit": ("audit", "audit_app"),
    "receipt": ("receipt", "receipt_app"),
}


def _attribute(module: str, name: str) -> Any:
    return getattr(importlib.import_module(f"app.cli.{module}"), name)


def build(only: str | None = None) -> typer.Typer:
    """The command line with every command, or with the one named `only` (the same command,
    options and help: it is registered the same way)."""
    root = typer.Typer(
        name="tepat",
        help="Tepat: eligibility lookup over immutable DTSEN snapshots.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
    )

    @root.callback()
    def _group() -> None:
        """Tepat: eligibility lookup over immutable DTSEN snapshots."""
        # A group even with one command registered (Typer would run a lone command directly).

    for name, (module, attribute) in _COMMANDS.items():
        if only in (None, name):
            root.command(name)(_attribute(module, attribute))
    for name, (module, attribute) in _GROUPS.items():
        if only in (None, name):
            root.add_typer(_attribute(module, attribute), name=name)
    return root


_app: typer.Typer | None = None


def __getattr__(name: str) -> Any:
    if name == "app":  # the whole command line, built once on first use
        global _app
        if _app is None:
            _app = build()
        return _app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    named = sys.argv[1] if len(sys.argv) > 1 else None
    build(named if named in _COMMANDS or named in _GROUPS else None)()


__all__ = ["app", "build", "main"]
