"""Who may ask what through GraphQL: keys, purposes, programs, field groups; audit; transport."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.graphql.conftest import SqlCounter, codes, gql
from tests.support import PURPOSE, RELEASE, MakeClient, auth

PERSON = "query($nik: String!) { person(nik: $nik) { nik found decile eligibility { program } } }"
UNKNOWN = "3201014501900001"  # well-formed; whether it exists does not matter for refusals


@pytest.fixture(scope="module")
def households(published: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    with (published / "anggota.csv").open() as f:
        for r in csv.DictReader(f):
            out.setdefault(r["no_kk"], []).append(r["nik"])
    return out


@pytest.fixture(scope="module")
def nik(households: dict[str, list[str]]) -> str:
    return next(iter(households.values()))[0]


def _refused(r: httpx.Response, status: int, code: str, nik: str = UNKNOWN) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    assert body["data"] is None
    assert codes(body) == [code], body
    assert nik not in r.text  # nothing personal in a refusal
    return body


async def test_no_key(http: httpx.AsyncClient) -> None:
    r = await gql(http, PERSON, {"nik": UNKNOWN}, {"X-Purpose": PURPOSE})
    _refused(r, 401, "unauthenticated")


async def test_bad_key(http: httpx.AsyncClient, full_key: str) -> None:
    _refused(
        await gql(http, PERSON, {"nik": UNKNOWN}, auth("tepat_nonsense")), 401, "unauthenticated"
    )
    typo = full_key[:-1] + ("A" if full_key[-1] != "A" else "B")
    _refused(await gql(http, PERSON, {"nik": UNKNOWN}, auth(typo)), 401, "unauthenticated")


async def test_expired_key(http: httpx.AsyncClient, make_client: MakeClient) -> None:
    import datetime as dt

    key = await make_client(
        expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1), expired=True
    )
    _refused(await gql(http, PERSON, {"nik": UNKNOWN}, auth(key)), 401, "unauthenticated")


async def test_purpose_missing_or_unregistered(http: httpx.AsyncClient, full_key: str) -> None:
    body = _refused(
        await gql(http, PERSON, {"nik": UNKNOWN}, auth(full_key, purpose=None)),
        403,
        "purpose_required",
    )
    assert "X-Purpose" in body["errors"][0]["message"]
    _refused(
        await gql(http, PERSON, {"nik": UNKNOWN}, auth(full_key, purpose="marketing")),
        403,
        "purpose_required",
    )


async def test_field_group_not_granted_is_refused_before_sql(
    http: httpx.AsyncClient, make_client: MakeClient, count_sql: SqlCounter
) -> None:
    key = await make_client(fields=["decision", "decile"])
    query = "query($nik: String!) { person(nik: $nik) { decile identity { name } } }"
    await gql(http, query, {"nik": UNKNOWN}, auth(key))  # caches the key
    async with count_sql() as statements:
        r = await gql(http, query, {"nik": UNKNOWN}, auth(key))
    body = _refused(r, 403, "forbidden")
    assert "Person.identity" in body["errors"][0]["message"]
    assert body["errors"][0]["extensions"]["field_groups"] == ["identity"]
    assert statements == []
    # Through a fragment and a family's members too.
    fragment = """query($nik: String!) { person(nik: $nik) { family { ...F } } }
        fragment F on Family { members { health { pregnant } } }"""
    body = _refused(await gql(http, fragment, {"nik": UNKNOWN}, auth(key)), 403, "forbidden")
    assert body["errors"][0]["extensions"]["field_groups"] == ["membership", "health"]


async def test_program_not_granted(
    http: httpx.AsyncClient, make_client: MakeClient, nik: str
) -> None:
    key = await make_client(programs=["PBI_JK"])
    query = """query($nik: String!) { person(nik: $nik) { nik
        asked: eligibility(programs: [PKH]) { program }
        granted: eligibility { program } } }"""
    r = await gql(http, query, {"nik": nik}, auth(key))
    assert r.status_code == 200  # a partial answer: the refused field is null, with its error
    body = r.json()
    assert codes(body) == ["forbidden"]
    assert "PKH" in body["errors"][0]["message"]
    assert body["errors"][0]["path"] == ["person", "asked"]
    assert body["data"]["person"]["asked"] is None
    assert body["data"]["person"]["granted"] == [{"program": "PBI_JK"}]


async def test_observed_value_of_an_ungranted_group_is_refused(
    http: httpx.AsyncClient, make_client: MakeClient, nik: str
) -> None:
    key = await make_client(fields=["decision"], programs=["BPNT"])
    query = """query($nik: String!) { person(nik: $nik) {
        eligibility(explain: true) { criteria { id passed observed } } } }"""
    body = (await gql(http, query, {"nik": nik}, auth(key))).json()
    criteria = body["data"]["person"]["eligibility"][0]["criteria"]
    assert [c["id"] for c in criteria] == ["decile_in_range", "not_excluded"]
    assert all(c["observed"] is None for c in criteria)
    assert codes(body) == ["forbidden", "forbidden"]  # refused, not silently nulled
    assert {tuple(e["path"][-2:]) for e in body["errors"]} == {(0, "observed"), (1, "observed")}


async def test_metadata_needs_no_key(http: httpx.AsyncClient) -> None:
    r = await gql(http, "{ programs { id unit } snapshots { id } ruleSets { id checksum } }")
    data = r.json()["data"]
    assert [p["id"] for p in data["programs"]] == ["PKH", "BPNT", "PBI_JK", "SEKOLAH_RAKYAT"]
    assert RELEASE in [s["id"] for s in data["snapshots"]]
    r = await gql(http, '{ snapshot(id: "1999-01-01") { id } }')
    _refused(r, 404, "snapshot_not_found")


async def test_audit_record_for_a_graphql_read(
    http: httpx.AsyncClient, full_key: str, engine: AsyncEngine, households: dict[str, list[str]]
) -> None:
    kk, members = next((kk, m) for kk, m in households.items() if len(m) >= 3)
    query = """query($kk: String!, $nik: String!) {
        family(noKk: $kk) { members { nik } }
        person(nik: $nik) { decile } }"""
    r = await gql(http, query, {"kk": kk, "nik": UNKNOWN}, auth(full_key))
    body = r.json()
    assert "errors" not in body
    meta = body["extensions"]["meta"]
    assert meta["snapshot"]["id"] == RELEASE and meta["evaluation_date"] == RELEASE
    assert set(meta) == {"snapshot", "rule_set", "evaluation_date", "request_id", "audit_id"}
    assert r.headers["x-request-id"] == meta["request_id"]
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT operation, purpose, snapshot_id, rule_set_id, subject_count, "
                    "found_count, response_digest, request_id FROM audit_log WHERE id = :id"
                ),
                {"id": meta["audit_id"]},
            )
        ).one()
    assert row.operation == "graphql"
    assert row.purpose == PURPOSE
    assert (row.snapshot_id, row.rule_set_id) == (RELEASE, meta["rule_set"]["id"])
    assert row.subject_count == 2 + len(members)  # asked No. KK and NIK, members disclosed
    assert row.found_count == 1  # the family; the NIK is not in the release
    assert row.request_id == meta["request_id"]
    assert bytes(row.response_digest) == hashlib.sha256(orjson.dumps(body["data"])).digest()


async def test_metadata_and_refusals_write_no_audit_record(
    http: httpx.AsyncClient, full_key: str
) -> None:
    r = await gql(http, "{ programs { id } }", headers=auth(full_key))
    assert set(r.json()["extensions"]["meta"]) == {"request_id"}
    r = await gql(http, PERSON, {"nik": "3201019999900001"}, auth(full_key))
    assert "audit_id" not in r.json()["extensions"]["meta"]


async def test_nik_validation_masks_the_nik(http: httpx.AsyncClient, full_key: str) -> None:
    bad = "3201019999900001"  # month 99
    body = _refused(
        await gql(http, PERSON, {"nik": bad}, auth(full_key)), 422, "validation_failed", nik=bad
    )
    ext = body["errors"][0]["extensions"]
    assert (ext["field"], ext["value"], ext["rule"]) == ("nik", "3201********0001", "nik_date")
    # graphql-core echoes a mistyped variable in its message: masked too.
    r = await gql(http, PERSON, {"nik": int(UNKNOWN)}, auth(full_key))
    assert r.status_code == 400 and UNKNOWN not in r.text
    assert "3201********0001" in r.json()["errors"][0]["message"]
    many = [UNKNOWN] * 1001
    body = _refused(
        await gql(
            http, "query($n: [String!]!) { people(niks: $n) { nik } }", {"n": many}, auth(full_key)
        ),
        422,
        "validation_failed",
    )
    assert body["errors"][0]["extensions"]["field"] == "niks"


async def test_one_snapshot_and_one_rule_set_per_request(
    http: httpx.AsyncClient, full_key: str, nik: str
) -> None:
    query = """query($nik: String!) { a: person(nik: $nik) { nik }
        b: person(nik: $nik, snapshot: "1999-01-01") { nik } }"""
    body = (await gql(http, query, {"nik": nik}, auth(full_key))).json()
    assert "snapshot_not_found" in codes(body)
    query = """query($nik: String!, $snapshot: String) { person(nik: $nik, snapshot: $snapshot) {
        a: eligibility(ruleSet: "kepmensos-79-2025") { program }
        b: eligibility(ruleSet: "nope") { program } } }"""
    body = (await gql(http, query, {"nik": nik, "snapshot": RELEASE}, auth(full_key))).json()
    assert codes(body) == ["rule_set_not_found"]
    assert body["extensions"]["meta"]["rule_set"]["id"] == "kepmensos-79-2025"


async def test_get_queries_and_batches_are_refused(http: httpx.AsyncClient) -> None:
    r = await http.get("/graphql", params={"query": "{ programs { id } }"})
    assert r.status_code in (400, 405) and "data" not in r.text
    r = await http.post("/graphql", json=[{"query": "{ programs { id } }"}] * 2)
    assert r.status_code == 400 and "data" not in r.text


async def test_database_outage_is_503_with_retry_after(
    http: httpx.AsyncClient, full_key: str, nik: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncpg

    from app.repositories import registry

    async def gone(*_: object) -> None:
        raise asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed")

    monkeypatch.setattr(registry, "families_of_people", gone)
    r = await gql(http, PERSON, {"nik": nik}, auth(full_key))
    body = _refused(r, 503, "unavailable", nik=nik)
    assert r.headers["retry-after"] == "1"
    assert "audit_id" not in body["extensions"]["meta"]  # no data, no audit record
