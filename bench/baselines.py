"""Baseline apps served like the service: bare FastAPI (fixed JSON) and one `ANY()` query per request."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import ORJSONResponse

# A P1-sized answer (one person, four decisions), so both sides move about the same bytes.
FIXED: dict[str, Any] = {
    "meta": {
        "snapshot": {"id": "2026-01-23", "checksum": "sha256:" + "0" * 64},
        "rule_set": {"id": "kepmensos-79-2025", "checksum": "sha256:" + "1" * 64},
        "evaluation_date": "2026-01-23",
        "request_id": "0f5c8e2a9b1d4c7e",
        "audit_id": "019a4f2c-7d1e-7a3b-9c2d-5e6f7a8b9c0d",
    },
    "results": [
        {
            "nik": "3201014501900001",
            "found": True,
            "decile": 3,
            "family": {
                "no_kk": "3201010101200001",
                "relationship": 3,
                "kode_wilayah": "3201012001",
            },
            "identity": {"name": "Siti Rahayu", "sex": 2, "birth_date": "1990-01-05"},
            "attributes": {
                "marital_status": 2,
                "school_status": 2,
                "school_level": None,
                "working": True,
            },
            "health": {"disability": 0, "chronic_illness": False, "pregnant": False},
            "decisions": [
                {"program": "PKH", "unit": "family", "eligible": False, "benefit": None},
                {
                    "program": "BPNT",
                    "unit": "family",
                    "eligible": True,
                    "recipient": True,
                    "benefit": {"monthly_rupiah": 200000},
                },
                {
                    "program": "PBI_JK",
                    "unit": "person",
                    "eligible": True,
                    "recipient": False,
                    "benefit": {"monthly_rupiah": 42000},
                },
                {
                    "program": "SEKOLAH_RAKYAT",
                    "unit": "person",
                    "eligible": False,
                    "benefit": None,
                    "level": None,
                    "priority": None,
                },
            ],
        }
    ],
}

PEOPLE_BY_NIK = """
SELECT nik, no_kk, name, relationship, sex, birth_date, marital_status, pregnant, school_status,
       school_level, disability, chronic_illness, working, pbi_recipient
FROM people WHERE snapshot_key = $1 AND nik = ANY($2::int8[])
"""


def fixed_app() -> FastAPI:
    """P1's reference: the least a FastAPI endpoint can do per request."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.post("/fixed")
    async def fixed() -> ORJSONResponse:
        return ORJSONResponse(FIXED)

    return app


async def _no_reset(connection: asyncpg.Connection) -> None:
    # asyncpg's default reset is one more round trip per release (+30 % without it, measured);
    # these connections only read, so there is nothing to reset, and the baseline should be lean.
    return None


def any_app() -> FastAPI:
    """P3/P4's reference: the NIKs of the body, one `ANY()` query, rows as dicts, ORJSON out."""
    dsn = os.environ["BENCH_DSN"]
    snapshot_key = int(os.environ["BENCH_SNAPSHOT_KEY"])
    pool_size = int(os.environ.get("BENCH_POOL_SIZE", "10"))
    pools: list[asyncpg.Pool] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await asyncpg.create_pool(
            dsn, min_size=pool_size, max_size=pool_size, reset=_no_reset
        )
        pools.append(pool)
        try:
            yield
        finally:
            await pool.close()

    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None, lifespan=lifespan)

    @app.post("/people")
    async def people(request: Request) -> ORJSONResponse:
        niks = [int(n) for n in orjson.loads(await request.body())["niks"]]
        rows = await pools[0].fetch(PEOPLE_BY_NIK, snapshot_key, niks)
        return ORJSONResponse({"results": [dict(r) for r in rows]})

    return app
