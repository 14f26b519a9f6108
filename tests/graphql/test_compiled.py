"""Compiled `person` documents (app.graphql.fast) answer and audit exactly as Strawberry does.

Each request goes to two apps on the same database: the default one (compiled path on) and one
with `fast_graphql` off (Strawberry executes every document). Status, content type and body must
match apart from the per-request ids, and so must the two audit records (operation, subjects,
found count, digest of `data`). Stats tell which path answered, so a compiled path that quietly
handed everything over would fail here. Both the stored decisions of a materialised release and
the engine's live evaluation (a release not materialised) are compared, person by person.
"""

from __future__ import annotations

import csv
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import strawberry
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.graphql import compiled
from app.graphql.compiled import compile_document
from app.graphql.extensions import LIMIT_RULES, MAX_TOKENS
from app.http.fast import FastStats
from app.main import create_app
from bench.suite import GRAPHQL_PERSON
from tests.graphql.test_parity import rest_decision
from tests.helpers import imported_release, materialized
from tests.support import RELEASE, MakeClient, auth

STORED = "2025-09-30"  # older than RELEASE: never the current snapshot of other tests
ABSENT = "3201014501990007"
JSON = {"Content-Type": "application/json"}

SMALL = """query Small($nik: String!) { person(nik: $nik) { nik decile identity { name } } }"""
ALIASED = """query Aliased($who: String!, $at: String) {
  p: person(nik: $who, snapshot: $at) {
    __typename n: nik found relationship
    family { __typename noKk found decile kodeWilayah relationship }
    e: eligibility { __typename program eligible b: benefit { yearlyRupiah monthlyRupiah }
      components { nik taken } }
    d: decisions { program unit level priority components { component } }
    health { pregnant } } }"""


@pytest.fixture(scope="module")
async def stored(
    engine: AsyncEngine, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Path]:
    """A small release with its decisions stored (the path most lookups take)."""
    folder = tmp_path_factory.mktemp("compiled") / STORED
    async with imported_release(settings, engine, folder, STORED, people=1500, seed=43):
        await materialized(settings, engine, STORED)
        yield folder


@pytest.fixture
async def strawberry_only(settings: Settings, published: Path) -> AsyncIterator[httpx.AsyncClient]:
    application = create_app(settings.model_copy(update={"fast_graphql": False}))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://tepat.test") as c:
            yield c


def _niks(folder: Path, n: int) -> list[str]:
    with (folder / "anggota.csv").open() as f:
        return [r["nik"] for _, r in zip(range(n), csv.DictReader(f), strict=False)]


def _ids_out(value: Any) -> Any:
    """The body without per-request ids (request and audit ids, in meta and in errors)."""
    if isinstance(value, dict):
        return {k: _ids_out(v) for k, v in value.items() if k not in ("request_id", "audit_id")}
    if isinstance(value, list):
        return [_ids_out(v) for v in value]
    return value


async def _audit(engine: AsyncEngine, audit_id: str) -> dict[str, Any]:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT client_id, purpose, operation, snapshot_id, rule_set_id,"
                    " subject_hashes, subject_count, found_count, response_digest"
                    " FROM audit_log WHERE id = :id"
                ),
                {"id": audit_id},
            )
        ).one()
    return dict(row._mapping)


class Both:
    """Sends one request to both apps; compares answers and audit records; says who answered."""

    def __init__(
        self, app: FastAPI, fast: httpx.AsyncClient, slow: httpx.AsyncClient, engine: AsyncEngine
    ) -> None:
        self.stats: FastStats = app.state.fast_graphql
        self.fast, self.slow, self.engine = fast, slow, engine

    async def send(self, content: bytes, headers: dict[str, str]) -> tuple[str, httpx.Response]:
        before = (self.stats.served, self.stats.handed_over)
        fast = await self.fast.post("/graphql", content=content, headers=headers)
        slow = await self.slow.post("/graphql", content=content, headers=headers)
        assert fast.status_code == slow.status_code, (fast.text, slow.text)
        assert fast.headers.get("content-type") == slow.headers.get("content-type")
        if "json" not in fast.headers.get("content-type", ""):
            assert fast.text == slow.text  # Strawberry's plain-text 400s
            meta: list[dict[str, Any]] = [{}, {}]
        else:
            assert _ids_out(fast.json()) == _ids_out(slow.json())
            meta = [r.json().get("extensions", {}).get("meta", {}) for r in (fast, slow)]
        if "audit_id" in meta[0]:
            records = [await _audit(self.engine, m["audit_id"]) for m in meta]
            assert records[0] == records[1]
        else:
            assert "audit_id" not in meta[1]
        served = self.stats.served - before[0]
        handed = self.stats.handed_over - before[1]
        assert served + handed <= 1
        # Neither: app.graphql.gate refused it before either path read the body.
        return ("compiled" if served else "strawberry" if handed else "gate"), fast

    async def query(
        self, query: str, variables: dict[str, Any], headers: dict[str, str], **extra: Any
    ) -> tuple[str, httpx.Response]:
        body = orjson.dumps({"query": query, "variables": variables, **extra})
        return await self.send(body, {**headers, **JSON})


