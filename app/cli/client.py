"""`tepat client ...`: API clients, for operators."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from app import db
from app.cli.common import JsonOpt, run
from app.config import Settings
from app.console import err, out, print_json

client_app = typer.Typer(
    help="API clients (consumer systems): create, list, show, revoke, reinstate.",
    no_args_is_help=True,
)


def _split(values: str) -> list[str]:
    return [v.strip() for v in values.split(",") if v.strip()]


def _jwks_file(path: Path) -> Any:
    """The JSON document in `path` (app.services.clients checks it is a public JWKS)."""
    try:
        return orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as e:
        raise typer.BadParameter(
            f"cannot read a JWKS from {path}: {e}", param_hint="--jwks"
        ) from None


def _client_table(clients: list[Any]) -> Table:
    table = Table()
    for name in (
        "id",
        "name",
        "programs",
        "fields",
        "purposes",
        "key",
        "created",
        "expires",
        "state",
    ):
        table.add_column(name, overflow="fold")
    now = dt.datetime.now(dt.UTC)
    for c in clients:
        if c.revoked_at:
            state = "[red]revoked[/red]"
        elif c.suspended_at:
            state = "[red]suspended[/red]"
        elif c.expires_at and c.expires_at <= now:
            state = "[yellow]expired[/yellow]"
        else:
            state = "[green]active[/green]"
        table.add_row(
            c.id,
            c.name,
            ",".join(c.programs),
            ",".join(c.field_groups),
            ",".join(c.purposes),
            c.key_prefix + "…",
            str(c.created_at)[:19],
            str(c.expires_at or "")[:19],
            state,
        )
    return table


@client_app.command("create")
def client_create(
    name: Annotated[str, typer.Argument(help="The consumer system, e.g. 'Kemenkes SISRUTE'.")],
    programs: Annotated[
        str, typer.Option(help="Programs whose decisions it may see, e.g. PKH,BPNT,PBI_JK.")
    ],
    fields: Annotated[
        str,
        typer.Option(help="Field groups: decision,decile,membership,identity,attributes,health."),
    ],
    purpose: Annotated[
        list[str],
        typer.Option("--purpose", help="A purpose code it may state (repeat for several)."),
    ],
    expires: Annotated[
        dt.datetime | None,
        typer.Option(formats=["%Y-%m-%d"], help="Key stops working at 00:00 UTC on this day."),
    ] = None,
    bulk: Annotated[
        bool, typer.Option("--bulk", help="May call /v1/bulk/eligibility (off by default).")
    ] = False,
    daily_quota: Annotated[
        int | None,
        typer.Option(
            "--daily-quota",
            min=0,
            help="NIKs a day (WIB), 0 for none. Default: TEPAT_DAILY_QUOTA, or "
            "TEPAT_DAILY_QUOTA_BULK with --bulk.",
        ),
    ] = None,
    callback_url_prefix: Annotated[
        str | None,
        typer.Option(
            "--callback-url-prefix",
            help="Where its DCI callbacks may be sent (an http(s) URL; a sender_uri outside "
            "it is refused). Default: none may be.",
        ),
    ] = None,
    jwks: Annotated[
        Path | None,
        typer.Option(
            "--jwks",
            exists=True,
            dir_okay=False,
            help="A JWKS file of its public keys (no private keys): its OAuth2 client "
            "assertions (private_key_jwt, docs/oauth2.md) and its signed DCI messages are "
            "verified with them. Default: none.",
        ),
    ] = None,
    require_signatures: Annotated[
        bool,
        typer.Option(
            "--require-signatures",
            help="Refuse its DCI requests that are not signed (needs --jwks).",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Register a client and print its API key, which is shown this once and never again."""
    from app.services import clients as svc

    expires_at = expires.replace(tzinfo=dt.UTC) if expires else None
    jwks_document = _jwks_file(jwks) if jwks is not None else None

    async def go(settings: Settings) -> tuple[Any, str]:
        async with db.engine_scope(settings) as engine, engine.begin() as conn:
            return await svc.create_client(
                conn,
                name=name,
                programs=_split(programs),
                field_groups=_split(fields),
                purposes=purpose,
                expires_at=expires_at,
                bulk=bulk,
                daily_quota=daily_quota,
                callback_url_prefix=callback_url_prefix,
                jwks=jwks_document,
                signatures_required=require_signatures,
            )

    info, key = run(go)
    warning = "This key is shown only now. Store it in the client's secret store; it cannot be shown again."
    if as_json:
        print_json({"client": info.model_dump(mode="json"), "key": key, "warning": warning})
        return
    err.print(f"created client [bold]{info.id}[/bold] ({info.name})")
    err.print(f"[yellow bold]{warning}[/yellow bold]")
    out.print(key, soft_wrap=True)  # stdout alone, so it can be piped into a secret store


