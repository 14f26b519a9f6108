"""`POST /dci/registry/sync/search` without the framework's per-request machinery, same contract.

As app.api.fast for `people/lookup`: the route (app.api.routes.dci) stays the definition and
produces every validation error. This pure-ASGI layer takes only a body the route's model
accepts whole, with a header the route would accept, then runs the route's steps (the caller,
the charge, the search) and renders errors as the route does (the problem with the standard's
ERR acknowledgement). Anything else is handed to the route untouched.

The commonest message (one idtype-value item asking one NIK, unsigned) is read by `parse_one`
without the envelope's models and answered by `app.services.dci.search_one`: the same answer,
byte for byte, as the general path's (tests/dci/test_fast.py), at less CPU (bench/ P11).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.requests import Request
from starlette.types import Scope

from app.api.routes.dci import dci_problem, searched, sync_log
from app.errors import TepatError
from app.http import limits
from app.http.caller import charge
from app.http.fast import FastPath, Head, caller_of
from app.http.state import state_of
from app.identifiers import RULE_SET_ID, SNAPSHOT_ID, is_nik
from app.schemas.dci import DciSearchEnvelope
from app.services import dci, signatures
from app.services.lookup import Answer

PATH = "/dci/registry/sync/search"

_ENVELOPE = frozenset({"header", "message"})
_HEADER = frozenset(
    {
        "version", "message_id", "message_ts", "action", "sender_id", "sender_uri",
        "receiver_id", "total_count", "is_msg_encrypted", "meta",
    }
)  # fmt: skip
_META = frozenset({"snapshot", "rule_set"})
_MESSAGE = frozenset({"transaction_id", "search_request"})
_ITEM = frozenset({"reference_id", "timestamp", "search_criteria", "locale"})
_CRITERIA = frozenset({"version", "query_type", "query"})
_QUERY = frozenset({"type", "value"})
# A narrower ISO 8601 than the model reads (the rest goes to the route): date, `T`, time to the
# second with at most microseconds, and `Z` or an offset under a day.
_TIMESTAMP = re.compile(
    r"\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,6})?"
    r"(Z|[+-]([01]\d|2[0-3]):[0-5]\d)"
)
_LOCALE = re.compile("[a-z]{2,3}")


def _text(value: Any, longest: int) -> bool:
    return type(value) is str and 1 <= len(value) <= longest


def _optional_text(value: Any, longest: int) -> bool:
    return value is None or (type(value) is str and len(value) <= longest)


def _timestamp(value: Any) -> bool:
    if type(value) is not str or not _TIMESTAMP.fullmatch(value):
        return False
    try:
        dt.datetime.fromisoformat(value)  # a day the month has
    except ValueError:
        return False
    return True


def _pin(value: Any, pattern: re.Pattern[str]) -> bool:
    return value is None or (type(value) is str and pattern.fullmatch(value) is not None)


def parse_one(body: bytes) -> dci.OneSearch | None:
    """The message if it is the commonest one, plainly valid (the envelope's model, the header
    checks and the item's reading would all take it as is), else None."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(doc) is not dict or not _ENVELOPE.issuperset(doc):
        return None  # a `signature` too: the general path verifies it
    header, message = doc.get("header"), doc.get("message")
    if type(header) is not dict or not _HEADER.issuperset(header):
        return None
    meta = header.get("meta")
    if meta is not None and (
        type(meta) is not dict
        or not _META.issuperset(meta)
        or not _pin(meta.get("snapshot"), SNAPSHOT_ID)
        or not _pin(meta.get("rule_set"), RULE_SET_ID)
    ):
        return None
    if (
        type(header.get("version", "")) is not str
        or not _text(header.get("message_id"), 99)
        or not _timestamp(header.get("message_ts"))
        or header.get("action") != "search"
        or not _text(header.get("sender_id"), 200)
        or not _optional_text(header.get("sender_uri"), 2000)
        or not _optional_text(header.get("receiver_id"), 200)
        or type(header.get("total_count")) is not int
        or header["total_count"] != 1
        or header.get("is_msg_encrypted", False) is not False
    ):
        return None
    if type(message) is not dict or not _MESSAGE.issuperset(message):
        return None
    items = message.get("search_request")
    if not _text(message.get("transaction_id"), 99) or type(items) is not list or len(items) != 1:
        return None
    item = items[0]
    if type(item) is not dict or not _ITEM.issuperset(item):
        return None
    locale = item.get("locale")
    stamp = item.get("timestamp")
    if (
        not _text(item.get("reference_id"), 99)
        # Most clients stamp the item as the message: read once.
        or (stamp != header["message_ts"] and not _timestamp(stamp))
        or (locale is not None and (type(locale) is not str or not _LOCALE.fullmatch(locale)))
    ):
        return None
    criteria = item.get("search_criteria")
    if (
        type(criteria) is not dict
        or not _CRITERIA.issuperset(criteria)
        or type(criteria.get("version", "")) is not str
        or criteria.get("query_type") != "idtype-value"
    ):
        return None
    query = criteria.get("query")
    if type(query) is not dict or query.keys() != _QUERY:
        return None
    kind, nik = query["type"], query["value"]
    if type(kind) is not str or kind.upper() not in dci.PERSON_ID_TYPES:
        return None
    if type(nik) is not str or not is_nik(nik):
        return None
    return dci.OneSearch(
        message_id=header["message_id"],
        sender_id=header["sender_id"],
        snapshot=None if meta is None else meta.get("snapshot"),
        rule_set=None if meta is None else meta.get("rule_set"),
        transaction_id=message["transaction_id"],
        reference_id=item["reference_id"],
        locale=locale,
        nik=nik,
    )


class FastDci(FastPath):
    path = PATH

    async def answer(self, scope: Scope, body: bytes, head: Head) -> Answer | None:
        one = parse_one(body)
        if one is not None:
            # The route's steps (app.api.routes.dci.searched) for one NIK, in this coroutine.
            caller = await caller_of(scope, head)
            signatures.check_request(caller.principal, body)
            await charge(scope, caller.principal, 1)  # 429 before any SQL
            state = state_of(scope)
            answered, row = await dci.search_one(state.reads, state.audit, caller, one)
            if answered.disclosed > 1:  # records beyond the one asked: charged once known
                limits.debit(scope, caller.principal, answered.disclosed - 1)
            sync_log(scope).add(row)  # written after the answer, in batches
            return Answer(answered.body, answered.receipt)
        try:
            envelope = DciSearchEnvelope.model_validate_json(body)
            dci.check_header(envelope.header, "search")
            dci.check_total(envelope.header, len(envelope.message.search_request))
        except (ValidationError, TepatError):
            return None  # the route answers it, naming the field
        caller = await caller_of(scope, head)
        signatures.check_request(caller.principal, body)
        return await searched(state_of(scope), caller, envelope, scope)

    async def error_response(self, scope: Scope, error: Exception) -> Any:
        return await dci_problem(Request(scope), error)
