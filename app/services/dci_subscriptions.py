"""DCI subscriptions: `subscribe` / `unsubscribe`, and `notify` callbacks when a release is
published (docs/dci.md, "Subscriptions").

A subscription watches the eligibility changes of the client's granted programs, optionally
narrowed to programs, change kinds and a region prefix: exactly what a change list
(app.services.changes) asks. Its requests are answered at once and their answers delivered as
callbacks (`on-subscribe`, `on-unsubscribe`) through the DCI transactions and the job queue,
like an async txn status (app.services.dci).

Notifications: when a release is published and the decisions of it and of the release before it
(by cut-off date) are stored under their rule sets in force, every subscription made before its
publication is owed one notification for that pair. `due` finds them and records each in
`dci_notifications` (its primary key makes a pair notified once, whichever worker finds it) with
its job queued in the same transaction. The job (`run_notification`) computes the change list
for the subscription, each chunk audited and given its receipt as a change list's chunk is, and
turns each chunk into one bounded `notify` callback body, signed with the service's key, stored
as a DCI transaction with an id derived from (subscription, pair, page) and queued for delivery;
a job run again (its worker died) stores no page twice.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import asyncpg
import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth.principal import Principal
from app.errors import BulkNotGranted, Forbidden, TepatError, ValidationFailed
from app.repositories import clients as clients_repo
from app.repositories import dci as dci_repo
from app.repositories import decisions as decisions_repo
from app.schemas.dci import DciHeader, DciSubscribeMessage, DciUnsubscribeMessage
from app.services import bulk, changes, dci, signatures
from app.services.audit.writer import AuditWriter, append
from app.services.catalog import Reads
from app.services.lookup import Caller, Recorded, access_entry, receipt
from app.services.pinning import pin
from app.services.receipts import Keyring

log = logging.getLogger("tepat.dci.subscriptions")

NOTIFY: Final = "tepat.dci_notify"  # the queue's name for "compute and store a notification"
EVENT: Final = "eligibility_changed"  # any change; or one kind of changes.KINDS
EVENTS: Final = (EVENT, *changes.KINDS)
RECORD_TYPES: Final = frozenset({"Person", "spdci-extensions-dci:Person"})
REG_TYPE: Final = "ns:org:RegistryType:Social"
PAGE: Final = 200  # people in one notify callback (one change list chunk)
_PAGES: Final = uuid.UUID("0d0c1b7e-8f0e-4d1a-9a43-7e4b1f2c9d10")  # uuid5 namespace of pages

_ATTRIBUTES = {
    "program": "programs",
    "change": "kinds",
    "region_code": "region",
    "kode_wilayah": "region",
}


class Rejected(Exception):
    """One subscribe item refused with the standard's SubscribeStatusReasonCode."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Criteria:
    """What a subscription watches: a change list's filter (None: all the client may see)."""

    event: str
    programs: list[str] | None
    kinds: list[str] | None
    region: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "programs": self.programs,
            "kinds": self.kinds,
            "region": self.region,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Criteria:
        return cls(value["event"], value["programs"], value["kinds"], value["region"])


def _values(name: str, op: Any, value: Any) -> list[str]:
    if op == "eq":
        values = [value]
    elif op == "in" and isinstance(value, list) and 1 <= len(value) <= 10:
        values = value
    else:
        raise Rejected("rjct.notify_details.invalid", f"{name}: operator eq, or in with 1 to 10")
    if not all(isinstance(v, str) for v in values):
        raise Rejected("rjct.notify_details.invalid", f"{name}: text values")
    return [str(v) for v in values]


