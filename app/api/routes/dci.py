"""The DCI Social Registry face under /dci/ (docs/dci.md): transport only, the work is
app.services.dci over the lookup services.

Refusals are the REST problems (application/problem+json, naming the field), each also carrying
the standard's acknowledgement: `message.ack_status` ERR with `error.code` (`err.request.bad`,
`err.sender_uri.invalid`, ...), so a DCI client reads them as the standard says.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from starlette.responses import Response
from starlette.types import Scope

from app.api.dci_examples import (
    DCI_ACK_EXAMPLE,
    DCI_SEARCH_ANSWER_EXAMPLE,
    DCI_SEARCH_EXAMPLE,
    DCI_SUBSCRIBE_EXAMPLE,
    DCI_TXN_STATUS_ANSWER_EXAMPLE,
    DCI_TXN_STATUS_EXAMPLE,
    DCI_UNSUBSCRIBE_EXAMPLE,
)
from app.api.deps import CallerDep, State
from app.api.openapi import DATA_PROBLEMS, RECEIPT_HEADER, answered, problems
from app.errors import BulkNotGranted, CallbackNotAllowed, TepatError
from app.http import limits
from app.http import problems as problem_answers
from app.http.bodies import JsonRoute
from app.http.caller import charge
from app.http.state import AppState, state_of
from app.resilience import DATABASE_ERRORS
from app.schemas.dci import (
    DciAck,
    DciSearchAnswer,
    DciSearchEnvelope,
    DciSubscribeEnvelope,
    DciTxnStatusAnswer,
    DciTxnStatusEnvelope,
    DciUnsubscribeEnvelope,
)
from app.services import dci, signatures
from app.services import dci_subscriptions as subscriptions
from app.services.lookup import Answer, Caller
from app.services.worker import enqueue_dci


async def dci_problem(request: Request, error: Exception) -> Response | None:
    """The app's problem answer for `error`, with the standard's ERR acknowledgement added
    (None: not an error the app answers; re-raise it)."""
    if isinstance(error, RequestValidationError):
        return _with_ack(await problem_answers.validation_error(request, error), None)
    if isinstance(error, TepatError):
        return _with_ack(await problem_answers.tepat_error(request, error), error)
    if isinstance(error, DATABASE_ERRORS):
        return _with_ack(await problem_answers.database_error(request, error), None)
    return None


class DciRoute(JsonRoute):
    """A JSON route whose refusals also carry the standard's ERR acknowledgement."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def with_ack(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as e:
                answer = await dci_problem(request, e)
                if answer is None:
                    raise
                return answer

        return with_ack


def _with_ack(answer: Response, error: TepatError | None) -> Response:
    problem = orjson.loads(bytes(answer.body))
    code = dci.dci_code(error) if error is not None else None
    if code is None:
        code = {401: "err.request.unauthorized", 403: "err.request.forbidden"}.get(
            answer.status_code,
            "err.service.unavailable" if answer.status_code >= 500 else "err.request.bad",
        )
    problem.pop("dci_code", None)
    message = str(problem.get("detail", ""))
    if code not in dci.ACK_ERRORS:  # a header's rjct.* reason: named in the message
        message, code = f"{code}: {message}", "err.request.bad"
    problem["message"] = {
        "ack_status": "ERR",
        "timestamp": dci.now().isoformat(),
        "correlation_id": problem.get("request_id", ""),
        "error": {"code": code, "message": message[:999]},
    }
    headers = {k: v for k, v in answer.headers.items() if k.lower() != "content-length"}
    return Response(orjson.dumps(problem), status_code=answer.status_code, headers=headers)


router = APIRouter(tags=["dci"], route_class=DciRoute)

_DESCRIPTION = (
    "The DCI (SPDCI) Social Registry search, over the same lookups, disclosure, audit and "
    "receipts as `/v1/people/lookup` and `/v1/families/lookup`. Query types: `idtype-value` "
    "(`NIK` answers a Person, `KK` a Group with its Members), `expression` and `predicate` on "
    "`poverty_score` (decile), `region_code`, `age`, `sex` and `household_size` (paged, at "
    "most 100 a page). A record carries only what the client's field groups allow; filtering "
    "on an attribute needs its group. The snapshot and rule set are in `header.meta` (pin "
    "them with `header.meta.snapshot` and `header.meta.rule_set`). An item that cannot be "
    "answered is `rjct` with the standard's reason code; the others are answered."
)


async def searched(
    state: AppState, caller: Caller, envelope: DciSearchEnvelope, scope: Scope
) -> Answer:
    """A sync search end to end (the route, and the fast path of app.api.dci_fast)."""
    items = len(envelope.message.search_request)
    await charge(scope, caller.principal, items)  # 429 before any SQL
    correlation_id = dci.new_correlation_id()
    result = await dci.search(
        dci.reads_source(state.reads),
        caller,
        envelope.header,
        envelope.message,
        correlation_id,
        dci.recorder(state.audit, caller),
        state.audit,
    )
    if result.disclosed > items:  # records beyond one an item: charged once known
        limits.debit(scope, caller.principal, result.disclosed - items)
    row = dci.sync_row(
        caller, envelope.header.message_id, envelope.message.transaction_id, correlation_id, result
    )
    sync_log(scope).add(row)  # written after the answer, in batches
    return Answer(result.body, result.receipt)