@pytest.fixture
def both(
    app: FastAPI, http: httpx.AsyncClient, strawberry_only: httpx.AsyncClient, engine: AsyncEngine
) -> Both:
    return Both(app, http, strawberry_only, engine)


async def test_person_documents_compile_and_answer_as_strawberry_on_stored_decisions(
    both: Both, stored: Path, full_key: str, make_client: MakeClient
) -> None:
    narrow = await make_client(programs=["PBI_JK", "SEKOLAH_RAKYAT"], fields=["decision"])
    headers = auth(full_key)
    niks = [*_niks(stored, 250), ABSENT]
    for nik in niks:
        took, response = await both.query(GRAPHQL_PERSON, {"nik": nik, "snapshot": STORED}, headers)
        assert (took, response.status_code) == ("compiled", 200)
        person = response.json()["data"]["person"]
        assert person["nik"] == nik and person["found"] is (nik != ABSENT)
        assert response.json()["extensions"]["meta"]["snapshot"]["id"] == STORED
    for nik in niks[:60]:
        took, response = await both.query(ALIASED, {"who": nik, "at": STORED}, headers)
        assert took == "compiled"
        assert response.json()["data"]["p"]["__typename"] == "Person"
    # A client granted two programs and decisions only: its answer carries just those.
    query = """query($nik: String!, $s: String) {
      person(nik: $nik, snapshot: $s) { nik eligibility { program eligible } } }"""
    for nik in niks[:40]:
        took, response = await both.query(query, {"nik": nik, "s": STORED}, auth(narrow))
        assert took == "compiled"
        decisions = response.json()["data"]["person"]["eligibility"] or []
        assert {d["program"] for d in decisions} <= {"PBI_JK", "SEKOLAH_RAKYAT"}


async def test_person_documents_answer_as_strawberry_on_live_evaluation(
    both: Both, published: Path, full_key: str
) -> None:
    """The API release has no stored decisions: the engine evaluates, on both paths."""
    headers = auth(full_key)
    niks = [*_niks(published, 120), ABSENT]
    for nik in niks:
        for query, variables in (
            (GRAPHQL_PERSON, {"nik": nik}),
            (SMALL, {"nik": nik}),
            (ALIASED, {"who": nik, "at": RELEASE}),
        ):
            took, response = await both.query(query, variables, headers)
            assert (took, response.status_code) == ("compiled", 200), response.text
    # A literal NIK and an operation named in the request compile too.
    literal = f'{{ person(nik: "{niks[0]}") {{ nik found decile }} }}'
    assert (await both.query(literal, {}, headers))[0] == "compiled"
    assert (await both.query(SMALL, {"nik": niks[1]}, headers, operationName="Small"))[
        0
    ] == "compiled"


