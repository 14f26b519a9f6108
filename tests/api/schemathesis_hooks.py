"""Schemathesis hooks (SCHEMATHESIS_HOOKS): NDJSON bodies for the bulk endpoint, both ways."""

from __future__ import annotations

from typing import Any

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson_body(ctx: Any, value: Any) -> bytes:
    # The schema documents the body as a string of lines; anything else is sent as its text.
    return value.encode() if isinstance(value, str) else str(value).encode()


@schemathesis.deserializer("application/x-ndjson")
def ndjson_answer(ctx: Any, response: Any) -> str:
    text: str = response.content.decode()
    return text


@schemathesis.hook
def filter_body(ctx: Any, body: Any) -> bool:
    """The bulk bodies are text (NDJSON, CSV): a generated value that is not a string is sent
    as its text, which is still a valid body of lines (a bad line is an error line, never a
    refused job), so only strings are sent there."""
    operation = ctx.operation
    if operation is not None and operation.path.startswith("/v1/bulk/"):
        return isinstance(body, str)
    return True
