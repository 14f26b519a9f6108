"""`tepat changes list|report`: who gained and lost eligibility between two releases.

`list` writes the change list (NDJSON as `POST /v1/changes` answers it, or CSV for a BPJS
mutation job), audited chunk by chunk as the operator (like `tepat bulk`); `report` prints
counts only, no personal data.
"""

from __future__ import annotations

import contextlib
import secrets
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, BinaryIO

import asyncpg
import orjson
import typer
from rich.markup import escape
from rich.table import Table

from app import db
from app.cli.bulk import OPERATOR, PURPOSE
from app.cli.common import JsonOpt, run
from app.config import Settings
from app.console import err, out, print_json, row_progress
from app.services import changes
from app.services.audit import AuditWriter, running
from app.services.lookup import Caller

changes_app = typer.Typer(help="Change lists between two releases (who gained, who lost, why).")

CSV_COLUMNS = changes.CSV_COLUMNS

FromOpt = Annotated[str, typer.Option("--from", help="The earlier release (snapshot id).")]
ToOpt = Annotated[str, typer.Option("--to", help="The later release (snapshot id).")]
RuleSetOpt = Annotated[
    str | None,
    typer.Option("--rule-set", help="Judge both under this rule set. Default: each's in force."),
]
ProgramOpt = Annotated[
    list[str] | None,
    typer.Option("--program", help="Only this program (repeat or comma-separate). Default: all."),
]


def _split(values: list[str] | None) -> list[str] | None:
    return [p.strip() for v in values or () for p in v.split(",") if p.strip()] or None


def _caller() -> Caller:
    return Caller(OPERATOR, PURPOSE, "cli-" + secrets.token_hex(6))


def _connect(settings: Settings) -> changes.Connect:
    @contextlib.asynccontextmanager
    async def connect() -> AsyncIterator[asyncpg.Connection]:
        conn = await db.connect_raw(settings)
        try:
            yield conn
        finally:
            await conn.close()

    return connect


@changes_app.command("list")
def list_cmd(
    from_snapshot: FromOpt,
    to_snapshot: ToOpt,
    out_file: Annotated[Path, typer.Option("--out", "-o", help="The file to write ('-': stdout).")],
    program: ProgramOpt = None,
    kinds: Annotated[
        list[str] | None,
        typer.Option(
            "--kind", help="gained, lost, benefit_changed, level_changed (repeat). Default: all."
        ),
    ] = None,
    kode_wilayah: Annotated[
        str | None, typer.Option("--kode-wilayah", help="Only this region prefix (2-10 digits).")
    ] = None,
    rule_set: RuleSetOpt = None,
    fmt: Annotated[str, typer.Option("--format", help="ndjson or csv")] = "ndjson",
    as_json: JsonOpt = False,
) -> None:
    """Write the change list: NDJSON (a line a person, then the summary) or CSV (a row a person
    and change: nik, program, change, reasons, effective_date = the `to` release's cut-off)."""
    if fmt not in ("ndjson", "csv"):
        raise typer.BadParameter("must be ndjson or csv", param_hint="--format")
    asked = changes.Asked(
        from_snapshot, to_snapshot, rule_set, _split(program), _split(kinds), kode_wilayah
    )

    async def go(settings: Settings) -> dict[str, Any]:
        caller = _caller()
        key = settings.audit_hmac_key.get_secret_value().encode()
        async with db.engine_scope(settings) as engine, running(AuditWriter(engine, key)) as audit:
            listed = await changes.open_changes(engine, audit, caller, asked, _connect(settings))
            effective = listed.plan.after.snapshot.cutoff_date.isoformat()
            to_stdout = str(out_file) == "-"
            sink: BinaryIO = sys.stdout.buffer if to_stdout else out_file.open("wb")
            last = b""
            try:
                if fmt == "csv":
                    sink.write((",".join(CSV_COLUMNS) + "\n").encode())
                with row_progress(not to_stdout) as bar:
                    async for chunk in listed.stream():
                        if chunk.startswith((b'{"summary"', b'{"error"')):
                            last = chunk
                            if fmt == "ndjson":
                                sink.write(chunk)
                            break
                        sink.write(
                            changes.csv_rows(chunk, effective).encode() if fmt == "csv" else chunk
                        )
                        bar.update("people", listed.tally.listed)
            finally:
                if not to_stdout:
                    sink.close()
        tail: dict[str, Any] = orjson.loads(last) if last else {}
        return tail

    tail = run(go)
    summary = tail.get("summary")
    if as_json:
        print_json(tail)
    elif summary is not None:
        status = summary["status"]
        err.print(
            f"{summary['listed']:,} people listed ({status['stayed']:,} stayed, "
            f"{status['entered']:,} entered, {status['left']:,} left): "
            f"{summary['from']['snapshot']['id']} -> {summary['to']['snapshot']['id']}; "
            f"{len(summary['audit_ids']):,} audit records"
        )
    if summary is None:
        message = str(tail.get("error", {}).get("message", "the list ended early"))
        err.print(f"[red]stopped:[/red] {escape(message)}")
        raise typer.Exit(1)


@changes_app.command("report")
def report_cmd(
    from_snapshot: FromOpt,
    to_snapshot: ToOpt,
    by: Annotated[str, typer.Option(help="province or regency")] = "province",
    program: ProgramOpt = None,
    rule_set: RuleSetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Counts only (no personal data): gained, lost and net per program and region, the regions
    with the largest relative drops (net / eligible before) first."""
    if by not in ("province", "regency"):
        raise typer.BadParameter("must be province or regency", param_hint="--by")
    asked = changes.Asked(from_snapshot, to_snapshot, rule_set, _split(program))

    async def go(settings: Settings) -> dict[str, Any]:
        async with db.engine_scope(settings) as engine:
            plan = await changes.plan(engine, _caller(), asked)
            async with _connect(settings)() as conn:
                return await changes.report(conn, plan, by)

    answer = run(go)
    if as_json:
        print_json(answer)
        return
    out.print(
        f"[bold]{answer['from']['snapshot']['id']}[/bold] -> "
        f"[bold]{answer['to']['snapshot']['id']}[/bold] (people; a family program counts each "
        "member); largest relative drop first"
    )
    table = Table()
    for name in ("region", "program", "eligible before", "gained", "lost", "net", "net %"):
        table.add_column(name, justify="left" if name in ("region", "program") else "right")
    for r in answer["rows"]:
        pct = "" if r["relative"] is None else f"{r['relative'] * 100:+.2f} %"
        table.add_row(
            f"{r['region']} {r['name'] or ''}",
            r["program"],
            f"{r['eligible_before']:,}",
            f"{r['gained']:,}",
            f"{r['lost']:,}",
            f"{r['net']:+,}",
            pct,
        )
    out.print(table)
