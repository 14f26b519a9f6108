"""Two packed codes beside each stored decision: the person's attributes and health, the decisions.

A plain lookup had the database format seven attribute and health columns and ten decision
columns as text, a person at a time: on 1 M people, ~2.5 of the ~8 ms of database CPU that 1,000
NIKs cost. Each group is now one integer the database computes once, when the decisions are
stored (a STORED generated column; existing partitions are rewritten here, filled from their own
columns). Each field is value + 1 (0 for NULL, booleans 1/2) in a fixed number of bits, the first
lowest; the worker renders the few distinct codes once each (app.models.tables.PERSON_CODE and
DECISION_CODE define the layout; app.repositories.decisions decodes it).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-21 12:00:00.000000+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of app.models.tables.code_sql(PERSON_CODE / DECISION_CODE) as of this revision.
PERSON_CODE = (
    "(COALESCE(marital_status::integer + 1, 0) << 0) "
    "| (COALESCE(school_status::integer + 1, 0) << 4) "
    "| (COALESCE(school_level::integer + 1, 0) << 8) "
    "| (COALESCE(disability::integer + 1, 0) << 12) "
    "| (COALESCE(pregnant::integer + 1, 0) << 16) "
    "| (COALESCE(chronic_illness::integer + 1, 0) << 18) "
    "| (COALESCE(working::integer + 1, 0) << 20)"
)
DECISION_CODE = (
    "(COALESCE(sr_level::integer::bigint + 1, 0) << 0) "
    "| (COALESCE(sr_priority::integer::bigint + 1, 0) << 4) "
    "| (COALESCE(pkh_eligible::integer::bigint + 1, 0) << 8) "
    "| (COALESCE(bpnt_eligible::integer::bigint + 1, 0) << 10) "
    "| (COALESCE(pbi_eligible::integer::bigint + 1, 0) << 12) "
    "| (COALESCE(sr_eligible::integer::bigint + 1, 0) << 14) "
    "| (COALESCE(pkh_recipient::integer::bigint + 1, 0) << 16) "
    "| (COALESCE(bpnt_recipient::integer::bigint + 1, 0) << 18) "
    "| (COALESCE(pbi_recipient::integer::bigint + 1, 0) << 20) "
    "| (COALESCE(pkh_yearly::integer::bigint + 1, 0) << 22)"
)


def upgrade() -> None:
    # One ALTER, one rewrite of each stored partition (STORED spelled out: PostgreSQL 18 would
    # otherwise make them virtual, computed at every read).
    op.execute(
        "ALTER TABLE decisions "
        f"ADD COLUMN person_code integer GENERATED ALWAYS AS ({PERSON_CODE}) STORED, "
        f"ADD COLUMN decision_code bigint GENERATED ALWAYS AS ({DECISION_CODE}) STORED"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE decisions DROP COLUMN decision_code, DROP COLUMN person_code")
