"""The GraphQL face at /graphql: POST only, domain error codes, orjson, the offline IDE."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import orjson
import strawberry
from cross_web import HTTPException
from fastapi import FastAPI, Request
from graphql import GraphQLSchema
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles
from strawberry.fastapi import GraphQLRouter
from strawberry.http import GraphQLHTTPResponse
from strawberry.types import ExecutionResult
from strawberry.types.unset import UNSET

from app.config import Settings
from app.graphql import errors
from app.graphql.context import RECORDED, GraphContext
from app.graphql.schema import build_schema
from app.http import problems
from app.http.request_ids import request_id_of
from app.services import lookup
from app.services.receipts import HEADER as RECEIPT

PATH = "/graphql"
MALFORMED = "the body is not valid JSON (or is nested deeper than 1,024 levels)"
BATCH = "batching is not supported: send one operation per request"
NOT_AN_OBJECT = "the body must be a JSON object with `query`, `variables` and `operationName`"
STATIC = "/graphql/static"
POST = {"Allow": "POST"}
_STATIC_DIR = Path(__file__).resolve().parent / "static"


async def get_context(request: Request) -> GraphContext:
    return GraphContext(request.app.state.tepat, request)


class TepatGraphQLRouter(GraphQLRouter[GraphContext, None]):
    """Strawberry's router with the project's error shape, JSON encoder and IDE page."""

    def __init__(self, settings: Settings) -> None:
        self.production = settings.is_production
        super().__init__(
            build_schema(self.production),
            path=PATH,
            graphql_ide=None if self.production else "graphiql",
            allow_queries_via_get=False,  # a query in a URL ends up in access logs
            context_getter=get_context,
            subscription_protocols=(),  # no subscriptions: no websocket endpoint to defend
            tags=["graphql"],
            include_in_schema=False,
        )
        page = (_STATIC_DIR / "ide.html").read_text(encoding="utf-8")
        self._ide = page.replace("{static}", STATIC).replace("{endpoint}", PATH)

    async def render_graphql_ide(self, request: Request) -> HTMLResponse:
        return HTMLResponse(self._ide)

    async def run(self, request: Any, context: Any = UNSET, root_value: Any = UNSET) -> Any:
        """Strawberry's run; what it refuses before execution (transport errors: bad JSON, a
        batch, an unknown operationName, a query by GET) is problem+json, values masked."""
        if request.method == "GET" and not self.should_render_graphql_ide(
            self.request_adapter_class(request)
        ):
            return self._transport_error(request, 405, "method_not_allowed", "use POST", POST)
        try:
            response = await super().run(request, context, root_value)
        except HTTPException as e:
            if e.status_code == 404:
                return self._transport_error(request, 404, "not_found", "no such resource")
            if e.status_code == 405:
                return self._transport_error(request, 405, "method_not_allowed", "use POST", POST)
            if e.reason == MALFORMED:
                return self._transport_error(request, 400, "malformed_json", MALFORMED)
            if e.reason == "Unsupported content type":
                detail = "send the request as `application/json`"
                return self._transport_error(request, 415, "unsupported_media_type", detail)
            detail = errors.masked(e.reason)
            return self._transport_error(request, 400, "graphql_request_invalid", detail)
        recorded = request.scope.get("state", {}).get(RECORDED)
        if recorded is not None and isinstance(response, Response):
            # Signed over the bytes as sent: data, errors and extensions (meta) alike.
            digest = hashlib.sha256(response.body).digest()
            pinned, done = recorded
            receipt = lookup.receipt(request.app.state.tepat.audit, pinned, done, digest)
            if receipt is not None:
                response.headers[RECEIPT] = receipt
        return response

    @staticmethod
    def _transport_error(
        request: Request,
        status: int,
        code: str,
        detail: str,
        headers: dict[str, str] | None = None,
    ) -> Response:
        return problems.response(problems.body(request.scope, status, code, detail), headers)

    def parse_json(self, data: str | bytes) -> Any:
        """orjson, which refuses nesting deeper than 1,024 (json.loads recurses until it fails);
        one operation per request, as an object."""
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise HTTPException(400, MALFORMED) from None
        if isinstance(doc, list):
            raise HTTPException(400, BATCH)
        if not isinstance(doc, dict):
            raise HTTPException(400, NOT_AN_OBJECT)
        return doc

    def encode_json(self, data: object) -> bytes:
        # orjson, like REST; the audit digest covers orjson.dumps(data), byte for byte.
        return orjson.dumps(data)

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        out: dict[str, Any] = {"data": result.data}
        if result.errors:
            rid = request_id_of(request.scope)
            out["errors"] = [errors.formatted(e, self.production, rid) for e in result.errors]
        if result.extensions:
            out["extensions"] = result.extensions
        return out  # type: ignore[return-value]

    def create_response(
        self,
        response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse],
        sub_response: Response,
    ) -> Response:
        response = super().create_response(response_data, sub_response)
        if isinstance(response_data, dict) and response_data.get("data") is None:
            # A request refused as a whole says why in its status too, as REST does (401, 403,
            # 422, 503 with Retry-After); answers with data, even partial, stay 200.
            errs: list[Any] = list(response_data.get("errors") or [])
            if errs:
                first = errs[0]["extensions"]
                response.status_code = errors.http_status(first["code"])
                if response.status_code in (429, 503):
                    seconds = max(1, math.ceil(float(first.get("retry_after") or 1)))
                    response.headers["Retry-After"] = str(seconds)
                elif response.status_code == 401:
                    # The gate refused any key sent that is not valid: none was sent.
                    response.headers["WWW-Authenticate"] = problems.CHALLENGE
        return response


def mount(app: FastAPI, settings: Settings) -> GraphQLSchema:
    """/graphql, and in dev and demo the IDE's assets (in production both IDE and
    introspection are off). Returns the executable schema (app.graphql.fast compiles against it)."""
    router = TepatGraphQLRouter(settings)
    app.include_router(router)
    if not settings.is_production:
        app.mount(STATIC, StaticFiles(directory=_STATIC_DIR), name="graphql-static")
    schema = router.schema
    assert isinstance(schema, strawberry.Schema)
    return schema._schema
