"""The DCI Social Registry face over the lookup services (docs/dci.md).

A DCI search is answered by the same code as REST: the pin (app.services.pinning), the people
and families reads with their disclosure (app.services.eligibility, app.services.disclosure),
the audit record durable before the answer leaves and its receipt (app.services.lookup). This
module only translates: the standard's queries into lookups or a bounded attribute search
(app.repositories.dci), REST results into the standard's Person, Group and Member records, and
the answer into its envelope, with the snapshot and rule set in the header's `meta`.

Async searches are stored as DCI transactions and queued on the bulk jobs' pgqueuer queue
(`CALLBACK`); the worker answers them (`answer_async`) and delivers the answer to the client's
registered callback address (`deliver`), retried with backoff a bounded number of times.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import orjson
from pydantic import TypeAdapter, ValidationError

from app.auth.principal import Principal
from app.eligibility import Program, RuleSet
from app.errors import CallbackNotAllowed, TepatError, Unavailable, ValidationFailed
from app.identifiers import echo, is_nik
from app.models.tables import DECISION_CODE, PERSON_CODE
from app.repositories import clients as clients_repo
from app.repositories import dci as repo
from app.repositories import decisions as decisions_repo
from app.schemas.dci import (
    DciHeader,
    DciPagination,
    DciSearchEnvelope,
    DciSearchItem,
    DciSearchMessage,
)
from app.schemas.lookup import Nik, NoKk
from app.services import eligibility, signatures
from app.services.audit.records import new_audit_id, new_uuid7, nik_subject, no_kk_subject
from app.services.audit.writer import AuditWriter, append
from app.services.lookup import Caller, Recorded, access_entry, receipt, record_access, view_for
from app.services.pinning import Pinned
from app.services.receipts import Keyring

log = logging.getLogger("tepat.dci")

CALLBACK = "tepat.dci_callback"  # the queue's name for "answer and deliver this transaction"
OPERATION = "dci.search"
SENDER_ID = "tepat"  # what Tepat calls itself in the headers it sends
DEFAULT_PAGE = 10
MAX_OFFSET = 100_000

PERSON_ID_TYPES = frozenset({"NIK", "UIN"})  # the national id
GROUP_ID_TYPES = frozenset({"KK", "NO_KK"})  # the household (family card) id

# The acknowledgement's error codes (the standard's `Error.code`); a header's `rjct.*` reason is
# answered as `err.request.bad` with the reason first in its message.
ACK_ERRORS = frozenset(
    {
        "err.request.bad", "err.request.unauthorized", "err.request.forbidden",
        "err.request.not_found", "err.request.timeout", "err.version.not_supported",
        "err.request.too_many_requests", "err.sender_id.invalid", "err.sender_uri.invalid",
        "err.receiver_id.invalid", "err.signature.missing", "err.signature.invalid",
        "err.encryption.invalid", "err.service.unavailable",
    }
)  # fmt: skip

# The standard's SearchStatusReasonCode: the reason codes a txn status item can carry.
SEARCH_REASONS = frozenset(
    {
        "rjct.reference_id.invalid", "rjct.reference_id.duplicate", "rjct.timestamp.invalid",
        "rjct.search_criteria.invalid", "rjct.filter.invalid", "rjct.sort.invalid",
        "rjct.pagination.invalid", "rjct.search.too_many_records_found",
    }
)  # fmt: skip

_NIK: TypeAdapter[str] = TypeAdapter(Nik)
_NO_KK: TypeAdapter[str] = TypeAdapter(NoKk)

# The attributes a search may filter on, the column each is, and the field group a client
# needs to filter on it: a filter is a disclosure too (who matches says what they hold).
ATTRIBUTES: dict[str, tuple[str, str]] = {
    "poverty_score": ("decile", "decile"),
    "decile": ("decile", "decile"),
    "region_code": ("region", "membership"),
    "kode_wilayah": ("region", "membership"),
    "age": ("birth_date", "identity"),
    "sex": ("sex", "identity"),
    "household_size": ("household_size", "membership"),
}
_SEX = {"male": 1, "female": 2, "1": 1, "2": 2, "m": 1, "f": 2}


class Rejected(Exception):
    """One search item refused with the standard's reason code (the others are answered)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --- the header ------------------------------------------------------------------------------


def check_header(header: DciHeader, action: str) -> None:
    """What the standard's header must say here (400 naming the field otherwise)."""
    if header.action != action:
        raise ValidationFailed(
            f"header.action must be {action!r} on this endpoint",
            field="header.action",
            dci_code="rjct.action.invalid",
        )
    if header.is_msg_encrypted:
        raise ValidationFailed(
            "encrypted messages are not supported: send the message in the clear over TLS",
            field="header.is_msg_encrypted",
            dci_code="err.encryption.invalid",
        )


def check_total(header: DciHeader, items: int) -> None:
    if header.total_count != items:
        raise ValidationFailed(
            f"header.total_count is {header.total_count} but the message holds {items} request(s)",
            field="header.total_count",
            dci_code="rjct.total_count.invalid",
        )


def callback_url(principal: Principal, sender_uri: str | None, suffix: str) -> str:
    """Where an async answer goes: `sender_uri` (+ `/on-search` or `/txn/on-status` unless it
    already ends so), only if it lies under the client's registered prefix."""
    if not sender_uri:
        raise ValidationFailed(
            "header.sender_uri is required on an async request: where the answer goes",
            field="header.sender_uri",
            dci_code="err.sender_uri.invalid",
        )
    prefix = principal.callback_url_prefix
    target = sender_uri.rstrip("/")
    if not target.endswith(suffix):
        target += suffix
    if prefix is None or not under(target, prefix):
        raise CallbackNotAllowed(
            "header.sender_uri is not under a callback address registered for this client "
            "(`tepat client create --callback-url-prefix`)",
            field="header.sender_uri",
            dci_code="err.sender_uri.invalid",
        )
    return target


