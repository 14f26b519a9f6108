"""A DCI notification's cursor: where its committed pages end, so a restarted one resumes there.

Revision ID: 0005_notify_cursor
Revises: 0004_dci_subscriptions
Create Date: 2026-12-05 01:15:00+00:00

A notification (app.services.dci_subscriptions) stores its `notify` pages one at a time. Each
page is now committed in one transaction with its audit record and the NIK of its last person
(`after_nik`), and `pages` and `people` count the pages committed so far; a worker that takes
over a notification whose worker died reads the change list from the person after `after_nik`,
so no page is stored, sent or audited twice. NULL: nothing committed yet.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_notify_cursor"
down_revision: str | None = "0004_dci_subscriptions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("dci_notifications", sa.Column("after_nik", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column("dci_notifications", "after_nik")