def understand(criteria: Any, principal: Principal) -> Criteria:
    """A subscribe item's criteria as a change list's filter, or Rejected."""
    if criteria.reg_event_type not in EVENTS:
        raise Rejected(
            "rjct.notify_types.invalid",
            f"reg_event_type: one of {', '.join(EVENTS)}",
        )
    if criteria.notify_record_type not in RECORD_TYPES:
        raise Rejected("rjct.notify_types.invalid", "notify_record_type: Person")
    query = criteria.filter
    if criteria.filter_type == "expression":
        value = query.get("value") if isinstance(query, dict) else None
        query = value.get("expression") if isinstance(value, dict) else None
    elif criteria.filter_type not in (None, "predicate"):
        raise Rejected("rjct.notify_details.invalid", "filter_type: predicate or expression")
    if not isinstance(query, list) or len(query) > 10:
        raise Rejected("rjct.notify_details.invalid", "filter: a list of 0 to 10 predicates")
    found: dict[str, Any] = {}
    for predicate in query:
        if not isinstance(predicate, dict) or not isinstance(predicate.get("expression1"), dict):
            raise Rejected("rjct.notify_details.invalid", "a predicate needs expression1")
        expressions = [predicate["expression1"]]
        if predicate.get("expression2") is not None:
            if predicate.get("condition", "and") != "and":
                raise Rejected(
                    "rjct.notify_details.invalid",
                    "condition: a subscription's predicates are ANDed (and)",
                )
            expressions.append(predicate["expression2"])
        for e in expressions:
            name = e.get("attribute_name") if isinstance(e, dict) else None
            if name not in _ATTRIBUTES:
                raise Rejected(
                    "rjct.notify_details.invalid",
                    f"attribute_name: one of {', '.join(sorted(_ATTRIBUTES))}",
                )
            what = _ATTRIBUTES[name]
            if what in found:
                raise Rejected("rjct.notify_details.invalid", f"{name} is named twice")
            values = _values(name, e.get("operator"), e.get("attribute_value"))
            if what == "region":
                if len(values) != 1:
                    raise Rejected("rjct.notify_details.invalid", f"{name}: one prefix (eq)")
                try:
                    changes.region_prefix(values[0])
                except ValidationFailed as v:
                    raise Rejected("rjct.notify_details.invalid", v.detail) from None
                found[what] = values[0]
            else:
                found[what] = values
    kinds = found.get("kinds")
    if criteria.reg_event_type != EVENT:
        kinds = [k for k in (kinds or [criteria.reg_event_type]) if k == criteria.reg_event_type]
        if not kinds:
            raise Rejected("rjct.notify_details.invalid", "change: not the reg_event_type's kind")
    try:
        changes.check_kinds(kinds)
        programs = found.get("programs")
        principal.allowed_programs(programs)  # unknown or not granted: refused
    except (ValidationFailed, Forbidden) as e:
        raise Rejected("rjct.notify_details.invalid", e.detail) from None
    return Criteria(criteria.reg_event_type, programs, kinds, found.get("region"))


def check_grants(principal: Principal) -> None:
    """A subscription is a standing change list: the same grants (403 otherwise)."""
    if not principal.bulk:
        raise BulkNotGranted(
            "a subscription's notifications name many people: it needs the bulk grant "
            "(tepat client create --bulk)"
        )
    if "decision" not in principal.field_groups:
        raise Forbidden(
            "field group(s) decision not granted to this client (notifications are decisions)",
            field_groups=["decision"],
        )


def base_of(sender_uri: str | None, suffix: str) -> str | None:
    """The client's callback base: `sender_uri` without a trailing `suffix`."""
    if sender_uri is None:
        return None
    base = sender_uri.rstrip("/")
    return base[: -len(suffix)] if base.endswith(suffix) else base


def _callback_header(
    header: DciHeader | None, action: str, status: str, total: int, receiver: str | None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "version": "1.0.0",
        "message_id": str(uuid.uuid4()),
        "message_ts": dci.now().isoformat(),
        "action": action,
        "status": status,
        "total_count": total,
        "completed_count": total,
        "sender_id": dci.SENDER_ID,
        "receiver_id": receiver if receiver is not None else (header.sender_id if header else ""),
        "is_msg_encrypted": False,
    }
    return out


