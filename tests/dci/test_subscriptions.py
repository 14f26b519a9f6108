"""DCI subscriptions end to end: subscribe and unsubscribe with their callbacks, and the
`notify` callbacks a subscriber receives when a release is published, against the change list
of the same client (`/v1/changes`). Every answer and callback is held to the standard's schemas
(tests/dci/conftest.py, tests/dci/receiver.py)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from joserfc import jws
from joserfc.jwk import KeySet
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app import db
from app.config import Settings
from app.main import create_app
from app.services import clients, signatures
from app.services import dci_subscriptions as subscriptions
from app.services.worker import enqueue_notification
from tests.dci import spec
from tests.dci.conftest import validating
from tests.dci.receiver import Receiver
from tests.helpers import CHANGES_FROM, CHANGES_TO, two_quarters
from tests.support import ALL_GROUPS, ALL_PROGRAMS, PURPOSE, auth

SUBSCRIBE = "/dci/registry/subscribe"
UNSUBSCRIBE = "/dci/registry/unsubscribe"
PAGE = 40


@pytest.fixture(scope="module")
async def notify_app(settings: Settings, published: Path) -> AsyncIterator[FastAPI]:
    fast = settings.model_copy(
        update={
            "jobs_worker": True,
            "dci_callback_backoff": 0.2,
            "dci_notify_page": PAGE,
            "dci_notify_interval": 1.0,
        }
    )
    application = create_app(fast)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def dci_http(notify_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with validating(httpx.ASGITransport(app=notify_app)) as c:
        yield c


@pytest.fixture
async def made(engine: AsyncEngine) -> AsyncIterator[list[str]]:
    """Client ids made by a test; their subscriptions are deleted after it (no other test's
    worker is to notify them)."""
    ids: list[str] = []
    yield ids
    async with engine.begin() as conn:
        await conn.execute(
            text("DELETE FROM dci_subscriptions WHERE client_id = ANY(:ids)"), {"ids": ids}
        )


async def _client(
    engine: AsyncEngine,
    made: list[str],
    prefix: str | None,
    *,
    bulk: bool = True,
    groups: list[str] = ALL_GROUPS,
) -> str:
    async with engine.begin() as conn:
        info, key = await clients.create_client(
            conn,
            name="dci subscriber",
            programs=ALL_PROGRAMS,
            field_groups=groups,
            purposes=[PURPOSE],
            bulk=bulk,
            callback_url_prefix=prefix,
        )
    made.append(info.id)
    return key


def _header(action: str, total: int, sender_uri: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "version": "1.0.0",
        "message_id": uuid.uuid4().hex,
        "message_ts": "2026-03-01T09:30:00+07:00",
        "action": action,
        "sender_id": "spmis.test",
        "total_count": total,
    }
    if sender_uri is not None:
        out["sender_uri"] = sender_uri
    return out


def item(ref: str, filter_: Any, event: str = "eligibility_changed") -> dict[str, Any]:
    return {
        "reference_id": ref,
        "timestamp": "2026-03-01T09:30:00+07:00",
        "subscribe_criteria": {
            "version": "1.0.0",
            "reg_event_type": event,
            "filter_type": "predicate",
            "filter": filter_,
            "notify_record_type": "Person",
        },
    }


def predicate(name: str, op: str, value: Any) -> dict[str, Any]:
    return {
        "seq_num": 1,
        "expression1": {"attribute_name": name, "operator": op, "attribute_value": value},
    }


def subscribe_body(items: list[dict[str, Any]], sender_uri: str | None) -> dict[str, Any]:
    return {
        "header": _header("subscribe", len(items), sender_uri),
        "message": {"transaction_id": f"sub-{uuid.uuid4().hex[:8]}", "subscribe_request": items},
    }


def unsubscribe_body(codes: list[str], sender_uri: str) -> dict[str, Any]:
    return {
        "header": _header("unsubscribe", len(codes), sender_uri),
        "message": {
            "transaction_id": f"unsub-{uuid.uuid4().hex[:8]}",
            "timestamp": "2026-04-01T08:00:00+07:00",
            "subscription_codes": codes,
        },
    }


def _callbacks(receiver: Receiver, suffix: str) -> list[dict[str, Any]]:
    return [orjson.loads(b) for p, b, s in receiver.bodies if p.endswith(suffix) and s == 200]


async def _until(receiver: Receiver, suffix: str, n: int) -> list[dict[str, Any]]:
    for _ in range(1200):  # a bounded wait for the worker's deliveries
        if len(_callbacks(receiver, suffix)) >= n:
            break
        await asyncio.sleep(0.05)
    await receiver.wait(0)  # every body was valid for the standard
    return _callbacks(receiver, suffix)


async def test_subscribe_and_unsubscribe_answer_by_callback(
    dci_http: httpx.AsyncClient, engine: AsyncEngine, made: list[str]
) -> None:
    receiver = Receiver(fail=1)  # the first on-subscribe fails once, then is sent again
    try:
        key = await _client(engine, made, receiver.base + "/dci")
        items = [
            item("a", [predicate("program", "in", ["PKH", "BPNT"])]),
            item("b", [predicate("poverty_score", "le", 3)]),
            item("c", [predicate("program", "in", ["PKH", "BPNT"])]),  # the same as a
            item("d", [], event="earthquake"),
            item("e", [predicate("region_code", "eq", "32")], event="lost"),
        ]
        r = await dci_http.post(
            SUBSCRIBE, json=subscribe_body(items, receiver.base + "/dci/spmis"), headers=auth(key)
        )
        assert r.status_code == 200, r.text
        ack = r.json()["message"]
        assert ack["ack_status"] == "ACK"
        (answer,) = await _until(receiver, "/on-subscribe", 1)
        assert [s for p, _, s in receiver.bodies] == [500, 200]
        assert receiver.bodies[0][0] == "/dci/spmis/on-subscribe"
        assert answer["header"]["action"] == "on-subscribe"
        assert answer["message"]["correlation_id"] == ack["correlation_id"]
        got = {
            x["reference_id"]: (x["status"], x.get("status_reason_code"))
            for x in answer["message"]["subscribe_response"]
        }
        assert got == {
            "a": ("succ", None),
            "b": ("rjct", "rjct.notify_details.invalid"),
            "c": ("rjct", "rjct.event.already_subscribed"),
            "d": ("rjct", "rjct.notify_types.invalid"),
            "e": ("succ", None),
        }
        # txn status, sync: each item's state (the standard spells the type `subscibe`)
        status_request = {
            "header": _header("txn-status", 1, None),
            "message": {
                "transaction_id": "t-status",
                "txnstatus_request": {
                    "reference_id": "s-1",
                    "txn_type": "subscribe",
                    "attribute_type": "correlation_id",
                    "attribute_value": ack["correlation_id"],
                },
            },
        }
        r = await dci_http.post(
            "/dci/registry/sync/txn/status", json=status_request, headers=auth(key)
        )
        txn = r.json()["message"]["txnstatus_response"]
        assert txn["txn_type"] == "subscibe"
        states = {
            x["reference_id"]: (x["status"], x.get("status_reason_message"))
            for x in txn["txn_status"]["search_response"]
        }
        assert states == got
        codes = {
            x["reference_id"]: x["subscriptions"][0]["code"]
            for x in answer["message"]["subscribe_response"]
            if x["status"] == "succ"
        }
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT reference_id, status, notify_url, criteria FROM dci_subscriptions "
                        "WHERE id = ANY(:ids) ORDER BY reference_id"
                    ),
                    {"ids": [uuid.UUID(c) for c in codes.values()]},
                )
            ).all()
        assert [(r.reference_id, r.status) for r in rows] == [
            ("a", "subscribe"),
            ("e", "subscribe"),
        ]
        assert rows[0].notify_url == receiver.base + "/dci/spmis/notify"
        assert rows[0].criteria["programs"] == ["PKH", "BPNT"]
        assert rows[1].criteria["kinds"] == ["lost"] and rows[1].criteria["region"] == "32"

        # Another client cannot end it: its code is unknown there.
        other = await _client(engine, made, receiver.base + "/dci")
        r = await dci_http.post(
            UNSUBSCRIBE,
            json=unsubscribe_body([codes["a"]], receiver.base + "/dci/other"),
            headers=auth(other),
        )
        assert r.json()["message"]["ack_status"] == "ACK", r.text
        (refused,) = await _until(receiver, "/other/on-unsubscribe", 1)
        assert refused["message"]["status"] == "rjct"
        assert refused["message"]["status_reason_code"] == "rjct.subscription_code.invalid"
        assert refused["message"]["subscription_status"] == []
        # Its owner can, once.
        for n, expected in ((1, "succ"), (2, "rjct")):
            r = await dci_http.post(
                UNSUBSCRIBE,
                json=unsubscribe_body([codes["a"]], receiver.base + "/dci/spmis"),
                headers=auth(key),
            )
            assert r.status_code == 200, r.text
            ended = (await _until(receiver, "/spmis/on-unsubscribe", n))[n - 1]
            assert ended["header"]["action"] == "on-unsubscribe"
            assert ended["message"]["status"] == expected
        assert ended["message"]["status_reason_code"] == "rjct.event.already_unsubscribed"
        first = _callbacks(receiver, "/spmis/on-unsubscribe")[0]["message"]
        assert first["subscription_status"] == [{"code": codes["a"], "status": "unsubscribe"}]
    finally:
        receiver.close()


async def test_subscribe_is_refused_as_search_is(
    dci_http: httpx.AsyncClient, engine: AsyncEngine, made: list[str]
) -> None:
    receiver = Receiver(fail=0)
    try:
        key = await _client(engine, made, receiver.base + "/dci")
        body = subscribe_body([item("a", [])], receiver.base + "/dci")
        r = await dci_http.post(SUBSCRIBE, json=body)
        assert r.status_code == 401
        assert r.json()["message"]["error"]["code"] == "err.request.unauthorized"
        outside = subscribe_body([item("a", [])], "http://elsewhere.test/dci")
        r = await dci_http.post(SUBSCRIBE, json=outside, headers=auth(key))
        assert r.status_code == 403
        assert r.json()["message"]["error"]["code"] == "err.sender_uri.invalid"
        no_bulk = await _client(engine, made, receiver.base + "/dci", bulk=False)
        r = await dci_http.post(SUBSCRIBE, json=body, headers=auth(no_bulk))
        assert r.status_code == 403 and r.json()["code"] == "bulk_not_granted"
        wrong = subscribe_body([item("a", [])], receiver.base + "/dci")
        wrong["header"]["action"] = "search"
        r = await dci_http.post(SUBSCRIBE, json=wrong, headers=auth(key))
        assert r.status_code == 422 and r.json()["field"] == "header.action"
        missing = subscribe_body([item("a", [])], receiver.base + "/dci")
        del missing["message"]["subscribe_request"][0]["subscribe_criteria"]["filter"]
        r = await dci_http.post(SUBSCRIBE, json=missing, headers=auth(key))
        assert r.status_code == 422 and "filter" in r.json()["field"]
        await asyncio.sleep(0.3)
        assert receiver.bodies == []  # nothing refused was stored or answered
        async with engine.connect() as conn:
            n = (
                await conn.execute(
                    text("SELECT count(*) FROM dci_subscriptions WHERE client_id = ANY(:ids)"),
                    {"ids": made},
                )
            ).scalar_one()
        assert n == 0
    finally:
        receiver.close()


async def _notification_done(engine: AsyncEngine, code: str, *, wait: bool = True) -> list[Any]:
    for _ in range(2400 if wait else 1):  # bounded: the worker computes and stores the pages
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT status, pages, people, from_snapshot_key, to_snapshot_key "
                        "FROM dci_notifications WHERE subscription_id = :id"
                    ),
                    {"id": uuid.UUID(code)},
                )
            ).all()
        if rows and (not wait or all(r.status != "pdng" for r in rows)):
            return list(rows)
        await asyncio.sleep(0.05)
    raise AssertionError("the notification was not computed")


async def _subscribed(
    dci_http: httpx.AsyncClient, receiver: Receiver, key: str, path: str, filter_: Any
) -> str:
    r = await dci_http.post(
        SUBSCRIBE,
        json=subscribe_body([item("watch", filter_)], receiver.base + path),
        headers=auth(key),
    )
    assert r.status_code == 200, r.text
    answers = await _until(receiver, path + "/on-subscribe", 1)
    code: str = answers[-1]["message"]["subscribe_response"][0]["subscriptions"][0]["code"]
    return code


async def test_a_publish_notifies_each_subscriber_of_its_change_list(
    notify_app: FastAPI,
    dci_http: httpx.AsyncClient,
    engine: AsyncEngine,
    settings: Settings,
    made: list[str],
    tmp_path: Path,
) -> None:
    receiver = Receiver(fail=0)
    try:
        key = await _client(engine, made, receiver.base + "/dci")
        code = await _subscribed(dci_http, receiver, key, "/dci/all", [])
        narrow = [predicate("program", "eq", "PKH"), predicate("change", "in", ["lost"])]
        narrow_code = await _subscribed(dci_http, receiver, key, "/dci/pkh", narrow)
        ended = await _subscribed(dci_http, receiver, key, "/dci/gone", [])
        # A client granted only decisions: no decile, family, identity, attributes or health.
        lean_key = await _client(engine, made, receiver.base + "/dci", groups=["decision"])
        lean_code = await _subscribed(dci_http, receiver, lean_key, "/dci/lean", [])
        r = await dci_http.post(
            UNSUBSCRIBE,
            json=unsubscribe_body([ended], receiver.base + "/dci/gone"),
            headers=auth(key),
        )
        assert r.status_code == 200
        await _until(receiver, "/gone/on-unsubscribe", 1)
        receiver.fail = 1  # the first notify fails once, then is sent again

        async with two_quarters(settings, engine, tmp_path, 500, 91):
            (done,) = await _notification_done(engine, code)
            (narrow_done,) = await _notification_done(engine, narrow_code)
            assert done.status == "succ" and done.pages >= 2
            notified = await _until(receiver, "/dci/all/notify", done.pages)
            narrowed = await _until(receiver, "/dci/pkh/notify", narrow_done.pages)
            # the answer of the same client's change list, over the same pair
            r = await dci_http.post(
                "/v1/changes", json={"from": CHANGES_FROM, "to": CHANGES_TO}, headers=auth(key)
            )
            *lines, _summary = (orjson.loads(x) for x in r.content.splitlines())
            r = await dci_http.post(
                "/v1/changes",
                json={
                    "from": CHANGES_FROM,
                    "to": CHANGES_TO,
                    "programs": ["PKH"],
                    "kinds": ["lost"],
                },
                headers=auth(key),
            )
            *pkh_lines, _summary = (orjson.loads(x) for x in r.content.splitlines())

            # Retried once: the same bytes, made once.
            failed = [(p, b) for p, b, s in receiver.bodies if s == 500]
            assert len(failed) == 1 and failed[0][0].endswith("/notify")
            assert failed[0][1] in {b for p, b, s in receiver.bodies if s == 200}
            assert not [p for p, _, _ in receiver.bodies if p.startswith("/dci/gone/notify")]

            def listed(bodies: list[dict[str, Any]]) -> dict[str, Any]:
                out: dict[str, Any] = {}
                for body in bodies:
                    for event in body["message"]["notify_event"]:
                        record = event["data"]["reg_records"]
                        extra = {a["name"]: a["value"] for a in record["additional_attributes"]}
                        nik = record["identifier"]["identifier_value"]
                        assert nik not in out, "a person notified twice"
                        out[nik] = extra["changes"]
                return out

            assert listed(notified) == {line["nik"]: line["changes"] for line in lines}
            (lean_done,) = await _notification_done(engine, lean_code)
            lean = await _until(receiver, "/dci/lean/notify", lean_done.pages)
            assert listed(lean) == listed(notified)  # the same people and changes

            def shown(bodies: list[dict[str, Any]]) -> set[str]:
                """Every key of every notified record and every additional attribute's name."""
                out: set[str] = set()
                for body in bodies:
                    for event in body["message"]["notify_event"]:
                        record = event["data"]["reg_records"]
                        out |= set(record)
                        out |= {a["name"] for a in record["additional_attributes"]}
                return out

            personal = {"decile", "family", "name", "sex", "birth_date", "attributes", "health"}
            assert shown(notified) & {"decile", "family"}  # the full client sees them
            assert not shown(lean) & personal, shown(lean)
            for body in lean:
                text_ = orjson.dumps(body["message"]).decode()
                assert "no_kk" not in text_ and "relationship" not in text_
            assert listed(narrowed) == {line["nik"]: line["changes"] for line in pkh_lines}
            assert done.people == len(lines) and len(lines) > PAGE

            pages = sorted(notified, key=lambda b: b["header"]["meta"]["page"])
            assert [b["header"]["meta"]["page"] for b in pages] == list(range(1, done.pages + 1))
            assert [b["header"]["meta"]["last_page"] for b in pages][-2:] == [False, True]
            assert all(len(b["message"]["notify_event"]) <= PAGE for b in pages)
            meta = pages[0]["header"]["meta"]
            assert meta["subscription_code"] == code
            assert meta["from"]["snapshot"]["id"] == CHANGES_FROM
            assert meta["to"]["snapshot"]["id"] == CHANGES_TO
            # signed with the service's key, audited as change list chunks are
            jwks = (await dci_http.get("/.well-known/jwks.json")).json()
            for body in pages:
                content = signatures.signed_content(body["header"], body["message"])
                jws.deserialize_compact(
                    body["signature"],
                    KeySet.import_key_set(jwks),
                    algorithms=["EdDSA"],
                    payload=content,
                )
            async with engine.connect() as conn:
                operations = (
                    await conn.execute(
                        text("SELECT operation FROM audit_log WHERE id = ANY(:ids)"),
                        {"ids": [b["header"]["meta"]["audit_id"] for b in pages]},
                    )
                ).scalars()
                assert list(operations) == ["changes"] * done.pages

            # Once per pair: found again, or its job run again (a worker restarted), nothing
            # new is stored, sent or audited.
            records = await _client_records(engine, code)
            raw = await db.connect_raw(settings)
            try:
                async with raw.transaction():
                    assert await subscriptions.due(raw, engine, enqueue_notification) == 0
                    await raw.execute(
                        "UPDATE dci_notifications SET status = 'pdng' WHERE subscription_id = $1",
                        uuid.UUID(code),
                    )
                    pair = subscriptions.Pair(
                        uuid.UUID(code), done.from_snapshot_key, done.to_snapshot_key
                    )
                    await enqueue_notification(raw, pair)
            finally:
                await raw.close()
            (again,) = await _notification_done(engine, code)
            assert again.pages == done.pages
            async with engine.connect() as conn:
                stored = (
                    await conn.execute(
                        text(
                            "SELECT count(*) FROM dci_transactions WHERE action = 'notify' "
                            "AND callback_url = :url"
                        ),
                        {"url": receiver.base + "/dci/all/notify"},
                    )
                ).scalar_one()
            assert stored == done.pages
            await asyncio.sleep(0.5)
            assert len(_callbacks(receiver, "/dci/all/notify")) == done.pages
            assert await _client_records(engine, code) == records  # nothing audited again

            # A worker dies inside the second page's transaction; the next run resumes after
            # the first page: every page stored, and audited, exactly once.
            await _crash_and_resume(notify_app, engine, settings, code, done, receiver, lines)
    finally:
        receiver.close()


