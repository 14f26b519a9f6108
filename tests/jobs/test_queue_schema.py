"""The queue's tables come from the migration, exactly as the pinned pgqueuer release renders them."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from pgqueuer.adapters.persistence.schema_ddl import render_install
from pgqueuer.domain.settings import DBSettings

from app import db
from app.config import Settings
from app.services.jobs import QUEUE_SCHEMA
from app.services.worker import QUEUE, queue_queries


def _initial() -> ModuleType:
    path = Path(__file__).parents[2] / "migrations" / "versions" / "0001_initial.py"
    spec = importlib.util.spec_from_file_location("revision_0001_initial_jobs", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_migration_installs_what_the_pinned_release_renders() -> None:
    initial = _initial()
    assert initial.QUEUE_SCHEMA == QUEUE_SCHEMA == QUEUE.db_schema
    rendered = render_install(DBSettings(db_schema=QUEUE_SCHEMA))
    assert initial.QUEUE_DDL.strip() == rendered.strip(), (
        "pgqueuer's schema changed: render it again into migrations/versions/0001_initial.py"
    )


async def test_the_queue_accepts_the_service_role(settings: Settings, engine: object) -> None:
    """The worker's structure check passes on the migrated database, as the service role."""
    from pgqueuer import QueueManager

    conn = await db.connect_raw(settings, role=settings.db_role)
    try:
        await QueueManager(queue_queries(conn)).verify_structure()
    finally:
        await conn.close()