async def subscribe(
    conn: asyncpg.Connection,
    caller: Caller,
    header: DciHeader,
    message: DciSubscribeMessage,
    callback: str,
    notify_url: str,
    keyring: Keyring | None,
    enqueue: Callable[[asyncpg.Connection, uuid.UUID], Awaitable[None]],
) -> uuid.UUID:
    """Record the subscriptions of a subscribe message and queue its `on-subscribe` answer, in
    one transaction. The correlation id acknowledged."""
    correlation_id = uuid.uuid4()
    stamp = dci.now().isoformat()
    principal = caller.principal
    results: list[dict[str, Any]] = []
    outcome: list[dict[str, Any]] = []
    async with conn.transaction():
        # What the client's active subscriptions watch, and where: the same again is refused.
        active = {
            orjson.dumps([orjson.loads(r[0]), r[1]], option=orjson.OPT_SORT_KEYS)
            for r in await conn.fetch(
                "SELECT criteria::text, notify_url FROM dci_subscriptions WHERE client_id = $1 "
                "AND status = 'subscribe'",
                principal.client_id,
            )
        }
        seen: set[str] = set()
        for item in message.subscribe_request:
            out: dict[str, Any] = {"reference_id": item.reference_id, "timestamp": stamp}
            try:
                if item.reference_id in seen:
                    raise Rejected("rjct.reference_id.duplicate", "reference_id used twice")
                seen.add(item.reference_id)
                criteria = understand(item.subscribe_criteria, principal)
                stored = {**criteria.to_json(), "sender_id": header.sender_id}
                key = orjson.dumps([stored, notify_url], option=orjson.OPT_SORT_KEYS)
                if key in active:
                    raise Rejected(
                        "rjct.event.already_subscribed",
                        "an active subscription of this client watches the same",
                    )
                active.add(key)
                code = uuid.uuid4()
                await conn.execute(
                    "INSERT INTO dci_subscriptions (id, client_id, transaction_id, reference_id, "
                    "purpose, request_id, notify_url, criteria) "
                    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb)",
                    code, principal.client_id, message.transaction_id, item.reference_id,
                    caller.purpose, caller.request_id, notify_url, orjson.dumps(stored).decode(),
                )  # fmt: skip
                info: dict[str, Any] = {
                    "version": "1.0.0",
                    "code": str(code),
                    "status": "subscribe",
                    "timestamp": stamp,
                    "reg_type": REG_TYPE,
                    "reg_event_type": criteria.event,
                    "filter_type": item.subscribe_criteria.filter_type or "predicate",
                    "notify_record_type": item.subscribe_criteria.notify_record_type,
                }
                out |= {"status": "succ", "subscriptions": [info]}
            except Rejected as r:
                out |= {
                    "status": "rjct",
                    "status_reason_code": r.code,
                    "status_reason_message": r.message[:999],
                }
            if item.locale is not None:
                out["locale"] = item.locale
            results.append(out)
            outcome.append(
                {k: out[k] for k in ("reference_id", "status", "status_reason_code") if k in out}
            )
        ok = any(o["status"] == "succ" for o in outcome)
        status = "succ" if ok else "rjct"
        body = signatures.sign(
            keyring,
            _callback_header(header, "on-subscribe", status, len(results), None),
            {
                "transaction_id": message.transaction_id,
                "correlation_id": str(correlation_id),
                "subscribe_response": results,
            },
        )
        await _store_callback(
            conn, caller, header, message.transaction_id, "subscribe", correlation_id, status,
            outcome, callback, body, enqueue,
        )  # fmt: skip
    return correlation_id


