"""`tepat audit ...`: verify the chain, index it, list accesses to one person or family."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from app import db
from app.cli.common import JsonOpt, run
from app.config import Settings, get_settings
from app.console import err, out, print_json, row_progress
from app.identifiers import IdentifierError, check_no_kk, parse_nik

audit_app = typer.Typer(
    help="The audit trail: verify the chain, index it, list accesses to one person or family.",
    no_args_is_help=True,
)


@audit_app.command("verify")
def audit_verify(
    checkpoints: Annotated[
        Path | None,
        typer.Option(
            "--checkpoints",
            help="Also hold the records to every signed checkpoint in this folder "
            "(docs/audit.md): catches a rewrite made after a checkpoint was published.",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Walk the whole hash chain; exit 1 naming the first altered, deleted, inserted or moved
    record. With --checkpoints, exit 1 naming the first checkpoint the records contradict."""
    from app.services import audit as svc
    from app.services import transparency

    settings = get_settings()
    published: list[transparency.Published] = []
    if checkpoints is not None:
        try:
            opener = transparency.opener(settings.audit_log_origin, _public_keys(settings))
            published = transparency.read_published(checkpoints, opener)
        except (OSError, ValueError) as e:
            err.print(f"[red]BROKEN[/red] checkpoint: {escape(str(e))}")
            raise typer.Exit(1) from None

    async def go(settings: Settings) -> Any:
        async with db.engine_scope(settings) as engine, engine.connect() as conn:
            # One consistent view of head and records, however long the walk takes.
            await conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            await conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
            chain = await svc.verify_chain(conn)
        verdict = None
        if checkpoints is not None:
            raw = await db.connect_raw(settings)
            try:
                verdict = await transparency.verify_against(raw, published)
            finally:
                await raw.close()
        return chain, verdict

    result, verdict = run(go)
    ok = result.ok and (verdict is None or verdict.ok)
    if as_json:
        doc = result.model_dump(mode="json")
        if verdict is not None:
            c = verdict.contradiction
            doc["checkpoints"] = {
                "checked": [str(p) for p in verdict.checked],
                "contradicted": None
                if c is None
                else {
                    "checkpoint": str(c.checkpoint),
                    "reason": c.reason,
                    "first_record": c.first_record,
                    "between": c.between,
                },
            }
        print_json(doc)
        if not ok:
            raise typer.Exit(1)
        return
    if result.ok:
        out.print(
            f"[green]ok[/green] {result.checked:,} records; head seq {result.head_seq} "
            f"hash {result.head_hash}"
        )
    else:
        out.print(
            f"[red]BROKEN[/red] at seq {result.seq} (audit id {result.audit_id or '-'}): "
            f"{result.problem}: {result.reason} ({result.checked:,} records before it are intact)"
        )
    if verdict is not None:
        c = verdict.contradiction
        if c is None:
            out.print(f"[green]ok[/green] {len(verdict.checked)} checkpoint(s) hold")
        else:
            where = (
                f"first differing record: seq {c.first_record}"
                if c.first_record is not None
                else f"the differing record is after seq {c.between[0] if c.between else 0}"
                f" and at most seq {c.between[1] if c.between else 0}"
            )
            out.print(
                f"[red]CONTRADICTED[/red] checkpoint {escape(str(c.checkpoint))}: "
                f"{escape(c.reason)}; {where}"
            )
    if not ok:
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
        async with db.engine_scope(settings) as engine, engine.connect() as conn:
            return await svc.trail(conn, svc.subject_keys(settings), subject)

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


@audit_app.command("keygen")
def audit_keygen(
    out_file: Annotated[
        Path, typer.Option("--out", help="Where to write the private key (PKCS#8 PEM, 0600).")
    ],
) -> None:
    """Make an Ed25519 key for receipts and checkpoints; print its public JWK. Point
    TEPAT_AUDIT_SIGNING_KEY at the file; keep it off the database servers."""
    from app.services import receipts

    try:
        key = receipts.generate(out_file)
    except FileExistsError:
        err.print(f"[red]error:[/red] {escape(str(out_file))} exists; a key is never overwritten")
        raise typer.Exit(1) from None
    except OSError as e:
        err.print(f"[red]error:[/red] cannot write {escape(str(out_file))}: {escape(str(e))}")
        raise typer.Exit(1) from None
    print_json(key.public_jwk())
    err.print(f"private key written to {escape(str(out_file))} (mode 0600); kid {key.kid}")


def _signing(settings: Settings) -> Any:
    from app.services import receipts

    if settings.audit_signing_key is not None:
        return receipts.load(settings.audit_signing_key)
    return receipts.dev_key(settings.data_dir)


def _public_keys(settings: Settings) -> list[bytes]:
    """The raw Ed25519 public keys checkpoints may be signed with: current and retired."""
    from app.services import receipts

    ring = receipts.Keyring(_signing(settings), receipts.retired_keys(settings.audit_public_keys))
    return receipts.ed25519_public_keys(ring.document)


@audit_app.command("checkpoint")
def audit_checkpoint(
    out_dir: Annotated[
        Path,
        typer.Option(
            "--out",
            help="The folder checkpoints are published in (DIR/<size>), somewhere the "
            "database's administrators cannot write.",
        ),
    ],
    as_json: JsonOpt = False,
) -> None:
    """Extend the audit log's Merkle tree to the last record and publish a signed checkpoint
    (C2SP tlog-checkpoint). Run it from cron every few minutes (docs/audit.md)."""
    import time

    from app.services import transparency
    from app.tlog import note

    settings = get_settings()
    key = _signing(settings)
    started = time.perf_counter()

    async def go(settings: Settings) -> Any:
        conn = await db.connect_raw(settings)
        try:
            return await transparency.make_checkpoint(
                conn, settings.audit_log_origin, key.private, out_dir
            )
        finally:
            await conn.close()

    try:
        made = run(go)
    except (ValueError, transparency.Gap, transparency.CheckpointConflict) as e:
        err.print(f"[red]error:[/red] {escape(str(e))}")
        raise typer.Exit(1) from None
    seconds = time.perf_counter() - started
    verifier = note.verifier_key(settings.audit_log_origin, key.private.public_key())
    if as_json:
        print_json(
            {
                "size": made.size,
                "root": transparency.b64(made.root),
                "path": str(made.path),
                "new": made.new,
                "verifier_key": verifier,
                "seconds": round(seconds, 3),
            }
        )
        return
    state = "published" if made.new else "already published"
    out.print(
        f"[green]ok[/green] checkpoint of {made.size:,} records {state} at "
        f"{escape(str(made.path))} ({seconds:.2f} s); root {transparency.b64(made.root)}"
    )