def under(url: str, prefix: str) -> bool:
    """Same scheme, host and port, and a path at or below the prefix's (at a segment bound)."""
    try:
        u, p = urllib.parse.urlsplit(url), urllib.parse.urlsplit(prefix)
        same = (u.scheme, u.hostname, u.port) == (p.scheme, p.hostname, p.port)
    except ValueError:
        return False
    if not same or u.username or u.password or u.query or u.fragment:
        return False
    base = p.path.rstrip("/")
    return u.path == base or u.path.startswith(base + "/")


# --- the queries -----------------------------------------------------------------------------


@dataclass
class _Item:
    """One search item as understood: whom it asks for, or the filter and page it runs."""

    item: DciSearchItem
    niks: list[str] = field(default_factory=list)
    no_kks: list[str] = field(default_factory=list)
    clauses: list[repo.Clause] | None = None
    page: DciPagination | None = None
    total: int = 0
    rejected: Rejected | None = None


def _identifier(query: Any) -> tuple[str, str]:
    if not isinstance(query, dict) or not isinstance(query.get("type"), str):
        raise Rejected("rjct.search_criteria.invalid", "idtype-value: query needs type and value")
    kind, value = query["type"].upper(), query.get("value")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise Rejected("rjct.search_criteria.invalid", "idtype-value: value must be a string")
    if kind in PERSON_ID_TYPES:
        adapter, what = _NIK, "NIK"
    elif kind in GROUP_ID_TYPES:
        adapter, what = _NO_KK, "KK"
    else:
        raise Rejected(
            "rjct.search_criteria.invalid",
            f"idtype-value: type {echo(query['type'], limit=20)!r} is not one of NIK (UIN), "
            "KK (NO_KK)",
        )
    if what == "NIK" and is_nik(value):  # the fast check; the model names a bad one's rule
        return what, value
    try:
        adapter.validate_python(value)
    except ValidationError as e:
        reason = e.errors()[0].get("msg", "invalid")
        raise Rejected("rjct.search_criteria.invalid", f"idtype-value: {what}: {reason}") from None
    return what, value


def _predicates(criteria_type: str, query: Any) -> list[Any]:
    """The list of `{expression1, condition, expression2}` of a predicate or expression query."""
    if criteria_type == "expression":
        value = query.get("value") if isinstance(query, dict) else None
        inner = value.get("expression") if isinstance(value, dict) else None
        query = inner
    if not isinstance(query, list) or not query or len(query) > 10:
        raise Rejected(
            "rjct.search_criteria.invalid",
            f"{criteria_type}: 1 to 10 predicates "
            + ("in query.value.expression" if criteria_type == "expression" else "in query"),
        )
    return sorted(query, key=lambda p: p.get("seq_num", 0) if isinstance(p, dict) else 0)


def _years_before(day: dt.date, years: int) -> dt.date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February in a common year
        return day.replace(year=day.year - years, day=28)


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise Rejected("rjct.search_criteria.invalid", f"{name}: a whole number")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise Rejected("rjct.search_criteria.invalid", f"{name}: a whole number") from None


def _condition(expr: Any, groups: frozenset[str], cutoff: dt.date) -> repo.Condition:
    if not isinstance(expr, dict):
        raise Rejected("rjct.search_criteria.invalid", "an expression is an object")
    name, op, value = expr.get("attribute_name"), expr.get("operator"), expr.get("attribute_value")
    if name not in ATTRIBUTES:
        raise Rejected(
            "rjct.search_criteria.invalid",
            f"attribute_name {echo(str(name), limit=30)!r} is not one of "
            + ", ".join(sorted(ATTRIBUTES)),
        )
    attribute, group = ATTRIBUTES[name]
    if group not in groups:
        raise Rejected(
            "rjct.search_criteria.invalid",
            f"searching on {name} needs the field group {group}, not granted to this client",
        )
    if op not in ("eq", "gt", "lt", "ge", "le", "in"):
        raise Rejected("rjct.search_criteria.invalid", f"{name}: operator eq, gt, lt, ge, le, in")
    values = value if op == "in" else [value]
    if not isinstance(values, list) or not 1 <= len(values) <= 100:
        raise Rejected("rjct.search_criteria.invalid", f"{name}: in takes a list of 1 to 100")
    if attribute == "region":
        if op not in ("eq", "in"):
            raise Rejected("rjct.search_criteria.invalid", f"{name}: operator eq or in")
        ranges = []
        for v in values:
            code = str(v)
            if not code.isdigit() or len(code) not in (2, 4, 6, 10):
                raise Rejected(
                    "rjct.search_criteria.invalid",
                    f"{name}: a kode wilayah of 2, 4, 6 or 10 digits (province to village)",
                )
            scale = 10 ** (10 - len(code))
            ranges.append((int(code) * scale, (int(code) + 1) * scale - 1))
        return repo.Condition("region", "eq", tuple(ranges))
    if attribute == "sex":
        if op not in ("eq", "in"):
            raise Rejected("rjct.search_criteria.invalid", f"{name}: operator eq or in")
        codes = [_SEX.get(str(v).lower()) for v in values]
        if None in codes:
            raise Rejected("rjct.search_criteria.invalid", f"{name}: male or female")
        return repo.Condition("sex", op, tuple(codes))
    numbers = [_int(v, name) for v in values]
    if attribute == "birth_date":  # an age on the snapshot's cut-off date, as the rules count it
        if op == "in":
            raise Rejected("rjct.search_criteria.invalid", f"{name}: operator eq, gt, lt, ge, le")
        age = numbers[0]
        if not 0 <= age <= 150:
            raise Rejected("rjct.search_criteria.invalid", f"{name}: 0 to 150")
        low, high = {"gt": (age + 1, None), "ge": (age, None), "lt": (None, age - 1)}.get(
            op, (None, age) if op == "le" else (age, age)
        )
        # age >= a: born on or before cut-off - a years; age <= a: after cut-off - (a+1) years
        latest = _years_before(cutoff, low) if low is not None else dt.date(9999, 12, 31)
        earliest = _years_before(cutoff, high + 1) if high is not None else dt.date(1, 1, 1)
        return repo.Condition("birth_date", "between", (earliest, latest))
    if attribute == "decile" and not all(1 <= n <= 10 for n in numbers):
        raise Rejected("rjct.search_criteria.invalid", f"{name}: a decile is 1 to 10")
    return repo.Condition(attribute, op, tuple(numbers))


