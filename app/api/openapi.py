"""The OpenAPI contract, finished in one place for every route.

Routes declare what only they know: their answer model and examples, and the domain errors they
raise (`problems(SnapshotNotFound, RateLimited, ...)`). `finish` then completes every operation
from facts about its route, so a route added anywhere gets the same treatment:

* its operation id is its function's name (`operation_id`, the app's
  `generate_unique_id_function`): `lookup_people`, `get_snapshot`; app.contracts checks they
  are snake_case verb_noun and never change once published;
* every problem answer is `application/problem+json` with the `Problem` schema (400 and 422:
  `ValidationProblem`, with every field error), with one example per problem code it may carry,
  and its headers (`WWW-Authenticate` on 401, `Retry-After` on 429 and 503);
* the problems its shape implies are added: a JSON body 400, 413, 415 and 422; parameters that
  can fail validation 422; an API key 401 and 403 (suspended); a purpose 403; 503 everywhere
  but the liveness probe. FastAPI's own 422 (`HTTPValidationError`) is removed, and kept as
  ours only where the route can really answer it;
* `X-Purpose` is required (not nullable) wherever the route checks it, and data answers
  document the `RateLimit` and `RateLimit-Policy` headers.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema
from starlette.responses import Response

from app.api import deps
from app.auth.principal import PURPOSE_PATTERN
from app.errors import (
    ALL_ERRORS,
    PROBLEM_BASE,
    AuditUnavailable,
    ClientSuspended,
    Forbidden,
    NoRuleSetInForce,
    NoSnapshotPublished,
    PayloadTooLarge,
    PurposeRequired,
    QuotaExceeded,
    RateLimited,
    RuleSetNotFound,
    SnapshotNotFound,
    SnapshotRetired,
    TepatError,
    Unauthenticated,
    Unavailable,
    UnsupportedMediaType,
    ValidationFailed,
)
from app.http.problems import JSON_ONLY, PROBLEM_JSON, TITLES
from app.services.lookup import Answer
from app.services.receipts import HEADER as RECEIPT

REQUEST_ID = "5f0c6b0e9f3a4c1d"
# Paths that never answer 503: the liveness probe touches nothing and is never shed.
NEVER_UNAVAILABLE = frozenset({"/healthz"})


# --- the problem schemas ------------------------------------------------------------------------


class FieldProblem(BaseModel):
    """One failing field of a request."""

    field: str = Field(
        description="Where: `niks[0]`, `explain`, `body` (the body as a whole)",
        examples=["niks[0]"],
    )
    message: str = Field(description="What is wrong, in words")
    rule: str | SkipJsonSchema[None] = Field(
        None, description="The identifier rule a NIK or No. KK breaks (`nik_date`, ...)"
    )
    value: Any = Field(None, description="The offending value; a NIK or No. KK is masked")


class Problem(BaseModel):
    """RFC 9457 problem details. `code` is stable: match on it (or on `type`).

    Some problems carry more members: `retry_after` (429, 503: the seconds `Retry-After`
    says), `field` (the field at fault), `program`, `field_groups`.
    """

    model_config = ConfigDict(extra="allow")

    type: str = Field(
        description="A URI naming the problem type", examples=[PROBLEM_BASE + "rate-limited"]
    )
    title: str = Field(description="The problem type in words; the same for every instance")
    status: int = Field(description="The HTTP status code", ge=400, le=599)
    detail: str = Field(description="This occurrence in words (never a full NIK or No. KK)")
    code: str = Field(
        description="The stable machine-readable code, e.g. `rate_limited`",
        examples=["rate_limited"],
    )
    request_id: str = Field(description="The request's id (`X-Request-ID`); quote it to support")
    field: str | SkipJsonSchema[None] = Field(None, description="The field at fault, if one is")
    retry_after: int | SkipJsonSchema[None] = Field(
        None, ge=1, description="429 and 503: seconds to wait, as `Retry-After` says"
    )


class ValidationProblem(Problem):
    """A request refused for its content (400 `malformed_json`, 422 `validation_failed`):
    `field` names the first failing field and `errors` lists every one."""

    field: str = Field(description="The first failing field", examples=["niks[0]"])
    errors: list[FieldProblem] = Field(description="Every failing field, in order")


PROBLEM_MODELS: tuple[type[BaseModel], ...] = (FieldProblem, Problem, ValidationProblem)
_REF = "#/components/schemas/{model}"


# --- what routes declare -------------------------------------------------------------------------


class _Transport(TepatError):
    """Problems the transport answers itself (no domain error class behind them)."""


class MalformedJson(_Transport):
    code = "malformed_json"
    title = TITLES["malformed_json"]
    status = 400


ProblemSpec = type[TepatError] | TepatError | int

# Per status, what a bare status number in `problems(...)` means.
_DEFAULT_OF_STATUS: dict[int, type[TepatError]] = {
    400: MalformedJson,
    401: Unauthenticated,
    403: ClientSuspended,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: ValidationFailed,
    503: Unavailable,
}

# Example details, so examples read like real answers.
_DETAILS: dict[str, str] = {
    "malformed_json": "1 problem(s); first: body: not valid JSON at character 10: Expecting value",
    "unauthenticated": "send the API key as `Authorization: Bearer <key>`",
    "client_suspended": "the client is suspended; an operator must reinstate it "
    "(tepat client reinstate)",
    "purpose_required": "state the purpose of this request in X-Purpose",
    "payload_too_large": "the body must be at most 1000000 bytes",
    "unsupported_media_type": JSON_ONLY + "; got text/plain",
    "validation_failed": "1 problem(s); first: niks[0]: NIK must be 16 digits (nik_format)",
    "unavailable": "the database did not answer in time",
    "rate_limited": "the limit is 20000 NIK lookups a second (bursts of 100000); this request "
    "of 1000 NIKs fits in 1 s",
    "quota_exceeded": "the daily quota of 100,000 NIK lookups is used up for today; it starts "
    "again at 00:00 WIB, in 3600 s",
    "too_many_streams": "this client already runs 2 bulk streams at once; retry when one ended",
}
_EXTRA: dict[str, dict[str, Any]] = {
    "malformed_json": {
        "field": "body",
        "errors": [{"field": "body", "message": "not valid JSON at character 10: Expecting value"}],
    },
    "validation_failed": {
        "field": "niks[0]",
        "errors": [
            {
                "field": "niks[0]",
                "message": "NIK must be 16 digits (nik_format)",
                "rule": "nik_format",
                "value": "3201**0001",
            }
        ],
    },
    "rate_limited": {"retry_after": 1},
    "quota_exceeded": {"retry_after": 3600},
    "too_many_streams": {"retry_after": 10},
    "unavailable": {"retry_after": 1},
}


def _example(error: type[TepatError], detail: str | None = None) -> dict[str, Any]:
    extra = dict(_EXTRA.get(error.code, {}))
    if error.status in (429, 503):
        extra.setdefault("retry_after", 1)
    return {
        "type": error.type_uri(),
        "title": error.title,
        "status": error.status,
        "detail": detail or _DETAILS.get(error.code, error.title),
        "code": error.code,
        **extra,
        "request_id": REQUEST_ID,
    }


def problems(*declared: ProblemSpec) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for the problems a route answers: domain error classes (their
    code, title and status; an instance to give the example's detail too), or bare statuses
    for the transport's own. Statuses the route's shape implies (401, 415, 422, 503, ...) are
    added by `finish`; declare what only the route knows (404 `job_not_found`, ...)."""
    out: dict[int | str, dict[str, Any]] = {}
    for item in declared:
        if isinstance(item, int):
            example = (
                _example(_DEFAULT_OF_STATUS[item])
                if item in _DEFAULT_OF_STATUS
                else (_generic(item))
            )
        elif isinstance(item, TepatError):
            example = _example(type(item), item.detail)
        else:
            example = _example(item)
        entry = out.setdefault(
            example["status"],
            {"description": "", "content": {PROBLEM_JSON: {"examples": {}}}},
        )
        entry["content"][PROBLEM_JSON]["examples"][example["code"]] = {
            "summary": example["title"],
            "value": example,
        }
    return out


