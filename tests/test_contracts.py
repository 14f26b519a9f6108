"""The committed OpenAPI document as integrators meet it: names a person would choose, every
problem answer documented as sent, every example true to its schema."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from app.contracts import ROOT, check_operation_ids, operation_ids

SPEC: dict[str, Any] = json.loads((ROOT / "openapi.json").read_text())
OPERATIONS = [
    (f"{method.upper()} {path}", op)
    for path, ops in SPEC["paths"].items()
    for method, op in ops.items()
]
PROBLEM_STATUSES = {"400", "401", "403", "404", "408", "409", "410", "413", "415", "416", "422"}
PROBLEM_STATUSES |= {"429", "503"}


def _schema_at(schema: dict[str, Any]) -> Draft202012Validator:
    """A validator for a schema of the document, its `#/components/...` refs resolving."""
    return Draft202012Validator({"allOf": [schema], "components": SPEC["components"]})


def _examples() -> Iterator[tuple[str, dict[str, Any], Any]]:
    """Every example in the document, where it is, its schema."""
    for where, op in OPERATIONS:
        for parameter in op.get("parameters", []):
            for example in parameter.get("examples", {}).values():
                yield f"{where} {parameter['name']}", parameter["schema"], example["value"]
            if "example" in parameter:
                yield f"{where} {parameter['name']}", parameter["schema"], parameter["example"]
        bodies = [("request", op.get("requestBody", {}))]
        bodies += [(status, r) for status, r in op.get("responses", {}).items()]
        for status, body in bodies:
            for media_type, media in body.get("content", {}).items():
                schema = media.get("schema")
                if schema is None:
                    continue
                at = f"{where} {status} {media_type}"
                if "example" in media:
                    yield at, schema, media["example"]
                for name, example in media.get("examples", {}).items():
                    yield f"{at} {name}", schema, example["value"]
    for name, schema in SPEC["components"]["schemas"].items():
        for i, example in enumerate(schema.get("examples", [])):
            yield f"components {name} [{i}]", schema, example
        for prop, sub in schema.get("properties", {}).items():
            for i, example in enumerate(sub.get("examples", [])):
                yield f"components {name}.{prop} [{i}]", sub, example


EXAMPLES = list(_examples())


def test_the_document_has_examples_to_check() -> None:
    where = {w.split(" ")[1] for w, _, _ in EXAMPLES if not w.startswith("components")}
    assert {"/v1/people/lookup", "/v1/families/lookup", "/v1/snapshots/{snapshot_id}"} <= where
    assert len(EXAMPLES) > 100


@pytest.mark.parametrize(("where", "schema", "example"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_every_example_validates_against_its_schema(
    where: str, schema: dict[str, Any], example: Any
) -> None:
    errors = sorted(_schema_at(schema).iter_errors(example), key=str)
    assert not errors, f"{where}: " + "; ".join(e.message for e in errors[:3])


def test_the_validator_would_catch_a_false_example() -> None:
    op = SPEC["paths"]["/v1/people/lookup"]["post"]
    media = op["responses"]["200"]["content"]["application/json"]
    wrong = copy.deepcopy(media["example"])
    del wrong["meta"]["audit_id"]
    assert list(_schema_at(media["schema"]).iter_errors(wrong))


@pytest.mark.parametrize(("where", "op"), OPERATIONS, ids=[w for w, _ in OPERATIONS])
def test_every_problem_answer_is_problem_json_with_its_schema(
    where: str, op: dict[str, Any]
) -> None:
    for status, response in op["responses"].items():
        if status not in PROBLEM_STATUSES:
            assert int(status) < 400, f"{where}: {status} is not a known problem status"
            continue
        assert set(response["content"]) == {"application/problem+json"}, (where, status)
        media = response["content"]["application/problem+json"]
        model = "ValidationProblem" if status in ("400", "422") else "Problem"
        assert media["schema"] == {"$ref": f"#/components/schemas/{model}"}, (where, status)
        codes = {e["value"]["code"] for e in media["examples"].values()}
        assert all(e["value"]["status"] == int(status) for e in media["examples"].values())
        assert codes, (where, status)
        if status == "401":
            assert response["headers"]["WWW-Authenticate"]["required"] is True
        if status in ("429", "503"):
            assert response["headers"]["Retry-After"]["required"] is True


def test_problem_answers_follow_the_route() -> None:
    people = SPEC["paths"]["/v1/people/lookup"]["post"]["responses"]
    assert {"400", "401", "403", "413", "415", "422", "429", "503"} <= set(people)
    examples = people["415"]["content"]["application/problem+json"]["examples"]
    assert "application/json" in examples["unsupported_media_type"]["value"]["detail"]
    # By-id routes answer 404 for any id, well-formed or not: no 422 documented.
    rule_set = SPEC["paths"]["/v1/rule-sets/{rule_set_id}"]["get"]["responses"]
    assert "422" not in rule_set and "422" not in SPEC["paths"]["/v1/snapshots/{snapshot_id}"]
    assert rule_set["404"]["description"] == "No such rule set"
    # Metadata needs no key; the liveness probe never answers 503.
    assert "401" not in SPEC["paths"]["/v1/snapshots"]["get"]["responses"]
    assert set(SPEC["paths"]["/healthz"]["get"]["responses"]) == {"200"}
    assert "HTTPValidationError" not in SPEC["components"]["schemas"]


@pytest.mark.parametrize(("where", "op"), OPERATIONS, ids=[w for w, _ in OPERATIONS])
def test_headers_as_enforced(where: str, op: dict[str, Any]) -> None:
    purpose = [p for p in op.get("parameters", []) if p["name"] == "X-Purpose"]
    secured = op.get("security") == [{"ApiKey": []}]
    data = where.startswith(("POST /v1/people", "POST /v1/families", "POST /v1/bulk/"))
    if data:
        assert secured and purpose, where
    if purpose:
        (header,) = purpose
        assert header["in"] == "header" and header["required"] is True, where
        assert header["schema"]["type"] == "string" and "anyOf" not in header["schema"]
        assert "RateLimit" in op["responses"][next(s for s in op["responses"] if s < "300")].get(
            "headers", {}
        ), where
    if where.startswith(("GET /v1/snapshots", "GET /v1/rule-sets", "GET /v1/programs")):
        assert not secured and not purpose, where
    assert not any(p["name"].lower() == "authorization" for p in op.get("parameters", []))


def test_names_a_person_would_choose() -> None:
    ids = operation_ids(SPEC)
    assert ids["POST /v1/people/lookup"] == "lookup_people"
    assert ids["POST /v1/families/lookup"] == "lookup_families"
    assert ids["GET /v1/snapshots/{snapshot_id}"] == "get_snapshot"
    names = set(SPEC["components"]["schemas"])
    assert {"PersonResult", "Problem", "ValidationProblem", "Benefit"} <= names
    assert not [n for n in names if n.startswith("Body_") or "_" in n]
    assert check_operation_ids(SPEC, SPEC) == []


def test_the_contracts_check_holds_operation_ids() -> None:
    renamed = copy.deepcopy(SPEC)
    renamed["paths"]["/v1/people/lookup"]["post"]["operationId"] = "lookup_persons"
    found = check_operation_ids(SPEC, renamed)
    assert len(found) == 1 and "'lookup_people' became 'lookup_persons'" in found[0]
    for bad in ("peopleLookup", "people_lookup_v1_people_lookup_post", "lookup", "fetch_people"):
        odd = copy.deepcopy(SPEC)
        odd["paths"]["/v1/people/lookup"]["post"]["operationId"] = bad
        assert any("not snake_case verb_noun" in f for f in check_operation_ids(odd, odd)), bad
    twice = copy.deepcopy(SPEC)
    twice["paths"]["/v1/families/lookup"]["post"]["operationId"] = "lookup_people"
    assert any("is also" in f for f in check_operation_ids({}, twice))


def test_the_committed_document_is_the_one_checked() -> None:
    assert Path(ROOT / "openapi.json").exists()


def _codes(op: dict[str, Any]) -> dict[str, str]:
    """Every problem code an operation declares, with the status it is declared under."""
    return {
        example["value"]["code"]: status
        for status, response in op["responses"].items()
        if status in PROBLEM_STATUSES
        for example in response["content"]["application/problem+json"]["examples"].values()
    }


# Operations that look people up and charge the client: the lookups and the bulk paths.
LOOKUPS = ("POST /v1/people/lookup", "POST /v1/families/lookup")
BULK = ("POST /v1/bulk/eligibility", "POST /v1/bulk/jobs")


@pytest.mark.parametrize(("where", "op"), OPERATIONS, ids=[w for w, _ in OPERATIONS])
def test_every_operation_declares_all_its_problems(where: str, op: dict[str, Any]) -> None:
    """What a data operation can answer is declared whole, each code under its own status:
    a route joining two `responses` dicts would lose one side's examples for a shared status."""
    from app.api.openapi import DATA_ERRORS
    from app.errors import TepatError

    codes = _codes(op)
    for code, status in codes.items():
        assert all(
            e["value"]["status"] == int(status)
            for e in op["responses"][status]["content"]["application/problem+json"][
                "examples"
            ].values()
        ), (where, code)
    if where in (*LOOKUPS, *BULK):
        data = {e.code for e in DATA_ERRORS if isinstance(e, type) and issubclass(e, TepatError)}
        assert data - set(codes) == set(), where
    if where in (*BULK, "POST /v1/changes"):
        wanted = {"bulk_not_granted", "too_many_streams", "forbidden", "rate_limited"}
        assert wanted - set(codes) == set(), where
    if any(p["name"] == "X-Purpose" for p in op.get("parameters", [])):
        assert {"purpose_required", "unauthenticated"} <= set(codes), where