def _clauses(
    criteria_type: str, query: Any, groups: frozenset[str], cutoff: dt.date
) -> list[repo.Clause]:
    out = []
    for p in _predicates(criteria_type, query):
        if not isinstance(p, dict) or "expression1" not in p:
            raise Rejected("rjct.search_criteria.invalid", "a predicate needs expression1")
        first = _condition(p["expression1"], groups, cutoff)
        second = None
        condition = p.get("condition")
        if p.get("expression2") is not None:
            if condition not in ("and", "or", "not"):
                raise Rejected("rjct.search_criteria.invalid", "condition: and, or, not")
            second = _condition(p["expression2"], groups, cutoff)
        out.append(repo.Clause(first, condition, second))
    return out


def _page(pagination: Any) -> DciPagination:
    if pagination is None:
        return DciPagination(page_size=DEFAULT_PAGE, page_number=1)
    try:
        page = DciPagination.model_validate(pagination)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ())) or "pagination"
        raise Rejected("rjct.pagination.invalid", f"pagination.{where}: {first['msg']}") from None
    if (page.page_number - 1) * page.page_size > MAX_OFFSET:
        raise Rejected(
            "rjct.search.too_many_records_found",
            f"a search pages through at most its first {MAX_OFFSET:,} records: narrow it",
        )
    return page


def understand(message: DciSearchMessage, groups: frozenset[str], cutoff: dt.date) -> list[_Item]:
    """Each item's lookups or filter, or its rejection (duplicate reference ids too)."""
    seen: set[str] = set()
    out = []
    for item in message.search_request:
        it = _Item(item)
        out.append(it)
        try:
            if item.reference_id in seen:
                raise Rejected("rjct.reference_id.duplicate", "reference_id used twice")
            seen.add(item.reference_id)
            criteria = item.search_criteria
            if criteria.query_type == "idtype-value":
                what, value = _identifier(criteria.query)
                (it.niks if what == "NIK" else it.no_kks).append(value)
            elif criteria.query_type in ("expression", "predicate"):
                it.clauses = _clauses(criteria.query_type, criteria.query, groups, cutoff)
                it.page = _page(criteria.pagination)
            else:
                raise Rejected(
                    "rjct.search_criteria.invalid",
                    "query_type: one of idtype-value, expression, predicate",
                )
        except Rejected as r:
            it.rejected = r
    return out


# --- records ---------------------------------------------------------------------------------


def _id(kind: str, value: str) -> dict[str, Any]:
    return {"@type": "Identifier", "identifier_type": kind, "identifier_value": value}


def _person_fields(r: dict[str, Any], out: dict[str, Any]) -> None:
    """The person's fields the REST answer holds (only what disclosure let through)."""
    identity = r.get("identity")
    if identity is not None:
        out["name"] = {"@type": "Name", "given_name": identity["name"]}
        out["birth_date"] = identity["birth_date"]
        out["sex"] = {1: "male", 2: "female"}.get(identity["sex"], str(identity["sex"]))
    extra = [
        {"name": key, "value": r[key]}
        for key in ("attributes", "health", "decisions")
        if r.get(key) is not None
    ]
    if extra:
        out["additional_attributes"] = extra


def person_record(r: dict[str, Any]) -> dict[str, Any]:
    """A REST people result as the standard's Person."""
    out: dict[str, Any] = {"@type": "Person", "identifier": _id("NIK", r["nik"])}
    family = r.get("family")
    if family is not None:
        out["household_identifier"] = _id("KK", family["no_kk"])
        out["household_status"] = str(family["relationship"])
        out["address"] = {"@type": "Address", "region_code": family["kode_wilayah"]}
    if r.get("decile") is not None:
        out["poverty_score"] = str(r["decile"])
    _person_fields(r, out)
    return out


def _person_part(r: dict[str, Any]) -> bytes:
    """One engine result as a PERSON_SHAPE part: the Person with sorted keys, or b"" when
    not found."""
    return orjson.dumps(person_record(r), option=orjson.OPT_SORT_KEYS) if r["found"] else b""


def _coded_memo(groups: frozenset[str]) -> eligibility.Memo:
    """The `additional_attributes` items of a person_code (`attributes`, `health`: those
    granted), keys sorted."""
    coded = groups.intersection(decisions_repo.CODED_GROUPS)

    def render(code: int) -> bytes:
        out: dict[str, Any] = {}
        eligibility.coded_fields(decisions_repo.decode(code, PERSON_CODE).__getitem__, coded, out)
        items = ({"name": k, "value": v} for k, v in out.items())
        return b",".join(orjson.dumps(i, option=orjson.OPT_SORT_KEYS) for i in items)

    return eligibility.memo(("dci-person", coded), render)


def _decisions_memo(
    rule_set: RuleSet, programs: tuple[Program, ...], groups: frozenset[str]
) -> eligibility.Memo:
    """The `decisions` item of `additional_attributes` by decision_code, keys sorted."""

    def render(code: int) -> bytes:
        row = decisions_repo.decode(code, DECISION_CODE)
        value = eligibility.stored_decisions(row, rule_set, programs, groups)
        return orjson.dumps({"name": "decisions", "value": value}, option=orjson.OPT_SORT_KEYS)

    return eligibility.memo(("dci-decisions", rule_set.checksum, programs, groups), render)


