"""GraphQL errors as clients see them: the domain error's code, masked identifiers, no internals."""

from __future__ import annotations

import logging
import re
from typing import Any

from graphql import GraphQLError, GraphQLSyntaxError

from app import resilience
from app.errors import ALL_ERRORS, TepatError
from app.identifiers import echo, mask

log = logging.getLogger("tepat.graphql")

PARSE_FAILED = "graphql_parse_failed"
VALIDATION_FAILED = "graphql_validation_failed"
INTERNAL = "internal"


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_DIGITS = re.compile(r"[0-9]{8,}")
_MAX_MESSAGE = 300


def masked(text: str) -> str:
    """graphql-core (and Strawberry, an operationName) echo bad values in messages: each quoted
    value is cut short (identifiers.echo), any run of 8 digits or more is masked (a NIK must
    not come back, nor a piece of one), and the message itself is bounded."""
    out = _QUOTED.sub(lambda m: m.group()[0] + echo(m.group()[1:-1]) + m.group()[0], text)
    out = _DIGITS.sub(lambda m: mask(m.group()), out)
    return out if len(out) <= _MAX_MESSAGE else out[:_MAX_MESSAGE] + "…"


def _safe(value: Any) -> Any:
    if isinstance(value, str):
        return masked(value)
    if isinstance(value, list | tuple):
        return [_safe(v) for v in value]
    return value


def _client_error(error: GraphQLError) -> bool:
    """The document or its variables are wrong: graphql-core's own errors, and scalars that
    refuse a variable's value while it is coerced (before any resolver, so no path)."""
    original = error.original_error
    if original is None:
        return True
    return error.path is None and isinstance(original, GraphQLError | ValueError | TypeError)


def domain_error(error: GraphQLError) -> TepatError | None:
    """The domain error behind a GraphQL error; a database outage becomes Unavailable, classified
    by app.resilience as for REST."""
    original = error.original_error
    if isinstance(original, TepatError):
        return original
    if original is not None and resilience.is_unavailable(original):
        return resilience.unavailable(original)
    return None


def code_of(error: GraphQLError) -> str:
    domain = domain_error(error)
    if domain is not None:
        return domain.code
    if _client_error(error):
        return PARSE_FAILED if isinstance(error, GraphQLSyntaxError) else VALIDATION_FAILED
    return INTERNAL


_STATUS = {e.code: e.status for e in ALL_ERRORS} | {
    PARSE_FAILED: 400,
    VALIDATION_FAILED: 400,
    INTERNAL: 500,
}


def http_status(code: str) -> int:
    """The HTTP status of a request that fails as a whole (no data) with this error code."""
    return _STATUS.get(code, 500)


def formatted(error: GraphQLError, production: bool, request_id: str) -> dict[str, Any]:
    out = error.formatted
    original = error.original_error
    domain = domain_error(error)
    extensions: dict[str, Any] = {"code": code_of(error)}
    if domain is not None:
        message = domain.detail
        extensions.update((k, _safe(v)) for k, v in domain.extra.items())
        if domain is not original and resilience.outage_log.due():
            held = resilience.outage_log.take()
            log.warning("database unavailable: %s (%d more since)", type(original).__name__, held)
    elif _client_error(error):
        message = error.message
    else:
        log.error(
            "unhandled error in a resolver",
            exc_info=original,
            extra={"request_id": request_id},
        )
        message = "internal error" if production else f"{type(original).__name__}: {original}"
        extensions["request_id"] = request_id
    out["message"] = masked(message)
    out["extensions"] = extensions
    return dict(out)