async def test_everything_else_goes_to_strawberry_with_the_same_answer(
    both: Both, published: Path, full_key: str, make_client: MakeClient
) -> None:
    nik = _niks(published, 1)[0]
    headers = auth(full_key)
    no_identity = await make_client(fields=["decision", "decile"])
    handed: list[tuple[str, dict[str, Any], dict[str, str]]] = [
        # documents outside the compiled shape
        ("{ snapshots { id } }", {}, headers),
        ("query($n: String!) { person(nik: $n) { ...F } } fragment F on Person { nik }",
         {"n": nik}, headers),
        ("query($n: String!) { person(nik: $n) { nik @include(if: true) } }", {"n": nik}, headers),
        ("query($n: String!) { person(nik: $n) { eligibility(explain: true) { program } } }",
         {"n": nik}, headers),
        ("query($n: String!) { person(nik: $n) { family { members { nik } } } }",
         {"n": nik}, headers),
        ("query($n: String!) { a: person(nik: $n) { nik } b: person(nik: $n) { nik } }",
         {"n": nik}, headers),
        # invalid documents and variables
        ("query($n: String!) { person(nik: $n) { nope } }", {"n": nik}, headers),
        (SMALL, {}, headers),
        (SMALL, {"nik": 3201010101900001}, headers),
        (SMALL, {"nik": "32010101019000"}, headers),
        (SMALL, {"nik": "3201019999900001"}, headers),
        (GRAPHQL_PERSON, {"nik": nik, "snapshot": "1999-01-01"}, headers),
        (GRAPHQL_PERSON, {"nik": nik, "snapshot": "not-a-date"}, headers),
        # refusals: no key, field groups
        (SMALL, {"nik": nik}, {}),
        (SMALL, {"nik": nik}, auth(no_identity)),
    ]  # fmt: skip
    for query, variables, h in handed:
        took, response = await both.query(query, variables, h)
        assert took == "strawberry", (query, variables, response.text)
    # A bad key or purpose: refused by app.graphql.gate before either path reads the body.
    for h in (
        {"Authorization": "Bearer tepat_nonsense"},
        auth(full_key, purpose=None),
        auth(full_key, purpose="marketing"),
    ):
        took, response = await both.query(SMALL, {"nik": nik}, h)
        assert took == "gate", response.text
        assert response.status_code in (401, 403)
    took, response = await both.query(SMALL, {"nik": nik}, auth(no_identity))
    assert response.status_code == 403
    took, response = await both.query(SMALL, {"nik": nik}, headers, operationName="Other")
    assert (took, response.status_code) == ("strawberry", 400)
    # Not plain JSON, or a streamed answer asked for: Strawberry's transports.
    body = orjson.dumps({"query": SMALL, "variables": {"nik": nik}})
    assert (await both.send(body, {**headers, "Content-Type": "text/plain"}))[0] == "gate"
    assert (await both.send(body, {**headers, **JSON, "Accept": "multipart/mixed"}))[0] == (
        "strawberry"
    )
    assert (await both.send(b"{not json", {**headers, **JSON}))[0] == "strawberry"


async def test_over_the_rate_limit_is_strawberry_429(
    settings: Settings, published: Path, make_client: MakeClient
) -> None:
    """No token is taken by the compiled path when it hands over: the refusal is Strawberry's."""
    limited = settings.model_copy(update={"rate_limit_niks_per_second": 1.0, "rate_limit_burst": 2})
    application = create_app(limited)
    key = await make_client()
    nik = _niks(published, 1)[0]
    body = orjson.dumps({"query": SMALL, "variables": {"nik": nik}})
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://tepat.test") as c:
            statuses = [
                (await c.post("/graphql", content=body, headers={**auth(key), **JSON})).status_code
                for _ in range(3)
            ]
        stats: FastStats = application.state.fast_graphql
    assert statuses == [200, 200, 429]
    assert (stats.served, stats.handed_over) == (2, 1)


def test_compiled_shapes(app: FastAPI) -> None:
    schema = app.state.graphql_schema
    rules = tuple(LIMIT_RULES)
    plan = compile_document(schema, GRAPHQL_PERSON, None, rules, MAX_TOKENS)
    assert plan is not None and plan.eligibility
    assert set(plan.needs.groups) == {
        "decile", "membership", "identity", "attributes", "health", "decision"
    }  # fmt: skip
    small = compile_document(schema, SMALL, "Small", rules, MAX_TOKENS)
    assert small is not None and not small.eligibility
    assert compile_document(schema, SMALL, "Other", rules, MAX_TOKENS) is None
    named = "query($n: String!) { person(nik: $n) { decisions { program unit } } }"
    renamed = compile_document(schema, named, None, rules, MAX_TOKENS)
    assert renamed is not None and renamed.eligibility
    deep = '{ person(nik: "1") { ' + " ".join(f"a{i}: nik" for i in range(11)) + " } }"
    assert compile_document(schema, deep, None, rules, MAX_TOKENS) is None  # aliases limit


def _unserved(table: compiled.Table, sources: list[dict[str, Any]], where: str) -> list[str]:
    """Fields of `table` (and its sub-tables) whose answer key the `sources` (found answers'
    objects) never carry, or lack though the key is not optional. [] when every field reads
    a key the answer has."""
    problems: list[str] = []
    for name, served in table.items():
        present = 0
        for source in sources:
            value: Any = source
            for key in served.path:
                if not isinstance(value, dict) or key not in value:
                    break
                value = value[key]
            else:
                present += 1
        if served.path and (present == 0 or (not served.optional and present < len(sources))):
            problems.append(
                f"{where}.{name} reads {'.'.join(served.path)}: {present} of {len(sources)}"
            )
        if served.table is not None:
            children: list[dict[str, Any]] = []
            for source in sources:
                found = served.get(source)
                children.extend(found if isinstance(found, list) else [found] if found else [])
            problems += _unserved(served.table, children, f"{where}.{name}")
    return problems


