"""One vocabulary across REST and GraphQL: names, enums, timestamps, batches, descriptions, and
the same omissions for a client without the personal field groups."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, get_args

import httpx
import pytest
from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLObjectType,
)

from app import codes as app_codes
from app.config import MAX_BATCH
from app.graphql import types
from app.graphql.schema import build_schema
from app.schemas import lookup as rest
from app.schemas.meta import ProgramInfo
from app.schemas.snapshots import Snapshot as RestSnapshot
from tests.graphql.conftest import codes, gql
from tests.graphql.test_parity import DECISION, rest_decision, rest_family
from tests.support import MakeClient, auth


@pytest.fixture(scope="module")
def households(published: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    with (published / "anggota.csv").open() as f:
        for r in csv.DictReader(f):
            out.setdefault(r["no_kk"], []).append(r["nik"])
    return out


def test_every_type_field_argument_and_enum_value_is_described() -> None:
    schema = build_schema(production=False)._schema
    missing: list[str] = []
    for name, type_ in schema.type_map.items():
        if name.startswith("__"):
            continue  # introspection's own types
        if not type_.description:
            missing.append(name)
        if isinstance(type_, GraphQLObjectType | GraphQLInterfaceType | GraphQLInputObjectType):
            for field_name, field in type_.fields.items():
                if not field.description:
                    missing.append(f"{name}.{field_name}")
                for arg_name, arg in getattr(field, "args", {}).items():
                    if not arg.description:
                        missing.append(f"{name}.{field_name}({arg_name})")
        if isinstance(type_, GraphQLEnumType):
            for value_name, value in type_.values.items():
                if not value.description:
                    missing.append(f"{name}.{value_name}")
    assert missing == []


def test_every_coded_integer_carries_its_codes_meanings() -> None:
    """Coded integers stay REST's integers; each field's description lists every code with its
    English and Indonesian meaning, from the same code table as REST's enums."""
    schema = build_schema(production=False)._schema
    owners = {"sex": "Identity", "marital_status": "PersonAttributes",
              "school_status": "PersonAttributes", "disability": "Health",
              "home_ownership": "FamilyAttributes", "drinking_water": "FamilyAttributes",
              "toilet": "FamilyAttributes", "lighting": "FamilyAttributes",
              "relationship": "Person"}  # fmt: skip
    assert set(owners) == {t.field for t in app_codes.CODE_TABLES}
    for table in app_codes.CODE_TABLES:
        owner = schema.type_map[owners[table.field]]
        assert isinstance(owner, GraphQLObjectType)
        camel = "".join(w.capitalize() if i else w for i, w in enumerate(table.field.split("_")))
        description = owner.fields[camel].description or ""
        for code in table.codes:
            assert f"* {code.value}: {code.english} ({code.indonesian})" in description, (
                f"{owner.name}.{camel}: code {code.value}"
            )
    family = schema.type_map["Family"]
    assert isinstance(family, GraphQLObjectType)
    assert "* 1: head of the family (kepala keluarga)" in (
        family.fields["relationship"].description or ""
    )


def _enum_values(enum: Any) -> set[str]:
    return {m.value for m in enum}


def test_enums_carry_rests_values() -> None:
    decision = rest.Decision.model_fields
    assert _enum_values(types.ProgramId) == set(get_args(rest.ProgramName))
    assert _enum_values(types.Unit) == set(get_args(decision["unit"].annotation))
    assert _enum_values(types.Unit) == set(get_args(ProgramInfo.model_fields["unit"].annotation))
    level = {a for a in get_args(decision["level"].annotation) if a is not type(None)}
    assert _enum_values(types.SchoolLevel) == set().union(*(get_args(a) for a in level))
    status = RestSnapshot.model_fields["status"].annotation
    assert _enum_values(types.SnapshotStatus) == set(get_args(status))
    component = rest.Component.model_fields["component"].annotation
    assert _enum_values(types.ComponentKind) == set(get_args(component))
    # The names GraphQL writes are the values REST writes.
    schema = build_schema(production=False)._schema
    for enum in (types.Unit, types.SchoolLevel, types.SnapshotStatus, types.ComponentKind):
        gql_type = schema.get_type(enum.__name__)
        assert isinstance(gql_type, GraphQLEnumType)
        assert set(gql_type.values) == _enum_values(enum)


