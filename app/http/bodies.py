"""JSON request bodies parsed with orjson, on every route that takes one.

The standard library's parser recurses once per nesting level: 400,000 `[` are a
RecursionError deep in the framework. orjson refuses documents nested deeper than 1,024 levels
with a JSONDecodeError (a subclass of the standard one), which FastAPI turns into a request
validation error of type `json_invalid`: app.http.problems answers 400 `malformed_json`.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response


class JsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = orjson.loads(await self.body())
        return self._json


class JsonRoute(APIRoute):
    """An APIRoute whose handler reads JSON bodies with orjson (app routers' `route_class`)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def with_orjson(request: Request) -> Response:
            return await handler(JsonRequest(request.scope, request.receive, request._send))

        return with_orjson