async def unsubscribe(
    conn: asyncpg.Connection,
    caller: Caller,
    header: DciHeader,
    message: DciUnsubscribeMessage,
    callback: str,
    keyring: Keyring | None,
    enqueue: Callable[[asyncpg.Connection, uuid.UUID], Awaitable[None]],
) -> uuid.UUID:
    """End the client's own subscriptions the message names and queue its `on-unsubscribe`
    answer, in one transaction. Another client's code is answered as an unknown one."""
    correlation_id = uuid.uuid4()
    ended: list[str] = []
    problem: tuple[str, str] | None = None
    async with conn.transaction():
        for code in dict.fromkeys(message.subscription_codes):
            try:
                sid = uuid.UUID(code)
            except ValueError:
                sid = None
            row = None
            if sid is not None:
                row = await conn.fetchrow(
                    "SELECT status FROM dci_subscriptions WHERE id = $1 AND client_id = $2 "
                    "FOR UPDATE",
                    sid,
                    caller.principal.client_id,
                )
            if row is None:
                problem = problem or (
                    "rjct.subscription_code.invalid",
                    "no subscription of this client has that code",
                )
                continue
            if row["status"] == "unsubscribe":
                problem = problem or (
                    "rjct.event.already_unsubscribed",
                    "that subscription has already ended",
                )
                continue
            await conn.execute(
                "UPDATE dci_subscriptions SET status = 'unsubscribe', ended_at = now() "
                "WHERE id = $1",
                sid,
            )
            ended.append(code)
        status = "rjct" if problem is not None else "succ"
        answer: dict[str, Any] = {
            "transaction_id": message.transaction_id,
            "correlation_id": str(correlation_id),
            # The standard names the member `timesatmp` but requires `timestamp`: the latter.
            "timestamp": dci.now().isoformat(),
            "status": status,
            "subscription_status": [{"code": c, "status": "unsubscribe"} for c in ended],
        }
        if problem is not None:
            answer["status_reason_code"], answer["status_reason_message"] = problem
        body = signatures.sign(
            keyring,
            _callback_header(
                header, "on-unsubscribe", status, len(message.subscription_codes), None
            ),
            answer,
        )
        outcome = [{"reference_id": c, "status": "succ"} for c in ended]
        await _store_callback(
            conn, caller, header, message.transaction_id, "unsubscribe", correlation_id, status,
            outcome, callback, body, enqueue,
        )  # fmt: skip
    return correlation_id


async def _store_callback(
    conn: asyncpg.Connection,
    caller: Caller,
    header: DciHeader,
    transaction_id: str,
    action: str,
    correlation_id: uuid.UUID,
    status: str,
    outcome: list[dict[str, Any]],
    url: str,
    body: bytes,
    enqueue: Callable[[asyncpg.Connection, uuid.UUID], Awaitable[None]],
) -> None:
    await dci_repo.insert(
        conn,
        id=correlation_id,
        client_id=caller.principal.client_id,
        transaction_id=transaction_id,
        message_id=header.message_id,
        action=action,
        mode="async",
        status=status,
        purpose=caller.purpose,
        request_id=caller.request_id,
        outcome=outcome,
        callback_url=url,
    )
    await dci_repo.answered(conn, correlation_id, status, outcome, body)
    await enqueue(conn, correlation_id)


# --- notifications -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pair:
    subscription: uuid.UUID
    from_key: int
    to_key: int

    def payload(self) -> bytes:
        return (
            self.subscription.bytes
            + self.from_key.to_bytes(2, "big")
            + self.to_key.to_bytes(2, "big")
        )

    @classmethod
    def of(cls, payload: bytes) -> Pair:
        return cls(
            uuid.UUID(bytes=payload[:16]),
            int.from_bytes(payload[16:18], "big"),
            int.from_bytes(payload[18:20], "big"),
        )


_DUE = """
WITH pub AS (
    SELECT key, id, published_at,
           lag(key) OVER (ORDER BY cutoff_date, published_at) AS prev_key
    FROM snapshots WHERE status = 'published'
)
SELECT s.id, pub.prev_key, pub.key
FROM dci_subscriptions s JOIN pub ON pub.published_at > s.created_at
WHERE s.status = 'subscribe' AND pub.prev_key IS NOT NULL
  AND NOT EXISTS (
      SELECT 1 FROM dci_notifications n WHERE n.subscription_id = s.id
         AND n.from_snapshot_key = pub.prev_key AND n.to_snapshot_key = pub.key)
ORDER BY s.created_at, pub.key
LIMIT 1000
"""


