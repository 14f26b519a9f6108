"""`tepat demo`: database, rule sets, a generated release, a demo client, the API: one command."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
from dataclasses import dataclass

import uvicorn
from rich.markup import escape
from rich.panel import Panel
from starlette.types import ASGIApp

from app import db, embedded, logs, migrate
from app.config import Settings
from app.console import err, row_progress
from app.identifiers import as_str

RELEASE = "2026-01-23"
DEMO_PURPOSE = "demo"


@dataclass
class Prepared:
    key: str
    niks: list[str]
    no_kk: str
    people: int


def _step(text: str) -> None:
    err.print(f"[bold cyan]•[/bold cyan] {text}")


async def prepare(settings: Settings, people: int, seed: int) -> Prepared:
    from app.ingest.importer import import_release
    from app.services import clients, rule_sets
    from app.synth.generate import generate_release

    if settings.database_url:
        _step("Using the database at TEPAT_DATABASE_URL")
    else:
        _step(f"Starting the embedded PostgreSQL (data in {settings.data_dir / 'pgdata'})")
    async with db.engine_scope(settings) as engine:
        _step("Migrating the schema")
        try:
            await migrate.run(engine, "upgrade", "head")
        except (migrate.PreReleaseSchema, migrate.SchemaDrift):
            if settings.database_url:
                raise  # someone else's database: say so, never empty it
            _step(
                "The demo's database was made by an earlier pre-release schema: "
                "recreating it (its data is generated again)"
            )
            await migrate.recreate(engine)
        async with engine.begin() as conn:
            added = await rule_sets.ensure_shipped(conn)
        _step(f"Rule sets: {', '.join(added) if added else 'kepmensos-79-2025 already loaded'}")

        raw = await db.connect_raw(settings)
        try:
            status = await raw.fetchval("SELECT status FROM snapshots WHERE id = $1", RELEASE)
            if status == "published":
                _step(f"Snapshot {RELEASE} is already published (reusing it)")
            else:
                folder = settings.data_dir / "releases" / f"{RELEASE}-{people}-{seed}"
                if not (folder / "manifest.json").exists():
                    _step(f"Generating a synthetic DTSEN release of {people:,} people in {folder}")
                    with row_progress() as progress:
                        done = 0

                        def tick(n: int) -> None:
                            nonlocal done
                            done += n
                            progress.update("generate", done, people)

                        generate_release(
                            folder, people=people, seed=seed, release=RELEASE, progress=tick
                        )
                _step(f"Importing release {RELEASE} (validate, COPY, publish)")
                with row_progress() as progress:
                    result = await import_release(raw, folder, progress=progress.update)
                if not result.published:
                    raise SystemExit(json.dumps(result.to_dict(), indent=2))
                _step("Storing every decision of the snapshot under the rule set in force")
                from app.cli.eligibility import materialize_default

                await materialize_default(settings, RELEASE, None)
            key_row = await raw.fetchrow(
                "SELECT key, people_count FROM snapshots WHERE id = $1", RELEASE
            )
            samples = await raw.fetch(
                f"SELECT p.nik, p.no_kk FROM people_{int(key_row['key'])} p "
                "JOIN families f ON f.snapshot_key = $1 AND f.no_kk = p.no_kk "
                "WHERE f.decile BETWEEN 1 AND 4 AND NOT f.asn_tni_polri ORDER BY p.source_line LIMIT 2",
                key_row["key"],
            )
        finally:
            await raw.close()

        async with engine.begin() as conn:
            _, api_key = await clients.create_client(
                conn,
                name=f"demo {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M}",
                programs=["PKH", "BPNT", "PBI_JK", "SEKOLAH_RAKYAT"],
                field_groups=[
                    "decision",
                    "decile",
                    "membership",
                    "identity",
                    "attributes",
                    "health",
                ],
                purposes=[DEMO_PURPOSE],
                expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(days=30),
                bulk=True,  # the README's bulk example uses the demo key
            )
    return Prepared(
        key=api_key,
        niks=[as_str(r["nik"]) for r in samples],
        no_kk=as_str(samples[0]["no_kk"]),
        people=int(key_row["people_count"]),
    )


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def server_config(app: ASGIApp, settings: Settings, host: str, port: int) -> uvicorn.Config:
    """The demo's server: requests logged by the app itself, uvicorn's own lines through the
    project's formatter and scrubbing (as `tepat serve`)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        access_log=False,
        log_level=settings.log_level.lower(),
        log_config=logs.uvicorn_log_config(
            settings.log_level, settings.log_json or settings.is_production
        ),
    )


def run_demo(settings: Settings, *, people: int, port: int | None, seed: int) -> None:
    port = port or settings.port
    host = settings.host
    if not _port_free(host, port):
        err.print(f"[red]error:[/red] port {port} on {host} is in use; try --port 8010")
        raise SystemExit(2)
    try:
        prepared = asyncio.run(prepare(settings, people, seed))
    except (migrate.PreReleaseSchema, migrate.SchemaDrift) as e:
        # Only a database at TEPAT_DATABASE_URL: the demo recreates its own (prepare).
        embedded.stop()
        err.print(f"[red]error:[/red] {escape(e.detail)}")
        raise SystemExit(1) from None
    except BaseException:
        embedded.stop()
        raise
    base = f"http://{host}:{port}"
    body = json.dumps({"niks": prepared.niks, "explain": True})
    curl = (
        f"curl -s {base}/v1/people/lookup \\\n"
        f"  -H 'Authorization: Bearer {prepared.key}' \\\n"
        f"  -H 'X-Purpose: {DEMO_PURPOSE}' -H 'Content-Type: application/json' \\\n"
        f"  -d '{body}'"
    )
    err.print(
        Panel(
            f"[bold]Tepat is serving DTSEN snapshot {RELEASE}[/bold] ({prepared.people:,} "
            f"synthetic people)\n\n"
            f"Interactive docs:  [link]{base}/docs[/link]  (works offline; GraphQL at "
            f"{base}/graphql)\n"
            f"Purpose header:    X-Purpose: {DEMO_PURPOSE}\n\n"
            f"In /docs press [bold]Authorize[/bold], paste the key below, then try "
            f"POST /v1/people/lookup.\nCtrl-C stops the API and the embedded PostgreSQL.",
            title="tepat demo",
            border_style="green",
        )
    )
    # Plain lines outside the panel, so they copy and paste cleanly.
    err.print("Demo API key (shown once, valid 30 days):", style="bold")
    print(prepared.key, flush=True)
    err.print("\nTry it:", style="bold")
    print(curl, flush=True)
    err.print("\nExplain one family on the terminal:", style="bold")
    print(f"./run eligibility explain --no-kk {prepared.no_kk}\n", flush=True)
    from app.main import create_app

    config = server_config(create_app(settings), settings, host, port)
    try:
        uvicorn.Server(config).run()
    finally:
        embedded.stop()


__all__ = ["run_demo"]
