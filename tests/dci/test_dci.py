"""The DCI face end to end through the app, against the REST answers of the same release."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app import db
from app.config import Settings
from app.repositories import dci as dci_repo
from app.services import clients
from tests.dci.receiver import Receiver
from tests.support import ALL_GROUPS, ALL_PROGRAMS, PURPOSE, MakeClient, auth

SYNC = "/dci/registry/sync/search"
ASYNC = "/dci/registry/search"
STATUS = "/dci/registry/sync/txn/status"


def _header(action: str = "search", total: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "version": "1.0.0",
        "message_id": uuid.uuid4().hex,
        "message_ts": "2026-03-01T09:30:00+07:00",
        "action": action,
        "sender_id": "spmis.test",
        "total_count": total,
        **extra,
    }


def _item(ref: str, query_type: str, query: Any, **criteria: Any) -> dict[str, Any]:
    return {
        "reference_id": ref,
        "timestamp": "2026-03-01T09:30:00+07:00",
        "search_criteria": {"query_type": query_type, "query": query, **criteria},
    }


def envelope(items: list[dict[str, Any]], txn: str | None = None, **header: Any) -> dict[str, Any]:
    return {
        "header": _header(total=len(items), **header),
        "message": {"transaction_id": txn or uuid.uuid4().hex, "search_request": items},
    }


def by_nik(nik: str, ref: str = "r1") -> dict[str, Any]:
    return _item(ref, "idtype-value", {"type": "NIK", "value": nik})


def by_kk(no_kk: str, ref: str = "r1") -> dict[str, Any]:
    return _item(ref, "idtype-value", {"type": "KK", "value": no_kk})


def _ack_error(r: httpx.Response) -> str:
    assert r.headers["content-type"].startswith("application/problem+json"), r.text
    body = r.json()
    assert body["message"]["ack_status"] == "ERR"
    code: str = body["message"]["error"]["code"]
    return code


# --- envelope -------------------------------------------------------------------------------


async def test_envelope_errors_name_the_field_with_the_standard_code(
    http: httpx.AsyncClient, full_key: str, release: Any
) -> None:
    nik = release[0][0]["nik"]
    r = await http.post(SYNC, json={"message": {}}, headers=auth(full_key))
    assert r.status_code == 422 and _ack_error(r) == "err.request.bad"
    assert r.json()["field"].startswith("header"), r.json()["errors"]

    bad_action = envelope([by_nik(nik)], action="subscribe")
    r = await http.post(SYNC, json=bad_action, headers=auth(full_key))
    assert r.status_code == 422 and r.json()["field"] == "header.action"
    assert _ack_error(r) == "err.request.bad"
    assert r.json()["message"]["error"]["message"].startswith("rjct.action.invalid: ")

    wrong_total = envelope([by_nik(nik)])
    wrong_total["header"]["total_count"] = 2
    r = await http.post(SYNC, json=wrong_total, headers=auth(full_key))
    assert r.status_code == 422 and r.json()["field"] == "header.total_count"

    encrypted = envelope([by_nik(nik)], is_msg_encrypted=True)
    r = await http.post(SYNC, json=encrypted, headers=auth(full_key))
    assert r.status_code == 422 and _ack_error(r) == "err.encryption.invalid"

    r = await http.post(SYNC, content=b"{not json", headers=auth(full_key))
    assert r.status_code == 400 and _ack_error(r) == "err.request.bad"

    r = await http.post(SYNC, json=envelope([by_nik(nik)]))
    assert r.status_code == 401 and _ack_error(r) == "err.request.unauthorized"
    r = await http.post(SYNC, json=envelope([by_nik(nik)]), headers=auth(full_key, None))
    assert r.status_code == 403 and _ack_error(r) == "err.request.forbidden"
    assert nik not in r.text  # nothing echoes an identifier


async def test_bad_items_are_rejected_one_by_one(
    http: httpx.AsyncClient, full_key: str, release: Any
) -> None:
    nik = release[0][0]["nik"]
    items = [
        by_nik(nik, "ok"),
        by_nik("1234", "short"),
        _item("kind", "idtype-value", {"type": "PASSPORT", "value": "x"}),
        _item("qt", "graphql", {"type": "x"}),
        by_nik(nik, "ok"),
        _item(
            "page",
            "predicate",
            [
                {
                    "expression1": {
                        "attribute_name": "sex",
                        "operator": "eq",
                        "attribute_value": "female",
                    }
                }
            ],
            pagination={"page_size": 0},
        ),
        _item(
            "attr",
            "predicate",
            [{"expression1": {"attribute_name": "income", "operator": "eq", "attribute_value": 1}}],
        ),
    ]
    r = await http.post(SYNC, json=envelope(items), headers=auth(full_key))
    assert r.status_code == 200, r.text
    got = [
        (x["reference_id"], x["status"], x.get("status_reason_code"))
        for x in r.json()["message"]["search_response"]
    ]
    assert got == [
        ("ok", "succ", None),
        ("short", "rjct", "rjct.search_criteria.invalid"),
        ("kind", "rjct", "rjct.search_criteria.invalid"),
        ("qt", "rjct", "rjct.search_criteria.invalid"),
        ("ok", "rjct", "rjct.reference_id.duplicate"),
        ("page", "rjct", "rjct.pagination.invalid"),
        ("attr", "rjct", "rjct.search_criteria.invalid"),
    ]
    assert "1234" not in r.text.replace('"1234"', "")  # the bad value is not echoed back


# --- idtype-value against REST ---------------------------------------------------------------


async def test_nik_search_equals_the_rest_lookup(
    http: httpx.AsyncClient, full_key: str, release: Any, engine: AsyncEngine, app: FastAPI
) -> None:
    served = app.state.fast_dci.served
    niks = [p["nik"] for p in release[0][:5]] + ["3201014501900001"]
    rest = (
        await http.post("/v1/people/lookup", json={"niks": niks}, headers=auth(full_key))
    ).json()
    items = [by_nik(n, f"ref-{i}") for i, n in enumerate(niks)]
    r = await http.post(SYNC, json=envelope(items, txn="txn-nik"), headers=auth(full_key))
    assert r.status_code == 200, r.text
    answer = r.json()
    meta = answer["header"]["meta"]
    assert meta["snapshot"] == rest["meta"]["snapshot"]
    assert meta["rule_set"] == rest["meta"]["rule_set"]
    assert answer["header"]["action"] == "on-search" and answer["header"]["status"] == "succ"
    for result, person in zip(answer["message"]["search_response"], rest["results"], strict=True):
        assert result["status"] == "succ"
        records = result["data"]["reg_records"]
        if not person["found"]:
            assert records == []
            continue
        (record,) = records
        assert record["@type"] == "Person"
        assert record["identifier"]["identifier_value"] == person["nik"]
        if person["decile"] is None:
            assert "poverty_score" not in record
        else:
            assert record["poverty_score"] == str(person["decile"])
        assert record["household_identifier"]["identifier_value"] == person["family"]["no_kk"]
        assert record["address"]["region_code"] == person["family"]["kode_wilayah"]
        assert record["name"]["given_name"] == person["identity"]["name"]
        extra = {a["name"]: a["value"] for a in record["additional_attributes"]}
        assert extra["decisions"] == person["decisions"]
        assert extra["health"] == person["health"]
    # audited like a lookup: one record naming every NIK asked, under the DCI operation
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT operation, found_count, subject_count, response_digest "
                    "FROM audit_log WHERE id = :id"
                ),
                {"id": meta["audit_id"]},
            )
        ).one()
    assert row.operation == "dci.search" and row.found_count == 5 and row.subject_count >= 6
    assert row.response_digest == hashlib.sha256(r.content).digest()  # what was sent
    assert app.state.fast_dci.served == served + 1  # answered by the pure-ASGI path


async def test_kk_search_equals_the_rest_family(
    http: httpx.AsyncClient, full_key: str, release: Any
) -> None:
    no_kk = next(iter(release[1]))
    rest = (
        await http.post("/v1/families/lookup", json={"no_kks": [no_kk]}, headers=auth(full_key))
    ).json()
    r = await http.post(SYNC, json=envelope([by_kk(no_kk)]), headers=auth(full_key))
    assert r.status_code == 200, r.text
    (record,) = r.json()["message"]["search_response"][0]["data"]["reg_records"]
    (family,) = rest["results"]
    assert record["@type"] == "Group"
    assert record["group_identifier"]["identifier_value"] == no_kk
    assert record["group_size"] == len(family["members"])
    members = [
        (m["member_identifier"]["identifier_value"], m["relationship_to_head"])
        for m in record["members"]
    ]
    assert members == [(m["nik"], str(m["relationship"])) for m in family["members"]]
    extra = {a["name"]: a["value"] for a in record["additional_attributes"]}
    assert extra["decisions"] == family["decisions"]


async def test_records_carry_only_what_the_field_groups_allow(
    http: httpx.AsyncClient, make_client: MakeClient, release: Any
) -> None:
    key = await make_client(fields=["decision"])
    nik = release[0][0]["nik"]
    no_kk = release[0][0]["no_kk"]
    rest = (await http.post("/v1/people/lookup", json={"niks": [nik]}, headers=auth(key))).json()
    items = [
        by_nik(nik, "p"),
        by_kk(no_kk, "g"),
        _item(
            "f",
            "predicate",
            [
                {
                    "expression1": {
                        "attribute_name": "poverty_score",
                        "operator": "le",
                        "attribute_value": 3,
                    }
                }
            ],
        ),
    ]
    r = await http.post(SYNC, json=envelope(items), headers=auth(key))
    assert r.status_code == 200, r.text
    person, group, search = r.json()["message"]["search_response"]
    (record,) = person["data"]["reg_records"]
    assert set(record) == {"@type", "identifier", "additional_attributes"}
    assert record["additional_attributes"] == [
        {"name": "decisions", "value": rest["results"][0]["decisions"]}
    ]
    (g,) = group["data"]["reg_records"]
    assert "members" not in g and "poverty_score" not in g and "address" not in g
    # filtering on the decile would disclose it: refused without the decile group
    assert search["status"] == "rjct" and "decile" in search["status_reason_message"]


# --- attribute search ------------------------------------------------------------------------


async def test_predicate_search_matches_the_release(
    http: httpx.AsyncClient, full_key: str, release: Any
) -> None:
    people, families = release

    def poor_woman(p: dict[str, str]) -> bool:
        decile = families[p["no_kk"]]["desil"]
        return decile != "" and int(decile) <= 4 and p["jenis_kelamin"] == "2"

    region = next(families[p["no_kk"]]["kode_wilayah"][:4] for p in people if poor_woman(p))
    expected = sorted(
        p["nik"]
        for p in people
        if poor_woman(p) and families[p["no_kk"]]["kode_wilayah"].startswith(region)
    )
    assert len(expected) > 5, "the release has a second page to find"
    query = [
        {
            "seq_num": 1,
            "expression1": {
                "attribute_name": "poverty_score",
                "operator": "le",
                "attribute_value": 4,
            },
            "condition": "and",
            "expression2": {
                "attribute_name": "region_code",
                "operator": "eq",
                "attribute_value": region,
            },
        },
        {
            "seq_num": 2,
            "expression1": {"attribute_name": "sex", "operator": "eq", "attribute_value": "female"},
        },
    ]
    seen: list[str] = []
    for page in (1, 2):
        item = _item("q", "predicate", query, pagination={"page_size": 5, "page_number": page})
        r = await http.post(SYNC, json=envelope([item]), headers=auth(full_key))
        (result,) = r.json()["message"]["search_response"]
        assert result["status"] == "succ", result
        assert result["pagination"] == {
            "page_size": 5,
            "page_number": page,
            "total_count": len(expected),
        }
        seen += [x["identifier"]["identifier_value"] for x in result["data"]["reg_records"]]
    assert seen == expected[:10]
    assert len(expected) < 10 or len(seen) == 10
    # the same filter as an `expression` query
    expression = {"type": "predicate", "value": {"expression": query}}
    item = _item("e", "expression", expression, pagination={"page_size": 5})
    r = await http.post(SYNC, json=envelope([item]), headers=auth(full_key))
    (result,) = r.json()["message"]["search_response"]
    assert [x["identifier"]["identifier_value"] for x in result["data"]["reg_records"]] == expected[
        :5
    ]


# --- transaction status ----------------------------------------------------------------------


def _status_request(attribute_type: str, value: Any, action: str = "txn-status") -> dict[str, Any]:
    return {
        "header": _header(action=action),
        "message": {
            "transaction_id": uuid.uuid4().hex,
            "txnstatus_request": {
                "reference_id": "s1",
                "txn_type": "search",
                "attribute_type": attribute_type,
                "attribute_value": value,
            },
        },
    }


async def test_txn_status_answers_the_clients_own_requests_only(
    http: httpx.AsyncClient, full_key: str, make_client: MakeClient, release: Any
) -> None:
    txn = f"txn-{uuid.uuid4().hex[:8]}"
    nik = release[0][0]["nik"]
    items = [by_nik(nik, "a"), by_nik("12", "b")]
    r = await http.post(SYNC, json=envelope(items, txn=txn), headers=auth(full_key))
    correlation = r.json()["message"]["correlation_id"]
    r = await http.post(STATUS, json=_status_request("transaction_id", txn), headers=auth(full_key))
    assert r.status_code == 200, r.text
    status = r.json()["message"]["txnstatus_response"]["txn_status"]
    assert status["correlation_id"] == correlation and status["transaction_id"] == txn
    got = [
        (x["reference_id"], x["status"], x.get("status_reason_code"))
        for x in status["search_response"]
    ]
    assert got == [("a", "succ", None), ("b", "rjct", "rjct.search_criteria.invalid")]
    assert nik not in r.text
    r = await http.post(
        STATUS, json=_status_request("correlation_id", correlation), headers=auth(full_key)
    )
    assert len(r.json()["message"]["txnstatus_response"]["txn_status"]["search_response"]) == 2
    # another client sees nothing of it
    other = await make_client()
    r = await http.post(STATUS, json=_status_request("transaction_id", txn), headers=auth(other))
    assert r.json()["header"]["status"] == "rjct"
    (unknown,) = r.json()["message"]["txnstatus_response"]["txn_status"]["search_response"]
    assert unknown["status"] == "rjct"
    assert unknown["status_reason_code"] == "rjct.reference_id.invalid"


async def test_sync_search_states_are_written_a_batch_at_a_time(
    app: FastAPI,
    http: httpx.AsyncClient,
    full_key: str,
    release: Any,
    engine: AsyncEngine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Searches answered one after another within the log's interval have their states
    written in one statement, and a txn/status right after them still sees every one (it
    flushes the batch first)."""
    nik = release[0][0]["nik"]
    r = await http.post(SYNC, json=envelope([by_nik(nik)]), headers=auth(full_key))
    log = app.state.dci_sync_log  # made by the first search
    await log.flush()
    monkeypatch.setattr(log, "interval", 5.0)  # wide, for a slow machine
    written: list[int] = []
    insert_many = dci_repo.insert_many

    async def counted(conn: Any, rows: Any) -> None:
        written.append(len(rows))
        await insert_many(conn, rows)

    monkeypatch.setattr(dci_repo, "insert_many", counted)
    txn = f"txn-{uuid.uuid4().hex[:8]}"
    for i in range(8):  # one after another: each answered before the next is asked
        r = await http.post(
            SYNC, json=envelope([by_nik(nik, f"r{i}")], txn=txn), headers=auth(full_key)
        )
        assert r.status_code == 200
    assert written == []  # not yet: within the interval
    r = await http.post(STATUS, json=_status_request("transaction_id", txn), headers=auth(full_key))
    assert r.json()["message"]["txnstatus_response"]["txn_status"]["transaction_id"] == txn
    assert written == [8]  # flushed by txn/status, in one statement
    async with engine.connect() as conn:
        stored = (
            await conn.execute(
                text("SELECT count(*) FROM dci_transactions WHERE transaction_id = :t"),
                {"t": txn},
            )
        ).scalar_one()
    assert stored == 8


