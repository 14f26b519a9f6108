"""Change lists: who gained and who lost eligibility between two releases, and why.

Both releases and both rule sets are immutable and their decisions are stored
(app.services.materialize), so a change list is one set-wise statement over the two stored
`decisions` partitions, joined on the NIK (app.repositories.changes), streamed through a
server-side cursor: memory stays flat whatever the releases' sizes. Each row is rendered here
(one NDJSON line a person), in chunks of `CHUNK` lines, each chunk audited and given its signed
receipt exactly as a bulk chunk is (app.services.bulk.seal), then a summary line.

A person is listed when at least one of their decisions changed in a way the request asks:
`gained` (eligible in `to`, not eligible or absent in `from`), `lost` (the other way),
`benefit_changed` (eligible on both sides, another benefit: PKH's yearly amount, or BPNT's and
PBI JK's monthly amount when the rule sets differ) and `level_changed` (Sekolah Rakyat, eligible
on both sides at another level). The reasons are the criteria whose `passed` flipped (stored
with the decisions, app.models.tables.CRITERIA), or `entered_registry` / `left_registry`.
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Final

import asyncpg
import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import read_connection
from app.errors import (
    DecisionsNotMaterialized,
    Forbidden,
    SnapshotNotFound,
    TepatError,
    ValidationFailed,
)
from app.models.tables import CRITERIA
from app.repositories import changes as repo
from app.repositories import decisions as decisions_repo
from app.repositories.registry import Conn
from app.services import bulk
from app.services.audit.records import new_audit_id, nik_subject, two_sides
from app.services.audit.writer import AuditWriter
from app.services.catalog import Reads
from app.services.disclosure import change_fields
from app.services.lookup import Caller, view_for
from app.services.pinning import Pinned, pin
from app.services.report import region_names

log = logging.getLogger("tepat.changes")

OPERATION: Final = "changes"
CHUNK: Final = bulk.CHUNK  # answer lines per audit record and receipt
AHEAD: Final = 4  # chunks being audited while the next ones are read
KINDS: Final = ("gained", "lost", "benefit_changed", "level_changed")
STATUSES: Final = ("stayed", "entered", "left")
PROGRAM_BITS: Final = {"PKH": 0, "BPNT": 1, "PBI_JK": 2, "SEKOLAH_RAKYAT": 3}
ENTERED: Final = "entered_registry"
LEFT: Final = "left_registry"

Connect = Callable[[], AbstractAsyncContextManager[asyncpg.Connection]]
Pace = Callable[[int], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Asked:
    """What a change list asks (the API's body, the CLI's options); checked by `open_changes`."""

    from_snapshot: str
    to_snapshot: str
    rule_set: str | None = None
    programs: Sequence[str] | None = None
    kinds: Sequence[str] | None = None
    kode_wilayah: str | None = None


def region_prefix(value: str | None) -> tuple[int | None, int]:
    """A kode_wilayah prefix (2 to 10 digits) as (number, divisor of the 10-digit code)."""
    if value is None:
        return None, 1
    if not (value.isascii() and value.isdigit() and 2 <= len(value) <= 10):
        raise ValidationFailed(
            "kode_wilayah must be 2 to 10 digits: a prefix of the 10-digit region code "
            "(province 2, regency 4, district 6, village 10)",
            field="kode_wilayah",
        )
    return int(value), 10 ** (10 - len(value))


def check_kinds(kinds: Sequence[str] | None) -> frozenset[str]:
    if kinds is None:
        return frozenset(KINDS)
    if not kinds:
        raise ValidationFailed("kinds: name at least one change kind", field="kinds")
    for kind in kinds:
        if kind not in KINDS:
            raise ValidationFailed(
                f"unknown change kind {kind!r}; one of {', '.join(KINDS)}",
                field="kinds",
                value=kind,
            )
    return frozenset(kinds)


@dataclass(frozen=True, slots=True)
class Plan:
    """A change list checked and pinned: both sides, the filter, what the client may see."""

    before: Pinned
    after: Pinned
    keys: tuple[int, int, int, int]  # from snapshot, from rule set, to snapshot, to rule set
    where: repo.Filter
    decile: bool  # lines carry `decile` (app.services.disclosure.change_fields)
    family: bool  # ... and `family`

    def meta(self) -> dict[str, Any]:
        return {"from": self.before.meta(), "to": self.after.meta()}

    def audit_names(self) -> tuple[str, str]:
        """What each chunk's audit record names: both releases and both rule sets, `from..to`
        (its receipt names the `to` side, whose checksums it carries)."""
        b, a = self.before, self.after
        return two_sides(b.snapshot.id, a.snapshot.id), two_sides(b.rule_set.id, a.rule_set.id)


async def _pin_side(
    reads: Reads | None, engine: AsyncEngine, side: str, snapshot: str, rule_set: str | None
) -> Pinned:
    try:
        if reads is not None:
            return await reads.pin(snapshot, rule_set)
        async with read_connection(engine) as conn:
            return await pin(conn, snapshot, rule_set)
    except SnapshotNotFound:
        raise SnapshotNotFound(
            f"{side}: no snapshot {snapshot!r} is loaded", field=side, snapshot=snapshot
        ) from None


async def _stored_key(conn: Conn, side: str, pinned: Pinned) -> int:
    key = await decisions_repo.materialized_key(conn, pinned.snapshot.key, pinned.rule_set.id)
    if key is None:
        s, r = pinned.snapshot.id, pinned.rule_set.id
        raise DecisionsNotMaterialized(
            f"{side}: the decisions of snapshot {s} under rule set {r} are not stored; run "
            f"`tepat eligibility materialize --snapshot {s} --rule-set {r}`",
            field=side,
            snapshot=s,
            rule_set=r,
        )
    return key


async def plan(
    engine: AsyncEngine,
    caller: Caller,
    asked: Asked,
    reads: Reads | None = None,
    rule_sets: tuple[str, str] | None = None,
) -> Plan:
    """Everything that can refuse a change list, checked before a row is read: the programs
    (unknown 422, not granted 403), the kinds and the region prefix (422), both snapshots
    (404 naming the side), from == to (422), the stored decisions of both sides (409).

    `rule_sets`: each side's rule set as pinned earlier (a job, run after its submission, is
    judged under the rule sets in force when it was submitted)."""
    view = view_for(caller, asked.programs, False)
    if "decision" not in view.groups:
        raise Forbidden(
            "field group(s) decision not granted to this client (a change list is decisions)",
            field_groups=["decision"],
        )
    kinds = check_kinds(asked.kinds)
    prefix, divisor = region_prefix(asked.kode_wilayah)
    if asked.from_snapshot == asked.to_snapshot:
        raise ValidationFailed("to: must name another snapshot than from", field="to")
    from_rules, to_rules = rule_sets or (asked.rule_set, asked.rule_set)
    before = await _pin_side(reads, engine, "from", asked.from_snapshot, from_rules)
    after = await _pin_side(reads, engine, "to", asked.to_snapshot, to_rules)
    if before.snapshot.id == after.snapshot.id:
        raise ValidationFailed("to: must name another snapshot than from", field="to")
    if reads is not None:

        async def keys(conn: asyncpg.Connection) -> tuple[int, int]:
            return await _stored_key(conn, "from", before), await _stored_key(conn, "to", after)

        from_key, to_key = await reads.run(keys)
    else:
        async with read_connection(engine) as sa:
            from_key = await _stored_key(sa, "from", before)
            to_key = await _stored_key(sa, "to", after)
    amounts = {
        p
        for p, get in (("BPNT", "bpnt"), ("PBI_JK", "pbi"))
        if getattr(before.rule_set, get).monthly_rupiah
        != getattr(after.rule_set, get).monthly_rupiah
    }
    where = repo.Filter(
        programs=tuple(str(p) for p in view.programs),
        kinds=kinds,
        amount_changed=frozenset(amounts),
        prefix=prefix,
        divisor=divisor,
    )
    shown = change_fields(view.groups)  # app.services.disclosure: the one rule
    return Plan(
        before,
        after,
        (before.snapshot.key, from_key, after.snapshot.key, to_key),
        where,
        decile="decile" in shown,
        family="family" in shown,
    )


# --- rendering -------------------------------------------------------------------------------

_CRITERIA_OF: Final = {
    program: tuple((1 << i, cid) for i, (p, cid) in enumerate(CRITERIA) if p == program)
    for program in PROGRAM_BITS
}


def changes_of(
    where: repo.Filter,
    status: str,
    eligible: tuple[int | None, int | None],
    criteria: tuple[int | None, int | None],
    yearly_differs: bool,
    level_differs: bool,
) -> list[dict[str, Any]]:
    """The changes of one person (the API's `changes`), in program order."""
    (fe, te), (fc, tc) = eligible, criteria
    flipped = (fc or 0) ^ (tc or 0)
    out: list[dict[str, Any]] = []
    kinds = where.kinds
    for program in where.programs:
        bit = PROGRAM_BITS[program]
        was = fe is not None and bool(fe >> bit & 1)
        now = te is not None and bool(te >> bit & 1)
        kind: str | None = None
        if now and not was:
            kind = "gained" if "gained" in kinds else None
        elif was and not now:
            kind = "lost" if "lost" in kinds else None
        elif was and now:
            if "benefit_changed" in kinds and (
                (program == "PKH" and yearly_differs) or program in where.amount_changed
            ):
                kind = "benefit_changed"
            elif "level_changed" in kinds and program == "SEKOLAH_RAKYAT" and level_differs:
                kind = "level_changed"
        if kind is None:
            continue
        if status == "entered":
            reasons = [ENTERED]
        elif status == "left":
            reasons = [LEFT]
        else:
            reasons = [cid for mask, cid in _CRITERIA_OF[program] if flipped & mask]
        out.append({"program": program, "change": kind, "reasons": reasons})
    return out


def _family(no_kk: int | None, relationship: int | None, region: int | None) -> Any:
    if no_kk is None:
        return None
    return {
        "no_kk": f"{no_kk:016d}",
        "relationship": relationship,
        "kode_wilayah": f"{region:010d}",
    }


@dataclass(slots=True)
class Tally:
    """The summary's counts: people listed, by status, by program and change, by province."""

    listed: int = 0
    status: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    programs: dict[str, dict[str, int]] = field(default_factory=dict)
    provinces: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    audit_ids: list[str] = field(default_factory=list)
    receipts: list[str | None] = field(default_factory=list)

    def dumps(self) -> str:
        """The counts (not the audit ids), as a job commits them with each chunk."""
        counts = {
            "listed": self.listed,
            "status": self.status,
            "programs": self.programs,
            "provinces": self.provinces,
        }
        return orjson.dumps(counts).decode()

    @classmethod
    def loads(cls, text: str | None) -> Tally:
        """The counts `dumps` wrote (a fresh tally for None: nothing committed yet)."""
        if text is None:
            return cls()
        counts = orjson.loads(text)
        return cls(counts["listed"], counts["status"], counts["programs"], counts["provinces"])

    def add(self, status: str, province: str, changes: list[dict[str, Any]]) -> None:
        self.listed += 1
        self.status[status] += 1
        region = self.provinces.setdefault(province, {})
        for c in changes:
            program, kind = c["program"], c["change"]
            counts = self.programs.setdefault(program, dict.fromkeys(KINDS, 0))
            counts[kind] += 1
            by = region.setdefault(program, dict.fromkeys(KINDS, 0))
            by[kind] += 1


class ChangeList:
    """One change list, pinned to its two sides before any row is read."""

    def __init__(
        self,
        plan: Plan,
        audit: AuditWriter,
        caller: Caller,
        connect: Connect,
        pace: Pace | None = None,
        chunk: int = CHUNK,
        *,
        ordered: bool = False,
        after_nik: int | None = None,
        tally: Tally | None = None,
    ) -> None:
        self.plan = plan
        self.audit = audit
        self.caller = caller
        self.connect = connect
        self.pace = pace
        self.chunk = chunk
        self.tally = tally or Tally()
        # A job's list (app.services.jobs): in NIK order, after `after_nik` (where its last
        # committed chunk ended); `last_nik` is the last person of the chunk just yielded.
        self.ordered = ordered
        self.after_nik = after_nik
        self.last_nik: int | None = after_nik
        self._memo: dict[tuple[Any, ...], list[dict[str, Any]]] = {}

    async def stream(self) -> AsyncGenerator[bytes, None]:
        """Chunks of answer lines, each audited before it is yielded, then the summary line.

        A failure before the first chunk raises (the transport can still answer a problem);
        after it the stream ends with an error line and no summary, as a bulk stream does.
        """
        started = False
        try:
            async for out in self._chunks():
                yield out
                started = True
        except TepatError as e:
            if not started:
                raise
            log.warning("change list %s stopped: %s", self.caller.request_id, e.code)
            yield bulk.error_line(e.code, e.detail)
        except (Exception, asyncio.CancelledError) as e:
            if not started or isinstance(e, asyncio.CancelledError):
                raise
            log.error("change list %s stopped", self.caller.request_id, exc_info=e)
            yield bulk.error_line("internal", "the list stopped; quote the request id")

    async def _chunks(self) -> AsyncGenerator[bytes, None]:
        # The next chunk is read and rendered while earlier ones are being audited (at most
        # AHEAD at once); chunks are sent in order, each only once its record is durable.
        sealing: deque[asyncio.Task[bytes]] = deque()
        try:
            async for chunk in self.rendered():
                # Named in the summary in chunk order, whatever order the records commit in.
                self.tally.audit_ids.append(chunk.audit_id or "")
                self.tally.receipts.append(None)
                place = len(self.tally.receipts) - 1
                sealing.append(asyncio.create_task(self._seal(chunk, place)))
                if len(sealing) >= AHEAD:
                    yield await sealing.popleft()
            while sealing:
                yield await sealing.popleft()
            yield self.summary()
        finally:
            for task in sealing:
                task.cancel()

    async def _seal(self, chunk: bulk.Chunk, place: int) -> bytes:
        if self.pace is not None:
            await self.pace(chunk.niks)
        self.tally.receipts[place] = await bulk.seal(
            self.audit, self.caller, OPERATION, self.plan.after, chunk, self.plan.audit_names()
        )
        return chunk.data

    async def rendered(self) -> AsyncIterator[bulk.Chunk]:
        """The chunks of answer lines, not yet audited (the stream seals each, a job commits
        each with its record). When a chunk is yielded, `tally` counts the lines up to its end
        and `last_nik` is its last person (the generator waits there: nothing after is read)."""
        query = repo.changes_query(self.plan.where, keyset=self.ordered)
        if query is None:
            return
        after = (self.after_nik or 0) if self.ordered else None
        lines: list[bytes] = []
        subjects: list[str] = []
        last = self.last_nik
        async with self.connect() as conn:
            async for row in repo.stream(conn, query, self.plan.keys, after_nik=after):
                line = self._line(row)
                if line is None:
                    continue
                lines.append(line)
                last = row[0]
                subjects.append(nik_subject(f"{last:016d}"))
                if len(lines) >= self.chunk:
                    self.last_nik = last
                    yield self._chunk(lines, subjects)
                    lines, subjects = [], []
        if lines:
            self.last_nik = last
            yield self._chunk(lines, subjects)

    @staticmethod
    def _chunk(lines: list[bytes], subjects: list[str]) -> bulk.Chunk:
        n = len(lines)
        return bulk.Chunk(b"".join(lines), n, n, n, subjects, new_audit_id())

    def _line(self, r: Sequence[Any]) -> bytes | None:
        (nik, f_kk, t_kk, f_region, t_region, f_rel, t_rel, f_decile, t_decile,
         fe, te, fc, tc, f_yearly, t_yearly, f_level, t_level) = r  # fmt: skip
        status = "left" if t_kk is None else "entered" if f_kk is None else "stayed"
        key = (status, fe, te, fc, tc, f_yearly != t_yearly, f_level != t_level)
        changes = self._memo.get(key)
        if changes is None:
            changes = changes_of(self.plan.where, status, (fe, te), (fc, tc), key[5], key[6])
            if len(self._memo) >= 65536:
                self._memo.clear()
            self._memo[key] = changes
        if not changes:
            return None
        region = t_region if t_region is not None else f_region
        self.tally.add(status, f"{region // 100_000_000:02d}", changes)
        out: dict[str, Any] = {"nik": f"{nik:016d}", "status": status, "changes": changes}
        if self.plan.decile:
            out["decile"] = {"from": f_decile, "to": t_decile}
        if self.plan.family:
            out["family"] = {
                "from": _family(f_kk, f_rel, f_region),
                "to": _family(t_kk, t_rel, t_region),
            }
        return orjson.dumps(out) + b"\n"

    def summary(self) -> bytes:
        t = self.tally
        signed = t.receipts if self.audit.keyring is not None else None
        return summary_line(t, self.plan.meta(), self.caller.request_id, t.audit_ids, signed)


def summary_line(
    t: Tally,
    meta: dict[str, Any],
    request_id: str,
    audit_ids: list[str],
    receipts: list[str | None] | None,
) -> bytes:
    """The list's last line: the counts, both pins, the audit record of every chunk and, when
    receipts are on, their receipts (the stream's and a job's download alike)."""
    body: dict[str, Any] = {
        "listed": t.listed,
        "status": t.status,
        "programs": t.programs,
        "provinces": dict(sorted(t.provinces.items())),
        **meta,
        "request_id": request_id,
        "audit_ids": audit_ids,
    }
    if receipts is not None:
        body["receipts"] = receipts
    return orjson.dumps({"summary": body}) + b"\n"


async def open_changes(
    engine: AsyncEngine,
    audit: AuditWriter,
    caller: Caller,
    asked: Asked,
    connect: Connect,
    *,
    reads: Reads | None = None,
    pace: Pace | None = None,
    chunk: int = CHUNK,
) -> ChangeList:
    """A change list checked and pinned (`plan`), ready to stream."""
    return ChangeList(await plan(engine, caller, asked, reads), audit, caller, connect, pace, chunk)


# --- the mutation list: CSV for a BPJS job -----------------------------------------------------

CSV_COLUMNS: Final = ("nik", "program", "change", "reasons", "effective_date")


def csv_rows(data: bytes, effective: str) -> str:
    """The CSV rows of a chunk's answer lines: one per person and change (`tepat changes list
    --format csv` and a change list job's CSV download)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for line in data.splitlines():
        person = orjson.loads(line)
        for c in person.get("changes", ()):
            writer.writerow(
                (person["nik"], c["program"], c["change"], ";".join(c["reasons"]), effective)
            )
    return buffer.getvalue()


# --- the report: counts only, no personal data -------------------------------------------------

_WIDTH = {"province": 2, "regency": 4}


async def report(conn: asyncpg.Connection, plan: Plan, by: str) -> dict[str, Any]:
    """Gained, lost and net per program and region (`province` or `regency`), counted in people
    (a family program counts each member), with the people eligible in the region before; the
    rows with the largest relative drop (net / eligible before) first. Region: where the person
    is in `to` (in `from` for people who left); `eligible_before` counts by the `from` region."""
    if by not in _WIDTH:
        raise ValidationFailed("by must be province or regency", field="by")
    width = _WIDTH[by]
    programs = plan.where.programs
    changed, before = await repo.report_counts(conn, plan.keys, programs, 10 ** (10 - width))
    base = {r["region"]: r for r in before}
    found = {r["region"]: r for r in changed}
    names = region_names()
    rows: list[dict[str, Any]] = []
    for region in sorted(set(base) | set(found)):
        code = f"{region:0{width}d}"
        for program in programs:
            gained = found[region][f"{program}_gained"] if region in found else 0
            lost = found[region][f"{program}_lost"] if region in found else 0
            eligible = base[region][f"{program}_eligible"] if region in base else 0
            net = gained - lost
            rows.append(
                {
                    "region": code,
                    "name": names.get(code),
                    "program": program,
                    "eligible_before": eligible,
                    "gained": gained,
                    "lost": lost,
                    "net": net,
                    "relative": round(net / eligible, 4) if eligible else None,
                }
            )
    # Largest relative drop first; regions with no one eligible before (no ratio) last.
    rows.sort(key=lambda r: (r["relative"] is None, r["relative"] or 0, r["region"], r["program"]))
    return {**plan.meta(), "by": by, "rows": rows}
