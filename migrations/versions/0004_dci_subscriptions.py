"""DCI subscriptions and the notifications sent for them.

Revision ID: 0004_dci_subscriptions
Revises: 0003_change_jobs
Create Date: 2026-12-04 22:00:00+00:00

A DCI client subscribes to eligibility changes between releases (`POST /dci/registry/subscribe`,
docs/dci.md): `dci_subscriptions` keeps what it watches and where its `notify` callbacks go.
When a release is published and its decisions are stored, each active subscription is notified
once for the pair (previous release, new release): `dci_notifications` holds one row per
subscription and pair, its primary key what makes a pair notified once whatever worker finds
it first. The callbacks themselves are DCI transactions (`dci_transactions`), delivered and
retried as the other callbacks are. The service role reads and writes both tables.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004_dci_subscriptions"
down_revision: str | None = "0003_change_jobs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLE = "tepat_service"  # created by 0001_initial


def upgrade() -> None:
    op.create_table(
        "dci_subscriptions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("client_id", sa.Text(), nullable=False),
        sa.Column("transaction_id", sa.Text(), nullable=False),
        sa.Column("reference_id", sa.Text(), nullable=False),
        sa.Column("purpose", sa.Text(), nullable=False),
        sa.Column("request_id", sa.Text(), nullable=False),
        sa.Column("notify_url", sa.Text(), nullable=False),
        sa.Column("criteria", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("status", sa.Text(), server_default=sa.text("'subscribe'"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('subscribe', 'unsubscribe')", name=op.f("ck_dci_subscriptions_status")
        ),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["api_clients.id"],
            name=op.f("fk_dci_subscriptions_client_id_api_clients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dci_subscriptions")),
    )
    op.create_index("ix_dci_subscriptions_client", "dci_subscriptions", ["client_id", "status"])
    op.create_table(
        "dci_notifications",
        sa.Column("subscription_id", sa.Uuid(), nullable=False),
        sa.Column("from_snapshot_key", sa.SmallInteger(), nullable=False),
        sa.Column("to_snapshot_key", sa.SmallInteger(), nullable=False),
        sa.Column("status", sa.Text(), server_default=sa.text("'pdng'"), nullable=False),
        sa.Column("pages", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("people", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pdng', 'succ', 'rjct')", name=op.f("ck_dci_notifications_status")
        ),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["dci_subscriptions.id"],
            name=op.f("fk_dci_notifications_subscription_id_dci_subscriptions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "subscription_id",
            "from_snapshot_key",
            "to_snapshot_key",
            name=op.f("pk_dci_notifications"),
        ),
    )
    op.execute(
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON dci_subscriptions, dci_notifications TO {ROLE}"
    )


def downgrade() -> None:
    op.drop_table("dci_notifications")
    op.drop_table("dci_subscriptions")
