"""Disclosure is derived from the data (docs/disclosure.md) on every face, for narrow clients.

The rule is written here once more, apart from app.services.disclosure: a narrow client's
answer must equal the full client's answer less exactly what the rule leaves out. The cases are
picked from the full answers so that what must be left out is there (each test could fail):
a person whose PKH components name another member as HAMIL or DISABILITAS_BERAT, and a child
with a Sekolah Rakyat priority.
"""

from __future__ import annotations

import csv
import inspect
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.main import create_app
from app.services import disclosure
from app.services.audit import nik_subject, subject_hash
from tests.bulk.conftest import ndjson, parse, post_bulk
from tests.graphql.conftest import gql
from tests.helpers import imported_release, materialized
from tests.support import ALL_GROUPS, ALL_PROGRAMS, MakeClient, auth

# --- the rule, as docs/disclosure.md states it -------------------------------------------------

KIND_GROUPS = {
    "HAMIL": {"health"},
    "DISABILITAS_BERAT": {"health"},
    "USIA_DINI": {"identity"},
    "LANSIA": {"identity"},
    "SD": {"attributes", "identity"},
    "SMP": {"attributes", "identity"},
    "SMA": {"attributes", "identity"},
}
SELECTION = {"membership", "health", "identity", "attributes"}
OBSERVED_GROUPS = {
    "decile_in_range": {"decile"},
    "not_excluded": {"attributes"},
    "has_component": SELECTION,
    "age_in_range": {"identity"},
    "school_level": {"attributes", "identity"},
}
HEALTH_KINDS = ("HAMIL", "DISABILITAS_BERAT")


def expected(
    decisions: list[dict[str, Any]], groups: set[str], asker: str | None
) -> list[dict[str, Any]]:
    """The full client's decisions less what a client of `groups` may not see."""
    out = []
    for full in decisions:
        d = dict(full)
        if d["program"] == "SEKOLAH_RAKYAT" and "decile" not in groups:
            del d["priority"]
        if "components" in d:
            shown = []
            for c in d["components"]:
                if not KIND_GROUPS[c["component"]] <= groups:
                    continue
                if c["nik"] != asker and "membership" not in groups:
                    continue
                c = dict(c)
                if not groups >= SELECTION:
                    del c["taken"], c["reason"]
                shown.append(c)
            d["components"] = shown
        if "criteria" in d:
            d["criteria"] = [
                {
                    k: v
                    for k, v in c.items()
                    if k != "observed" or OBSERVED_GROUPS[c["id"]] <= groups
                }
                for c in d["criteria"]
            ]
        out.append(d)
    return out


NARROW = [
    {"decision"},
    {"decision", "health"},
    {"decision", "membership"},
    {"decision", "membership", "health"},
    {"decision", "identity", "attributes"},
    {"decision", "decile", "health", "identity", "attributes"},
    set(ALL_GROUPS),
]
IDS = ["+".join(sorted(g)) for g in NARROW]


def test_the_services_table_is_the_documented_rule() -> None:
    assert {k: set(v) for k, v in disclosure.COMPONENT_GROUPS.items()} == KIND_GROUPS
    assert {k: set(v) for k, v in disclosure.CRITERION_GROUPS.items()} == OBSERVED_GROUPS
    assert set(disclosure.SELECTION_GROUPS) == SELECTION
    assert set(disclosure.PRIORITY_GROUPS) == {"decile"}


# --- cases and clients ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Cases:
    nik: str  # its PKH components name another member as HAMIL or DISABILITAS_BERAT
    no_kk: str
    others: frozenset[str]  # other members its components name
    person: list[dict[str, Any]]  # the full client's explained decisions for `nik`
    family: list[dict[str, Any]]  # ... for `no_kk` (families/lookup)
    child: str  # a Sekolah Rakyat decision with a priority
    child_decisions: list[dict[str, Any]]


_keys: dict[tuple[str, ...], str] = {}


async def key_for(make_client: MakeClient, groups: set[str]) -> str:
    """One client per set of groups, granted every program."""
    name = tuple(sorted(groups))
    if name not in _keys:
        # Bulk may be a permission of its own (off by default): these clients use bulk too.
        extra = {"bulk": True} if "bulk" in inspect.signature(make_client).parameters else {}
        _keys[name] = await make_client(programs=ALL_PROGRAMS, fields=list(name), **extra)
    return _keys[name]


