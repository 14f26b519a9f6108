"""What signed receipts cost P1, P3 and P4: the service with and without them, in one run.

    python -m bench.receipts [--quick|--full] [--rounds 3] [--duration S] [--workers N]

Starts the service twice, side by side, as bench/suite.py starts it (production settings, its
own login role and signing key): once signing receipts, once with TEPAT_AUDIT_RECEIPTS=false.
Each round runs P1 (1 NIK, 32 connections), P3 (1,000 NIKs, 8 connections) and P4 (the bulk
NDJSON stream) against both, alternating which goes first, so that both meet the same load
from the rest of the machine. Prints one JSON line per target and round and one per target
with the median ratio (with receipts / without); issue 16's goal is >= 0.9 for each.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from pathlib import Path
from typing import Any

from app.config import Settings
from bench.common import emit, server_url
from bench.prepare import log, prepare
from bench.suite import BATCH, CONNECTIONS_BATCH, CONNECTIONS_SMALL, MODES, PLAIN, Run

SIGNED = "service"
GOAL = 0.9


def measure(run: Run, target: str, server: str, key: str, bulk: Path) -> float:
    """One load of `target` against `server`: req/s for P1, NIK/s for P3 and P4."""
    path = "/v1/people/lookup"
    if target == "P1":
        bodies = run.lookup_bodies(run.mode.bodies * 50, 1)
        return run.load(key, server, path, bodies, CONNECTIONS_SMALL).rps
    if target == "P3":
        bodies = run.lookup_bodies(run.mode.bodies, BATCH)
        return run.load(key, server, path, bodies, CONNECTIONS_BATCH).rps * BATCH
    result = run.bulk_stream(server, bulk)
    if result["status"] != 200 or not result["complete"]:
        raise RuntimeError(f"{key}: bulk stream incomplete: {result['last_line']}")
    log(f"{key:<16} {int(result['lines']) / float(result['seconds']):>9,.0f} NIK/s")
    return int(result["lines"]) / float(result["seconds"])


UNITS = {"P1": "req/s", "P3": "NIK/s", "P4": "NIK/s"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.receipts", description=__doc__)
    parser.add_argument("--full", action="store_true", help="full scale (default: quick)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of P1, P3, P4 (default 3)")
    parser.add_argument("--duration", type=float, default=0, help="override seconds per load")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers per service")
    parser.add_argument("--workdir", type=Path, default=Path(".tepat/bench"))
    args = parser.parse_args(argv)
    mode = MODES["full" if args.full else "quick"]
    if args.duration:
        mode = dataclasses.replace(mode, duration=args.duration)
    url = server_url(Settings())
    args.workdir.mkdir(parents=True, exist_ok=True)
    data = prepare(url, mode.people, args.workdir)
    run = Run(mode, args.workers, args.workdir, url, data)
    ratios: dict[str, list[float]] = {t: [] for t in UNITS}
    try:
        bulk = run.bulk_file(mode.bulk_niks)
        run.server(PLAIN)  # both services up (and idle) before anything is measured
        for n in range(args.rounds):
            for target, unit in UNITS.items():
                order = (SIGNED, PLAIN) if n % 2 == 0 else (PLAIN, SIGNED)
                got = {s: measure(run, target, s, f"{target}-{s}-{n}", bulk) for s in order}
                line = emit(
                    target,
                    f"round {n + 1}: with receipts vs without ({' then '.join(order)})",
                    got[SIGNED],
                    got[PLAIN],
                    GOAL,
                    unit=unit,
                    extra={"round": n + 1, "first": order[0], "workers": args.workers},
                )
                ratios[target].append(float(line["ratio"]))
    finally:
        run.stop_all()
    for target, found in ratios.items():
        median = statistics.median(found)
        summary: dict[str, Any] = {
            "target": f"{target}-receipts",
            "what": f"{target} with receipts / without, median of {len(found)} rounds",
            "ratios": found,
            "median": round(median, 3),
            "goal": f">= {GOAL}",
            "met": median >= GOAL,
        }
        print(json.dumps(summary), flush=True)
        log(f"{target}: with/without receipts {found} -> median {median:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
