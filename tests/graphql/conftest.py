"""GraphQL fixtures: the API fixtures (release, clients, app), a query helper, an SQL counter.

Counting SQL: every statement sent for the request is seen exactly once by one of two hooks
on the app's engine: SQLAlchemy's `before_cursor_execute` (statements SQLAlchemy executes,
which asyncpg runs as prepared statements and does not log) and asyncpg's query logger (what
goes to the driver directly: the registry's batch reads through `registry.driver(conn)`,
BEGIN and ROLLBACK, the pool's pre-ping). Only statements made in the test's own task and the
tasks it starts (DataLoader batches) count: the audit writer's task, started with the app,
does not carry the context variable.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event

_statements: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "graphql_test_statements", default=None
)


def _note(statement: str) -> None:
    log = _statements.get()
    if log is not None:
        log.append(" ".join(statement.split())[:120])


SqlCounter = Callable[[], Any]


@pytest.fixture(scope="session")
def count_sql(app: FastAPI) -> SqlCounter:
    """`async with count_sql() as statements:` lists the SQL statements run inside."""
    engine = app.state.tepat.engine

    def before_cursor_execute(*args: Any) -> None:
        _note(args[2])

    def on_query(record: Any) -> None:
        _note(record.query)

    def on_checkout(dbapi_connection: Any, *_: Any) -> None:
        # A set of callbacks: adding the same function on every checkout is idempotent.
        dbapi_connection.driver_connection.add_query_logger(on_query)

    event.listen(engine.sync_engine, "before_cursor_execute", before_cursor_execute)
    event.listen(engine.sync_engine.pool, "checkout", on_checkout)

    @asynccontextmanager
    async def counting() -> AsyncIterator[list[str]]:
        log: list[str] = []
        token = _statements.set(log)
        try:
            yield log
            await asyncio.sleep(0)  # query-logger callbacks run on the next loop turn
        finally:
            _statements.reset(token)

    return counting


async def gql(
    client: httpx.AsyncClient,
    query: str,
    variables: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return await client.post(
        "/graphql", json={"query": query, "variables": variables or {}}, headers=headers or {}
    )


def codes(body: dict[str, Any]) -> list[str]:
    return [e["extensions"]["code"] for e in body.get("errors", [])]
