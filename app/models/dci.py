"""DCI transactions (migration 0001_initial): the state of a client's DCI requests; DCI
subscriptions and the notifications sent for them (migration 0004_dci_subscriptions).

A row per request (sync or async search, transaction status): what `txn/status` answers. An
async search also keeps its request until it has been answered, and its signed-off answer
until the callback is delivered (or its attempts run out); both are cleared then.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    Table,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from app.models.tables import metadata

DCI_STATUSES = ("rcvd", "pdng", "succ", "rjct")

dci_transactions = Table(
    "dci_transactions",
    metadata,
    Column("id", Uuid, primary_key=True),  # the correlation_id Tepat answers with
    Column("client_id", Text, ForeignKey("api_clients.id", ondelete="CASCADE"), nullable=False),
    Column("transaction_id", Text, nullable=False),  # the client's
    Column("message_id", Text, nullable=False),
    Column("action", Text, nullable=False),  # search, txn-status
    Column("mode", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("purpose", Text, nullable=False),
    Column("request_id", Text, nullable=False),
    # Per reference_id: its status and reason code (never personal data).
    Column("outcome", JSONB, nullable=False),
    Column("request", LargeBinary),  # an async search's message, until it is answered
    Column("callback_url", Text),
    Column("response", LargeBinary),  # the callback's body, until it is delivered
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("last_error", Text),
    Column("delivered_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("status IN ('rcvd', 'pdng', 'succ', 'rjct')", name="status"),
    CheckConstraint("mode IN ('sync', 'async')", name="mode"),
    Index("ix_dci_transactions_client", "client_id", "transaction_id"),
)

# Subscriptions (migration 0004_dci_subscriptions): what a client watches, and where its
# `notify` callbacks go. Only the client that made one sees or ends it.
DCI_SUBSCRIPTION_STATUSES = ("subscribe", "unsubscribe")

dci_subscriptions = Table(
    "dci_subscriptions",
    metadata,
    Column("id", Uuid, primary_key=True),  # the subscription code Tepat answers with
    Column("client_id", Text, ForeignKey("api_clients.id", ondelete="CASCADE"), nullable=False),
    Column("transaction_id", Text, nullable=False),  # the subscribe request's
    Column("reference_id", Text, nullable=False),  # its subscribe_request item's
    Column("purpose", Text, nullable=False),
    Column("request_id", Text, nullable=False),
    Column("notify_url", Text, nullable=False),  # under the client's registered prefix
    # What it watches (app.services.dci_subscriptions.Criteria) and the filter as sent.
    Column("criteria", JSONB, nullable=False),
    Column("status", Text, nullable=False, server_default=text("'subscribe'")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("ended_at", DateTime(timezone=True)),
    CheckConstraint("status IN ('subscribe', 'unsubscribe')", name="status"),
    Index("ix_dci_subscriptions_client", "client_id", "status"),
)

# One row per subscription and pair of snapshots it was (or is being) notified about: the
# primary key makes a pair notified once, whichever worker finds it first.
dci_notifications = Table(
    "dci_notifications",
    metadata,
    Column(
        "subscription_id",
        Uuid,
        ForeignKey("dci_subscriptions.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("from_snapshot_key", SmallInteger, primary_key=True),
    Column("to_snapshot_key", SmallInteger, primary_key=True),
    Column("status", Text, nullable=False, server_default=text("'pdng'")),
    Column("pages", Integer, nullable=False, server_default=text("0")),
    Column("people", Integer, nullable=False, server_default=text("0")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("done_at", DateTime(timezone=True)),
    # The last person of the committed pages: a restarted notification resumes after it.
    Column("after_nik", BigInteger),
    CheckConstraint("status IN ('pdng', 'succ', 'rjct')", name="status"),
)