def _render_persons(
    _niks: Sequence[str],
    keys: Sequence[int],
    by_nik: Mapping[int, Any],
    rule_set: RuleSet,
    view: eligibility.View,
) -> eligibility.Rendered:
    """PERSON_SHAPE's parts from the rows of `decisions_repo.dci_person_query` (as
    eligibility.render_stored renders the API's): the database renders the Person's members
    after `additional_attributes`, the worker puts the coded items in front from a memo."""
    groups = view.groups
    coded = _coded_memo(groups) if groups.intersection(decisions_repo.CODED_GROUPS) else None
    decisions = _decisions_memo(rule_set, view.programs, groups) if "decision" in groups else None
    parts: list[bytes] = []
    append = parts.append
    found = 0
    for key in keys:
        r = by_nik.get(key)
        if r is None:
            append(b"")
            continue
        found += 1
        if coded is None:
            if decisions is None:
                append(b'{"@type":"Person",%b}' % r[1])
            else:
                append(
                    b'{"@type":"Person","additional_attributes":[%b],%b}' % (decisions[r[2]], r[1])
                )
        elif decisions is None:
            append(b'{"@type":"Person","additional_attributes":[%b],%b}' % (coded[r[3]], r[1]))
        else:
            append(
                b'{"@type":"Person","additional_attributes":[%b,%b],%b}'
                % (coded[r[3]], decisions[r[2]], r[1])
            )
    return eligibility.Rendered(parts, found)


# A people answer as the standard's Person records, one part an asked NIK (b"" not found), keys
# sorted (the signed envelope's canonical form): from the stored decisions without a dict per
# person, else from the engine's results. tests/dci/test_records.py holds the two equal.
PERSON_SHAPE = eligibility.Shape(decisions_repo.dci_person_query, _render_persons, _person_part)


def group_record(r: dict[str, Any]) -> dict[str, Any]:
    """A REST families result as the standard's Group, its members as Member records."""
    out: dict[str, Any] = {
        "@type": "Group",
        "group_identifier": _id("KK", r["no_kk"]),
        "group_type": "household",
    }
    if r.get("kode_wilayah") is not None:
        out["address"] = {"@type": "Address", "region_code": r["kode_wilayah"]}
    if r.get("decile") is not None:
        out["poverty_score"] = str(r["decile"])
    extra = [
        {"name": k, "value": r[k]} for k in ("attributes", "decisions") if r.get(k) is not None
    ]
    if extra:
        out["additional_attributes"] = extra
    members = r.get("members")
    if members is not None:
        out["group_size"] = len(members)
        listed = []
        for m in members:
            member: dict[str, Any] = {
                "@type": "Member",
                "member_identifier": _id("NIK", m["nik"]),
                "relationship_to_head": str(m["relationship"]),
            }
            _person_fields(m, member)
            listed.append(member)
        out["members"] = listed
    return out


# --- answering -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Source:
    """What a search reads through: the API's reads (pin, coalesced lookups) or, in the
    worker, a plain connection. Both end in the same eligibility reads; `people` renders
    PERSON_SHAPE."""

    pin: Callable[[str | None, str | None], Awaitable[Pinned]]
    people: Callable[[Pinned, Sequence[str], eligibility.View], Awaitable[eligibility.Rendered]]
    families: Callable[[Pinned, Sequence[str], eligibility.View], Awaitable[eligibility.Rendered]]
    matching: Callable[[Pinned, list[repo.Clause], int, int], Awaitable[tuple[list[str], int]]]


@dataclass(slots=True)  # not frozen: a frozen init costs a microsecond an answer (bench/ P11)
class Answered:
    body: bytes
    receipt: str | None
    status: str
    outcome: list[dict[str, Any]]
    disclosed: int  # records (people and members) the answer names


def _header(
    receiver_id: str,
    status: str,
    total: int,
    done: int,
    meta: dict[str, Any] | None,
    stamp: str | None = None,
    message_id: str | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "version": "1.0.0",
        # Time-ordered, as correlation ids; a search's answer is its audit record's id.
        "message_id": message_id or new_audit_id(),
        "message_ts": stamp or now().isoformat(),
        "action": "on-search",
        "status": status,
        "total_count": total,
        "completed_count": done,
        "sender_id": SENDER_ID,
        "receiver_id": receiver_id,
        "is_msg_encrypted": False,
    }
    if meta is not None:
        out["meta"] = meta
    return out


def pins(header: DciHeader) -> tuple[str | None, str | None]:
    meta = header.meta
    return (meta.snapshot, meta.rule_set) if meta is not None else (None, None)


