"""GraphQL and REST give the same answers, field by field, for hundreds of people and families."""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.graphql.conftest import gql
from tests.support import auth

DECISION = """program unit eligible recipient level priority
  benefit { monthlyRupiah yearlyRupiah perTrancheRupiah }
  components { nik component yearlyRupiah taken reason }
  criteria { id observed required passed }"""
PERSON = """nik found decile relationship
  identity { name sex birthDate }
  attributes { maritalStatus schoolStatus schoolLevel working }
  health { disability chronicIllness pregnant }"""
FAMILY = f"""noKk found decile kodeWilayah
  attributes {{ asnTniPolri homeOwnership floorAreaM2 drinkingWater toilet lighting powerVa }}
  eligibility(explain: true) {{ {DECISION} }}
  members {{ {PERSON}
    eligibility(programs: [PBI_JK, SEKOLAH_RAKYAT], explain: true) {{ {DECISION} }} }}"""

PEOPLE_QUERY = f"""query People($niks: [String!]!) {{
  people(niks: $niks) {{ {PERSON} family {{ noKk kodeWilayah }}
    eligibility(explain: true) {{ {DECISION} }} }} }}"""
FAMILIES_VIA_PEOPLE = f"""query Families($niks: [String!]!) {{
  people(niks: $niks) {{ family {{ {FAMILY} }} }} }}"""
FAMILY_QUERY = f"""query Family($noKk: String!) {{ family(noKk: $noKk) {{ {FAMILY} }} }}"""

_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def snake(value: Any) -> Any:
    if isinstance(value, dict):
        return {_CAMEL.sub("_", k).lower(): snake(v) for k, v in value.items()}
    if isinstance(value, list):
        return [snake(v) for v in value]
    return value


def rest_decision(d: dict[str, Any]) -> dict[str, Any]:
    """A GraphQL decision in the REST shape (Decision.to_dict: absent, not null, when unset)."""
    out: dict[str, Any] = {"program": d["program"], "unit": d["unit"], "eligible": d["eligible"]}
    if d["recipient"] is not None:
        out["recipient"] = d["recipient"]
    benefit = d["benefit"]
    out["benefit"] = (
        None if benefit is None else {k: v for k, v in snake(benefit).items() if v is not None}
    )
    if d["program"] == "SEKOLAH_RAKYAT":
        out["level"] = d["level"]
        out["priority"] = d["priority"]
    if d["components"] is not None:
        out["components"] = snake(d["components"])
    if d["criteria"] is not None:
        out["criteria"] = d["criteria"]
    return out


def _person_fields(p: dict[str, Any]) -> dict[str, Any]:
    return {
        "identity": snake(p["identity"]),
        "attributes": snake(p["attributes"]),
        "health": snake(p["health"]),
    }


def rest_person(p: dict[str, Any]) -> dict[str, Any]:
    if not p["found"]:
        return {"nik": p["nik"], "found": False}
    return {
        "nik": p["nik"],
        "found": True,
        "decile": p["decile"],
        "family": {
            "no_kk": p["family"]["noKk"],
            "relationship": p["relationship"],
            "kode_wilayah": p["family"]["kodeWilayah"],
        },
        **_person_fields(p),
        "decisions": [rest_decision(d) for d in p["eligibility"]],
    }


def rest_family(f: dict[str, Any]) -> dict[str, Any]:
    if not f["found"]:
        return {"no_kk": f["noKk"], "found": False}
    return {
        "no_kk": f["noKk"],
        "found": True,
        "decile": f["decile"],
        "attributes": snake(f["attributes"]),
        "kode_wilayah": f["kodeWilayah"],
        "members": [
            {
                "nik": m["nik"],
                "relationship": m["relationship"],
                **_person_fields(m),
                "decisions": [rest_decision(d) for d in m["eligibility"]],
            }
            for m in f["members"]
        ],
        "decisions": [rest_decision(d) for d in f["eligibility"]],
    }