async def _stored(engine: AsyncEngine, key: int, memo: dict[int, bool]) -> bool:
    """Are the decisions of snapshot `key` stored under its rule set in force?"""
    if key not in memo:
        async with engine.connect() as sa:
            snapshot_id = (
                await sa.execute(text("SELECT id FROM snapshots WHERE key = :key"), {"key": key})
            ).scalar()
            if snapshot_id is None:  # dropped meanwhile
                memo[key] = False
                return False
            try:
                pinned = await pin(sa, snapshot_id, None)
            except TepatError:
                memo[key] = False
                return False
            found = await decisions_repo.materialized_key(sa, key, pinned.rule_set.id)
        memo[key] = found is not None
    return memo[key]


async def due(
    conn: asyncpg.Connection,
    engine: AsyncEngine,
    enqueue: Callable[[asyncpg.Connection, Pair], Awaitable[None]],
) -> int:
    """Record every notification owed (both releases' decisions stored) and queue it, each in
    one transaction with its job; a pair already recorded (by any worker) is skipped. How many."""
    memo: dict[int, bool] = {}
    queued = 0
    for row in await conn.fetch(_DUE):
        pair = Pair(row[0], row[1], row[2])
        if not (
            await _stored(engine, pair.from_key, memo) and await _stored(engine, pair.to_key, memo)
        ):
            continue
        async with conn.transaction():
            new = await conn.fetchval(
                "INSERT INTO dci_notifications (subscription_id, from_snapshot_key, "
                "to_snapshot_key) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING 1",
                pair.subscription, pair.from_key, pair.to_key,
            )  # fmt: skip
            if new:
                await enqueue(conn, pair)
                queued += 1
    return queued


async def _caller(engine: AsyncEngine, row: asyncpg.Record) -> Caller | None:
    """The subscription's client as it is now; None if it may no longer be notified."""
    async with engine.connect() as c:
        info = await clients_repo.get_by_id(c, row["client_id"])
    if (
        info is None
        or info.revoked_at is not None
        or info.suspended_at is not None
        or (info.expires_at is not None and info.expires_at <= dci.now())
        or row["purpose"] not in info.purposes
    ):
        return None
    return Caller(Principal.from_client(info), row["purpose"], row["request_id"])


def page_id(pair: Pair, page: int) -> uuid.UUID:
    return uuid.uuid5(_PAGES, f"{pair.subscription}:{pair.from_key}:{pair.to_key}:{page}")


def _record(line: dict[str, Any]) -> dict[str, Any]:
    """A change list line as the standard's Person, renamed as a search's records are."""
    out: dict[str, Any] = {"@type": "Person", "identifier": dci._id("NIK", line["nik"])}
    family = line.get("family")
    if family is not None:
        now = family["to"] or family["from"]
        if now is not None:
            out["household_identifier"] = dci._id("KK", now["no_kk"])
            out["household_status"] = str(now["relationship"])
            out["address"] = {"@type": "Address", "region_code": now["kode_wilayah"]}
    decile = line.get("decile")
    if decile is not None and decile.get("to") is not None:
        out["poverty_score"] = str(decile["to"])
    extra = [
        {"name": "status", "value": line["status"]},
        {"name": "changes", "value": line["changes"]},
    ]
    extra += [{"name": k, "value": line[k]} for k in ("decile", "family") if k in line]
    out["additional_attributes"] = extra
    return out


def notify_body(
    row: asyncpg.Record,
    criteria: dict[str, Any],
    plan: changes.Plan,
    lines: list[dict[str, Any]],
    page: int,
    last: bool,
    audit_id: str,
    receipt: str | None,
    request_id: str,
    keyring: Keyring | None,
) -> bytes:
    """One `notify` callback: a page of the people whose eligibility changed, one event each."""
    stamp = dci.now().isoformat()
    events = [
        {
            "reference_id": row["reference_id"],
            "timestamp": stamp,
            "data": {
                "version": "1.0.0",
                "reg_type": REG_TYPE,
                "reg_event_type": criteria["event"],
                "response_entity": "Member",
                "reg_records": _record(line),
            },
        }
        for line in lines
    ]
    header = _callback_header(None, "notify", "succ", len(events), criteria.get("sender_id", ""))
    meta: dict[str, Any] = {
        "subscription_code": str(row["id"]),
        **plan.meta(),
        "page": page,
        "last_page": last,
        "request_id": request_id,
        "audit_id": audit_id,
    }
    if receipt is not None:
        meta["receipt"] = receipt
    header["meta"] = meta
    return signatures.sign(
        keyring, header, {"transaction_id": row["transaction_id"], "notify_event": events}
    )


