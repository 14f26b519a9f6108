"""Pinning: the snapshot and rule set an answer is computed from, named in its `meta`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from app.eligibility import RuleSet
from app.schemas.snapshots import Snapshot
from app.services import rule_sets, snapshots


@dataclass(frozen=True, slots=True)
class Pinned:
    snapshot: Snapshot
    rule_set: RuleSet

    def meta(self, request_id: str | None = None, audit_id: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "snapshot": {"id": self.snapshot.id, "checksum": self.snapshot.checksum},
            "rule_set": {"id": self.rule_set.id, "checksum": self.rule_set.checksum},
            "evaluation_date": self.snapshot.cutoff_date.isoformat(),
        }
        if request_id is not None:
            out["request_id"] = request_id
        if audit_id is not None:
            out["audit_id"] = audit_id
        return out


async def pin(conn: AsyncConnection, snapshot_id: str | None, rule_set_id: str | None) -> Pinned:
    """Resolve once per request (STYLE: every query names its snapshot)."""
    snapshot = await snapshots.resolve(conn, snapshot_id)
    return Pinned(snapshot, await rule_sets.resolve(conn, snapshot, rule_set_id))
