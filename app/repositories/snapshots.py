"""SQL over the snapshots table."""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.models import snapshots
from app.schemas.snapshots import Snapshot

_COLUMNS = (
    snapshots.c.key,
    snapshots.c.id,
    snapshots.c.label,
    snapshots.c.cutoff_date,
    snapshots.c.status,
    snapshots.c.family_count,
    snapshots.c.people_count,
    snapshots.c.checksum,
    snapshots.c.created_at,
    snapshots.c.published_at,
    snapshots.c.retired_at,
)


async def list_all(conn: AsyncConnection, *, include_loading: bool = False) -> list[Snapshot]:
    q = select(*_COLUMNS).order_by(snapshots.c.cutoff_date.desc(), snapshots.c.id.desc())
    if not include_loading:
        q = q.where(snapshots.c.status != "loading")
    rows = (await conn.execute(q)).mappings().all()
    return [Snapshot.model_validate(dict(r)) for r in rows]


async def get_by_id(conn: AsyncConnection, snapshot_id: str) -> Snapshot | None:
    row = (
        (await conn.execute(select(*_COLUMNS).where(snapshots.c.id == snapshot_id)))
        .mappings()
        .first()
    )
    return Snapshot.model_validate(dict(row)) if row else None


async def latest_published(conn: AsyncConnection) -> Snapshot | None:
    q = (
        select(*_COLUMNS)
        .where(snapshots.c.status == "published")
        .order_by(snapshots.c.cutoff_date.desc(), snapshots.c.published_at.desc())
        .limit(1)
    )
    row = (await conn.execute(q)).mappings().first()
    return Snapshot.model_validate(dict(row)) if row else None


async def mark_retired(conn: AsyncConnection, snapshot_id: str) -> bool:
    result = await conn.execute(
        update(snapshots)
        .where(snapshots.c.id == snapshot_id, snapshots.c.status == "published")
        .values(status="retired", retired_at=func.now())
    )
    return bool(result.rowcount)
