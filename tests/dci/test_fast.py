"""The commonest DCI search (one NIK, unsigned) read without the envelope's models and answered
by `search_one`: the same bytes as the general path, the same audit record, the same sync
state; and `parse_one` takes nothing the general path would refuse or read otherwise."""

from __future__ import annotations

import copy
import datetime as dt
import itertools
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from joserfc import jws
from joserfc.jwk import KeySet
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.api import dci_fast
from app.errors import TepatError
from app.schemas.dci import DciSearchEnvelope
from app.services import dci
from tests.dci.test_dci import SYNC, by_nik, envelope
from tests.support import MakeClient, auth

CUTOFF = dt.date(2025, 12, 31)
NIK = "3201014501900001"


def _canonical(**header: Any) -> dict[str, Any]:
    doc = envelope([by_nik(NIK)], txn="txn-1", **header)
    doc["header"]["message_id"] = "msg-1"
    return doc


def _general_reading(doc: Any) -> dci.OneSearch | None:
    """What the general path makes of a body: the OneSearch it amounts to, or None when it
    refuses it or reads it as anything else (several NIKs, a rejected item, a signature)."""
    try:
        envelope = DciSearchEnvelope.model_validate_json(orjson.dumps(doc))
        dci.check_header(envelope.header, "search")
        dci.check_total(envelope.header, len(envelope.message.search_request))
    except (ValidationError, TepatError):
        return None
    if envelope.signature is not None or len(envelope.message.search_request) != 1:
        return None
    (it,) = dci.understand(envelope.message, frozenset({"decision"}), CUTOFF)
    if it.rejected is not None or it.niks == [] or it.no_kks:
        return None
    item = envelope.message.search_request[0]
    meta = envelope.header.meta
    return dci.OneSearch(
        message_id=envelope.header.message_id,
        sender_id=envelope.header.sender_id,
        snapshot=None if meta is None else meta.snapshot,
        rule_set=None if meta is None else meta.rule_set,
        transaction_id=envelope.message.transaction_id,
        reference_id=item.reference_id,
        locale=item.locale,
        nik=it.niks[0],
    )


# Values put in each place of the canonical message: right, wrong, and at every edge the
# models check (types, lengths, patterns, timestamps).
TIMESTAMPS = [
    "2026-03-01T09:30:00+07:00", "2026-03-01T09:30:00Z", "2026-03-01T09:30:00.123456-03:30",
    "2026-03-01T09:30:00.1234567Z", "2026-03-01T09:30:00", "2026-02-29T09:30:00Z",
    "2024-02-29T23:59:59+23:59", "2026-03-01T24:00:00Z", "2026-03-01 09:30:00Z",
    "2026-03-01T09:30Z", "2026-13-01T09:30:00Z", "2026-03-01t09:30:00z", "1772332200",
    1772332200, "", None, "2026-03-01T09:30:00+24:00", "2026-03-01T09:30:60Z",
    "0001-01-01T00:00:00Z", "2026-04-31T00:00:00Z",
]  # fmt: skip
TEXTS = ["x", "", "a" * 99, "a" * 100, "a" * 200, "a" * 201, "é", 7, None, ["x"], True]
# fmt: off
PLACES: dict[tuple[Any, ...], list[Any]] = {
    ("header", "message_ts"): TIMESTAMPS,
    ("message", "search_request", 0, "timestamp"): TIMESTAMPS,
    ("header", "message_id"): TEXTS,
    ("header", "sender_id"): TEXTS,
    ("header", "receiver_id"): TEXTS,
    ("header", "sender_uri"): [*TEXTS, "a" * 2000, "a" * 2001],
    ("header", "version"): ["1.0.0", "2", 1, None],
    ("header", "action"): ["search", "SEARCH", "on-search", None],
    ("header", "total_count"): [1, 0, 2, True, 1.0, "1", None],
    ("header", "is_msg_encrypted"): [False, True, 0, "false", None],
    ("header", "meta"): [
        None,
        {},
        {"snapshot": "2025-12-31"},
        {"snapshot": "2025-12-31x"},
        {"rule_set": "dtsen-2025"},
        {"rule_set": "X"},
        {"snapshot": 20251231},
        {"other": 1},
        [],
        "2025-12-31",
    ],
    ("message", "transaction_id"): TEXTS,
    ("message", "search_request", 0, "reference_id"): TEXTS,
    ("message", "search_request", 0, "locale"): ["id", "ind", "en", "EN", "indo", "", None, 1],
    ("message", "search_request", 0, "search_criteria", "query_type"): [
        "idtype-value",
        "IDTYPE-VALUE",
        "predicate",
        None,
    ],
    ("message", "search_request", 0, "search_criteria", "version"): ["1.0.0", 1, None],
    ("message", "search_request", 0, "search_criteria", "query", "type"): [
        "NIK",
        "nik",
        "UIN",
        "Uin",
        "KK",
        "NO_KK",
        "passport",
        "",
        1,
        None,
    ],
    ("message", "search_request", 0, "search_criteria", "query", "value"): [
        NIK,
        "3201014501900000",
        "320101450190000",
        "32010145019000011",
        "9901014501900001",
        "3201017201900001",
        "3201014513900001",
        int(NIK),
        "",
        None,
    ],
    ("message", "search_request", 0, "search_criteria", "query"): [
        {"type": "NIK", "value": NIK, "extra": 1},
        {"value": NIK},
        [],
        None,
    ],
    ("message", "search_request"): [[], [by_nik(NIK), by_nik(NIK, "r2")], "x"],
    ("message", "search_request", 0, "search_criteria", "pagination"): [None, {"page_size": 5}],
    ("message", "search_request", 0, "extra"): [1],
    ("header", "extra"): [1],
    ("extra",): [1],
    ("signature",): [None, "a..b"],
    ("header",): [None, []],
    ("message",): [None, "x"],
}
# fmt: on


