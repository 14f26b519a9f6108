"""SQL for the client allowance: leases from client_usage (initial migration), the day's usage."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.models import client_usage

_LEASE = text(
    "SELECT granted, wait, today, used, over_quota, suspended, bucket FROM client_lease("
    ":client, :rate, :burst, :quota, :need, :want, :returned, :returned_day)"
)


@dataclass(frozen=True, slots=True)
class Granted:
    """One lease's outcome: `granted` permits (0: refused, see wait / over_quota / suspended)."""

    granted: int
    wait: float
    today: dt.date
    used: int
    over_quota: bool
    suspended: bool
    bucket: float | None  # the token bucket after this grant (None: no rate limit)


async def lease(
    conn: AsyncConnection,
    client_id: str,
    *,
    rate: float,
    burst: float,
    quota: int,
    need: int,
    want: int,
    returned: int,
    returned_day: dt.date | None,
) -> Granted:
    """Settle `returned` (unspent permits; negative: a debt) and lease `need` to `want` more."""
    row = (
        await conn.execute(
            _LEASE,
            {
                "client": client_id,
                "rate": float(rate),
                "burst": float(burst),
                "quota": quota,
                "need": need,
                "want": want,
                "returned": float(returned),
                "returned_day": returned_day,
            },
        )
    ).one()
    bucket = None if row[6] is None else float(row[6])
    return Granted(
        int(row[0]), float(row[1]), row[2], int(row[3]), bool(row[4]), bool(row[5]), bucket
    )


async def usage_today(conn: AsyncConnection, client_id: str) -> tuple[dt.date, int]:
    """Today's date in WIB and the NIKs counted for the client today (leased, less returns)."""
    today = (
        await conn.execute(text("SELECT (now() AT TIME ZONE 'Asia/Jakarta')::date"))
    ).scalar_one()
    row = (
        await conn.execute(
            select(client_usage.c.day, client_usage.c.niks).where(
                client_usage.c.client_id == client_id
            )
        )
    ).first()
    return today, int(row[1]) if row is not None and row[0] == today else 0
