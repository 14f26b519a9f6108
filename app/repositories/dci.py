"""SQL of the DCI face: attribute searches over a snapshot, and the DCI transactions.

An attribute search is one statement over the snapshot's people joined to their families, its
conditions built here from a closed list of attributes (never from the caller's text), every
value a bound parameter. It is bounded: the page is at most 100 NIKs in NIK order, its offset
at most 100,000, and the count stops at `COUNT_CAP` (the answer then says so).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

COUNT_CAP = 10_000


@dataclass(frozen=True, slots=True)
class Condition:
    """One `attribute op value`, already checked: `attribute` is a key of COLUMNS, `values` the
    bound values (one, or several for `in`; for region, (low, high) pairs)."""

    attribute: str
    op: str
    values: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Clause:
    """expression1 [condition expression2]: the clauses of a predicate are ANDed."""

    first: Condition
    condition: str | None = None  # and, or, not (and not)
    second: Condition | None = None


# What each searchable attribute is in SQL (p: the person, f: their family).
COLUMNS = {
    "decile": "f.decile",
    "region": "f.region_code",
    "birth_date": "p.birth_date",
    "sex": "p.sex",
    "household_size": (
        "(SELECT count(*) FROM people q WHERE q.snapshot_key = p.snapshot_key "
        "AND q.no_kk = p.no_kk)"
    ),
}
_OPS = {"eq": "=", "gt": ">", "lt": "<", "ge": ">=", "le": "<="}


def _condition(c: Condition, args: list[Any]) -> str:
    column = COLUMNS[c.attribute]
    if c.attribute == "region":  # (low, high) ranges of the code's prefix
        parts = []
        for low, high in c.values:
            args += [low, high]
            parts.append(f"{column} BETWEEN ${len(args) - 1} AND ${len(args)}")
        return "(" + " OR ".join(parts) + ")"
    if c.op == "in":
        args.append(list(c.values))
        cast = "date" if c.attribute == "birth_date" else "int8"
        return f"{column} = ANY(${len(args)}::{cast}[])"
    if c.op == "between":  # an age: birth dates in (low, high]
        args += list(c.values)
        return f"({column} > ${len(args) - 1} AND {column} <= ${len(args)})"
    args.append(c.values[0])
    return f"{column} {_OPS[c.op]} ${len(args)}"


def _where(clauses: Sequence[Clause], args: list[Any]) -> str:
    out = []
    for clause in clauses:
        text = _condition(clause.first, args)
        if clause.second is not None:
            second = _condition(clause.second, args)
            if clause.condition == "or":
                text = f"({text} OR {second})"
            elif clause.condition == "not":
                text = f"({text} AND NOT {second})"
            else:
                text = f"({text} AND {second})"
        out.append(text)
    return " AND ".join(out) or "true"


async def matching(
    conn: asyncpg.Connection,
    snapshot_key: int,
    clauses: Sequence[Clause],
    limit: int,
    offset: int,
) -> tuple[list[str], int]:
    """The NIKs of the page (NIK order) and how many match in all, counted up to COUNT_CAP."""
    args: list[Any] = [snapshot_key]
    where = _where(clauses, args)
    base = (
        "FROM people p JOIN families f ON f.snapshot_key = p.snapshot_key AND f.no_kk = p.no_kk "
        f"WHERE p.snapshot_key = $1 AND f.snapshot_key = $1 AND {where}"
    )
    n = len(args)
    rows = await conn.fetch(
        f"SELECT p.nik {base} ORDER BY p.nik LIMIT ${n + 1} OFFSET ${n + 2}", *args, limit, offset
    )
    total = await conn.fetchval(
        f"SELECT count(*) FROM (SELECT 1 {base} LIMIT ${n + 1}) s", *args, COUNT_CAP
    )
    return [f"{r[0]:016d}" for r in rows], int(total)


# --- transactions ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transaction:
    id: uuid.UUID
    client_id: str
    transaction_id: str
    message_id: str
    action: str
    mode: str
    status: str
    purpose: str
    request_id: str
    outcome: list[dict[str, Any]]
    request: bytes | None
    callback_url: str | None
    response: bytes | None
    attempts: int
    last_error: str | None
    delivered_at: dt.datetime | None
    created_at: dt.datetime


_TXN = """id, client_id, transaction_id, message_id, action, mode, status, purpose, request_id,
    outcome, request, callback_url, response, attempts, last_error, delivered_at, created_at"""


def _txn(row: asyncpg.Record) -> Transaction:
    values = dict(row)
    values["outcome"] = orjson.loads(values["outcome"])
    return Transaction(**values)


async def insert(
    conn: asyncpg.Connection,
    *,
    id: uuid.UUID,
    client_id: str,
    transaction_id: str,
    message_id: str,
    action: str,
    mode: str,
    status: str,
    purpose: str,
    request_id: str,
    outcome: list[dict[str, Any]],
    request: bytes | None = None,
    callback_url: str | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO dci_transactions (id, client_id, transaction_id, message_id, action, mode, "
        "status, purpose, request_id, outcome, request, callback_url) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11, $12)",
        id, client_id, transaction_id, message_id, action, mode, status, purpose, request_id,
        orjson.dumps(outcome).decode(), request, callback_url,
    )  # fmt: skip


# The columns of a sync search's state, in the order of a `SyncRow`.
SYNC_COLUMNS = (
    "id", "client_id", "transaction_id", "message_id", "status", "purpose", "request_id",
    "outcome",
)  # fmt: skip
# (id, client_id, transaction_id, message_id, status, purpose, request_id, outcome as JSON text);
# the id a UUID or its text.
SyncRow = tuple[uuid.UUID | str, str, str, str, str, str, str, str]


async def insert_many(conn: asyncpg.Connection, rows: Sequence[SyncRow]) -> None:
    """Sync search states (action `search`, mode `sync`), in ONE statement, committed without
    waiting for the WAL flush (`synchronous_commit` off for its transaction only): a crash may
    lose the last batches, never part of one. The rows go as one JSON array of arrays, made at
    C speed and taken apart by PostgreSQL: a profile put binding eight arrays at about four
    microseconds of the event loop's a row (bench/ P11; no change in throughput was measurable
    either way)."""
    await conn.execute(
        "INSERT INTO dci_transactions (action, mode, " + ", ".join(SYNC_COLUMNS) + ") "
        "SELECT 'search', 'sync', (r->>0)::uuid, r->>1, r->>2, r->>3, r->>4, r->>5, r->>6, "
        "(r->>7)::jsonb "
        "FROM jsonb_array_elements($1::text::jsonb) AS r, "
        "(SELECT set_config('synchronous_commit', 'off', true)) AS lazy",
        orjson.dumps(rows).decode(),
    )


async def get(conn: asyncpg.Connection, id: uuid.UUID, *, lock: bool = False) -> Transaction | None:
    row = await conn.fetchrow(
        f"SELECT {_TXN} FROM dci_transactions WHERE id = $1" + (" FOR UPDATE" if lock else ""),
        id,
    )
    return None if row is None else _txn(row)


async def of_client(
    conn: asyncpg.Connection,
    client_id: str,
    *,
    transaction_id: str | None = None,
    correlation_id: uuid.UUID | None = None,
    action: str = "search",
    limit: int = 100,
) -> list[Transaction]:
    """The client's own transactions (never another's), newest first, at most `limit`."""
    rows = await conn.fetch(
        f"SELECT {_TXN} FROM dci_transactions WHERE client_id = $1 AND action = $2 "
        "AND ($3::text IS NULL OR transaction_id = $3) AND ($4::uuid IS NULL OR id = $4) "
        "ORDER BY created_at DESC LIMIT $5",
        client_id, action, transaction_id, correlation_id, limit,
    )  # fmt: skip
    return [_txn(r) for r in rows]


async def answered(
    conn: asyncpg.Connection,
    id: uuid.UUID,
    status: str,
    outcome: list[dict[str, Any]],
    response: bytes,
) -> None:
    """An async search answered: its callback body stored, its request cleared."""
    await conn.execute(
        "UPDATE dci_transactions SET status = $2, outcome = $3::jsonb, response = $4, "
        "request = NULL, updated_at = now() WHERE id = $1",
        id, status, orjson.dumps(outcome).decode(), response,
    )  # fmt: skip


async def attempted(
    conn: asyncpg.Connection, id: uuid.UUID, error: str | None, *, final: bool
) -> int:
    """One delivery attempt: delivered (error None), or failed. The attempts so far. A delivered
    callback, or the last failed attempt, clears the stored body."""
    return int(
        await conn.fetchval(
            "UPDATE dci_transactions SET attempts = attempts + 1, last_error = $2, "
            "delivered_at = CASE WHEN $2::text IS NULL THEN now() END, "
            "response = CASE WHEN $2::text IS NULL OR $3 THEN NULL ELSE response END, "
            "updated_at = now() WHERE id = $1 RETURNING attempts",
            id,
            error,
            final,
        )
    )
