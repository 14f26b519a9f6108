"""`tepat eligibility ...`: explain decisions, store them, report on targeting."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.panel import Panel
from rich.table import Table

from app import db
from app.cli.common import JsonOpt, run
from app.config import Settings
from app.console import err, out, print_json
from app.eligibility import PROGRAM_ORDER
from app.identifiers import IdentifierError, check_no_kk, parse_nik

eligibility_app = typer.Typer(
    help="Decisions: explain one person or family; targeting report.", no_args_is_help=True
)


@eligibility_app.command("explain")
def explain(
    nik: Annotated[str | None, typer.Option(help="A person's NIK")] = None,
    no_kk: Annotated[str | None, typer.Option("--no-kk", help="A family's No. KK")] = None,
    snapshot: Annotated[str | None, typer.Option(help="Default: the current snapshot")] = None,
    rule_set: Annotated[str | None, typer.Option("--rule-set", help="Default: in force")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Every decision for one person or family, with every criterion (observed vs required)."""
    from app.services import eligibility, pinning

    if (nik is None) == (no_kk is None):
        raise typer.BadParameter("give exactly one of --nik or --no-kk")
    try:
        if nik is not None:
            parse_nik(nik)
        else:
            check_no_kk(no_kk or "")
    except IdentifierError as e:
        raise typer.BadParameter(str(e), param_hint="--nik" if nik else "--no-kk") from None
    view = eligibility.View(PROGRAM_ORDER, eligibility.ALL_GROUPS, explain=True)

    async def go(settings: Settings) -> dict[str, Any]:
        async with db.engine_scope(settings) as engine, db.read_connection(engine) as conn:
            pinned = await pinning.pin(conn, snapshot, rule_set)
            if nik is not None:
                results, _ = await eligibility.people_live(
                    conn, pinned.snapshot, pinned.rule_set, [nik], view
                )
            else:
                results, _ = await eligibility.families_live(
                    conn, pinned.snapshot, pinned.rule_set, [no_kk or ""], view
                )
        return {"meta": pinned.meta(), "result": results[0]}

    answer = run(go)
    if as_json:
        print_json(answer)
    else:
        _print_explain(answer)
    if not answer["result"]["found"]:
        raise typer.Exit(3)


def _fmt(value: Any) -> str:
    if isinstance(value, list) and len(value) == 2:
        lo, hi = value
        return f">= {lo}" if hi is None else f"{lo}..{hi}"
    if value is None:
        return "-"
    return str(value)


def _print_explain(answer: dict[str, Any]) -> None:
    meta, result = answer["meta"], answer["result"]
    out.print(
        f"snapshot [bold]{meta['snapshot']['id']}[/bold] ({meta['snapshot']['checksum'][:19]}…), "
        f"rule set [bold]{meta['rule_set']['id']}[/bold], evaluated on {meta['evaluation_date']}"
    )
    subject = result.get("nik") or result.get("no_kk")
    if not result["found"]:
        out.print(f"[yellow]not found[/yellow] in this snapshot: {subject}")
        return
    if "identity" in result:
        ident = result["identity"]
        out.print(f"[bold]{ident['name']}[/bold] born {ident['birth_date']}")
    fam = result.get("family") or {}
    out.print(
        f"decile {result.get('decile') or 'unranked'}; family {fam.get('no_kk', result.get('no_kk'))} "
        f"region {fam.get('kode_wilayah', result.get('kode_wilayah'))}"
    )
    decisions = list(result.get("decisions", []))
    decisions.extend(
        {**d, "_who": f"{member['nik']} (rel. {member['relationship']})"}
        for member in result.get("members", [])
        for d in member.get("decisions", [])
    )
    for d in decisions:
        verdict = "[green]ELIGIBLE[/green]" if d["eligible"] else "[red]not eligible[/red]"
        who = f" — {d['_who']}" if "_who" in d else ""
        extra = []
        if d.get("benefit"):
            extra.append(", ".join(f"{k} {v:,}" for k, v in d["benefit"].items()))
        if d.get("level"):
            extra.append(f"level {d['level']}, priority {d['priority']}")
        if "recipient" in d:
            extra.append("recipient now" if d["recipient"] else "not a recipient now")
        table = Table(show_header=True, box=None, pad_edge=False)
        for name in ("criterion", "observed", "required", ""):
            table.add_column(name)
        for c in d.get("criteria", []):
            mark = "[green]pass[/green]" if c["passed"] else "[red]FAIL[/red]"
            table.add_row(c["id"], _fmt(c.get("observed")), _fmt(c["required"]), mark)
        for comp in d.get("components", []) or []:
            why = "taken" if comp["taken"] else f"left out: {comp['reason']}"
            table.add_row(
                f"  {comp['component']}", comp["nik"], f"{comp['yearly_rupiah']:,}/yr", why
            )
        out.print(
            Panel(
                table,
                title=f"{d['program']} ({d['unit']}){who}: {verdict}",
                subtitle="; ".join(extra) or None,
                title_align="left",
            )
        )