def test_eligibility_is_deprecated_for_decisions() -> None:
    schema = build_schema(production=False)._schema
    for type_name in ("Person", "Family"):
        type_ = schema.get_type(type_name)
        assert isinstance(type_, GraphQLObjectType)
        assert type_.fields["decisions"].deprecation_reason is None
        reason = type_.fields["eligibility"].deprecation_reason
        assert reason is not None and "decisions" in reason


async def test_timestamps_are_written_as_rest_writes_them(http: httpx.AsyncClient) -> None:
    theirs = (await http.get("/v1/snapshots")).json()
    r = await gql(http, "{ snapshots { id status createdAt publishedAt retiredAt } }")
    mine = r.json()["data"]["snapshots"]
    assert [s["id"] for s in mine] == [s["id"] for s in theirs]
    for a, b in zip(mine, theirs, strict=True):
        assert a["createdAt"] == b["created_at"] and a["createdAt"].endswith("Z")
        assert a["publishedAt"] == b["published_at"]
        assert a["retiredAt"] == b["retired_at"]
        assert a["status"] == b["status"]


PERSON_NEW_NAMES = f"""query($niks: [String!]!) {{ people(niks: $niks) {{ nik
  family {{ noKk relationship }} decisions(explain: true) {{ {DECISION} }}
  eligibility(explain: true) {{ program eligible }} }} }}"""


async def test_decisions_and_family_relationship_as_rest(
    http: httpx.AsyncClient, full_key: str, households: dict[str, list[str]]
) -> None:
    niks = [n for members in list(households.values())[:30] for n in members]
    theirs = (
        await http.post(
            "/v1/people/lookup", json={"niks": niks, "explain": True}, headers=auth(full_key)
        )
    ).json()["results"]
    body = (await gql(http, PERSON_NEW_NAMES, {"niks": niks}, auth(full_key))).json()
    assert "errors" not in body, body
    for p, expected in zip(body["data"]["people"], theirs, strict=True):
        assert p["family"]["relationship"] == expected["family"]["relationship"]
        assert [rest_decision(d) for d in p["decisions"]] == expected["decisions"]
        # the deprecated name answers the same
        assert p["eligibility"] == [
            {"program": d["program"], "eligible": d["eligible"]} for d in p["decisions"]
        ]
    # A family asked by No. KK relates to no one in particular.
    kk = next(iter(households))
    r = await gql(
        http,
        "query($k: String!) { family(noKk: $k) { relationship members { relationship } } }",
        {"k": kk},
        auth(full_key),
    )
    family = r.json()["data"]["family"]
    assert family["relationship"] is None
    assert all(isinstance(m["relationship"], int) for m in family["members"])


FAMILIES = f"""query($kks: [String!]!) {{ families(noKks: $kks) {{
  noKk found decile kodeWilayah
  attributes {{ asnTniPolri homeOwnership floorAreaM2 drinkingWater toilet lighting powerVa }}
  eligibility: decisions(explain: true) {{ {DECISION} }}
  members {{ nik relationship identity {{ name sex birthDate }}
    attributes {{ maritalStatus schoolStatus schoolLevel working }}
    health {{ disability chronicIllness pregnant }}
    eligibility: decisions(programs: [PBI_JK, SEKOLAH_RAKYAT], explain: true) {{ {DECISION} }}
  }} }} }}"""