def sync_log(scope: Scope) -> dci.SyncLog:
    """This app's log of sync search states (made at its first search; flushed at shutdown)."""
    app_state = scope["app"].state
    found: dci.SyncLog | None = getattr(app_state, "dci_sync_log", None)
    if found is None:
        state = state_of(scope)
        found = dci.SyncLog(lambda: _primary(state))
        app_state.dci_sync_log = found
    return found


@router.post(
    "/registry/sync/search",
    summary="DCI search, answered at once",
    description=_DESCRIPTION,
    response_model=DciSearchAnswer,
    openapi_extra={
        "requestBody": {"content": {"application/json": {"example": DCI_SEARCH_EXAMPLE}}}
    },
    responses={
        **DATA_PROBLEMS,
        200: {
            "content": {"application/json": {"example": DCI_SEARCH_ANSWER_EXAMPLE}},
            "headers": RECEIPT_HEADER,
        },
    },
)
async def lookup_registry_sync(
    body: DciSearchEnvelope, state: State, caller: CallerDep, request: Request
) -> Response:
    signatures.check_request(caller.principal, await request.body())
    dci.check_header(body.header, "search")
    dci.check_total(body.header, len(body.message.search_request))
    return answered(await searched(state, caller, body, request.scope))


@router.post(
    "/registry/search",
    summary="DCI search, answered to the caller's on-search callback",
    description=(
        "Acknowledged at once (`ack_status` ACK with the `correlation_id`); the answer, the "
        "same as `sync/search`'s, is POSTed to `header.sender_uri` + `/on-search`, which must "
        "lie under the client's registered callback prefix (otherwise 403 "
        "`err.sender_uri.invalid`, and nothing is sent). Failed deliveries are retried with "
        "backoff a bounded number of times. The search is audited when it is answered."
    ),
    response_model=DciAck,
    openapi_extra={
        "requestBody": {"content": {"application/json": {"example": DCI_SEARCH_EXAMPLE}}}
    },
    responses={
        **DATA_PROBLEMS,
        **problems(CallbackNotAllowed),
        200: {"content": {"application/json": {"example": DCI_ACK_EXAMPLE}}},
    },
)
async def submit_registry_search(
    body: DciSearchEnvelope, state: State, caller: CallerDep, request: Request
) -> Response:
    signatures.check_request(caller.principal, await request.body())
    dci.check_header(body.header, "search")
    dci.check_total(body.header, len(body.message.search_request))
    url = dci.callback_url(caller.principal, body.header.sender_uri, "/on-search")
    await charge(request.scope, caller.principal, len(body.message.search_request))
    await state.reads.pin(*dci.pins(body.header))  # an unknown snapshot is refused now
    envelope = body.model_dump(mode="json", exclude_none=True)
    async with _primary(state) as conn:
        correlation_id = await dci.submit_async(
            conn, caller, envelope, body.header, body.message, url, enqueue_dci
        )
    return _ack(str(correlation_id))


def _primary(state: AppState) -> Any:
    """A connection of the primary: DCI transactions are written, and read back at once (a
    replica may not have replayed them yet)."""
    return state.reads.pool.acquire(timeout=state.reads.acquire_timeout)


def _ack(correlation_id: str) -> Response:
    ack = {
        "message": {
            "ack_status": "ACK",
            "timestamp": dci.now().isoformat(),
            "correlation_id": correlation_id,
        }
    }
    return Response(orjson.dumps(ack), media_type="application/json")


async def _status(
    state: AppState, caller: Caller, body: DciTxnStatusEnvelope, scope: Scope
) -> bytes:
    await sync_log(scope).flush()  # this process's latest sync searches are seen
    query = body.message.txnstatus_request
    async with _primary(state) as conn:
        found = await dci.status_of(
            conn, caller.principal, query.attribute_type, query.attribute_value, query.txn_type
        )
    refs = None
    if query.attribute_type == "reference_id_list":
        v = query.attribute_value
        refs = {v} if isinstance(v, str) else set(v)
    answer = dci.status_body(
        body.header, body.message.transaction_id, query.txn_type, found, refs, query.reference_id
    )
    return signatures.sign(state.keyring, answer["header"], answer["message"])


@router.post(
    "/registry/sync/txn/status",
    summary="The state of the client's earlier DCI requests",
    description=(
        "By `transaction_id`, `correlation_id` (the one Tepat answered with) or a "
        "`reference_id_list`: each matching request item's status (`pdng`, `succ`, `rjct`) "
        "and reason code. Only the calling client's own requests are ever seen; no record "
        "data is repeated (it was disclosed, and audited, once)."
    ),
    response_model=DciTxnStatusAnswer,
    openapi_extra={
        "requestBody": {"content": {"application/json": {"example": DCI_TXN_STATUS_EXAMPLE}}}
    },
    responses={200: {"content": {"application/json": {"example": DCI_TXN_STATUS_ANSWER_EXAMPLE}}}},
)
async def get_txn_status_sync(
    body: DciTxnStatusEnvelope, state: State, caller: CallerDep, request: Request
) -> Response:
    signatures.check_request(caller.principal, await request.body())
    dci.check_header(body.header, "txn-status")
    return Response(
        await _status(state, caller, body, request.scope), media_type="application/json"
    )


