"""The `tepat` command line: one module per command group, registered on the root `app` here.

common       run (one async action, clear errors), JsonOpt
db           tepat db upgrade|downgrade|service-role
snapshot     tepat snapshot import|list|show|verify|retire
rule_set     tepat rule-set load|list|show
eligibility  tepat eligibility explain|materialize|report
client       tepat client create|list|show|revoke|reinstate
audit        tepat audit verify|index|trail|keygen|checkpoint
receipt      tepat receipt verify
bulk         tepat bulk
changes      tepat changes list|report
generate     tepat generate
serve        tepat serve, tepat demo
worker       tepat worker (bulk jobs)
"""

from __future__ import annotations

import typer

from app.cli import (
    audit,
    bulk,
    changes,
    client,
    db,
    eligibility,
    generate,
    receipt,
    rule_set,
    serve,
    snapshot,
    worker,
)

app = typer.Typer(
    name="tepat",
    help="Tepat: eligibility lookup over immutable DTSEN snapshots.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
# Commands first, then groups, each in the order `tepat --help` lists them.
app.command("bulk")(bulk.bulk_command)
app.command()(generate.generate)
app.command()(serve.serve)
app.command()(serve.demo)
app.command()(worker.worker)
app.add_typer(db.db_app, name="db")
app.add_typer(snapshot.snapshot_app, name="snapshot")
app.add_typer(rule_set.rule_set_app, name="rule-set")
app.add_typer(eligibility.eligibility_app, name="eligibility")
app.add_typer(changes.changes_app, name="changes")
app.add_typer(client.client_app, name="client")
app.add_typer(audit.audit_app, name="audit")
app.add_typer(receipt.receipt_app, name="receipt")


def main() -> None:
    app()


__all__ = ["app", "main"]
