"""A data request end to end: scope and purpose, pinning, decisions, audit, the rendered answer.

Both faces call these. The answer is rendered once (orjson) and its digest goes into the audit
record, which is durable before the bytes are handed back (UU 27/2022 art. 31).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.auth.principal import Principal
from app.db import read_connection
from app.eligibility import Program, RuleSet
from app.schemas.lookup import FamiliesLookup, PeopleLookup
from app.schemas.snapshots import Snapshot
from app.services import eligibility
from app.services.audit import AuditEntry, AuditWriter, new_audit_id, nik_subject, no_kk_subject
from app.services.pinning import pin


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asks, why, and under which request id (the faces build it from the transport)."""

    principal: Principal
    purpose: str
    request_id: str


def view_for(caller: Caller, programs: Sequence[str] | None, explain: bool) -> eligibility.View:
    granted = caller.principal.allowed_programs(programs)
    return eligibility.View(
        programs=tuple(Program(p) for p in granted),
        groups=frozenset(caller.principal.field_groups),
        explain=explain,
    )


Fetch = Callable[
    [AsyncConnection, Snapshot, RuleSet, Sequence[str], eligibility.View],
    Awaitable[tuple[list[dict[str, Any]], int]],
]


async def _answer(
    engine: AsyncEngine,
    audit: AuditWriter,
    caller: Caller,
    operation: str,
    asked: Sequence[str],
    subjects: list[str],
    request: PeopleLookup | FamiliesLookup,
    fetch: Fetch,
) -> bytes:
    view = view_for(caller, request.programs, request.explain)
    async with read_connection(engine) as conn:
        pinned = await pin(conn, request.snapshot, request.rule_set)
        results, found = await fetch(conn, pinned.snapshot, pinned.rule_set, asked, view)
    audit_id = new_audit_id()
    body = orjson.dumps({"meta": pinned.meta(caller.request_id, audit_id), "results": results})
    await audit.record(
        AuditEntry(
            id=audit_id,
            client_id=caller.principal.client_id,
            purpose=caller.purpose,
            operation=operation,
            snapshot_id=pinned.snapshot.id,
            rule_set_id=pinned.rule_set.id,
            subjects=subjects + [nik_subject(n) for n in disclosed_niks(results, asked)],
            found=found,
            response_digest=hashlib.sha256(body).digest(),
            request_id=caller.request_id,
        )
    )
    return body


def disclosed_niks(results: list[dict[str, Any]], asked: Sequence[str]) -> set[str]:
    """NIKs an answer reveals beyond those asked (members, PKH components): they are audited
    too, so a person's access trail (UU 27/2022 art. 32) includes family lookups about them."""
    out: set[str] = set()
    for r in results:
        for m in r.get("members", ()):
            out.add(m["nik"])
        for d in r.get("decisions", ()):
            for c in d.get("components") or ():
                out.add(c["nik"])
        for m in r.get("members", ()):
            for d in m.get("decisions", ()):
                for c in d.get("components") or ():
                    out.add(c["nik"])
    return out.difference(asked)


async def people_lookup(
    engine: AsyncEngine, audit: AuditWriter, caller: Caller, request: PeopleLookup
) -> bytes:
    return await _answer(
        engine,
        audit,
        caller,
        "people.lookup",
        request.niks,
        [nik_subject(n) for n in request.niks],
        request,
        eligibility.people,
    )


async def families_lookup(
    engine: AsyncEngine, audit: AuditWriter, caller: Caller, request: FamiliesLookup
) -> bytes:
    return await _answer(
        engine,
        audit,
        caller,
        "families.lookup",
        request.no_kks,
        [no_kk_subject(k) for k in request.no_kks],
        request,
        eligibility.families,
    )
