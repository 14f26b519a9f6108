"""`tepat receipt verify`: check an answer's receipt with the published keys, offline if need be."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from app.cli.common import JsonOpt
from app.console import err, out, print_json

receipt_app = typer.Typer(
    help="Receipts: check that an answer is what Tepat signed (docs/receipts.md).",
    no_args_is_help=True,
)


@receipt_app.command("verify")
def receipt_verify(
    body: Annotated[Path, typer.Option("--body", help="The answer's exact bytes, as received.")],
    receipt: Annotated[str, typer.Option("--receipt", help="The Tepat-Receipt value (a JWS).")],
    jwks: Annotated[
        str,
        typer.Option(
            "--jwks",
            help="The public keys: a URL (…/.well-known/jwks.json) or a saved JWKS file.",
        ),
    ] = "http://127.0.0.1:8000/.well-known/jwks.json",
    as_json: JsonOpt = False,
) -> None:
    """Exit 0 and print the claims when the signature holds and the body matches; else 1."""
    import httpx
    import orjson

    from app.services import receipts

    try:
        data = body.read_bytes()
        if jwks.startswith(("http://", "https://")):
            keys = httpx.get(jwks, timeout=10).raise_for_status().json()
        else:
            keys = orjson.loads(Path(jwks).read_bytes())
        claims = receipts.verify(receipt.strip(), data, keys)
    except receipts.ReceiptInvalid as e:
        err.print(f"[red]INVALID[/red] {escape(str(e))}")
        raise typer.Exit(1) from None
    except (OSError, ValueError, httpx.HTTPError) as e:
        err.print(f"[red]error:[/red] {escape(str(e))}")
        raise typer.Exit(1) from None
    if as_json:
        print_json(claims)
        return
    out.print(
        f"[green]valid[/green] audit record {claims['audit_id']} (seq {claims['seq']}), "
        f"snapshot {claims['snapshot']['id']}, rule set {claims['rule_set']['id']}"
    )