async def test_every_compiled_field_reads_a_key_the_stored_answer_has(
    http: httpx.AsyncClient, stored: Path, full_key: str
) -> None:
    """The compiled tables come from the Strawberry types' fields: each field (required or
    optional) must read a key that REST's answers actually carry, so a renamed field or answer
    key fails here instead of answering null."""
    niks = _niks(stored, 400)
    answers: list[dict[str, Any]] = []
    for explain in (False, True):  # components come with explain only
        response = await http.post(
            "/v1/people/lookup",
            json={"niks": niks, "snapshot": STORED, "explain": explain},
            headers=auth(full_key),
        )
        assert response.status_code == 200
        answers += [r for r in response.json()["results"] if r["found"]]
    assert answers
    assert _unserved(compiled._PERSON, answers, "Person") == []

    # A type whose field is renamed: naming the old field fails at import time, and a table
    # built from it reads a key no answer has.
    @strawberry.type
    class Benefit:
        monthly: int | None = None
        yearly_rupiah: int | None = None
        per_tranche_rupiah: int | None = None

    with pytest.raises(TypeError):
        compiled._table(
            Benefit, optional=frozenset({"monthly_rupiah", "yearly_rupiah", "per_tranche_rupiah"})
        )
    renamed = compiled._table(
        Benefit, optional=frozenset({"monthly", "yearly_rupiah", "per_tranche_rupiah"})
    )
    benefits = [d["benefit"] for a in answers for d in a["decisions"] if d["benefit"]]
    assert _unserved(renamed, benefits, "Benefit") == [
        f"Benefit.monthly reads monthly: 0 of {len(benefits)}"
    ]
    assert _unserved(compiled._BENEFIT, benefits, "Benefit") == []


def test_a_key_missing_from_an_answer_is_an_error_not_a_null() -> None:
    nik = compiled._PERSON["identity"]
    with pytest.raises(KeyError):
        nik.get({"nik": "3201014501900001", "found": True})  # identity granted, yet absent
    assert nik.get({"nik": "3201014501900001", "found": False}) is None


STRAWBERRY_PEOPLE = """query($niks: [String!]!, $s: String) { people(niks: $niks, snapshot: $s) {
  nik eligibility { program unit eligible recipient level priority
    benefit { monthlyRupiah yearlyRupiah perTrancheRupiah }
    components { nik component yearlyRupiah taken reason }
    criteria { id observed required passed } } } }"""


async def test_strawberry_person_decisions_are_rests_stored_answers(
    http: httpx.AsyncClient,
    strawberry_only: httpx.AsyncClient,
    engine: AsyncEngine,
    stored: Path,
    full_key: str,
) -> None:
    """Strawberry's `person`/`people` decisions are read from the stored decisions, as REST's:
    a stored row altered in the database shows up in both faces (the engine, evaluating live,
    would not show it), and the two faces agree NIK by NIK."""
    niks = _niks(stored, 40)
    altered = niks[7]
    headers = auth(full_key)

    async def rest(explain: bool) -> dict[str, list[dict[str, Any]]]:
        response = await http.post(
            "/v1/people/lookup",
            json={"niks": niks, "snapshot": STORED, "explain": explain},
            headers=headers,
        )
        assert response.status_code == 200
        return {r["nik"]: r["decisions"] for r in response.json()["results"]}

    async def strawberry() -> dict[str, list[dict[str, Any]]]:
        response = await strawberry_only.post(
            "/graphql",
            json={"query": STRAWBERRY_PEOPLE, "variables": {"niks": niks, "s": STORED}},
            headers=headers,
        )
        body = response.json()
        assert "errors" not in body, body
        return {
            p["nik"]: [rest_decision(d) for d in p["eligibility"]] for p in body["data"]["people"]
        }

    def bpnt(decisions: list[dict[str, Any]]) -> bool:
        return next(bool(d["eligible"]) for d in decisions if d["program"] == "BPNT")

    before = await rest(False)
    assert await strawberry() == before
    live = bpnt((await rest(True))[altered])  # explain: the engine, live
    assert bpnt(before[altered]) is live
    flip = text(
        "UPDATE decisions SET bpnt_eligible = NOT bpnt_eligible WHERE nik = :nik "
        "AND snapshot_key = (SELECT key FROM snapshots WHERE id = :s)"
    )
    async with engine.begin() as conn:
        await conn.execute(flip, {"nik": int(altered), "s": STORED})
    try:
        after = await rest(False)
        assert bpnt(after[altered]) is not live
        assert await strawberry() == after
    finally:
        async with engine.begin() as conn:
            await conn.execute(flip, {"nik": int(altered), "s": STORED})
    assert await strawberry() == before
