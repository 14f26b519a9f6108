"""Snapshots: listing, resolving the one a request is pinned to, retiring. (Verifying a stored
snapshot against its checksum is the importer's: app.ingest.verify.)"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from app.errors import NoSnapshotPublished, SnapshotNotFound, SnapshotRetired, SnapshotStateError
from app.identifiers import SNAPSHOT_ID
from app.repositories import snapshots as repo
from app.schemas.snapshots import Snapshot


async def list_snapshots(conn: AsyncConnection, *, include_loading: bool = False) -> list[Snapshot]:
    return await repo.list_all(conn, include_loading=include_loading)


async def get_snapshot(conn: AsyncConnection, snapshot_id: str) -> Snapshot:
    # A release id has one form; anything else (a NUL byte included) cannot name a snapshot
    # and never reaches SQL, whichever face it came through.
    if not SNAPSHOT_ID.fullmatch(snapshot_id):
        raise SnapshotNotFound("no snapshot has that id (a release id is YYYY-MM-DD[-rN])")
    snap = await repo.get_by_id(conn, snapshot_id)
    if snap is None or snap.status == "loading":
        raise SnapshotNotFound(f"no snapshot {snapshot_id!r} is loaded", snapshot=snapshot_id)
    return snap


async def resolve(conn: AsyncConnection, snapshot_id: str | None) -> Snapshot:
    """The snapshot a request reads: the named one if served, else the current (newest cut-off)."""
    if snapshot_id is None:
        snap = await repo.latest_published(conn)
        if snap is None:
            raise NoSnapshotPublished("no DTSEN snapshot has been published yet")
        return snap
    snap = await get_snapshot(conn, snapshot_id)
    if snap.status == "retired":
        raise SnapshotRetired(
            f"snapshot {snapshot_id} was retired and is no longer served", snapshot=snapshot_id
        )
    return snap


async def retire(conn: AsyncConnection, snapshot_id: str) -> Snapshot:
    snap = await get_snapshot(conn, snapshot_id)
    if snap.status != "published":
        raise SnapshotStateError(f"snapshot {snapshot_id} is {snap.status}, not published")
    await repo.mark_retired(conn, snapshot_id)
    return await get_snapshot(conn, snapshot_id)