async def materialize_default(
    settings: Settings,
    snapshot_id: str | None,
    rule_set_id: str | None,
    *,
    quiet: bool = False,
    jobs: int | None = None,
) -> dict[str, Any]:
    """Store the decisions of a snapshot (default: current) under a rule set (default: in force)."""
    from app.console import row_progress
    from app.services import materialize, pinning

    async with db.engine_scope(settings) as engine, engine.connect() as conn:
        pinned = await pinning.pin(conn, snapshot_id, rule_set_id)
    with row_progress(not quiet) as progress:
        done = 0

        def tick(n: int) -> None:
            nonlocal done
            done += n
            progress.update("decisions", done, pinned.snapshot.people_count)

        result = await materialize.materialize_jobs(
            settings, pinned.snapshot, pinned.rule_set, jobs=jobs, progress=tick
        )
    return {
        "snapshot": result.snapshot,
        "rule_set": result.rule_set,
        "people": result.people,
        "families": result.families,
        "seconds": round(result.seconds, 2),
        "created": result.created,
    }


@eligibility_app.command("materialize")
def materialize_cmd(
    snapshot: Annotated[str | None, typer.Option(help="Default: the current snapshot")] = None,
    rule_set: Annotated[str | None, typer.Option("--rule-set", help="Default: in force")] = None,
    jobs: Annotated[
        int | None,
        typer.Option(min=1, help="Ranges of No. KK decided at once (default: the number of cores)"),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Compute and store every decision of a snapshot under a rule set (once; idempotent)."""

    async def go(settings: Settings) -> dict[str, Any]:
        return await materialize_default(settings, snapshot, rule_set, quiet=as_json, jobs=jobs)

    result = run(go)
    if as_json:
        print_json(result)
    elif result["created"]:
        err.print(
            f"stored the decisions of {result['people']:,} people in {result['families']:,} "
            f"families ({result['snapshot']} x {result['rule_set']}) in {result['seconds']} s"
        )
    else:
        err.print(f"already stored: {result['snapshot']} x {result['rule_set']}")


@eligibility_app.command("report")
def report_cmd(
    snapshot: Annotated[str | None, typer.Option(help="Default: the current snapshot")] = None,
    rule_set: Annotated[str | None, typer.Option("--rule-set", help="Default: in force")] = None,
    by: Annotated[str, typer.Option(help="national, province or regency")] = "national",
    as_json: JsonOpt = False,
) -> None:
    """Targeting: who meets each program's criteria, who receives it, inclusion/exclusion errors."""
    from app.services import pinning, report

    if by not in ("national", "province", "regency"):
        raise typer.BadParameter("must be national, province or regency", param_hint="--by")

    async def go(settings: Settings) -> dict[str, Any]:
        async with db.engine_scope(settings) as engine, db.read_connection(engine) as conn:
            pinned = await pinning.pin(conn, snapshot, rule_set)
            return await report.targeting_report(conn, pinned, by)  # type: ignore[arg-type]

    answer = run(go)
    if as_json:
        print_json(answer)
        return
    meta = answer["meta"]
    out.print(
        f"snapshot [bold]{meta['snapshot']['id']}[/bold], rule set "
        f"[bold]{meta['rule_set']['id']}[/bold], evaluated on {meta['evaluation_date']}"
    )
    rows = [("Indonesia", answer["national"])]
    rows += [(f"{r['code']} {r['name'] or ''}", r) for r in answer["regions"]]
    table = Table()
    for name in (
        "region",
        "program",
        "meets criteria",
        "recipients",
        "both",
        "inclusion error",
        "exclusion error",
    ):
        table.add_column(name, justify="right" if name != "region" else "left")
    for label, data in rows:
        for program, p in data["programs"].items():
            if "recipients" in p:
                table.add_row(
                    label,
                    program,
                    f"{p['eligible']:,}",
                    f"{p['recipients']:,}",
                    f"{p['eligible_and_recipient']:,}",
                    f"{p['inclusion_error']:,} ({_pct(p['inclusion_error_rate'])})",
                    f"{p['exclusion_error']:,} ({_pct(p['exclusion_error_rate'])})",
                )
            else:
                table.add_row(label, program, f"{p['eligible']:,}", "-", "-", "-", "-")
            label = ""
    out.print(table)


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.1%}"