# --- async search and callbacks --------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(fail=1)
    yield r
    r.server.shutdown()


async def _callback_client(engine: AsyncEngine, prefix: str | None) -> str:
    async with engine.begin() as conn:
        _, key = await clients.create_client(
            conn,
            name="dci client",
            programs=ALL_PROGRAMS,
            field_groups=ALL_GROUPS,
            purposes=[PURPOSE],
            callback_url_prefix=prefix,
        )
    return key


async def test_async_search_is_delivered_with_retries(
    worker_http: httpx.AsyncClient, engine: AsyncEngine, receiver: Receiver, release: Any
) -> None:
    key = await _callback_client(engine, receiver.base + "/dci")
    nik = release[0][0]["nik"]
    txn = f"txn-{uuid.uuid4().hex[:8]}"
    body = envelope([by_nik(nik)], txn=txn, sender_uri=receiver.base + "/dci/spmis")
    r = await worker_http.post(ASYNC, json=body, headers=auth(key))
    assert r.status_code == 200, r.text
    ack = r.json()["message"]
    assert ack["ack_status"] == "ACK"
    got = await receiver.wait(2)
    assert [(path, status) for path, _, status in got] == [
        ("/dci/spmis/on-search", 500),
        ("/dci/spmis/on-search", 200),
    ]
    assert got[0][1] == got[1][1]  # the same answer, made once, sent again
    callback = orjson.loads(got[1][1])
    assert callback["header"]["action"] == "on-search"
    assert callback["message"]["correlation_id"] == ack["correlation_id"]
    (result,) = callback["message"]["search_response"]
    assert result["data"]["reg_records"][0]["identifier"]["identifier_value"] == nik
    # The receiver has the callback before the worker records its delivery: wait (bounded).
    until = asyncio.get_running_loop().time() + 10
    while True:
        async with engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT attempts, delivered_at, response, request, status "
                        "FROM dci_transactions WHERE id = :id"
                    ),
                    {"id": uuid.UUID(ack["correlation_id"])},
                )
            ).one()
        if row.delivered_at is not None or asyncio.get_running_loop().time() > until:
            break
        await asyncio.sleep(0.05)
    async with engine.connect() as conn:
        audited = (
            await conn.execute(
                text("SELECT operation FROM audit_log WHERE id = :id"),
                {"id": callback["header"]["meta"]["audit_id"]},
            )
        ).scalar_one()
    assert row.attempts == 2 and row.delivered_at is not None and row.status == "succ"
    assert row.response is None and row.request is None  # nothing kept once delivered
    assert audited == "dci.search"
    # its state, by transaction id
    r = await worker_http.post(
        STATUS, json=_status_request("transaction_id", txn), headers=auth(key)
    )
    (state,) = r.json()["message"]["txnstatus_response"]["txn_status"]["search_response"]
    assert state["status"] == "succ"


