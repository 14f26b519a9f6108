"""SQLAlchemy tables (Core): the schema Alembic migrates and the repositories query."""

from app.models.auth_audit import api_clients as api_clients
from app.models.auth_audit import audit_checkpoints as audit_checkpoints
from app.models.auth_audit import audit_head as audit_head
from app.models.auth_audit import audit_index as audit_index
from app.models.auth_audit import audit_log as audit_log
from app.models.auth_audit import audit_subjects as audit_subjects
from app.models.auth_audit import audit_tree as audit_tree
from app.models.auth_audit import client_usage as client_usage
from app.models.auth_audit import oauth2_assertions as oauth2_assertions
from app.models.dci import dci_notifications as dci_notifications
from app.models.dci import dci_subscriptions as dci_subscriptions
from app.models.dci import dci_transactions as dci_transactions
from app.models.jobs import bulk_job_input as bulk_job_input
from app.models.jobs import bulk_job_results as bulk_job_results
from app.models.jobs import bulk_jobs as bulk_jobs
from app.models.tables import (
    SNAPSHOT_STATUSES,
    decisions,
    families,
    materializations,
    metadata,
    people,
    rule_sets,
    snapshots,
)

__all__ = [
    "SNAPSHOT_STATUSES",
    "decisions",
    "families",
    "materializations",
    "metadata",
    "people",
    "rule_sets",
    "snapshots",
]