class NotFound(_Transport):
    code = "not_found"
    title = TITLES["not_found"]
    status = 404


def _generic(status: int) -> dict[str, Any]:
    """A bare status a route declared: better a class (its code and title are then exact)."""
    if status == 404:
        return _example(NotFound)
    for error in ALL_ERRORS:
        if error.status == status:
            return _example(error)
    raise ValueError(f"no problem is known for status {status}")


# What a lookup (and anything pinned to a snapshot and charged) can answer beyond its shape.
# A route that answers more passes these and its own to ONE `problems(...)` call: two dicts
# merged with `**` would keep only the second's entry for a status both declare.
DATA_ERRORS: tuple[ProblemSpec, ...] = (
    Forbidden,
    SnapshotNotFound,
    RuleSetNotFound,
    NoRuleSetInForce,
    SnapshotRetired,
    RateLimited,
    QuotaExceeded,
    NoSnapshotPublished,
    AuditUnavailable,
)
DATA_PROBLEMS = problems(*DATA_ERRORS)


# --- headers -------------------------------------------------------------------------------------

RECEIPT_HEADER: dict[str, Any] = {
    RECEIPT: {
        "description": "A signed receipt of this answer: a compact JWS (EdDSA, Ed25519; key "
        "`kid` in /.well-known/jwks.json) whose payload names the audit record (`audit_id`, "
        "`seq`), the snapshot and rule set (ids and checksums), `body_sha256` (the SHA-256 of "
        "the exact response body) and `iat`. Verify it with any JOSE library: docs/receipts.md.",
        "schema": {
            "type": "string",
            "pattern": "^[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+$",
        },
    }
}

