"""`tepat rule-set ...`: load, list and show rule sets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from app import db
from app.cli.common import JsonOpt, run
from app.config import Settings
from app.console import err, out, print_json

rule_set_app = typer.Typer(help="Rule sets: load, list, show.", no_args_is_help=True)


@rule_set_app.command("load")
def rule_set_load(
    files: Annotated[
        list[Path] | None, typer.Argument(help="TOML files; default: the shipped ones")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Store rule sets. An identical one is skipped; a changed file under a loaded id is refused."""
    from app.eligibility import shipped_rule_sets
    from app.services import rule_sets

    paths = files or shipped_rule_sets()

    async def go(settings: Settings) -> list[dict[str, Any]]:
        done = []
        async with db.engine_scope(settings) as engine, engine.begin() as conn:
            for path in paths:
                rule_set, new = await rule_sets.load_file(conn, path)
                done.append(
                    {
                        "id": rule_set.id,
                        "checksum": rule_set.checksum,
                        "loaded": new,
                        "file": str(path),
                    }
                )
        return done

    done = run(go)
    if as_json:
        print_json(done)
        return
    for d in done:
        verb = "[green]loaded[/green]" if d["loaded"] else "already loaded (identical):"
        err.print(f"{verb} {d['id']} {d['checksum']}")


@rule_set_app.command("list")
def rule_set_list(as_json: JsonOpt = False) -> None:
    """Loaded rule sets, latest effective date first."""
    from app.services import rule_sets

    async def go(settings: Settings) -> list[Any]:
        async with db.engine_scope(settings) as engine, engine.connect() as conn:
            return await rule_sets.list_rule_sets(conn)

    found = run(go)
    if as_json:
        print_json(
            [
                {
                    "id": r.id,
                    "effective_from": r.effective_from,
                    "title": r.title,
                    "checksum": r.checksum,
                }
                for r in found
            ]
        )
        return
    table = Table()
    for name in ("id", "effective from", "title", "checksum"):
        table.add_column(name)
    for r in found:
        table.add_row(r.id, str(r.effective_from), r.title, r.checksum)
    out.print(table)


@rule_set_app.command("show")
def rule_set_show(rule_set_id: str, as_json: JsonOpt = False) -> None:
    """One rule set's parameters."""
    from app.services import rule_sets

    async def go(settings: Settings) -> Any:
        async with db.engine_scope(settings) as engine, engine.connect() as conn:
            return await rule_sets.get_rule_set(conn, rule_set_id)

    r = run(go)
    data = {**r.model_dump(mode="json"), "checksum": r.checksum}
    if as_json:
        print_json(data)
    else:
        out.print_json(data=data)