@pytest.fixture(scope="module")
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tepat.test") as c:
        yield c


@pytest.fixture(scope="module")
async def cases(published: Path, client: httpx.AsyncClient, make_client: MakeClient) -> Cases:
    with (published / "anggota.csv").open() as f:
        rows = [(r["nik"], r["no_kk"]) for r in csv.DictReader(f)]
    family_of = dict(rows)
    full = auth(await key_for(make_client, set(ALL_GROUPS)))
    found: tuple[str, frozenset[str], list[dict[str, Any]]] | None = None
    child: tuple[str, list[dict[str, Any]]] | None = None
    for start in range(0, len(rows), 1000):
        niks = [n for n, _ in rows[start : start + 1000]]
        r = await client.post(
            "/v1/people/lookup", json={"niks": niks, "explain": True}, headers=full
        )
        assert r.status_code == 200, r.text
        for result in r.json()["results"]:
            nik, decisions = result["nik"], result["decisions"]
            pkh = decisions[0]
            others = frozenset(
                c["nik"]
                for c in pkh["components"]
                if c["nik"] != nik and c["component"] in HEALTH_KINDS
            )
            own = any(c["nik"] == nik for c in pkh["components"])
            if others and own and (found is None or len(others) > len(found[1])):
                found = (nik, others, decisions)
            sr = decisions[-1]
            if child is None and sr["priority"] is not None:
                child = (nik, decisions)
        if found is not None and child is not None:
            break
    assert found is not None and child is not None, "the release has no case to test"
    nik, others, person = found
    r = await client.post(
        "/v1/families/lookup", json={"no_kks": [family_of[nik]], "explain": True}, headers=full
    )
    family = r.json()["results"][0]["decisions"]
    assert any(c["component"] in HEALTH_KINDS for c in family[0]["components"])
    return Cases(nik, family_of[nik], others, person, family, child[0], child[1])


async def _audited(engine: AsyncEngine, audit_id: str) -> set[bytes]:
    async with engine.connect() as conn:
        hashes = (
            await conn.execute(
                text("SELECT subject_hashes FROM audit_log WHERE id = :id"), {"id": audit_id}
            )
        ).scalar_one()
    return set(hashes)


def _subjects(settings: Settings, *subjects: str) -> set[bytes]:
    key = settings.audit_hmac_key.get_secret_value().encode()
    return {subject_hash(key, s) for s in subjects}


# --- REST ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("groups", NARROW, ids=IDS)
async def test_rest_people_explain_shows_only_what_the_groups_cover(
    client: httpx.AsyncClient, make_client: MakeClient, cases: Cases, groups: set[str]
) -> None:
    key = await key_for(make_client, groups)
    r = await client.post(
        "/v1/people/lookup", json={"niks": [cases.nik], "explain": True}, headers=auth(key)
    )
    assert r.status_code == 200, r.text
    decisions = r.json()["results"][0]["decisions"]
    assert decisions == expected(cases.person, groups, cases.nik)
    named = {c["nik"] for c in decisions[0]["components"]}
    if "membership" in groups and "health" in groups:
        assert cases.others <= named  # the case is real: with the groups they do appear
    else:
        assert not named & cases.others
        assert all(other not in r.text for other in cases.others)
    if "health" not in groups:
        assert not any(kind in r.text for kind in HEALTH_KINDS)


async def test_the_reported_leak_pkh_and_decision_only(
    client: httpx.AsyncClient, make_client: MakeClient, cases: Cases
) -> None:
    """The issue's attacker: PKH and the `decision` group, one NIK, explain."""
    key = await make_client(programs=["PKH"], fields=["decision"])
    r = await client.post(
        "/v1/people/lookup", json={"niks": [cases.nik], "explain": True}, headers=auth(key)
    )
    (pkh,) = r.json()["results"][0]["decisions"]
    assert pkh["components"] == []
    assert pkh["eligible"] == cases.person[0]["eligible"]  # the decision and benefit stay
    assert pkh["benefit"] == cases.person[0]["benefit"]
    assert [set(c) for c in pkh["criteria"]] == [{"id", "required", "passed"}] * 3
    for other in cases.others:
        assert other not in r.text