class NotifyLater(Exception):
    def __init__(self, seconds: float, why: str) -> None:
        super().__init__(why)
        self.seconds = seconds


async def run_notification(
    pair: Pair,
    *,
    connect: Callable[[], Awaitable[asyncpg.Connection]],
    engine: AsyncEngine,
    audit: AuditWriter,
    reads: Reads | None,
    enqueue: Callable[[asyncpg.Connection, uuid.UUID], Awaitable[None]],
    pace: Callable[[Principal, int], Awaitable[None]] | None = None,
    page_size: int = PAGE,
) -> str:
    """The worker's part of a notification: the change list of the pair for the subscription,
    a `notify` callback per chunk, each stored and queued once. What happened."""
    conn = await connect()
    try:
        row = await conn.fetchrow(
            "SELECT n.status AS state, s.* FROM dci_notifications n "
            "JOIN dci_subscriptions s ON s.id = n.subscription_id WHERE n.subscription_id = $1 "
            "AND n.from_snapshot_key = $2 AND n.to_snapshot_key = $3",
            pair.subscription, pair.from_key, pair.to_key,
        )  # fmt: skip
        if row is None or row["state"] != "pdng":
            return "done"
        caller = await _caller(engine, row) if row["status"] == "subscribe" else None
        criteria = orjson.loads(row["criteria"])
        ids = dict(
            await conn.fetch(
                "SELECT key, id FROM snapshots WHERE key = ANY($1::int2[])",
                [pair.from_key, pair.to_key],
            )
        )
        try:
            if caller is None:
                raise Forbidden("the subscription ended, or its client may no longer be notified")
            prefix = caller.principal.callback_url_prefix
            if prefix is None or not dci.under(row["notify_url"], prefix):
                raise Forbidden("the client's callback prefix no longer covers the address")
            check_grants(caller.principal)
            asked = changes.Asked(
                ids[pair.from_key], ids[pair.to_key], None,
                criteria["programs"], criteria["kinds"], criteria["region"],
            )  # fmt: skip
            plan = await changes.plan(engine, caller, asked, reads)
        except (TepatError, KeyError) as e:
            log.info("DCI notification %s: not sent (%s)", pair.subscription, type(e).__name__)
            await _finish(conn, pair, "rjct", 0, 0)
            return "not sent"
        return await _pages(
            conn, connect, pair, row, criteria, caller, plan, audit, enqueue, pace, page_size
        )
    finally:
        await conn.close()