async def test_families_batch_matches_rest(
    http: httpx.AsyncClient, full_key: str, households: dict[str, list[str]]
) -> None:
    kks = [*list(households)[100:160], "3201010101209999"]  # the last is not in the release
    rest_answer = await http.post(
        "/v1/families/lookup", json={"no_kks": kks, "explain": True}, headers=auth(full_key)
    )
    assert rest_answer.status_code == 200, rest_answer.text
    r = await gql(http, FAMILIES, {"kks": kks}, auth(full_key))
    body = r.json()
    assert "errors" not in body, body
    mine = [rest_family(f) for f in body["data"]["families"]]
    assert mine == rest_answer.json()["results"]
    assert body["extensions"]["meta"]["audit_id"]


async def test_families_batch_has_rests_limit(http: httpx.AsyncClient, full_key: str) -> None:
    query = "query($kks: [String!]!) { families(noKks: $kks) { found } }"
    over = [f"32010101012{i:05d}" for i in range(MAX_BATCH + 1)]
    r = await gql(http, query, {"kks": over}, auth(full_key))
    body = r.json()
    assert codes(body) == ["validation_failed"], body
    assert body["errors"][0]["extensions"]["field"] == "noKks"
    rest_answer = await http.post(
        "/v1/families/lookup", json={"no_kks": over}, headers=auth(full_key)
    )
    assert rest_answer.status_code == 422
    bad = await gql(http, query, {"kks": ["12"]}, auth(full_key))
    assert bad.json()["errors"][0]["extensions"]["field"] == "noKks[0]"


async def test_a_client_without_personal_groups_sees_what_rest_shows(
    http: httpx.AsyncClient, make_client: MakeClient, households: dict[str, list[str]]
) -> None:
    """No membership, health, identity or attributes: the same omissions in both faces."""
    key = await make_client(fields=["decision", "decile"])
    niks = [n for members in list(households.values())[:80] for n in members]
    theirs = (
        await http.post(
            "/v1/people/lookup", json={"niks": niks, "explain": True}, headers=auth(key)
        )
    ).json()["results"]
    # REST leaves out every group the client lacks...
    withheld = {"family", "identity", "attributes", "health"}
    assert all(withheld.isdisjoint(p) for p in theirs)
    # ...GraphQL refuses a document selecting any of them, naming the group.
    for field, group in (
        ("family { noKk }", "membership"),
        ("identity { name }", "identity"),
        ("attributes { working }", "attributes"),
        ("health { pregnant }", "health"),
        ("decisions(explain: true) { components { nik } }", "membership"),
        ("decisions(explain: true) { components { taken } }", "membership"),
    ):
        query = f"query($niks: [String!]!) {{ people(niks: $niks) {{ {field} }} }}"
        body = (await gql(http, query, {"niks": niks[:1]}, auth(key))).json()
        assert codes(body) == ["forbidden"], (field, body)
        assert group in body["errors"][0]["extensions"]["field_groups"], field
    # What may be asked, GraphQL answers as REST: components, criteria and priority alike.
    query = """query($niks: [String!]!) { people(niks: $niks) { nik found decile
      decisions(explain: true) { program unit eligible recipient level priority
        benefit { monthlyRupiah yearlyRupiah perTrancheRupiah }
        components { yearlyRupiah } criteria { id required passed } } } }"""
    body = (await gql(http, query, {"niks": niks}, auth(key))).json()
    assert "errors" not in body, body
    compared = 0
    for p, expected in zip(body["data"]["people"], theirs, strict=True):
        assert p["decile"] == expected.get("decile")
        for d, e in zip(p["decisions"] or [], expected.get("decisions", []), strict=True):
            shown = {k: v for k, v in d.items() if k not in ("components", "criteria")}
            shown["components"] = None
            shown["criteria"] = None
            assert rest_decision(shown) == {
                k: v for k, v in e.items() if k not in ("components", "criteria")
            }
            e_components = e.get("components")
            assert (d["components"] is None) == (e_components is None)
            if e_components is not None:
                assert [c["yearlyRupiah"] for c in d["components"]] == [
                    c["yearly_rupiah"] for c in e_components
                ]
            assert d["criteria"] == [
                {k: c[k] for k in ("id", "required", "passed")} for c in e["criteria"]
            ]
            compared += 1
    assert compared > 0