@pytest.mark.parametrize("groups", NARROW, ids=IDS)
async def test_rest_families_explain_shows_only_what_the_groups_cover(
    client: httpx.AsyncClient, make_client: MakeClient, cases: Cases, groups: set[str]
) -> None:
    key = await key_for(make_client, groups)
    r = await client.post(
        "/v1/families/lookup", json={"no_kks": [cases.no_kk], "explain": True}, headers=auth(key)
    )
    assert r.status_code == 200, r.text
    result = r.json()["results"][0]
    # Every component of a family's answer names "another" member: membership for all.
    assert result["decisions"] == expected(cases.family, groups, None)
    if "membership" not in groups:
        assert "members" not in result
        assert cases.nik not in r.text and all(o not in r.text for o in cases.others)
        assert result["decisions"][0]["components"] == []


@pytest.mark.parametrize("groups", NARROW, ids=IDS)
async def test_bulk_explain_shows_only_what_the_groups_cover(
    client: httpx.AsyncClient, make_client: MakeClient, cases: Cases, groups: set[str]
) -> None:
    key = await key_for(make_client, groups)
    r = await post_bulk(client, key, ndjson([{"nik": cases.nik}]), explain="true")
    assert r.status_code == 200, r.text
    line, _summary = parse(r.content)
    assert line["decisions"] == expected(cases.person, groups, cases.nik)
    if "membership" not in groups or "health" not in groups:
        assert all(other.encode() not in r.content for other in cases.others)


async def test_audit_names_exactly_the_niks_the_answer_discloses(
    client: httpx.AsyncClient,
    make_client: MakeClient,
    cases: Cases,
    engine: AsyncEngine,
    settings: Settings,
) -> None:
    for groups, disclosed in (
        ({"decision", "health"}, set()),  # the other members' components are left out
        ({"decision", "membership", "health"}, set(cases.others)),
    ):
        key = await key_for(make_client, groups)
        r = await client.post(
            "/v1/people/lookup", json={"niks": [cases.nik], "explain": True}, headers=auth(key)
        )
        named = {c["nik"] for c in r.json()["results"][0]["decisions"][0]["components"]}
        assert named - {cases.nik} >= disclosed
        audited = await _audited(engine, r.json()["meta"]["audit_id"])
        want = {nik_subject(n) for n in named | {cases.nik}}
        assert audited == _subjects(settings, *want)
        assert (audited > _subjects(settings, nik_subject(cases.nik))) == bool(disclosed)


# --- Sekolah Rakyat priority -----------------------------------------------------------------------


async def test_sekolah_rakyat_priority_needs_decile_live(
    client: httpx.AsyncClient, make_client: MakeClient, cases: Cases
) -> None:
    for groups in ({"decision"}, {"decision", "decile"}):
        key = await key_for(make_client, groups)
        r = await client.post("/v1/people/lookup", json={"niks": [cases.child]}, headers=auth(key))
        sr = r.json()["results"][0]["decisions"][-1]
        full = cases.child_decisions[-1]
        assert sr["level"] == full["level"] is not None  # the decision stays
        if "decile" in groups:
            assert sr["priority"] == full["priority"] is not None
        else:
            assert "priority" not in sr


STORED = "2025-06-30"  # older than the session's release: never the current one


@pytest.fixture(scope="module")
async def stored(
    engine: AsyncEngine, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Path]:
    """A small release with its decisions stored: plain lookups render them from memos."""
    folder = tmp_path_factory.mktemp("disclosure") / STORED
    async with imported_release(settings, engine, folder, STORED, people=600, seed=14):
        await materialized(settings, engine, STORED)
        yield folder


async def test_sekolah_rakyat_priority_needs_decile_stored(
    client: httpx.AsyncClient, make_client: MakeClient, stored: Path
) -> None:
    """The stored path memoises rendered decisions: the memo of a client with `decile` must
    never answer one without it (and the other way round), whichever asks first."""
    with (stored / "anggota.csv").open() as f:
        niks = [r["nik"] for r in csv.DictReader(f)][:1000]
    body = {"niks": niks, "snapshot": STORED}
    answers = {}
    for groups in ({"decision", "decile"}, {"decision"}, {"decision", "decile"}):
        key = await key_for(make_client, groups)
        r = await client.post("/v1/people/lookup", json=body, headers=auth(key))
        assert r.status_code == 200, r.text
        answers[tuple(sorted(groups))] = [x["decisions"][-1] for x in r.json()["results"]]
    with_decile, without = answers[("decile", "decision")], answers[("decision",)]
    assert any(d["priority"] is not None for d in with_decile)
    assert all("priority" not in d for d in without)
    for a, b in zip(with_decile, without, strict=True):
        assert {k: v for k, v in a.items() if k != "priority"} == b