async def search(
    source: Source,
    caller: Caller,
    header: DciHeader,
    message: DciSearchMessage,
    correlation_id: uuid.UUID,
    record: Callable[[Pinned, list[str], int, bytes, str], Awaitable[Recorded]],
    keyring_audit: AuditWriter,
) -> Answered:
    """Answer a search message: one pin, one people read and one families read for all its
    items, one audit record naming every person and family disclosed, durable (`record`)
    before the answer is returned."""
    view = view_for(caller, None, False)
    pinned = await source.pin(*pins(header))
    items = understand(message, view.groups, pinned.snapshot.cutoff_date)
    for it in items:
        if it.clauses is not None and it.page is not None and it.rejected is None:
            size, number = it.page.page_size, it.page.page_number
            it.niks, it.total = await source.matching(pinned, it.clauses, size, (number - 1) * size)
    niks = list(dict.fromkeys(n for it in items if it.rejected is None for n in it.niks))
    no_kks = list(dict.fromkeys(k for it in items if it.rejected is None for k in it.no_kks))
    people: dict[str, bytes] = {}
    families: dict[str, dict[str, Any]] = {}
    disclosed: set[str] = set()
    found = 0
    if niks:
        rendered = await source.people(pinned, niks, view)
        people = dict(zip(niks, rendered.parts, strict=True))
        disclosed |= rendered.disclosed
        found += rendered.found
    if no_kks:
        rendered = await source.families(pinned, no_kks, view)
        families = {r["no_kk"]: r for r in (orjson.loads(p) for p in rendered.parts)}
        disclosed |= rendered.disclosed
        found += rendered.found
    audit_id = new_audit_id()
    stamp = now().isoformat()
    results: list[dict[str, Any]] = []
    outcome: list[dict[str, Any]] = []
    for it in items:
        out: dict[str, Any] = {"reference_id": it.item.reference_id, "timestamp": stamp}
        if it.item.locale is not None:
            out["locale"] = it.item.locale
        if it.rejected is not None:
            out |= {
                "status": "rjct",
                "status_reason_code": it.rejected.code,
                "status_reason_message": it.rejected.message,
            }
        else:
            out["status"] = "succ"
            records: list[Any]
            if it.no_kks:
                records = [group_record(families[k]) for k in it.no_kks if families[k]["found"]]
                kind = "Group"
            else:
                records = [orjson.Fragment(people[n]) for n in it.niks if people[n]]
                kind = "Person"
            out["data"] = {"version": "1.0.0", "reg_record_type": kind, "reg_records": records}
            if it.page is not None:
                out["pagination"] = {
                    "page_size": it.page.page_size,
                    "page_number": it.page.page_number,
                    "total_count": it.total,
                }
        kept = ("reference_id", "status", "status_reason_code")
        outcome.append({k: v for k, v in out.items() if k in kept})
        results.append(out)
    succeeded = sum(1 for it in items if it.rejected is None)
    status = "succ" if succeeded == len(items) else ("rjct" if succeeded == 0 else "succ")
    subjects = [nik_subject(n) for n in niks] + [no_kk_subject(k) for k in no_kks]
    return await _answered(
        Reply(header.sender_id, message.transaction_id, correlation_id, status, results, outcome),
        Disclosure(pinned, niks, subjects, disclosed, found),
        caller,
        stamp,
        audit_id,
        record,
        keyring_audit,
    )


@dataclass(frozen=True, slots=True)
class Reply:
    """What an answer says, before it is signed."""

    receiver_id: str
    transaction_id: str
    correlation_id: uuid.UUID
    status: str
    results: list[dict[str, Any]]
    outcome: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Disclosure:
    """What an answer read: whom it names (asked, and disclosed beyond them), how many found."""

    pinned: Pinned
    niks: list[str]
    subjects: list[str]
    disclosed: set[str] | frozenset[str]
    found: int