@pytest.fixture(scope="module")
def households(published: Path) -> dict[str, list[str]]:
    """No. KK -> member NIKs, in file order."""
    out: dict[str, list[str]] = {}
    with (published / "anggota.csv").open() as f:
        for r in csv.DictReader(f):
            out.setdefault(r["no_kk"], []).append(r["nik"])
    return out


async def test_people_match_rest_field_by_field(
    http: httpx.AsyncClient, full_key: str, households: dict[str, list[str]]
) -> None:
    niks = [n for members in list(households.values())[:400] for n in members][:900]
    asked = [*niks[:450], "3201010101990001", *niks[450:]]  # a valid NIK not in the release
    rest = await http.post(
        "/v1/people/lookup", json={"niks": asked, "explain": True}, headers=auth(full_key)
    )
    assert rest.status_code == 200, rest.text
    r = await gql(http, PEOPLE_QUERY, {"niks": asked}, auth(full_key))
    assert r.status_code == 200, r.text
    body = r.json()
    assert "errors" not in body, body["errors"][:3]
    mine = [rest_person(p) for p in body["data"]["people"]]
    theirs = rest.json()["results"]
    assert len(mine) == len(theirs) == len(asked)
    for a, b in zip(mine, theirs, strict=True):
        assert a == b
    meta, rest_meta = body["extensions"]["meta"], rest.json()["meta"]
    for key in ("snapshot", "rule_set", "evaluation_date"):
        assert meta[key] == rest_meta[key]


async def test_families_match_rest_field_by_field(
    http: httpx.AsyncClient, full_key: str, households: dict[str, list[str]]
) -> None:
    chosen = list(households.items())[300:600]
    kks = [kk for kk, _ in chosen]
    rest = await http.post(
        "/v1/families/lookup", json={"no_kks": kks, "explain": True}, headers=auth(full_key)
    )
    assert rest.status_code == 200, rest.text
    theirs = rest.json()["results"]
    heads = [members[0] for _, members in chosen]
    r = await gql(http, FAMILIES_VIA_PEOPLE, {"niks": heads}, auth(full_key))
    body = r.json()
    assert "errors" not in body, body["errors"][:3]
    mine = [rest_family(p["family"]) for p in body["data"]["people"]]
    assert len(mine) == len(theirs) == 300
    for a, b in zip(mine, theirs, strict=True):
        assert a == b


async def test_family_field_matches_rest(
    http: httpx.AsyncClient, full_key: str, households: dict[str, list[str]]
) -> None:
    kks = [*list(households)[:20], "3201010101209999"]  # the last is not in the release
    rest = await http.post(
        "/v1/families/lookup", json={"no_kks": kks, "explain": True}, headers=auth(full_key)
    )
    theirs = rest.json()["results"]
    for kk, expected in zip(kks, theirs, strict=True):
        r = await gql(http, FAMILY_QUERY, {"noKk": kk}, auth(full_key))
        body = r.json()
        assert "errors" not in body, body
        assert rest_family(body["data"]["family"]) == expected


async def test_without_explain_decisions_match_rest(
    http: httpx.AsyncClient, full_key: str, households: dict[str, list[str]]
) -> None:
    niks = [n for members in list(households.values())[600:700] for n in members]
    rest = await http.post(
        "/v1/people/lookup",
        json={"niks": niks, "programs": ["PKH", "PBI_JK"]},
        headers=auth(full_key),
    )
    query = f"""query($niks: [String!]!) {{ people(niks: $niks) {{
        eligibility(programs: [PBI_JK, PKH]) {{ {DECISION} }} }} }}"""
    r = await gql(http, query, {"niks": niks}, auth(full_key))
    mine = [[rest_decision(d) for d in p["eligibility"]] for p in r.json()["data"]["people"]]
    assert mine == [x["decisions"] for x in rest.json()["results"]]