async def test_async_callbacks_give_up_after_the_last_attempt(
    worker_http: httpx.AsyncClient, engine: AsyncEngine, release: Any
) -> None:
    receiver = Receiver(fail=100)
    try:
        key = await _callback_client(engine, receiver.base)
        body = envelope([by_nik(release[0][0]["nik"])], sender_uri=receiver.base + "/x")
        r = await worker_http.post(ASYNC, json=body, headers=auth(key))
        correlation = uuid.UUID(r.json()["message"]["correlation_id"])
        got = await receiver.wait(5)
        assert len(got) == 5
        loop = asyncio.get_running_loop()
        end = loop.time() + 10
        while loop.time() < end:  # the last attempt's row update follows its request
            async with engine.connect() as conn:
                row = (
                    await conn.execute(
                        text("SELECT attempts, response FROM dci_transactions WHERE id = :id"),
                        {"id": correlation},
                    )
                ).one()
            if row.attempts == 5:
                break
            await asyncio.sleep(0.05)
        assert row.attempts == 5 and row.response is None
        await asyncio.sleep(1.0)  # nothing more is sent (the 6th try would come after 3.2 s)
        assert len(receiver.bodies) == 5
    finally:
        receiver.server.shutdown()


async def test_an_unregistered_sender_uri_is_refused(
    worker_http: httpx.AsyncClient, engine: AsyncEngine, release: Any, receiver: Receiver
) -> None:
    nik = release[0][0]["nik"]
    registered = await _callback_client(engine, receiver.base + "/dci")
    unregistered = await _callback_client(engine, None)
    for key, uri in [
        (registered, "http://evil.example/dci"),
        (registered, receiver.base + "/dcix"),  # not at a path segment of the prefix
        (registered, receiver.base.replace("127.0.0.1", "localhost") + "/dci"),
        (unregistered, receiver.base + "/dci"),
    ]:
        body = envelope([by_nik(nik)], sender_uri=uri)
        r = await worker_http.post(ASYNC, json=body, headers=auth(key))
        assert r.status_code == 403, (uri, r.text)
        assert _ack_error(r) == "err.sender_uri.invalid"
        assert r.json()["field"] == "header.sender_uri"
    body = envelope([by_nik(nik)])  # no sender_uri at all
    r = await worker_http.post(ASYNC, json=body, headers=auth(registered))
    assert r.status_code == 422 and _ack_error(r) == "err.sender_uri.invalid"
    await asyncio.sleep(0.5)
    assert receiver.bodies == []


