"""Verifying the chain: walk every record in seq order and report the first bad one, and why."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from app.repositories import audit as repo
from app.repositories.audit import AuditRecord
from app.services.audit.records import GENESIS, record_hash

Problem = Literal["altered", "deleted", "inserted", "reordered"]


class VerifyResult(BaseModel):
    """The outcome of walking the whole chain. On failure, the FIRST bad record and why."""

    ok: bool
    checked: int
    head_seq: int
    head_hash: str
    problem: Problem | None = None
    seq: int | None = None
    audit_id: str | None = None
    reason: str | None = None


@dataclass(slots=True)
class _Finding:
    problem: Problem
    record: AuditRecord | None
    reason: str
    seq: int | None = None


def _check(
    before_prev: bytes | None,
    prev: AuditRecord | None,
    r: AuditRecord,
    nxt: AuditRecord | None,
) -> _Finding | None:
    """Judge record r, knowing the previous two and the next (for inserted vs reordered)."""
    expected_seq = prev.seq + 1 if prev else 1
    expected_prev = prev.hash if prev else GENESIS
    if r.seq != expected_seq:
        return _Finding(
            "deleted", r, f"records {expected_seq}..{r.seq - 1} are missing before this one"
        )
    if r.prev_hash != expected_prev:
        if prev is not None and before_prev is not None and r.prev_hash == before_prev:
            return _Finding(
                "inserted", prev, "not part of the chain: the next record links past it"
            )
        if nxt is not None and nxt.prev_hash == expected_prev:
            if r.prev_hash == nxt.hash:
                return _Finding(
                    "reordered",
                    r,
                    f"chained after record {r.prev_hash.hex()[:12]}, found before it",
                )
            return _Finding("inserted", r, "not part of the chain: the next record links past it")
        if prev is not None and record_hash(r.prev_hash, r) == r.hash:
            return _Finding(
                "altered",
                prev,
                "its hash was recomputed: the next record was chained to a different one",
            )
        return _Finding("altered", r, "its prev_hash is not the previous record's hash")
    if record_hash(r.prev_hash, r) != r.hash:
        return _Finding("altered", r, "its content does not match its hash")
    return None


async def verify_chain(conn: AsyncConnection) -> VerifyResult:
    """Walk the chain by seq (server-side cursor, constant memory) and judge every record.

    Run it in a REPEATABLE READ transaction for one consistent view (the CLI does); under READ
    COMMITTED, records appended while it runs are told apart from forged ones by re-reading
    the head at the end.
    """
    head_seq, head_hash = await repo.read_head(conn)
    checked = 0
    before_prev: bytes | None = None
    prev: AuditRecord | None = None
    pending: AuditRecord | None = None
    finding: _Finding | None = None

    async for r in repo.stream_by_seq(conn):
        if pending is not None:
            finding = _check(before_prev, prev, pending, r)
            if finding:
                break
            before_prev = prev.hash if prev else GENESIS
            prev = pending
            checked += 1
        pending = r
    if finding is None and pending is not None:
        finding = _check(before_prev, prev, pending, None)
        if finding is None:
            prev = pending
            checked += 1
    if finding is None:
        finding = await _check_tail(conn, prev, head_seq, head_hash)
    if finding is None:
        return VerifyResult(ok=True, checked=checked, head_seq=head_seq, head_hash=head_hash.hex())
    record = finding.record
    return VerifyResult(
        ok=False,
        checked=checked,
        head_seq=head_seq,
        head_hash=head_hash.hex(),
        problem=finding.problem,
        seq=record.seq if record else finding.seq,
        audit_id=record.id if record else None,
        reason=finding.reason,
    )


async def _check_tail(
    conn: AsyncConnection, last: AuditRecord | None, head_seq: int, head_hash: bytes
) -> _Finding | None:
    """The last record must be the head: catches a deleted tail, an appended forgery, a rehash."""
    last_seq = last.seq if last else 0
    if last_seq < head_seq:
        return _Finding(
            "deleted",
            None,
            f"records {last_seq + 1}..{head_seq} are missing at the end",
            seq=last_seq + 1,
        )
    if last_seq > head_seq:
        # Appended after we read the head (READ COMMITTED), or forged past it?
        head_seq, head_hash = await repo.read_head(conn)
        if head_seq < last_seq:
            forged = await repo.get_by_seq(conn, head_seq + 1)
            return _Finding(
                "inserted", forged, "beyond the chain head: no writer appended it", seq=head_seq + 1
            )
        if head_seq > last_seq:
            return None
    if last is not None and last.hash != head_hash:
        return _Finding("altered", last, "its hash was recomputed: the chain head disagrees")
    return None