def _reply(
    receiver_id: str,
    transaction_id: str,
    correlation_id: uuid.UUID | str,
    status: str,
    results: list[dict[str, Any]],
    meta: dict[str, Any],
    stamp: str,
    audit_id: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """An answer's header and message, as signed. One clock reading (`stamp`) for the header
    and the items (a clock read is a system call on some virtual machines); the message's id
    is its audit record's (one answer, one record)."""
    n = len(results)
    return _header(receiver_id, status, n, n, meta, stamp, audit_id), {
        "transaction_id": transaction_id,
        "correlation_id": str(correlation_id),
        "search_response": results,
    }


def _named(
    subjects: list[str], niks: Sequence[str], disclosed: set[str] | frozenset[str]
) -> tuple[list[str], int]:
    """The audit record's subjects: those asked, and the people disclosed beyond them (family
    members); and how many of the latter there are."""
    beyond = disclosed.difference(niks) if disclosed else ()
    if not beyond:
        return subjects, 0
    return subjects + [nik_subject(n) for n in sorted(beyond)], len(beyond)


async def _answered(
    reply: Reply,
    read: Disclosure,
    caller: Caller,
    stamp: str,
    audit_id: str,
    record: Callable[[Pinned, list[str], int, bytes, str], Awaitable[Recorded]],
    keyring_audit: AuditWriter,
) -> Answered:
    """A search's answer signed, and its audit record (naming everyone it discloses) durable."""
    pinned = read.pinned
    header, message = _reply(
        reply.receiver_id,
        reply.transaction_id,
        reply.correlation_id,
        reply.status,
        reply.results,
        pinned.meta(caller.request_id, audit_id),
        stamp,
        audit_id,
    )
    body = await signatures.sign_batched(
        keyring_audit.keyring, keyring_audit.signer, header, message
    )
    subjects, beyond = _named(read.subjects, read.niks, read.disclosed)
    recorded = await record(pinned, subjects, read.found, body, audit_id)
    return Answered(
        body,
        # Signed with the record when the recorder could (off the event loop), here otherwise.
        recorded.receipt or receipt(keyring_audit, pinned, recorded),
        reply.status,
        reply.outcome,
        read.found + beyond,
    )


@dataclass(slots=True)  # not frozen, as Answered
class OneSearch:
    """The commonest search message, plainly valid (app.api.dci_fast.parse_one): one
    idtype-value item asking one NIK, unsigned."""

    message_id: str
    sender_id: str
    snapshot: str | None
    rule_set: str | None
    transaction_id: str
    reference_id: str
    locale: str | None
    nik: str


async def search_one(
    reads: Any, audit: AuditWriter, caller: Caller, one: OneSearch
) -> tuple[Answered, repo.SyncRow]:
    """`search` of a OneSearch through the API's reads, and its sync state: the same answer,
    byte for byte (tests/dci/test_fast.py), in one coroutine. The general path's layers (its
    item machinery, the recorder, `_answered`) are left out: each frame of a suspended
    request's await chain is walked again at each of its three resumptions (bench/ P11)."""
    view = view_for(caller, None, False)
    pinned = await reads.pin(one.snapshot, one.rule_set)
    niks = [one.nik]
    rendered = await eligibility.people_read(
        reads, pinned.snapshot, pinned.rule_set, niks, view, PERSON_SHAPE
    )
    audit_id = new_audit_id()
    stamp = now().isoformat()
    out: dict[str, Any] = {"reference_id": one.reference_id, "timestamp": stamp}
    if one.locale is not None:
        out["locale"] = one.locale
    part = rendered.parts[0]
    out["status"] = "succ"
    out["data"] = {
        "version": "1.0.0",
        "reg_record_type": "Person",
        "reg_records": [orjson.Fragment(part)] if part else [],
    }
    correlation_id = new_audit_id()  # new_correlation_id's layout, made as text at once
    header, message = _reply(
        one.sender_id,
        one.transaction_id,
        correlation_id,
        "succ",
        [out],
        pinned.meta(caller.request_id, audit_id),
        stamp,
        audit_id,
    )
    body = await signatures.sign_batched(audit.keyring, audit.signer, header, message)
    subjects, beyond = _named([nik_subject(one.nik)], niks, rendered.disclosed)
    recorded = await record_access(
        audit, caller, audit_id, OPERATION, pinned, subjects, rendered.found, body, sign=True
    )
    outcome = [{"reference_id": one.reference_id, "status": "succ"}]
    answered = Answered(
        body,
        recorded.receipt or receipt(audit, pinned, recorded),
        "succ",
        outcome,
        rendered.found + beyond,
    )
    return answered, sync_row(caller, one.message_id, one.transaction_id, correlation_id, answered)


def new_correlation_id() -> uuid.UUID:
    """A transaction's correlation id: time-ordered (the layout of the audit ids), so the rows
    of `dci_transactions`, keyed by it, are appended to its index rather than scattered over it
    (each scattered insert dirties another page, and after a checkpoint writes it whole to the
    WAL: bench/ P11)."""
    return new_uuid7()


def recorder(
    audit: AuditWriter, caller: Caller
) -> Callable[[Pinned, list[str], int, bytes, str], Awaitable[Recorded]]:
    """The API's way: the group-committing writer, as every lookup (app.services.lookup), the
    receipt signed with the record's batch (off the event loop: app.services.signer)."""

    # Plain functions handing back the awaitable they call: no frame of theirs stays in a
    # suspended search's await chain (bench/ P11). reads_source's alike.
    def record(
        pinned: Pinned, subjects: list[str], found: int, body: bytes, audit_id: str
    ) -> Awaitable[Recorded]:
        return record_access(
            audit, caller, audit_id, OPERATION, pinned, subjects, found, body, sign=True
        )

    return record


def reads_source(reads: Any) -> Source:
    """A Source over the API's reads (app.services.catalog.Reads)."""

    def people(
        p: Pinned, niks: Sequence[str], view: eligibility.View
    ) -> Awaitable[eligibility.Rendered]:
        return eligibility.people_read(reads, p.snapshot, p.rule_set, niks, view, PERSON_SHAPE)

    def families(
        p: Pinned, no_kks: Sequence[str], view: eligibility.View
    ) -> Awaitable[eligibility.Rendered]:
        return eligibility.families_read(reads, p.snapshot, p.rule_set, no_kks, view)

    async def matching(
        p: Pinned, clauses: list[repo.Clause], limit: int, offset: int
    ) -> tuple[list[str], int]:
        # Through the read nodes: a replica when one is fit, the next node if it fails.
        result: tuple[list[str], int] = await reads.run(
            lambda conn: repo.matching(conn, p.snapshot.key, clauses, limit, offset)
        )
        return result

    return Source(reads.pin, people, families, matching)


def connection_source(conn: asyncpg.Connection, pin: Callable[..., Awaitable[Pinned]]) -> Source:
    """A Source over one asyncpg connection (the worker)."""

    async def people(
        p: Pinned, niks: Sequence[str], view: eligibility.View
    ) -> eligibility.Rendered:
        return await eligibility.people(conn, p.snapshot, p.rule_set, niks, view, PERSON_SHAPE)

    async def families(
        p: Pinned, no_kks: Sequence[str], view: eligibility.View
    ) -> eligibility.Rendered:
        return await eligibility.families(conn, p.snapshot, p.rule_set, no_kks, view)

    async def matching(
        p: Pinned, clauses: list[repo.Clause], limit: int, offset: int
    ) -> tuple[list[str], int]:
        return await repo.matching(conn, p.snapshot.key, clauses, limit, offset)

    return Source(pin, people, families, matching)


# --- transactions ------------------------------------------------------------------------------


def sync_row(
    caller: Caller, message_id: str, transaction_id: str, correlation_id: uuid.UUID | str,
    answered: Answered,
) -> repo.SyncRow:  # fmt: skip
    """A sync search's state, for txn/status (no personal data: ids and status codes only)."""
    return (
        correlation_id,
        caller.principal.client_id,
        transaction_id,
        message_id,
        answered.status,
        caller.purpose,
        caller.request_id,
        orjson.dumps(answered.outcome).decode(),
    )


class SyncLog:
    """Sync searches' states, written after their answers in batches: the states that arrive
    within `interval` seconds (or until `most` are waiting) go in one statement, committed
    lazily. The audit record is the durable account of an access; these rows only serve
    txn/status, which flushes this process's batch before it reads (`flush`), as does
    shutdown. Writing a few rows a statement cost a sixth of the sync search's throughput
    (bench/ P11): the statement, its commit and its connection, per handful of searches."""

    def __init__(
        self,
        acquire: Callable[[], contextlib.AbstractAsyncContextManager[asyncpg.Connection]],
        *,
        interval: float = 0.05,
        most: int = 1000,
    ) -> None:
        self.acquire = acquire
        self.interval = interval
        self.most = most
        self.pending: list[repo.SyncRow] = []
        self.running: asyncio.Task[None] | None = None
        self._now = asyncio.Event()  # flush: write what is waiting without waiting more

    def add(self, row: repo.SyncRow) -> None:
        self.pending.append(row)
        if len(self.pending) >= self.most:
            self._now.set()
        if self.running is None or self.running.done():
            self.running = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        while self.pending:
            if not self._now.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._now.wait(), self.interval)
            self._now.clear()
            rows, self.pending = self.pending, []
            try:
                async with self.acquire() as conn:
                    await repo.insert_many(conn, rows)
            except Exception as e:  # never a request's failure: its answer is already sent
                log.warning("%d DCI sync search state(s) not recorded: %s", len(rows),
                            type(e).__name__)  # fmt: skip

    async def flush(self) -> None:
        while self.running is not None and not self.running.done():
            self._now.set()
            await asyncio.shield(self.running)