async def test_async_txn_status_is_delivered(
    worker_http: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    receiver = Receiver(fail=0)
    try:
        key = await _callback_client(engine, receiver.base)
        request = _status_request("transaction_id", "nothing-like-it")
        request["header"]["sender_uri"] = receiver.base + "/cb"
        r = await worker_http.post("/dci/registry/txn/status", json=request, headers=auth(key))
        assert r.json()["message"]["ack_status"] == "ACK", r.text
        (got,) = await receiver.wait(1)
        assert got[0] == "/cb/txn/on-status"
        answer = orjson.loads(got[1])
        assert answer["header"]["action"] == "txn-on-status"
        assert answer["header"]["status"] == "rjct"
        (unknown,) = answer["message"]["txnstatus_response"]["txn_status"]["search_response"]
        assert unknown["status_reason_code"] == "rjct.reference_id.invalid"
    finally:
        receiver.server.shutdown()


def test_the_prefix_is_checked_when_the_client_is_created() -> None:
    for bad in ("ftp://x.example", "not a url", "https://x.example/cb?a=1", "/relative"):
        with pytest.raises(Exception, match="callback_url_prefix"):
            clients.checked_callback_prefix(bad)
    assert clients.checked_callback_prefix("https://X.example/cb/") == "https://x.example/cb"


# --- the worker's part, driven directly ------------------------------------------------------


async def test_an_async_search_is_answered_once_and_never_for_a_revoked_client(
    app: FastAPI, settings: Settings, engine: AsyncEngine, release: Any
) -> None:
    """run_async on a stored transaction (not queued: no worker races this test)."""
    from app.schemas.dci import DciSearchEnvelope
    from app.services import dci
    from app.services.lookup import Caller
    from app.services.pinning import pin

    state = app.state.tepat
    nik = release[0][0]["nik"]
    posted: list[tuple[str, bytes]] = []

    async def post(url: str, body: bytes) -> int:
        posted.append((url, body))
        return 200 if len(posted) > 1 else 503

    async def pinned(snapshot: str | None, rule_set: str | None) -> Any:
        async with engine.connect() as conn:
            return await pin(conn, snapshot, rule_set)

    async def nothing(conn: Any, correlation_id: uuid.UUID) -> None:
        return None

    async def stored(key: str, prefix: str) -> uuid.UUID:
        principal = await state.authenticator.authenticate(f"Bearer {key}")
        caller = Caller(principal, PURPOSE, "test-request-0001")
        body = envelope([by_nik(nik)], sender_uri=prefix + "/cb")
        parsed = DciSearchEnvelope.model_validate(body)
        url = dci.callback_url(principal, parsed.header.sender_uri, "/on-search")
        async with state.reads.pool.acquire() as conn:
            return await dci.submit_async(
                conn, caller, parsed.model_dump(mode="json", exclude_none=True),
                parsed.header, parsed.message, url, nothing,
            )  # fmt: skip

    async def run(correlation_id: uuid.UUID) -> str:
        return await dci.run_async(
            correlation_id,
            connect=lambda: db.connect_raw(settings),
            engine=engine,
            audit=state.audit,
            pin=pinned,
            delivery=dci.Delivery(attempts=3, backoff=0.01),
            post=post,
        )

    key = await _callback_client(engine, "https://spmis.example")
    first = await stored(key, "https://spmis.example")
    with pytest.raises(dci.RetryLater):
        await run(first)  # answered and audited, the callback failed
    assert await run(first) == "delivered"  # the stored answer, not a second search
    assert posted[0] == posted[1] and posted[0][0] == "https://spmis.example/cb/on-search"
    audit_id = orjson.loads(posted[0][1])["header"]["meta"]["audit_id"]
    async with engine.connect() as conn:
        records = (
            await conn.execute(
                text("SELECT count(*) FROM audit_log WHERE request_id = 'test-request-0001'")
            )
        ).scalar_one()
        assert records == 1
        assert (
            await conn.execute(text("SELECT 1 FROM audit_log WHERE id = :id"), {"id": audit_id})
        ).scalar_one() == 1

    # a client revoked before its search is answered gets nothing, and nothing is audited
    second = await stored(key, "https://spmis.example")
    async with engine.begin() as conn:
        principal = await state.authenticator.authenticate(f"Bearer {key}")
        await clients.revoke_client(conn, principal.client_id)
    posted.clear()
    assert await run(second) == "client gone"
    assert posted == []
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT status, request, response FROM dci_transactions WHERE id = :id"),
                {"id": second},
            )
        ).one()
        records = (
            await conn.execute(
                text("SELECT count(*) FROM audit_log WHERE request_id = 'test-request-0001'")
            )
        ).scalar_one()
    assert row.status == "rjct" and row.request is None and not row.response
    assert records == 1


