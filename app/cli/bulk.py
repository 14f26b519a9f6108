"""`tepat bulk`: an operator's bulk eligibility job from a file, through the same service as the API."""

from __future__ import annotations

import secrets
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, BinaryIO

import orjson
import typer
from rich.markup import escape

from app import db
from app.auth.principal import FIELD_GROUPS, PROGRAMS, Principal
from app.cli.common import JsonOpt, run
from app.config import Settings
from app.console import err, print_json, row_progress
from app.services import bulk
from app.services.audit import AuditWriter, running
from app.services.lookup import Caller

CLIENT_ID = "cli-operator"
PURPOSE = "operator-bulk"
READ_BYTES = 64 * 1024

OPERATOR = Principal(
    client_id=CLIENT_ID,
    name="operator (tepat bulk)",
    programs=frozenset(PROGRAMS),
    field_groups=frozenset(FIELD_GROUPS),
    purposes=frozenset({PURPOSE}),
    expires_at=None,
)


def _ndjson_pieces(f: BinaryIO) -> Iterator[bytes]:
    while data := f.read(READ_BYTES):
        yield data


def _csv_pieces(f: BinaryIO) -> Iterator[bytes]:
    """Each CSV row's NIK as a line (app.services.bulk.CsvLines, as bulk jobs read CSV)."""
    lines = bulk.CsvLines()
    for data in _ndjson_pieces(f):
        yield lines.feed(data)
    yield lines.end()


async def _body(
    pieces: Iterator[bytes], progress: Callable[[int, int], None], size: int
) -> AsyncIterator[bytes]:
    read = 0
    for data in pieces:
        read += len(data)
        yield data
        progress(read, size)


def bulk_command(
    input_file: Annotated[
        Path,
        typer.Argument(
            metavar="INPUT", help='NDJSON ({"nik": ...} or a NIK a line) or CSV (.csv).'
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="The NDJSON answer file ('-': stdout).")],
    snapshot: Annotated[str | None, typer.Option(help="Default: the current snapshot.")] = None,
    rule_set: Annotated[
        str | None, typer.Option(help="Default: the rule set in force on the cut-off.")
    ] = None,
    programs: Annotated[
        list[str] | None, typer.Option("--programs", help="Repeat or comma-separate. Default: all.")
    ] = None,
    explain: Annotated[bool, typer.Option(help="Every criterion and the PKH components.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Answer a file of NIKs (one line each, in order, then a summary), audited like the API."""
    if not input_file.is_file():
        raise typer.BadParameter("no such file", param_hint="INPUT")
    asked = [p.strip() for v in programs or () for p in v.split(",") if p.strip()] or None
    options = bulk.Options(snapshot, rule_set, asked, explain)
    is_csv = input_file.name.lower().endswith(".csv")
    size = input_file.stat().st_size

    async def go(settings: Settings) -> dict[str, Any]:
        caller = Caller(OPERATOR, PURPOSE, "cli-" + secrets.token_hex(6))
        key = settings.audit_hmac_key.get_secret_value().encode()
        async with db.engine_scope(settings) as engine, running(AuditWriter(engine, key)) as audit:
            job = await bulk.open_job(engine, audit, caller, options)
            sink: BinaryIO = sys.stdout.buffer if str(out) == "-" else out.open("wb")
            try:
                with input_file.open("rb") as f, row_progress(sink is not sys.stdout.buffer) as bar:

                    def tick(read: int, total: int) -> None:
                        done = job.counts.lines
                        # The line count is unknown until the end: estimate it from bytes read.
                        bar.update("NIKs", done, max(done, done * total // read) if read else None)

                    pieces = _csv_pieces(f) if is_csv else _ndjson_pieces(f)
                    last = b""
                    async for chunk in job.stream(_body(pieces, tick, size)):
                        sink.write(chunk)
                        last = chunk
                    tick(size, size)
            finally:
                if sink is not sys.stdout.buffer:
                    sink.close()
        tail = orjson.loads(last.splitlines()[-1])
        return dict(tail)

    tail = run(go)
    summary = tail.get("summary")
    if as_json:
        print_json(tail)
    elif summary is not None:
        err.print(
            f"{summary['lines']:,} lines: {summary['found']:,} found, "
            f"{summary['not_found']:,} not found, {summary['errors']:,} errors; snapshot "
            f"{summary['snapshot']['id']}, rule set {summary['rule_set']['id']}; "
            f"{len(summary['audit_ids']):,} audit records"
        )
    if summary is None:
        message = str(tail.get("error", {}).get("message", "unknown error"))
        err.print(f"[red]stopped:[/red] {escape(message)}")
        raise typer.Exit(1)