# --- GraphQL: Strawberry -------------------------------------------------------------------------

PERSON_COMPONENTS = """query($nik: String!) { person(nik: $nik) {
  eligibility(programs: [PKH], explain: true) { components { %s } } } }"""
FAMILY_COMPONENTS = """query($noKk: String!) { family(noKk: $noKk) {
  eligibility(programs: [PKH], explain: true) { components { nik component yearlyRupiah } } } }"""


def _refused(r: httpx.Response, groups: set[str]) -> None:
    assert r.status_code == 403, r.text
    body = r.json()
    assert body["data"] is None
    assert [e["extensions"]["code"] for e in body["errors"]] == ["forbidden"]
    assert set(body["errors"][0]["extensions"]["field_groups"]) == groups


@pytest.mark.parametrize(
    ("selection", "groups", "missing"),
    [
        ("nik component", {"decision"}, {"membership", "health", "identity", "attributes"}),
        ("nik", {"decision", "health", "identity", "attributes"}, {"membership"}),
        ("component", {"decision", "membership", "health"}, {"identity", "attributes"}),
        ("yearlyRupiah taken", {"decision", "health", "identity", "attributes"}, {"membership"}),
        ("reason", {"decision", "membership", "health", "identity"}, {"attributes"}),
    ],
)
async def test_graphql_refuses_component_fields_before_execution(
    client: httpx.AsyncClient,
    make_client: MakeClient,
    cases: Cases,
    selection: str,
    groups: set[str],
    missing: set[str],
) -> None:
    key = await key_for(make_client, groups)
    r = await gql(client, PERSON_COMPONENTS % selection, {"nik": cases.nik}, auth(key))
    _refused(r, missing)
    assert cases.nik not in r.text and all(o not in r.text for o in cases.others)


@pytest.mark.parametrize(
    "groups",
    [
        {"decision"},
        {"decision", "health"},
        {"decision", "identity", "attributes"},
        {"decision", "health", "identity", "attributes"},
        set(ALL_GROUPS),
    ],
    ids=lambda g: "+".join(sorted(g)),
)
async def test_graphql_lists_only_the_components_rest_shows(
    client: httpx.AsyncClient,
    make_client: MakeClient,
    cases: Cases,
    engine: AsyncEngine,
    settings: Settings,
    groups: set[str],
) -> None:
    """`yearlyRupiah` needs no group of its own: the list itself is filtered as in REST."""
    key = await key_for(make_client, groups)
    r = await gql(client, PERSON_COMPONENTS % "yearlyRupiah", {"nik": cases.nik}, auth(key))
    assert r.status_code == 200, r.text
    components = r.json()["data"]["person"]["eligibility"][0]["components"]
    want = expected(cases.person[:1], groups, cases.nik)[0]["components"]
    assert components == [{"yearlyRupiah": c["yearly_rupiah"]} for c in want]
    # No NIK selected, none disclosed: the audit names the person asked only.
    audited = await _audited(engine, r.json()["extensions"]["meta"]["audit_id"])
    assert audited == _subjects(settings, nik_subject(cases.nik))


async def test_graphql_with_the_groups_shows_and_audits_other_members(
    client: httpx.AsyncClient,
    make_client: MakeClient,
    cases: Cases,
    engine: AsyncEngine,
    settings: Settings,
) -> None:
    groups = {"decision", "membership", "health", "identity", "attributes"}
    key = await key_for(make_client, groups)
    r = await gql(client, PERSON_COMPONENTS % "nik component", {"nik": cases.nik}, auth(key))
    components = r.json()["data"]["person"]["eligibility"][0]["components"]
    want = expected(cases.person[:1], groups, cases.nik)[0]["components"]
    assert components == [{"nik": c["nik"], "component": c["component"]} for c in want]
    named = {c["nik"] for c in components}
    assert cases.others <= named
    audited = await _audited(engine, r.json()["extensions"]["meta"]["audit_id"])
    assert audited == _subjects(settings, *(nik_subject(n) for n in named | {cases.nik}))

    r = await gql(client, FAMILY_COMPONENTS, {"noKk": cases.no_kk}, auth(key))
    components = r.json()["data"]["family"]["eligibility"][0]["components"]
    want = expected(cases.family[:1], groups, None)[0]["components"]
    assert components == [
        {"nik": c["nik"], "component": c["component"], "yearlyRupiah": c["yearly_rupiah"]}
        for c in want
    ]
    assert any(c["component"] in HEALTH_KINDS for c in components)