async def _audited(engine: AsyncEngine, url: str) -> int:
    """The audit records of the notify pages stored for `url` and not yet delivered (each
    names its record)."""
    async with engine.connect() as conn:
        bodies = (
            await conn.execute(
                text(
                    "SELECT response FROM dci_transactions WHERE action = 'notify' "
                    "AND callback_url = :u AND response IS NOT NULL"
                ),
                {"u": url},
            )
        ).scalars()
        ids = [orjson.loads(b)["header"]["meta"]["audit_id"] for b in bodies]
        found = await conn.execute(
            text("SELECT count(*) FROM audit_log WHERE id = ANY(:ids)"), {"ids": ids}
        )
        return int(found.scalar_one())


async def _client_records(engine: AsyncEngine, code: str) -> int:
    """The change-list audit records of the subscription's client (its pages and its lists)."""
    async with engine.connect() as conn:
        found = await conn.execute(
            text(
                "SELECT count(*) FROM audit_log WHERE operation = 'changes' AND client_id = "
                "(SELECT client_id FROM dci_subscriptions WHERE id = :c)"
            ),
            {"c": uuid.UUID(code)},
        )
        return int(found.scalar_one())


async def _crash_and_resume(
    notify_app: FastAPI,
    engine: AsyncEngine,
    settings: Settings,
    code: str,
    done: Any,
    receiver: Receiver,
    lines: list[dict[str, Any]],
) -> None:
    worker = notify_app.state.job_worker
    pair = subscriptions.Pair(uuid.UUID(code), done.from_snapshot_key, done.to_snapshot_key)
    url = receiver.base + "/dci/all/notify"

    # As if the pair had never been notified: its row pending, its pages gone.
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE dci_notifications SET status = 'pdng', after_nik = NULL, pages = 0, "
                "people = 0 WHERE subscription_id = :c"
            ),
            {"c": pair.subscription},
        )
        await conn.execute(
            text("DELETE FROM dci_transactions WHERE action = 'notify' AND callback_url = :u"),
            {"u": url},
        )
    before = await _client_records(engine, code)
    queued: list[uuid.UUID] = []

    async def dies_on_page_two(conn: Any, page_id: uuid.UUID) -> None:
        if page_id == subscriptions.page_id(pair, 2) and page_id not in queued:
            queued.append(page_id)
            raise RuntimeError("the worker died")
        queued.append(page_id)

    def run() -> Any:
        return subscriptions.run_notification(
            pair,
            connect=worker._connect,
            engine=worker.engine,
            audit=worker.audit,
            reads=worker.reads,
            enqueue=dies_on_page_two,
            page_size=PAGE,
        )

    with pytest.raises(RuntimeError, match="died"):
        await run()
    (half,) = await _notification_done(engine, code, wait=False)
    assert (half.status, half.pages) == ("pdng", 1)
    assert (
        await _client_records(engine, code) == before + 1
    )  # page 1's record; page 2's rolled back
    assert "page(s)" in await run()
    (whole,) = await _notification_done(engine, code)
    assert (whole.pages, whole.people) == (done.pages, done.people)
    assert await _client_records(engine, code) == before + done.pages
    assert await _audited(engine, url) == done.pages
    async with engine.connect() as conn:
        bodies = (
            await conn.execute(
                text(
                    "SELECT response FROM dci_transactions WHERE action = 'notify' "
                    "AND callback_url = :u ORDER BY message_id"
                ),
                {"u": url},
            )
        ).scalars()
        resumed = [b if isinstance(b, dict) else orjson.loads(b) for b in bodies]
    assert len(resumed) == done.pages
    notified: dict[str, Any] = {}
    for body in resumed:
        for event in body["message"]["notify_event"]:
            record = event["data"]["reg_records"]
            nik = record["identifier"]["identifier_value"]
            assert nik not in notified, "a person notified twice"
            notified[nik] = {a["name"]: a["value"] for a in record["additional_attributes"]}[
                "changes"
            ]
    assert notified == {line["nik"]: line["changes"] for line in lines}


def test_the_standards_schemas_are_at_hand() -> None:
    """The validation above needs the standard's YAML (skipped, saying why, without it)."""
    documents = spec.require()
    core = documents[spec.CORE]
    assert "/registry/notify" in core["paths"]
    assert "NotifyEventRequest" in core["components"]["schemas"]
