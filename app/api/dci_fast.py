"""`POST /dci/registry/sync/search` without the framework's per-request machinery, same contract.

As app.api.fast for `people/lookup`: the route (app.api.routes.dci) stays the definition and
produces every validation error. This pure-ASGI layer takes only a body the route's model
accepts whole, with a header the route would accept, then runs the route's steps (the caller,
the charge, the search) and renders errors as the route does (the problem with the standard's
ERR acknowledgement). Anything else is handed to the route untouched.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.types import Scope

from app.api.routes.dci import dci_problem, searched
from app.errors import TepatError
from app.http.fast import FastPath, Head, caller_of
from app.http.state import state_of
from app.schemas.dci import DciSearchEnvelope
from app.services import dci, signatures
from app.services.lookup import Answer

PATH = "/dci/registry/sync/search"


class FastDci(FastPath):
    path = PATH

    async def answer(self, scope: Scope, body: bytes, head: Head) -> Answer | None:
        try:
            envelope = DciSearchEnvelope.model_validate_json(body)
            dci.check_header(envelope.header, "search")
            dci.check_total(envelope.header, len(envelope.message.search_request))
        except (ValidationError, TepatError):
            return None  # the route answers it, naming the field
        caller = await caller_of(scope, head)
        signatures.check_request(caller.principal, body)
        return await searched(state_of(scope), caller, envelope, scope)

    async def error_response(self, scope: Scope, error: Exception) -> Any:
        return await dci_problem(Request(scope), error)