def _put(doc: dict[str, Any], where: tuple[Any, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    at: Any = out
    for key in where[:-1]:
        at = at[key]
    at[where[-1]] = value
    return out


def _variants() -> Iterator[dict[str, Any]]:
    base = _canonical()
    yield base
    for where, values in PLACES.items():
        for value in values:
            yield _put(base, where, value)
    # Pairs of places, so no check hides behind another.
    for (w1, v1s), (w2, v2s) in itertools.combinations(list(PLACES.items())[:12], 2):
        for v1, v2 in itertools.product(v1s[:4], v2s[:4]):
            yield _put(_put(base, w1, v1), w2, v2)


def test_parse_one_reads_exactly_what_the_general_path_reads() -> None:
    taken = 0
    for doc in _variants():
        fast = dci_fast.parse_one(orjson.dumps(doc))
        if fast is not None:
            taken += 1
            assert fast == _general_reading(doc), doc  # never takes what it should refuse
    assert taken > 100  # and takes the plain ones (lower-case types, every pin, locales...)


def test_parse_one_leaves_the_uncommon_to_the_general_path() -> None:
    """Signed, several items, a family, a filter, an int NIK: the general path's, though valid."""
    general = [
        _put(_canonical(), ("signature",), "a..b"),
        envelope([by_nik(NIK), by_nik(NIK, "r2")]),
        _put(_canonical(), ("message", "search_request", 0, "search_criteria", "query"),
             {"type": "KK", "value": NIK}),
        _put(_canonical(), ("message", "search_request", 0, "search_criteria", "query", "value"),
             int(NIK)),
    ]  # fmt: skip
    for doc in general:
        assert dci_fast.parse_one(orjson.dumps(doc)) is None
    assert _general_reading(general[-1]) is not None  # an int NIK is valid: read, not here


@pytest.fixture
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    at = dt.datetime(2026, 3, 1, 2, 30, tzinfo=dt.UTC)
    monkeypatch.setattr(dci, "now", lambda: at)


def _without_ids(body: bytes) -> bytes:
    """The answer's signed content (its bytes after the signature), with the ids that differ
    from one request to the next (audit, request and correlation ids; the message's id is its
    audit record's) named alike."""
    doc = orjson.loads(body)
    meta = doc["header"]["meta"]
    assert doc["header"]["message_id"] == meta["audit_id"]
    ids = (meta["audit_id"], meta["request_id"], doc["message"]["correlation_id"])
    content = b"{" + body.split(b'",', 1)[1] if body.startswith(b'{"signature"') else body
    for i, value in enumerate(ids):
        assert content.count(value.encode()) == (2 if i == 0 else 1)
        content = content.replace(value.encode(), b"id-%d" % i)
    return content


async def test_the_lean_answer_is_the_general_answer_byte_for_byte(
    http: httpx.AsyncClient,
    app: FastAPI,
    engine: AsyncEngine,
    make_client: MakeClient,
    full_key: str,
    release: Any,
    fixed_clock: None,
) -> None:
    decision_key = await make_client(fields=["decision"])
    keys = KeySet.import_key_set((await http.get("/.well-known/jwks.json")).json())
    niks = [p["nik"] for p in release[0][:3]] + [NIK]  # three found, one not
    asked = 0
    for key, nik, extra in itertools.product(
        (full_key, decision_key), niks, ({}, {"locale": "ind"})
    ):
        doc = envelope([{**by_nik(nik, "ref-a"), **extra}], txn="txn-a")
        doc["header"]["message_id"] = "msg-a"
        general = _put(doc, ("header", "x_vendor"), "ignored")  # the model ignores it
        assert dci_fast.parse_one(orjson.dumps(doc)) is not None
        assert dci_fast.parse_one(orjson.dumps(general)) is None
        served = app.state.fast_dci.served
        lean = await http.post(SYNC, content=orjson.dumps(doc), headers=auth(key))
        full = await http.post(SYNC, content=orjson.dumps(general), headers=auth(key))
        assert app.state.fast_dci.served == served + 2  # both on the pure-ASGI layer
        assert lean.status_code == full.status_code == 200, lean.text
        assert _without_ids(lean.content) == _without_ids(full.content)
        answer = lean.json()
        content = orjson.dumps(
            {"header": answer["header"], "message": answer["message"]},
            option=orjson.OPT_SORT_KEYS,
        )
        jws.deserialize_compact(answer["signature"], keys, algorithms=["EdDSA"], payload=content)
        asked += 1
    assert asked == 16
    # Both audited alike (same operation, subjects, count).
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT operation, found_count, subject_count FROM audit_log "
                    "ORDER BY seq DESC LIMIT 32"
                )
            )
        ).all()
    assert {r.operation for r in rows} == {"dci.search"}
    assert [tuple(r) for r in rows[0::2]] == [tuple(r) for r in rows[1::2]]