async def _pages(
    conn: asyncpg.Connection,
    connect: Callable[[], Awaitable[asyncpg.Connection]],
    pair: Pair,
    row: asyncpg.Record,
    criteria: dict[str, Any],
    caller: Caller,
    plan: changes.Plan,
    audit: AuditWriter,
    enqueue: Callable[[asyncpg.Connection, uuid.UUID], Awaitable[None]],
    pace: Callable[[Principal, int], Awaitable[None]] | None,
    page_size: int,
) -> str:
    @contextlib.asynccontextmanager
    async def reader() -> AsyncIterator[asyncpg.Connection]:
        # The change list streams on its own connection (a server-side cursor in a transaction).
        stream = await connect()
        try:
            yield stream
        finally:
            await stream.close()

    # Where the pages committed so far end (a worker that died left them): resumed after.
    at = await conn.fetchrow(
        "SELECT after_nik, pages, people FROM dci_notifications WHERE subscription_id = $1 "
        "AND from_snapshot_key = $2 AND to_snapshot_key = $3",
        pair.subscription, pair.from_key, pair.to_key,
    )  # fmt: skip
    listed = changes.ChangeList(
        plan, audit, caller, reader, None, page_size, ordered=True, after_nik=at["after_nik"]
    )
    page, people = at["pages"], at["people"]

    async def store(chunk: bulk.Chunk, last_nik: int | None, last: bool) -> bool:
        """One page: its audit record, the callback stored and queued, and the cursor, in one
        transaction. False if the page was stored already (another worker got there)."""
        nonlocal page, people
        if pace is not None:  # the people notified, charged as a stream's are
            await pace(caller.principal, chunk.niks)
        lines = [orjson.loads(x) for x in chunk.data.splitlines() if x.strip()]
        audit_id = chunk.audit_id
        if audit_id is None:
            raise ValueError("a page that discloses nothing has no audit record")
        entry = access_entry(
            caller, audit_id, changes.OPERATION, plan.after, chunk.subjects,
            chunk.found, chunk.data, plan.audit_names(),
        )  # fmt: skip
        pid = page_id(pair, page + 1)
        async with conn.transaction():
            # Chained under the audit head's row lock in this transaction: the record is
            # durable exactly when its page is, and a rolled-back page leaves none.
            placed = await append(conn, [audit.unchained(entry)])
            recorded = Recorded(audit_id, placed[0].seq, entry.response_digest)
            body = notify_body(
                row, criteria, plan, lines, page + 1, last, audit_id,
                receipt(audit, plan.after, recorded), caller.request_id, audit.keyring,
            )  # fmt: skip
            new = await conn.fetchval(
                "INSERT INTO dci_transactions (id, client_id, transaction_id, message_id, action, "
                "mode, status, purpose, request_id, outcome, callback_url, response) "
                "VALUES ($1, $2, $3, $4, 'notify', 'async', 'succ', $5, $6, '[]'::jsonb, $7, $8) "
                "ON CONFLICT (id) DO NOTHING RETURNING 1",
                pid, row["client_id"], row["transaction_id"], f"notify-{page + 1}",
                row["purpose"], caller.request_id, row["notify_url"], body,
            )  # fmt: skip
            if not new:
                raise _Stored
            await enqueue(conn, pid)
            await conn.execute(
                "UPDATE dci_notifications SET after_nik = $4, pages = $5, people = $6 "
                "WHERE subscription_id = $1 AND from_snapshot_key = $2 AND to_snapshot_key = $3",
                pair.subscription, pair.from_key, pair.to_key, last_nik, page + 1,
                people + len(lines),
            )  # fmt: skip
        page += 1
        people += len(lines)
        return True

    # A page is stored once the next is read, so that the last one says it is the last.
    held: tuple[bulk.Chunk, int | None] | None = None
    try:
        async for chunk in listed.rendered():
            if held is not None:
                await store(*held, last=False)
            held = (chunk, listed.last_nik)
        if held is not None:
            await store(*held, last=True)
    except TepatError as e:
        raise NotifyLater(300.0, e.code) from None
    except _Stored:
        return "done"
    await _finish(conn, pair, "succ", page, people)
    return f"{page} page(s), {people} people"


class _Stored(Exception):
    """A page of the notification was stored by another worker: the rest is its to store."""


async def _finish(
    conn: asyncpg.Connection, pair: Pair, status: str, pages: int, people: int
) -> None:
    await conn.execute(
        "UPDATE dci_notifications SET status = $4, pages = $5, people = $6, done_at = now() "
        "WHERE subscription_id = $1 AND from_snapshot_key = $2 AND to_snapshot_key = $3",
        pair.subscription, pair.from_key, pair.to_key, status, pages, people,
    )  # fmt: skip


__all__ = [
    "NOTIFY",
    "Criteria",
    "NotifyLater",
    "Pair",
    "check_grants",
    "due",
    "notify_body",
    "run_notification",
    "subscribe",
    "unsubscribe",
]