async def submit_async(
    conn: asyncpg.Connection,
    caller: Caller,
    envelope: dict[str, Any],
    header: DciHeader,
    message: DciSearchMessage,
    url: str,
    enqueue: Callable[[asyncpg.Connection, uuid.UUID], Awaitable[None]],
) -> uuid.UUID:
    """Store an async search and queue it, in one transaction: both appear at commit or
    neither. Its request is kept only until it is answered."""
    correlation_id = new_correlation_id()
    async with conn.transaction():
        await repo.insert(
            conn,
            id=correlation_id,
            client_id=caller.principal.client_id,
            transaction_id=message.transaction_id,
            message_id=header.message_id,
            action="search",
            mode="async",
            status="pdng",
            purpose=caller.purpose,
            request_id=caller.request_id,
            outcome=[
                {"reference_id": i.reference_id, "status": "pdng"} for i in message.search_request
            ],
            request=orjson.dumps(envelope),
            callback_url=url,
        )
        await enqueue(conn, correlation_id)
    return correlation_id


async def submit_callback(
    conn: asyncpg.Connection,
    caller: Caller,
    envelope: Any,
    url: str,
    answer: bytes,
    enqueue: Callable[[asyncpg.Connection, uuid.UUID], Awaitable[None]],
) -> uuid.UUID:
    """Store an answer already made (a txn status: no personal data) and queue its delivery."""
    correlation_id = new_correlation_id()
    async with conn.transaction():
        await repo.insert(
            conn,
            id=correlation_id,
            client_id=caller.principal.client_id,
            transaction_id=envelope.message.transaction_id,
            message_id=envelope.header.message_id,
            action="txn-status",
            mode="async",
            status="succ",
            purpose=caller.purpose,
            request_id=caller.request_id,
            outcome=[],
            callback_url=url,
        )
        await repo.answered(conn, correlation_id, "succ", [], answer)
        await enqueue(conn, correlation_id)
    return correlation_id


@dataclass(frozen=True, slots=True)
class Delivery:
    """How callbacks are sent: at most `attempts` tries, waiting `backoff` * 2^(n-1) seconds
    before try n+1, each try at most `timeout` seconds."""

    attempts: int = 5
    backoff: float = 2.0
    timeout: float = 10.0

    def wait(self, attempts: int) -> float:
        return float(min(self.backoff * 2 ** max(attempts - 1, 0), 3600.0))


class RetryLater(Exception):
    def __init__(self, seconds: float) -> None:
        super().__init__(f"retry in {seconds:.1f} s")
        self.seconds = seconds


async def _client_caller(engine: Any, txn: repo.Transaction) -> Caller | None:
    """The transaction's client as it is now; None if it was revoked, expired or suspended."""
    async with engine.connect() as c:
        info = await clients_repo.get_by_id(c, txn.client_id)
    if (
        info is None
        or info.revoked_at is not None
        or info.suspended_at is not None
        or (info.expires_at is not None and info.expires_at <= now())
        or txn.purpose not in info.purposes
    ):
        return None
    return Caller(Principal.from_client(info), txn.purpose, txn.request_id)


async def run_async(
    correlation_id: uuid.UUID,
    *,
    connect: Callable[[], Awaitable[asyncpg.Connection]],
    engine: Any,
    audit: AuditWriter,
    pin: Callable[[str | None, str | None], Awaitable[Pinned]],
    delivery: Delivery,
    post: Callable[[str, bytes], Awaitable[int]],
) -> str:
    """The worker's part of an async search: answer it (once: the answer and its audit record
    commit together), then deliver it. Raises RetryLater while attempts remain. What happened."""
    conn = await connect()
    try:
        txn = await repo.get(conn, correlation_id)
        if txn is None:
            return "gone"
        if txn.response is None and txn.delivered_at is None and txn.request is not None:
            body = await _answer_async(conn, engine, audit, pin, txn)
            txn = await repo.get(conn, correlation_id)
            assert txn is not None
            if body is None:
                return "client gone"
        if txn.response is None or txn.callback_url is None:
            return "done"
        try:
            status = await post(txn.callback_url, txn.response)
            error = None if 200 <= status < 300 else f"the callback answered HTTP {status}"
        except httpx.HTTPError as e:
            error = f"the callback failed: {type(e).__name__}"
        final = error is not None and txn.attempts + 1 >= delivery.attempts
        attempts = await repo.attempted(conn, correlation_id, error, final=final)
        if error is None:
            return "delivered"
        log.warning("DCI callback %s: %s (attempt %d)", correlation_id, error, attempts)
        if final:
            return "undelivered"
        raise RetryLater(delivery.wait(attempts))
    finally:
        await conn.close()


async def _answer_async(
    conn: asyncpg.Connection,
    engine: Any,
    audit: AuditWriter,
    pin: Callable[[str | None, str | None], Awaitable[Pinned]],
    txn: repo.Transaction,
) -> bytes | None:
    assert txn.request is not None
    envelope = DciSearchEnvelope.model_validate_json(txn.request)
    caller = await _client_caller(engine, txn)
    if caller is None:
        outcome = [
            {
                "reference_id": i.reference_id,
                "status": "rjct",
                "status_reason_code": "rjct.requester.invalid",
            }
            for i in envelope.message.search_request
        ]
        await repo.answered(conn, txn.id, "rjct", outcome, b"")
        await repo.attempted(conn, txn.id, "the client was revoked or suspended", final=True)
        return None

    async def record(
        p: Pinned, subjects: list[str], found: int, body: bytes, audit_id: str
    ) -> Recorded:
        entry = access_entry(caller, audit_id, OPERATION, p, subjects, found, body)
        placed = await append(conn, [audit.unchained(entry)])
        return Recorded(audit_id, placed[0].seq, entry.response_digest)

    try:
        async with conn.transaction():  # the answer and its audit record, or neither
            answered = await search(
                connection_source(conn, pin),
                caller,
                envelope.header,
                envelope.message,
                txn.id,
                record,
                audit,
            )
            await repo.answered(conn, txn.id, answered.status, answered.outcome, answered.body)
    except Unavailable:
        raise RetryLater(5.0) from None  # the database or the trail cannot serve now
    except TepatError as e:  # e.g. its pinned snapshot was retired meanwhile: nothing disclosed
        body, outcome = refusal(envelope.header, envelope.message, txn.id, e.detail, audit.keyring)
        await repo.answered(conn, txn.id, "rjct", outcome, body)
        return body
    return answered.body