async def test_sync_states_keep_every_character_as_sent(
    raw: asyncpg.Connection, full_key: str
) -> None:
    """The batch travels as JSON: quotes, backslashes, non-ASCII and JSON-looking text in the
    ids come back as they were, and the outcome as the JSON it was."""
    client_id = await raw.fetchval("SELECT id FROM api_clients LIMIT 1")
    ids = ['t"1', "t\\2", "tíkét-ünï 🇮🇩", '{"a": 1}', "t\n5"]
    rows: list[dci_repo.SyncRow] = [
        (
            uuid.uuid4(),
            client_id,
            txn,
            f"m-{txn}",
            "succ",
            "pbi-verification",
            f"req-{i}",
            orjson.dumps([{"reference_id": txn, "status": "succ"}]).decode(),
        )
        for i, txn in enumerate(ids)
    ]
    try:
        await dci_repo.insert_many(raw, rows)
        for row in rows:
            stored = await dci_repo.get(raw, uuid.UUID(str(row[0])))
            assert stored is not None
            assert (stored.action, stored.mode) == ("search", "sync")
            assert (
                stored.client_id,
                stored.transaction_id,
                stored.message_id,
                stored.status,
                stored.purpose,
                stored.request_id,
            ) == row[1:7]
            assert stored.outcome == orjson.loads(row[7])
    finally:
        await raw.execute(
            "DELETE FROM dci_transactions WHERE id = ANY($1::uuid[])", [r[0] for r in rows]
        )
