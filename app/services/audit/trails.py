"""A data subject's trail (UU 27/2022 art. 32) and the subject index that serves it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import asyncpg
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.repositories import audit as repo
from app.services.audit.records import SUBJECT_KINDS, hmac_key_id, subject_hash


class TrailEntry(BaseModel):
    """One access to a data subject's record."""

    at: dt.datetime
    audit_id: str
    client_id: str
    client_name: str | None
    purpose: str
    operation: str
    snapshot_id: str | None
    rule_set_id: str | None


async def trail(
    conn: AsyncConnection, hmac_keys: bytes | Sequence[bytes], subject: str
) -> list[TrailEntry]:
    """Every recorded access to one subject (`nik_subject(nik)` or `no_kk_subject(no_kk)`),
    under each of `hmac_keys` (the current key and the rotated ones: `subject_keys(settings)`);
    a record hashed under a key not given is not found."""
    if not subject.startswith(SUBJECT_KINDS):
        raise ValueError("subject must be nik_subject(...) or no_kk_subject(...)")
    keys = [hmac_keys] if isinstance(hmac_keys, bytes) else list(hmac_keys)
    if not keys:
        raise ValueError("at least one HMAC key is needed")
    rows = await repo.trail(conn, [(hmac_key_id(k), subject_hash(k, subject)) for k in keys])
    return [
        TrailEntry(
            at=r.at,
            audit_id=r.audit_id,
            client_id=r.client_id,
            client_name=r.client_name,
            purpose=r.purpose,
            operation=r.operation,
            snapshot_id=r.snapshot_id,
            rule_set_id=r.rule_set_id,
        )
        for r in rows
    ]


@dataclass(frozen=True, slots=True)
class Indexed:
    records: int  # records indexed by this run
    entries: int  # (subject, record) entries added
    indexed_upto: int  # every record up to this seq is indexed
    head: int  # the chain's last seq when the run ended


async def index_subjects(
    engine: AsyncEngine, *, batch: int = 2_000, progress: Callable[[int], None] | None = None
) -> Indexed:
    """Index every record not yet in audit_subjects (`tepat audit index`), `batch` records a
    transaction; safe to run while the service writes and beside another indexer."""
    if batch < 1:
        raise ValueError("batch must be at least 1")
    records = entries = 0
    async with engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        assert isinstance(raw, asyncpg.Connection)
        while True:
            _, done, added = await repo.index_step(raw, batch)
            records, entries = records + done, entries + added
            if progress is not None and done:
                progress(done)
            if done < batch:
                break
        upto, head = await repo.index_lag(conn)
    return Indexed(records, entries, upto, head)