def refusal(
    header: DciHeader,
    message: DciSearchMessage,
    correlation_id: uuid.UUID,
    reason: str,
    keyring: Keyring | None,
) -> tuple[bytes, list[dict[str, Any]]]:
    """An async search's answer when none of it can be answered (no data, nothing audited)."""
    stamp = now().isoformat()
    code = "rjct.search_criteria.invalid"
    items = [
        {
            "reference_id": i.reference_id,
            "timestamp": stamp,
            "status": "rjct",
            "status_reason_code": code,
            "status_reason_message": reason[:999],
        }
        for i in message.search_request
    ]
    n = len(items)
    body = signatures.sign(
        keyring,
        _header(header.sender_id, "rjct", n, n, None),
        {
            "transaction_id": message.transaction_id,
            "correlation_id": str(correlation_id),
            "search_response": items,
        },
    )
    outcome = [{k: i[k] for k in ("reference_id", "status", "status_reason_code")} for i in items]
    return body, outcome


async def post_json(url: str, body: bytes, seconds: float) -> int:
    """POST a callback body; its HTTP status. Redirects are not followed (they could lead
    outside the registered prefix)."""
    headers = {"Content-Type": "application/json"}
    async with (
        httpx.AsyncClient(timeout=seconds, follow_redirects=False) as client,
        client.stream("POST", url, content=body, headers=headers) as r,
    ):
        return r.status_code  # its body is never read


async def status_of(
    conn: asyncpg.Connection,
    principal: Principal,
    attribute_type: str,
    value: str | list[str],
    txn_type: str = "search",
) -> list[repo.Transaction]:
    """The client's own earlier requests of `txn_type` (search, subscribe) the txn/status
    request names (never another's)."""
    action = {"subscibe": "subscribe"}.get(txn_type, txn_type)
    if action not in ("search", "subscribe"):
        return []
    if attribute_type == "transaction_id":
        if not isinstance(value, str):
            raise ValidationFailed(
                "attribute_value: a transaction_id (a string)",
                field="message.txnstatus_request.attribute_value",
            )
        return await repo.of_client(conn, principal.client_id, transaction_id=value, action=action)
    if attribute_type == "correlation_id":
        try:
            cid = uuid.UUID(str(value))
        except ValueError:
            return []
        return await repo.of_client(conn, principal.client_id, correlation_id=cid, action=action)
    wanted = {value} if isinstance(value, str) else set(value)
    found = await repo.of_client(conn, principal.client_id, limit=1000, action=action)
    return [t for t in found if any(o.get("reference_id") in wanted for o in t.outcome)]


def status_body(
    header: DciHeader,
    transaction_id: str,
    txn_type: str,
    found: list[repo.Transaction],
    references: set[str] | None,
    asked_reference: str,
) -> dict[str, Any]:
    """The TxnStatusResponse: each named request's reference ids and their status (data is
    never repeated here: it was disclosed, and audited, once)."""
    results = []
    for t in found:
        for o in t.outcome:
            if references is not None and o.get("reference_id") not in references:
                continue
            item = {
                "reference_id": o["reference_id"],
                "timestamp": t.created_at.isoformat(),
                "status": o.get("status", t.status),
            }
            code = o.get("status_reason_code")
            if code in SEARCH_REASONS:
                item["status_reason_code"] = code
            elif code:  # another request's code (a subscription's): told in the message
                item["status_reason_message"] = code
            results.append(item)
    correlation = str(found[0].id) if found else ""
    hdr = _header(header.sender_id, "succ" if found else "rjct", 1, 1, None)
    hdr["action"] = "txn-on-status"
    if not found:
        # The header's reason codes are the envelope's (MsgHeaderStatusReasonCode): an unknown
        # request is said by the status request's own item, with the search reason code.
        hdr["status_reason_message"] = "no earlier request of this client matches"
        results = [
            {
                "reference_id": asked_reference,
                "timestamp": now().isoformat(),
                "status": "rjct",
                "status_reason_code": "rjct.reference_id.invalid",
            }
        ]
    return {
        "header": hdr,
        "message": {
            "transaction_id": transaction_id,
            "correlation_id": correlation,
            "txnstatus_response": {
                # as the standard spells it (its enum: search, subscibe, receipt)
                "txn_type": "subscibe" if txn_type == "subscribe" else txn_type,
                "txn_status": {
                    "transaction_id": found[0].transaction_id if found else transaction_id,
                    "correlation_id": correlation,
                    "search_response": results,
                },
            },
        },
    }


def dci_code(error: TepatError) -> str:
    """The standard's error code of a refusal."""
    given = error.extra.get("dci_code")
    if isinstance(given, str):
        return given
    return {
        401: "err.request.unauthorized",
        403: "err.request.forbidden",
        404: "err.request.not_found",
        408: "err.request.timeout",
        429: "err.request.too_many_requests",
        503: "err.service.unavailable",
    }.get(error.status, "err.request.bad")


__all__ = [
    "CALLBACK",
    "Delivery",
    "RetryLater",
    "SyncLog",
    "callback_url",
    "check_header",
    "dci_code",
    "group_record",
    "person_record",
    "post_json",
    "reads_source",
    "recorder",
    "run_async",
    "search",
    "status_body",
    "status_of",
    "submit_async",
    "submit_callback",
    "sync_row",
]