async def test_graphql_family_components_without_membership_are_left_out(
    client: httpx.AsyncClient, make_client: MakeClient, cases: Cases
) -> None:
    key = await key_for(make_client, {"decision", "health", "identity", "attributes"})
    query = """query($noKk: String!) { family(noKk: $noKk) {
      eligibility(programs: [PKH], explain: true) { components { component } } } }"""
    r = await gql(client, query, {"noKk": cases.no_kk}, auth(key))
    assert r.json()["data"]["family"]["eligibility"][0]["components"] == []


async def test_graphql_priority_needs_decile(
    client: httpx.AsyncClient, make_client: MakeClient, cases: Cases
) -> None:
    query = """query($nik: String!) { person(nik: $nik) {
      eligibility(programs: [SEKOLAH_RAKYAT]) { level priority } } }"""
    r = await gql(
        client, query, {"nik": cases.child}, auth(await key_for(make_client, {"decision"}))
    )
    _refused(r, {"decile"})
    key = await key_for(make_client, {"decision", "decile"})
    r = await gql(client, query, {"nik": cases.child}, auth(key))
    full = cases.child_decisions[-1]
    assert r.json()["data"]["person"]["eligibility"] == [
        {"level": full["level"], "priority": full["priority"]}
    ]


# --- GraphQL: the compiled path answers and refuses as Strawberry does ---------------------------


@pytest.fixture(scope="module")
async def strawberry_only(settings: Settings, published: Path) -> AsyncIterator[httpx.AsyncClient]:
    application = create_app(settings.model_copy(update={"fast_graphql": False}))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://tepat.test") as c:
            yield c


def _ids_out(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _ids_out(v) for k, v in value.items() if k not in ("request_id", "audit_id")}
    if isinstance(value, list):
        return [_ids_out(v) for v in value]
    return value


COMPILED = {
    "priority": """query($nik: String!) { person(nik: $nik) { nik
      eligibility { program level priority } } }""",
    "components": """query($nik: String!) { person(nik: $nik) { nik
      eligibility { program components { nik component } } } }""",
    "plain": """query($nik: String!) { person(nik: $nik) { nik eligibility { program level } } }""",
}


@pytest.mark.parametrize("document", list(COMPILED))
@pytest.mark.parametrize(
    "groups",
    [{"decision"}, {"decision", "decile"}, {"decision", "membership"}, set(ALL_GROUPS)],
    ids=lambda g: "+".join(sorted(g)),
)
async def test_compiled_path_answers_and_refuses_as_strawberry(
    app: FastAPI,
    client: httpx.AsyncClient,
    strawberry_only: httpx.AsyncClient,
    make_client: MakeClient,
    cases: Cases,
    document: str,
    groups: set[str],
) -> None:
    key = await key_for(make_client, groups)
    body = orjson.dumps({"query": COMPILED[document], "variables": {"nik": cases.child}})
    headers = {**auth(key), "Content-Type": "application/json"}
    stats = app.state.fast_graphql
    before = stats.served
    fast = await client.post("/graphql", content=body, headers=headers)
    served = stats.served - before
    slow = await strawberry_only.post("/graphql", content=body, headers=headers)
    assert fast.status_code == slow.status_code, (fast.text, slow.text)
    assert _ids_out(fast.json()) == _ids_out(slow.json())
    allowed = (
        document == "plain"
        or (document == "priority" and "decile" in groups)
        or (
            document == "components"
            and {"membership", "health", "identity", "attributes"} <= groups
        )
    )
    if allowed:
        assert fast.status_code == 200 and served == 1  # the compiled path answered it
        decisions = fast.json()["data"]["person"]["eligibility"]
        sr = decisions[-1]
        assert sr["program"] == "SEKOLAH_RAKYAT"
        if document != "components":
            assert sr["level"] == cases.child_decisions[-1]["level"]
        if document == "priority":
            assert sr["priority"] == cases.child_decisions[-1]["priority"] is not None
    else:
        assert fast.status_code == 403 and served == 0
        assert fast.json()["data"] is None
