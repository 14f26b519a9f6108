"""`tepat audit ...`: verify the chain, index it, list accesses to one person or family."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from app import db
from app.cli.common import JsonOpt, run
from app.config import Settings
from app.console import out, print_json, row_progress
from app.identifiers import IdentifierError, check_no_kk, parse_nik

audit_app = typer.Typer(
    help="The audit trail: verify the chain, index it, list accesses to one person or family.",
    no_args_is_help=True,
)


@audit_app.command("verify")
def audit_verify(as_json: JsonOpt = False) -> None:
    """Walk the whole hash chain; exit 1 naming the first altered, deleted, inserted or moved record."""
    from app.services import audit as svc

    async def go(settings: Settings) -> Any:
        async with db.engine_scope(settings) as engine, engine.connect() as conn:
            # One consistent view of head and records, however long the walk takes.
            await conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            await conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
            return await svc.verify_chain(conn)

    result = run(go)
    if as_json:
        print_json(result.model_dump(mode="json"))
    elif result.ok:
        out.print(
            f"[green]ok[/green] {result.checked:,} records; head seq {result.head_seq} "
            f"hash {result.head_hash}"
        )
    else:
        out.print(
            f"[red]BROKEN[/red] at seq {result.seq} (audit id {result.audit_id or '-'}): "
            f"{result.problem}: {result.reason} ({result.checked:,} records before it are intact)"
        )
    if not result.ok:
        raise typer.Exit(1)


@audit_app.command("index")
def audit_index(
    batch: Annotated[
        int, typer.Option("--batch", min=1, help="Records indexed per transaction.")
    ] = 2_000,
    as_json: JsonOpt = False,
) -> None:
    """Index new audit records by subject, for fast trails; run it from cron (a trail is complete
    without it, but scans every record written since the last run)."""
    from app.repositories import audit as repo
    from app.services import audit as svc

    async def go(settings: Settings) -> Any:
        async with db.engine_scope(settings) as engine:
            async with engine.connect() as conn:
                upto, head = await repo.index_lag(conn)
            with row_progress(not as_json) as progress:
                done = 0

                def tick(n: int) -> None:
                    nonlocal done
                    done += n
                    progress.update("records", done, max(head - upto, done))

                return await svc.index_subjects(engine, batch=batch, progress=tick)

    result = run(go)
    if as_json:
        print_json(
            {
                "records": result.records,
                "entries": result.entries,
                "indexed_upto": result.indexed_upto,
                "head": result.head,
            }
        )
        return
    out.print(
        f"[green]ok[/green] indexed {result.records:,} records ({result.entries:,} subject "
        f"entries); indexed up to seq {result.indexed_upto:,} of {result.head:,}"
    )


@audit_app.command("trail")
def audit_trail(
    nik: Annotated[str | None, typer.Option("--nik", help="A person's NIK.")] = None,
    no_kk: Annotated[str | None, typer.Option("--no-kk", help="A family's No. KK.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Every recorded access to one person or family (a data-subject request, UU 27/2022 art. 32)."""
    from app.services import audit as svc

    if (nik is None) == (no_kk is None):
        raise typer.BadParameter("give exactly one of --nik or --no-kk")
    try:
        if nik is not None:
            parse_nik(nik)
            subject = svc.nik_subject(nik)
        else:
            assert no_kk is not None
            check_no_kk(no_kk)
            subject = svc.no_kk_subject(no_kk)
    except IdentifierError as e:  # the message names no digits
        raise typer.BadParameter(str(e), param_hint="--nik" if nik else "--no-kk") from None

    async def go(settings: Settings) -> list[Any]:
        key = settings.audit_hmac_key.get_secret_value().encode()
        async with db.engine_scope(settings) as engine, engine.connect() as conn:
            return await svc.trail(conn, key, subject)

    entries = run(go)
    if as_json:
        print_json([entry.model_dump(mode="json") for entry in entries])
        return
    table = Table(title=f"{len(entries)} recorded accesses", title_justify="left")
    for name in ("at (UTC)", "client", "purpose", "operation", "snapshot", "rule set", "audit id"):
        table.add_column(name, overflow="fold")
    for entry in entries:
        table.add_row(
            str(entry.at)[:19],
            f"{entry.client_name or '?'} ({entry.client_id})",
            entry.purpose,
            entry.operation,
            entry.snapshot_id or "",
            entry.rule_set_id or "",
            entry.audit_id,
        )
    out.print(table)
