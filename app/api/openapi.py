"""OpenAPI pieces: the problem+json schema and per-route problem responses with examples."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from starlette.responses import Response

from app.errors import PROBLEM_BASE
from app.services.lookup import Answer
from app.services.receipts import HEADER as RECEIPT

PROBLEM_EXAMPLES: dict[int, tuple[str, str, str]] = {
    400: ("malformed_json", "The request body is not valid JSON", "Expecting value"),
    401: ("unauthenticated", "A valid API key is required", "missing or invalid API key"),
    403: ("forbidden", "Not granted to this client", "program PKH is not granted to this client"),
    404: ("snapshot_not_found", "No such snapshot", "no snapshot '2019-01-01' is loaded"),
    409: (
        "no_rule_set_in_force",
        "No rule set is in force on the snapshot's cut-off date",
        "no rule set is in force on 2024-01-31",
    ),
    408: (
        "idle_timeout",
        "The request body stopped arriving",
        "no request body bytes arrived for 30 s; the stream is ended",
    ),
    410: ("snapshot_retired", "The snapshot is retired", "snapshot 2025-09-30 was retired"),
    413: ("payload_too_large", "The request body is too large", "at most 1000000 bytes"),
    415: (
        "unsupported_media_type",
        "The body's Content-Type is not one this endpoint reads",
        "a bulk job's body is application/x-ndjson (one NIK a line) or text/csv; got text/plain",
    ),
    416: (
        "range_not_satisfiable",
        "The requested byte range is outside the answer",
        "the answer is 27,000,512 bytes; bytes 30000000- are past it",
    ),
    422: (
        "validation_failed",
        "The request is not valid",
        "1 problem(s); first: niks[0]: NIK must be 16 digits (nik_format)",
    ),
    429: ("rate_limited", "Too many lookups; retry later", "limit of NIK lookups reached"),
    503: (
        "unavailable",
        "The service is temporarily unavailable; retry later",
        "the database did not answer in time",
    ),
}


class FieldProblem(BaseModel):
    field: str = Field(examples=["niks[0]"])
    message: str
    rule: str | None = None
    value: Any = Field(None, description="The offending value; a NIK or No. KK is masked")


class Problem(BaseModel):
    """RFC 9457 problem details. `code` is stable; match on it (or on `type`)."""

    type: str = Field(examples=[PROBLEM_BASE + "validation-failed"])
    title: str
    status: int
    detail: str
    code: str = Field(examples=["validation_failed"])
    request_id: str | None = None
    field: str | None = Field(None, description="Validation: the first failing field")
    errors: list[FieldProblem] | None = None


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        code, title, detail = PROBLEM_EXAMPLES[status]
        example = {
            "type": PROBLEM_BASE + code.replace("_", "-"),
            "title": title,
            "status": status,
            "detail": detail,
            "code": code,
            "request_id": "5f0c6b0e9f3a4c1d",
        }
        out[status] = {
            "model": Problem,
            "description": title,
            "content": {"application/problem+json": {"example": example}},
        }
    return out


DATA_PROBLEMS = problems(400, 401, 403, 404, 409, 410, 413, 422, 429, 503)


RECEIPT_HEADER: dict[str, Any] = {
    "Tepat-Receipt": {
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


def answered(answer: Answer) -> Response:
    """A data answer's bytes as rendered, with its receipt header."""
    headers = None if answer.receipt is None else {RECEIPT: answer.receipt}
    return Response(answer.body, media_type="application/json", headers=headers)