@client_app.command("list")
def client_list(as_json: JsonOpt = False) -> None:
    """Registered clients with their scopes (key prefixes only; keys are never stored)."""
    from app.services import clients as svc

    async def go(settings: Settings) -> list[Any]:
        async with db.engine_scope(settings) as engine, engine.connect() as conn:
            return await svc.list_clients(conn)

    clients = run(go)
    if as_json:
        print_json([c.model_dump(mode="json") for c in clients])
    else:
        out.print(_client_table(clients))


@client_app.command("revoke")
def client_revoke(
    client_id: Annotated[str, typer.Argument(metavar="ID")], as_json: JsonOpt = False
) -> None:
    """Revoke a client's key. Running servers refuse it within their key-cache TTL (30 s)."""
    from app.services import clients as svc

    async def go(settings: Settings) -> Any:
        async with db.engine_scope(settings) as engine, engine.begin() as conn:
            return await svc.revoke_client(conn, client_id)

    info = run(go)
    if as_json:
        print_json(info.model_dump(mode="json"))
    else:
        out.print(f"revoked {info.id} at {info.revoked_at}")


@client_app.command("show")
def client_show(
    client_id: Annotated[str, typer.Argument(metavar="ID")], as_json: JsonOpt = False
) -> None:
    """One client: scopes, bulk, daily quota and today's usage, suspension and its audit events."""
    from app.services import clients as svc

    async def go(settings: Settings) -> Any:
        async with db.engine_scope(settings) as engine, engine.connect() as conn:
            return await svc.show_client(conn, client_id, settings)

    shown = run(go)
    if as_json:
        print_json(shown.model_dump(mode="json"))
        return
    c = shown.client
    out.print(_client_table([c]))
    quota = f"{shown.daily_quota:,} NIKs" if shown.daily_quota else "none"
    kind = "its own" if c.daily_quota is not None else "default"
    out.print(f"bulk: {'granted' if c.bulk else 'not granted'}")
    out.print(f"daily quota: {quota} ({kind}); used on {shown.day} (WIB): {shown.used_today:,}")
    if c.suspended_at:
        out.print(f"[red]suspended[/red] since {c.suspended_at}: {c.suspended_reason}")
    else:
        out.print("suspended: no")
    for e in shown.events:
        out.print(f"{str(e.at)[:19]}  {e.operation}  audit {e.audit_id}  request {e.request_id}")


@client_app.command("reinstate")
def client_reinstate(
    client_id: Annotated[str, typer.Argument(metavar="ID")], as_json: JsonOpt = False
) -> None:
    """Lift a client's suspension (audited). Servers accept it again within their key-cache TTL."""
    import secrets

    from app.services import clients as svc
    from app.services.audit import AuditWriter, running

    async def go(settings: Settings) -> Any:
        key = settings.audit_hmac_key.get_secret_value().encode()
        async with db.engine_scope(settings) as engine, running(AuditWriter(engine, key)) as audit:
            return await svc.reinstate_client(
                engine, audit, client_id, "cli-" + secrets.token_hex(6)
            )

    info = run(go)
    if as_json:
        print_json(info.model_dump(mode="json"))
    else:
        out.print(f"reinstated {info.id}")
