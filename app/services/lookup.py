"""A data request end to end: scope and purpose, pinning, decisions, audit, the rendered answer.

Both faces call these. The answer is rendered once (orjson) and its digest goes into the audit
record, which is durable before the bytes are handed back (UU 27/2022 art. 31).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from app.auth.principal import Principal
from app.eligibility import Program, RuleSet
from app.schemas.lookup import FamiliesLookup
from app.schemas.snapshots import Snapshot
from app.services import eligibility, receipts
from app.services.audit.records import AuditEntry, new_audit_id, nik_subject, no_kk_subject
from app.services.audit.writer import AuditWriter
from app.services.catalog import Reads
from app.services.pinning import Pinned


@dataclass(frozen=True, slots=True)
class Answer:
    """An answer's exact bytes and its signed receipt (None when receipts are off)."""

    body: bytes
    receipt: str | None


@dataclass(frozen=True, slots=True)
class Recorded:
    """An audit record made durable: its id, its place in the chain, the digest it names."""

    audit_id: str
    seq: int
    digest: bytes
    receipt: str | None = None  # signed with the record (record_access(sign=True))


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asks, why, and under which request id (the faces build it from the transport)."""

    principal: Principal
    purpose: str
    request_id: str


_views: dict[tuple[Any, ...], eligibility.View] = {}


def view_for(caller: Caller, programs: Sequence[str] | None, explain: bool) -> eligibility.View:
    """What the caller sees: its granted programs (or those it names) and field groups."""
    principal = caller.principal
    # A view depends only on these; clients are few, so the views are (a bounded memo).
    key = (
        principal.programs,
        principal.field_groups,
        None if programs is None else tuple(programs),
        explain,
    )
    view = _views.get(key)
    if view is None:
        granted = principal.allowed_programs(programs)  # raises for unknown or refused ones
        view = eligibility.View(
            programs=tuple(Program(p) for p in granted),
            groups=frozenset(principal.field_groups),
            explain=explain,
        )
        if len(_views) >= 4096:
            _views.clear()
        _views[key] = view
    return view


class Asked(Protocol):
    """What a lookup names besides its identifiers (PeopleLookup, FamiliesLookup, app.api.fast)."""

    @property
    def snapshot(self) -> str | None: ...
    @property
    def rule_set(self) -> str | None: ...
    @property
    def programs(self) -> Sequence[str] | None: ...
    @property
    def explain(self) -> bool: ...


class PeopleAsked(Asked, Protocol):
    @property
    def niks(self) -> Sequence[str]: ...


Fetch = Callable[
    [Reads, Snapshot, RuleSet, Sequence[str], eligibility.View], Awaitable[eligibility.Rendered]
]


async def _answer(
    reads: Reads,
    audit: AuditWriter,
    caller: Caller,
    operation: str,
    asked: Sequence[str],
    subjects: list[str],
    request: Asked,
    fetch: Fetch,
    on_disclosed: Callable[[int], None] | None = None,
) -> Answer:
    view = view_for(caller, request.programs, request.explain)
    pinned = await reads.pin(request.snapshot, request.rule_set)
    rendered = await fetch(reads, pinned.snapshot, pinned.rule_set, asked, view)  # one statement
    audit_id = new_audit_id()
    body = b'{"meta":%b,"results":[%b]}' % (
        orjson.dumps(pinned.meta(caller.request_id, audit_id)),
        b",".join(rendered.parts),
    )
    if rendered.disclosed:  # members (families) and PKH components (explain) name other NIKs
        subjects = subjects + [nik_subject(n) for n in rendered.disclosed]
    if on_disclosed is not None:
        on_disclosed(len(rendered.disclosed))
    done = await record_access(
        audit, caller, audit_id, operation, pinned, subjects, rendered.found, body, sign=True
    )
    return Answer(body, done.receipt)


async def record_access(
    audit: AuditWriter,
    caller: Caller,
    audit_id: str,
    operation: str,
    pinned: Pinned,
    subjects: Sequence[str],
    found: int,
    body: bytes,
    names: tuple[str, str] | None = None,
    *,
    sign: bool = False,
    sent_digest: bytes | None = None,
) -> Recorded:
    """The audit record of one answer, durable before the answer leaves (every face uses it).

    `body` is exactly what is sent (REST, a bulk chunk) or the rendered `data` (GraphQL).
    `names`: the (snapshot, rule set) the record names, when not `pinned`'s alone (a change
    list names both sides: app.services.audit.records.two_sides).
    With `sign`, the receipt is signed along with the record (by the audit writer, off the
    event loop: app.services.signer), over `sent_digest` when the bytes sent are more than
    `body` (see `receipt`).
    """
    entry = access_entry(caller, audit_id, operation, pinned, subjects, found, body, names)
    digest = entry.response_digest
    if not sign or audit.keyring is None:
        return Recorded(audit_id, await audit.record(entry), digest)
    signing = receipt_claims(audit_id, 0, pinned, sent_digest or digest)
    seq, signed = await audit.record_signed(entry, signing)
    return Recorded(audit_id, seq, digest, signed)


def access_entry(
    caller: Caller,
    audit_id: str,
    operation: str,
    pinned: Pinned,
    subjects: Sequence[str],
    found: int,
    body: bytes,
    names: tuple[str, str] | None = None,
) -> AuditEntry:
    """What the audit record of one answer says (its digest over `body`)."""
    snapshot_id, rule_set_id = names or (pinned.snapshot.id, pinned.rule_set.id)
    return AuditEntry(
        id=audit_id,
        client_id=caller.principal.client_id,
        purpose=caller.purpose,
        operation=operation,
        snapshot_id=snapshot_id,
        rule_set_id=rule_set_id,
        subjects=subjects,
        found=found,
        response_digest=hashlib.sha256(body).digest(),
        request_id=caller.request_id,
    )


def receipt(
    audit: AuditWriter, pinned: Pinned, recorded: Recorded, body_digest: bytes | None = None
) -> str | None:
    """The signed receipt of a recorded answer (app.services.receipts), over `body_digest`: the
    SHA-256 of the exact bytes sent, when they are more than the recorded digest covers
    (GraphQL: the whole response, the record covering its `data`)."""
    keyring = audit.keyring
    if keyring is None:
        return None
    return keyring.sign(
        receipt_claims(recorded.audit_id, recorded.seq, pinned, body_digest or recorded.digest)
    )


def receipt_claims(audit_id: str, seq: int, pinned: Pinned, digest: bytes) -> dict[str, Any]:
    """A receipt's claims (app.services.receipts.claims) for an answer read from `pinned`."""
    snapshot, rule_set = pinned.snapshot, pinned.rule_set
    return receipts.claims(
        audit_id,
        seq,
        (snapshot.id, snapshot.checksum),
        (rule_set.id, rule_set.checksum),
        digest,
        int(time.time()),
    )


async def people_lookup(
    reads: Reads, audit: AuditWriter, caller: Caller, request: PeopleAsked
) -> Answer:
    return await _answer(
        reads,
        audit,
        caller,
        "people.lookup",
        request.niks,
        [nik_subject(n) for n in request.niks],
        request,
        eligibility.people_read,
    )


async def families_lookup(
    reads: Reads,
    audit: AuditWriter,
    caller: Caller,
    request: FamiliesLookup,
    on_disclosed: Callable[[int], None] | None = None,
) -> Answer:
    """`on_disclosed(n)`: told how many NIKs the answer names (members...) once it is known."""
    return await _answer(
        reads,
        audit,
        caller,
        "families.lookup",
        request.no_kks,
        [no_kk_subject(k) for k in request.no_kks],
        request,
        eligibility.families_read,
        on_disclosed,
    )
