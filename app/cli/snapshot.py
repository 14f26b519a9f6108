"""`tepat snapshot ...`: import, list, show, verify and retire DTSEN snapshots."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from app import db
from app.cli.common import JsonOpt, run
from app.config import Settings
from app.console import err, out, print_json, row_progress

snapshot_app = typer.Typer(
    help="DTSEN snapshots: import, list, show, verify, retire.", no_args_is_help=True
)


@snapshot_app.command("import")
def snapshot_import(
    folder: Annotated[Path, typer.Argument(help="A release folder with manifest.json.")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate only; load nothing.")
    ] = False,
    decisions: Annotated[
        bool,
        typer.Option(help="After publishing, store the decisions under the rule set in force."),
    ] = True,
    jobs: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Processes that read, validate and COPY the files, each with its own connection "
            "(default: half the cores, at least 1: each keeps a core busy and its COPY another).",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Validate a release and publish it as a new, immutable snapshot."""
    from app.ingest.importer import default_jobs, import_release

    async def go(settings: Settings) -> dict[str, Any]:
        conn = await db.connect_raw(settings)
        try:
            with row_progress(not as_json) as progress:
                result = await import_release(
                    conn,
                    folder,
                    dry_run=dry_run,
                    progress=progress.update,
                    jobs=jobs or default_jobs(),
                    settings=settings,
                )
        finally:
            await conn.close()
        answer = result.to_dict()
        if result.published and decisions:
            from app.cli.eligibility import materialize_default
            from app.errors import NoRuleSetInForce

            try:
                answer["decisions"] = await materialize_default(
                    settings, result.release, None, quiet=as_json
                )
            except NoRuleSetInForce as e:
                answer["decisions"] = {"skipped": e.detail}
        return answer

    result = run(go)
    if as_json:
        print_json(result)
    else:
        _print_import(result)
    if not result["ok"]:
        raise typer.Exit(1)


def _print_import(result: dict[str, Any]) -> None:
    for kind, colour in (("errors", "red"), ("warnings", "yellow")):
        findings = result[kind]
        if not findings:
            continue
        table = Table(title=f"{kind} ({sum(f['count'] for f in findings):,})", title_justify="left")
        for name in ("rule", "count", "meaning", "first examples (file:line column value)"):
            table.add_column(name, overflow="fold")
        for f in findings:
            examples = "\n".join(
                " ".join(
                    str(part)
                    for part in (
                        e.get("file", "") + (f":{e['line']}" if e.get("line") else ""),
                        e.get("column"),
                        e.get("value"),
                        e.get("message"),
                    )
                    if part
                )
                for e in f["examples"]
            )
            table.add_row(
                f"[{colour}]{f['rule']}[/{colour}]", f"{f['count']:,}", f["description"], examples
            )
        err.print(table)
    counts = ", ".join(f"{k}: {v:,}" for k, v in result["counts"].items())
    rate = f", {result['rows_per_second']:,} rows/s" if result.get("rows_per_second") else ""
    if result["published"]:
        err.print(
            f"[green]published[/green] snapshot {result['release']} ({counts}) in "
            f"{result['seconds']} s{rate}\nchecksum {result['checksum']}"
        )
        decided = result.get("decisions") or {}
        if "skipped" in decided:
            err.print(f"decisions not stored: {decided['skipped']}")
        elif decided:
            err.print(
                f"stored the decisions under {decided['rule_set']} "
                f"({decided['people']:,} people) in {decided['seconds']} s"
            )
    elif result["ok"]:
        err.print(f"[green]valid[/green] (dry run, nothing loaded): {result['release']} ({counts})")
    else:
        err.print(
            f"[red]refused[/red]: release {result['release']} was not loaded; nothing is visible."
        )


def _snapshot_table(snaps: list[Any]) -> Table:
    # Fits 80 columns; the label and checksum are in `snapshot show` and `--json`.
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("id", "cut-off", "status", "families", "people", "published"):
        table.add_column(
            name, no_wrap=True, justify="right" if name in ("families", "people") else "left"
        )
    for s in snaps:
        table.add_row(
            s.id,
            str(s.cutoff_date),
            s.status,
            f"{s.family_count:,}",
            f"{s.people_count:,}",
            str(s.published_at or "")[:16],
        )
    return table


@snapshot_app.command("list")
def snapshot_list(as_json: JsonOpt = False) -> None:
    """Loaded snapshots, newest cut-off first (including imports still loading)."""
    from app.services import snapshots as svc

    async def go(settings: Settings) -> list[Any]:
        async with db.engine_scope(settings) as engine, engine.connect() as conn:
            return await svc.list_snapshots(conn, include_loading=True)

    snaps = run(go)
    if as_json:
        print_json([s.model_dump(mode="json") for s in snaps])
    else:
        out.print(_snapshot_table(snaps))


@snapshot_app.command("show")
def snapshot_show(snapshot_id: str, as_json: JsonOpt = False) -> None:
    """One snapshot's metadata."""
    from app.services import snapshots as svc

    async def go(settings: Settings) -> Any:
        async with db.engine_scope(settings) as engine, engine.connect() as conn:
            return await svc.get_snapshot(conn, snapshot_id)

    snap = run(go)
    if as_json:
        print_json(snap.model_dump(mode="json"))
    else:
        for k, v in snap.model_dump().items():
            out.print(f"[bold]{k:>14}[/bold]  {v}")


@snapshot_app.command("verify")
def snapshot_verify(snapshot_id: str, as_json: JsonOpt = False) -> None:
    """Recompute the checksum from the stored rows and compare it with the published one."""
    from app.ingest.verify import verify_snapshot
    from app.services import snapshots as svc

    async def go(settings: Settings) -> tuple[Any, bool, str]:
        async with db.engine_scope(settings) as engine, engine.connect() as conn:
            snap = await svc.get_snapshot(conn, snapshot_id)
        raw = await db.connect_raw(settings)
        try:
            ok, recomputed = await verify_snapshot(raw, snap)
        finally:
            await raw.close()
        return snap, ok, recomputed

    snap, ok, recomputed = run(go)
    if as_json:
        print_json(
            {"snapshot": snap.id, "ok": ok, "stored": snap.checksum, "recomputed": recomputed}
        )
    elif ok:
        out.print(f"[green]ok[/green] {snap.id}: {recomputed}")
    else:
        out.print(f"[red]MISMATCH[/red] {snap.id}: stored {snap.checksum}, rows give {recomputed}")
    if not ok:
        raise typer.Exit(1)


@snapshot_app.command("retire")
def snapshot_retire(snapshot_id: str, as_json: JsonOpt = False) -> None:
    """Stop serving a snapshot (its rows are kept for audit and reproduction)."""
    from app.services import snapshots as svc

    async def go(settings: Settings) -> Any:
        async with db.engine_scope(settings) as engine, engine.begin() as conn:
            return await svc.retire(conn, snapshot_id)

    snap = run(go)
    if as_json:
        print_json(snap.model_dump(mode="json"))
    else:
        out.print(f"retired {snap.id} at {snap.retired_at}")
