"""`POST /graphql` for compiled `person` documents, answered without executing them.

A pure-ASGI layer (app.http.fast) like the REST lookup's, for GraphQL. It takes a request only when the whole happy
path holds: a JSON body of `query`, `variables` and `operationName`; a document app.graphql.
compiled compiled; a well-formed NIK and snapshot id; a valid key, a registered purpose and
every field group the document selects; a known snapshot; tokens in the client's bucket. It
then runs the REST lookup (stored decisions, coalesced), shapes `data` from that answer and
writes the same audit record the Strawberry path writes (operation `graphql`, the NIK and the
NIKs the decisions disclose, the digest of `data`). At any other point, and on any error,
the request goes to Strawberry untouched (its body replayed), which answers or refuses it as
always: nothing that can refuse a request has side effects before then, and tokens taken are
given back.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from graphql import GraphQLSchema
from graphql.validation import ASTValidationRule, NoSchemaIntrospectionCustomRule
from starlette.types import ASGIApp, Scope

from app.errors import TepatError
from app.graphql import extensions
from app.graphql.compiled import Plan, Plans
from app.graphql.context import OPERATION
from app.graphql.gate import admitted
from app.http import limits
from app.http.caller import require_groups
from app.http.fast import FastPath, FastStats, Head, caller_of
from app.http.state import state_of
from app.identifiers import SNAPSHOT_ID, is_nik
from app.services import eligibility, lookup
from app.services.audit import new_audit_id, nik_subject
from app.services.lookup import Caller

PATH = "/graphql"
_KEYS = frozenset({"query", "variables", "operationName", "extensions"})


class FastGraphQL(FastPath):
    path = PATH

    def __init__(
        self, app: ASGIApp, *, stats: FastStats, schema: GraphQLSchema, production: bool
    ) -> None:
        super().__init__(app, stats=stats)
        rules: tuple[type[ASTValidationRule], ...] = tuple(extensions.LIMIT_RULES)
        if production:
            rules += (NoSchemaIntrospectionCustomRule,)
        self.plans = Plans(schema, rules, extensions.MAX_TOKENS)
        self._plain: dict[frozenset[str], eligibility.View] = {}

    async def answer(self, scope: Scope, body: bytes, head: Head) -> lookup.Answer | None:
        if not _plain_json(head.content_type) or head.accepts_stream:
            return None
        request = _request(body)
        if request is None:
            return None
        query, variables, operation_name = request
        plan = self.plans.get(query, operation_name)
        if plan is None:
            return None
        bound = _bind(plan, variables)
        if bound is None:
            return None
        nik, snapshot_id = bound
        state = state_of(scope)
        try:
            # The gate (app.graphql.gate) checked key and purpose before the body was read.
            caller = admitted(scope) or await caller_of(scope, head)
            principal = caller.principal
            require_groups(principal, plan.needs.groups)
            view = self._view(caller, plan)
            pinned = await state.reads.pin(snapshot_id, None)
        except TepatError:
            return None  # Strawberry refuses it, in GraphQL's shape
        allowance = limits.allowance_of(scope["app"])
        if allowance is not None and not allowance.try_spend(principal, 1):
            try:  # usually spent from this process's lease above; here a new lease is due
                await allowance.charge(principal, 1)
            except TepatError:
                return None  # over the rate or quota: nothing taken, Strawberry refuses it
        try:
            rendered = await eligibility.people_read(
                state.reads, pinned.snapshot, pinned.rule_set, [nik], view
            )
            answer: dict[str, Any] = orjson.loads(rendered.parts[0])
            data = plan.data(answer)
            subjects = [nik_subject(nik)]
            if plan.eligibility:
                disclosed = eligibility.disclosed_niks([answer], (nik,))
                subjects += [nik_subject(n) for n in sorted(disclosed)]
            audit_id = new_audit_id()
            meta = pinned.meta(caller.request_id, audit_id)
            out = orjson.dumps({"data": data, "extensions": {"meta": meta}})
            recorded = await lookup.record_access(
                state.audit, caller, audit_id, OPERATION, pinned, subjects, rendered.found,
                orjson.dumps(data),
                sign=True,
                sent_digest=hashlib.sha256(out).digest(),  # the receipt covers the whole response
            )  # fmt: skip
        except Exception:
            if allowance is not None:
                allowance.refund(principal, 1)
            return None  # nothing was sent: Strawberry runs it and answers (or fails) as ever
        return lookup.Answer(out, recorded.receipt)

    def _view(self, caller: Caller, plan: Plan) -> eligibility.View:
        if plan.eligibility:  # all granted programs, as `eligibility` without arguments
            return lookup.view_for(caller, None, False)
        groups = frozenset(caller.principal.field_groups) - {"decision"}
        view = self._plain.get(groups)
        if view is None:
            view = self._plain[groups] = eligibility.View(programs=(), groups=groups)
        return view


def _plain_json(value: bytes | None) -> bool:
    """`application/json` itself (Strawberry's test is a substring one; this is stricter)."""
    return value is not None and value.split(b";", 1)[0].strip().lower() == b"application/json"


def _request(body: bytes) -> tuple[str, dict[str, Any], str | None] | None:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(doc) is not dict or not _KEYS.issuperset(doc) or doc.get("extensions"):
        return None
    query = doc.get("query")
    variables = doc.get("variables")
    operation_name = doc.get("operationName")
    if (
        type(query) is not str
        or (variables is not None and type(variables) is not dict)
        or (operation_name is not None and type(operation_name) is not str)
    ):
        return None
    return query, variables or {}, operation_name


def _bind(plan: Plan, variables: dict[str, Any]) -> tuple[str, str | None] | None:
    """The NIK and snapshot id if every declared variable is a string (or an absent optional
    one) and both are well formed; else None (Strawberry reports what is wrong)."""
    for name in plan.declared:
        value = variables.get(name)
        if value is None and name in plan.required:
            return None
        if value is not None and type(value) is not str:
            return None
    nik = plan.nik.bind(variables)
    if type(nik) is not str or not is_nik(nik):
        return None
    snapshot = None if plan.snapshot is None else plan.snapshot.bind(variables)
    if snapshot is not None and (type(snapshot) is not str or not SNAPSHOT_ID.fullmatch(snapshot)):
        return None
    return nik, snapshot