@router.post(
    "/registry/txn/status",
    summary="The state of earlier DCI requests, answered to txn/on-status",
    description=(
        "As `sync/txn/status`, acknowledged at once; the answer is POSTed to "
        "`header.sender_uri` + `/txn/on-status` (under the registered callback prefix)."
    ),
    response_model=DciAck,
    openapi_extra={
        "requestBody": {"content": {"application/json": {"example": DCI_TXN_STATUS_EXAMPLE}}}
    },
    responses={
        **problems(CallbackNotAllowed),
        200: {"content": {"application/json": {"example": DCI_ACK_EXAMPLE}}},
    },
)
async def get_txn_status(
    body: DciTxnStatusEnvelope, state: State, caller: CallerDep, request: Request
) -> Response:
    signatures.check_request(caller.principal, await request.body())
    dci.check_header(body.header, "txn-status")
    url = dci.callback_url(caller.principal, body.header.sender_uri, "/txn/on-status")
    answer = await _status(state, caller, body, request.scope)
    async with _primary(state) as conn:
        correlation_id = await dci.submit_callback(conn, caller, body, url, answer, enqueue_dci)
    return _ack(str(correlation_id))


@router.post(
    "/registry/subscribe",
    summary="DCI subscribe: be notified of eligibility changes between releases",
    description=(
        "Acknowledged at once; the answer (`SubscribeResponse`, each subscription's `code`) is "
        "POSTed to `header.sender_uri` + `/on-subscribe`. When a release is published and its "
        "decisions stored, each subscription is sent `notify` callbacks (to `header.sender_uri` "
        "+ `/notify`) naming the people whose eligibility changed against the release before, "
        "as a change list would (`/v1/changes`): the same grants (bulk, field group "
        "`decision`), field groups and audit. `filter`: a predicate list on `program` and "
        "`change` (eq, in) and `region_code` (eq, a 2-10 digit prefix), ANDed (docs/dci.md)."
    ),
    response_model=DciAck,
    openapi_extra={
        "requestBody": {"content": {"application/json": {"example": DCI_SUBSCRIBE_EXAMPLE}}}
    },
    responses={
        **problems(CallbackNotAllowed, BulkNotGranted),
        200: {"content": {"application/json": {"example": DCI_ACK_EXAMPLE}}},
    },
)
async def create_registry_subscription(
    body: DciSubscribeEnvelope, state: State, caller: CallerDep, request: Request
) -> Response:
    signatures.check_request(caller.principal, await request.body())
    dci.check_header(body.header, "subscribe")
    dci.check_total(body.header, len(body.message.subscribe_request))
    subscriptions.check_grants(caller.principal)
    base = subscriptions.base_of(body.header.sender_uri, "/on-subscribe")
    url = dci.callback_url(caller.principal, base, "/on-subscribe")
    notify_url = dci.callback_url(caller.principal, base, "/notify")
    async with _primary(state) as conn:
        correlation_id = await subscriptions.subscribe(
            conn, caller, body.header, body.message, url, notify_url, state.keyring, enqueue_dci
        )
    return _ack(str(correlation_id))


@router.post(
    "/registry/unsubscribe",
    summary="DCI unsubscribe: end the client's own subscriptions",
    description=(
        "Acknowledged at once; the answer (`UnSubscribeResponse`) is POSTed to "
        "`header.sender_uri` + `/on-unsubscribe`. Only the client that made a subscription "
        "can end it: another's code is answered as an unknown one "
        "(`rjct.subscription_code.invalid`)."
    ),
    response_model=DciAck,
    openapi_extra={
        "requestBody": {"content": {"application/json": {"example": DCI_UNSUBSCRIBE_EXAMPLE}}}
    },
    responses={
        **problems(CallbackNotAllowed),
        200: {"content": {"application/json": {"example": DCI_ACK_EXAMPLE}}},
    },
)
async def delete_registry_subscription(
    body: DciUnsubscribeEnvelope, state: State, caller: CallerDep, request: Request
) -> Response:
    signatures.check_request(caller.principal, await request.body())
    dci.check_header(body.header, "unsubscribe")
    dci.check_total(body.header, len(body.message.subscription_codes))
    base = subscriptions.base_of(body.header.sender_uri, "/on-unsubscribe")
    url = dci.callback_url(caller.principal, base, "/on-unsubscribe")
    async with _primary(state) as conn:
        correlation_id = await subscriptions.unsubscribe(
            conn, caller, body.header, body.message, url, state.keyring, enqueue_dci
        )
    return _ack(str(correlation_id))
