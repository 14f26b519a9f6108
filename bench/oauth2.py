"""What an OAuth2 access token costs P1 against the client's API key, in one run.

    python -m bench.oauth2 [--full] [--rounds 3] [--duration S] [--workers N]

One service, as bench/suite.py starts it. Each round gets a fresh access token from
`POST /oauth2/client/token` (the bench client's API key as client secret) and runs P1 (1 NIK,
32 connections) with the key and with the token, alternating which goes first. Prints one JSON
line per round (token / key) and one with the median ratio; the goal is >= 0.9.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from pathlib import Path

import httpx
from sqlalchemy import text

from app import db
from app.config import Settings
from bench.common import emit, server_url
from bench.prepare import prepare
from bench.suite import CONNECTIONS_SMALL, MODES, Run

GOAL = 0.9
PATH = "/v1/people/lookup"


def bench_client_id(url: str) -> str:
    """The id of the client bench.prepare made for this run (the one `bench` not revoked)."""
    import asyncio

    async def find() -> str:
        engine = db.create_engine(Settings(database_url=url), url=url)
        try:
            async with engine.connect() as conn:
                found = await conn.scalar(
                    text("SELECT id FROM api_clients WHERE name = 'bench' AND revoked_at IS NULL")
                )
        finally:
            await engine.dispose()
        return str(found)

    return asyncio.run(find())


def token_for(port: int, client_id: str, api_key: str) -> str:
    r = httpx.post(
        f"http://127.0.0.1:{port}/oauth2/client/token",
        data={"grant_type": "client_credentials"},
        auth=(client_id, api_key),
        timeout=30,
    )
    r.raise_for_status()
    return str(r.json()["access_token"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.oauth2", description=__doc__)
    parser.add_argument("--full", action="store_true", help="full scale (default: quick)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=0, help="override seconds per load")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers")
    parser.add_argument("--workdir", type=Path, default=Path(".tepat/bench"))
    args = parser.parse_args(argv)
    mode = MODES["full" if args.full else "quick"]
    if args.duration:
        mode = dataclasses.replace(mode, duration=args.duration)
    url = server_url(Settings())
    args.workdir.mkdir(parents=True, exist_ok=True)
    data = prepare(url, mode.people, args.workdir)
    client_id = bench_client_id(url)
    run = Run(mode, args.workers, args.workdir, url, data)
    ratios: list[float] = []
    key_headers = dict(run.headers)
    try:
        service = run.server("service")
        bodies = run.lookup_bodies(run.mode.bodies * 50, 1)
        for n in range(args.rounds):
            token = token_for(service.port, client_id, data.api_key)
            order = ("key", "token") if n % 2 == 0 else ("token", "key")
            got: dict[str, float] = {}
            for credential in order:
                secret = data.api_key if credential == "key" else token
                run.headers = {**key_headers, "Authorization": f"Bearer {secret}"}
                measured = run.load(
                    f"P1-{credential}-{n}", "service", PATH, bodies, CONNECTIONS_SMALL
                )
                got[credential] = measured.rps
            line = emit(
                "P1",
                f"round {n + 1}: access token vs API key ({' then '.join(order)})",
                got["token"],
                got["key"],
                GOAL,
                unit="req/s",
                extra={"round": n + 1, "first": order[0], "workers": args.workers},
            )
            ratios.append(float(line["ratio"]))
    finally:
        run.headers = key_headers
        run.stop_all()
    median = statistics.median(ratios)
    summary = {
        "target": "P1-oauth2",
        "what": f"P1 with an access token / with the API key, median of {len(ratios)} rounds",
        "ratios": ratios,
        "median": round(median, 3),
        "goal": f">= {GOAL}",
        "met": median >= GOAL,
    }
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