_RATE_HEADERS: dict[str, Any] = {
    "RateLimit-Policy": {
        "description": "The client's limits (IETF draft-ietf-httpapi-ratelimit-headers), in "
        'NIKs (`qu="niks"`): `"rate"` a token bucket of `q` NIKs refilled in `w` seconds, '
        '`"daily"` the daily quota (`w=86400`, the day in WIB). Absent when no limit applies. '
        'Example: `"rate";q=100000;qu="niks";w=5, "daily";q=100000;qu="niks";w=86400`.',
        "schema": {"type": "string"},
    },
    "RateLimit": {
        "description": "What is left under each policy: `r` NIKs, `t` seconds until the "
        "bucket is full again or the day ends (WIB); on a 429, the refused policy with `r=0` "
        "and `t` = `Retry-After`. An estimate from this server process: other processes "
        'spend too. Example: `"rate";r=99000;t=1, "daily";r=99000;t=3600`.',
        "schema": {"type": "string"},
    },
}
_RETRY_AFTER: dict[str, Any] = {
    "Retry-After": {
        "description": "Whole seconds to wait before retrying (at least 1); the problem's "
        "`retry_after` says the same.",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
}
_WWW_AUTHENTICATE: dict[str, Any] = {
    "WWW-Authenticate": {
        "description": 'RFC 6750: `Bearer realm="tepat"` without a key, with '
        '`error="invalid_token"` when the key sent is not valid.',
        "required": True,
        "schema": {"type": "string"},
    }
}


def answered(answer: Answer) -> Response:
    """A data answer's bytes as rendered, with its receipt header."""
    headers = None if answer.receipt is None else {RECEIPT: answer.receipt}
    return Response(answer.body, media_type="application/json", headers=headers)


# --- operation ids -------------------------------------------------------------------------------


def operation_id(route: APIRoute) -> str:
    """The app's `generate_unique_id_function`: the handler's name, as a person chose it."""
    return route.name


# --- finishing the document ----------------------------------------------------------------------


def _dependants(dependant: Dependant) -> Iterator[Dependant]:
    yield dependant
    for sub in dependant.dependencies:
        yield from _dependants(sub)


_FREE = (str, str | None, list[str], list[str] | None)


def _can_fail(field: Any) -> bool:
    """Whether a query or path parameter can fail validation (422): any constraint, or any
    type but a string (or list of strings)."""
    info = field.field_info
    return bool(info.metadata) or info.annotation not in _FREE


class _Facts:
    """What a route's shape says about the problems it can answer."""

    def __init__(self, route: Any, operation: dict[str, Any]) -> None:
        dependants = list(_dependants(route.dependant))
        calls = {d.call for d in dependants}
        self.purpose = deps.caller in calls
        self.key = self.purpose or deps.client in calls
        self.json_body = route.body_field is not None
        self.body = self.json_body or "requestBody" in operation
        self.params_fail = any(
            _can_fail(p) for d in dependants for p in (*d.query_params, *d.path_params)
        )
        self.bulk = route.path_format.startswith("/v1/bulk/")
        self.unavailable = route.path_format not in NEVER_UNAVAILABLE

    def implied(self) -> list[type[TepatError]]:
        out: list[type[TepatError]] = []
        if self.json_body:
            out += [MalformedJson, UnsupportedMediaType, ValidationFailed]
        elif self.params_fail:
            out.append(ValidationFailed)
        if self.body and not self.bulk:  # the request context's cap (bulk paths have theirs)
            out.append(PayloadTooLarge)
        if self.key:
            out += [Unauthenticated, ClientSuspended]
        if self.purpose:
            out.append(PurposeRequired)
        if self.unavailable:
            out.append(Unavailable)
        return out


def _routes(app: FastAPI) -> Iterator[Any]:
    """Every route in the document, as FastAPI sees it there (a route of an included router
    with the router's prefix and dependencies: its `RouteContext`)."""
    for context in iter_route_contexts(app.routes):
        if isinstance(context.original_route, APIRoute) and context.include_in_schema:
            yield context


def finish(app: FastAPI, spec: dict[str, Any]) -> dict[str, Any]:
    """Complete the generated document in place (see the module's docstring)."""
    # FastAPI shares the routes' `responses` dicts into the document: finish a copy.
    spec["paths"] = copy.deepcopy(spec["paths"])
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    for model in PROBLEM_MODELS:
        found = model.model_json_schema(ref_template=_REF, mode="serialization")
        for name, sub in found.pop("$defs", {}).items():
            schemas.setdefault(name, sub)
        schemas[model.__name__] = found
    for route in _routes(app):
        for method in sorted(route.methods or ()):
            operation = spec["paths"][route.path_format][method.lower()]
            _restore_examples(operation, route.responses or {})
            _finish_operation(operation, _Facts(route, operation))
    spec["components"]["schemas"] = dict(sorted(schemas.items()))
    return spec


def _restore_examples(operation: dict[str, Any], declared: dict[int | str, Any]) -> None:
    """The route's response examples as written: FastAPI drops every null member from the
    document, which would make an example with `"benefit": null` false to its schema."""
    for status, response in declared.items():
        for media_type, media in (response.get("content") or {}).items():
            if "example" in media:
                target = operation["responses"][str(status)]["content"][media_type]
                target["example"] = copy.deepcopy(media["example"])
            for name, example in (media.get("examples") or {}).items():
                target = operation["responses"][str(status)]["content"][media_type]
                target["examples"][name] = copy.deepcopy(example)


def _finish_operation(operation: dict[str, Any], facts: _Facts) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    fastapi_422 = responses.get("422", {}).get("content", {}).get("application/json")
    if fastapi_422 is not None:  # FastAPI's default, HTTPValidationError under the wrong type
        del responses["422"]
    implied = problems(*facts.implied())
    for status, entry in implied.items():
        key = str(status)
        if key not in responses:
            responses[key] = copy.deepcopy(entry)
            continue
        have = responses[key].setdefault("content", {}).setdefault(PROBLEM_JSON, {})
        have.setdefault("examples", {})
        for code, example in entry["content"][PROBLEM_JSON]["examples"].items():
            have["examples"].setdefault(code, copy.deepcopy(example))
    for key, response in responses.items():
        status = int(key) if key.isdigit() else 0
        if status >= 400:
            _finish_problem(status, response)
        elif 200 <= status < 300 and facts.purpose:
            response.setdefault("headers", {}).update(copy.deepcopy(_RATE_HEADERS))
    operation["responses"] = dict(sorted(responses.items()))
    if facts.purpose:
        _require_purpose(operation)


def _finish_problem(status: int, response: dict[str, Any]) -> None:
    content = response.setdefault("content", {})
    content.pop("application/json", None)
    media = content.setdefault(PROBLEM_JSON, {})
    model = ValidationProblem if status in (400, 422) else Problem
    media["schema"] = {"$ref": _REF.format(model=model.__name__)}
    examples = media.get("examples") or {}
    if "example" in media:
        single = media.pop("example")
        examples.setdefault(single.get("code", "example"), {"value": single})
    media["examples"] = dict(sorted(examples.items()))
    titles = [e["value"]["title"] for e in media["examples"].values()]
    response["description"] = "; ".join(dict.fromkeys(titles)) or response.get("description", "")
    headers = response.setdefault("headers", {})
    if status == 401:
        headers.update(copy.deepcopy(_WWW_AUTHENTICATE))
    if status in (429, 503):
        headers.update(copy.deepcopy(_RETRY_AFTER))
    if status == 429:
        headers.update(copy.deepcopy(_RATE_HEADERS))
    if not headers:
        del response["headers"]


def _require_purpose(operation: dict[str, Any]) -> None:
    for parameter in operation.get("parameters", []):
        if parameter.get("in") == "header" and parameter.get("name") == "X-Purpose":
            parameter["required"] = True
            parameter["schema"] = {
                "type": "string",
                "pattern": PURPOSE_PATTERN.pattern,
                "title": "X-Purpose",
            }
            parameter["description"] = (
                "Why this data is processed: a purpose code registered for the client "
                "(UU 27/2022 purpose limitation). Missing or not registered: 403 "
                "`purpose_required`."
            )
