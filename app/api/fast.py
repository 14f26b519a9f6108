"""`POST /v1/people/lookup` without the framework's per-request machinery, same contract.

The route in app.api.routes.lookup stays the definition: its pydantic model documents the body
and produces every validation error. This pure-ASGI layer (app.http.fast) sits inside the
request context, rate limiting, shedding and deadline middleware and takes only requests it can
check whole and cheaply: a JSON body of exactly the documented fields with valid values. It then
runs the same steps as the route (the caller, the charge, `lookup.people_lookup`) and renders
any error with the app's own exception handlers. Anything else, a bad NIK, an unknown field, an
`explain` that is not a boolean, another content type, is handed to the route untouched, so the
client gets the route's answer. A single-NIK lookup spends about a third of its time in
dependency resolution and body validation; this path does not.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from starlette.types import Scope

from app.auth.principal import PROGRAMS
from app.config import MAX_BATCH
from app.http.caller import charge
from app.http.fast import FastPath, Head, caller_of
from app.http.state import state_of
from app.identifiers import RULE_SET_ID, SNAPSHOT_ID, is_nik
from app.services import lookup

PATH = "/v1/people/lookup"
_FIELDS = frozenset({"niks", "snapshot", "rule_set", "programs", "explain"})
_PROGRAMS = frozenset(PROGRAMS)


@dataclass(frozen=True, slots=True)
class Plain:
    """A lookup body `parse` accepted whole: what PeopleLookup would hold, without building it."""

    niks: list[str]
    snapshot: str | None
    rule_set: str | None
    programs: list[str] | None
    explain: bool


def parse(body: bytes, max_batch: int = MAX_BATCH) -> Plain | None:
    """The request if the body is plainly valid (the model would accept it as is, and it names
    at most `max_batch` NIKs: the configured limit), else None."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(doc) is not dict or not _FIELDS.issuperset(doc):
        return None
    niks = doc.get("niks")
    if type(niks) is not list or not 1 <= len(niks) <= max_batch:
        return None
    for nik in niks:
        if type(nik) is not str or not is_nik(nik):
            return None
    snapshot = doc.get("snapshot")
    if snapshot is not None and (type(snapshot) is not str or not SNAPSHOT_ID.fullmatch(snapshot)):
        return None
    rule_set = doc.get("rule_set")
    if rule_set is not None and (type(rule_set) is not str or not RULE_SET_ID.fullmatch(rule_set)):
        return None
    programs = doc.get("programs")
    if programs is not None and (
        type(programs) is not list
        or not programs
        or not all(type(p) is str and p in _PROGRAMS for p in programs)
    ):
        return None
    explain = doc.get("explain", False)
    if type(explain) is not bool:
        return None
    return Plain(niks, snapshot, rule_set, programs, explain)


class FastLookup(FastPath):
    path = PATH

    async def answer(self, scope: Scope, body: bytes, head: Head) -> lookup.Answer | None:
        state = state_of(scope)
        request = parse(body, state.settings.max_batch)
        if request is None:
            return None
        # The route's steps, in its order (app.api.deps.caller, then the route body).
        caller = await caller_of(scope, head)
        await charge(scope, caller.principal, len(request.niks))  # 429 before any SQL
        return await lookup.people_lookup(state.reads, state.audit, caller, request)
