"""CPU per request of each process behind P11: REST `people/lookup` against DCI `sync/search`.

    TEPAT_DATABASE_URL=... python -m bench.face_cpu [--rounds 4] [--duration 5]

A diagnosis beside P11, not a target. P11 divides two throughputs measured one after the
other, and on a shared 2-core machine the machine's speed drifts between them (the same code
measured 0.55-0.62 in one sitting). The CPU each process spends per answered request drifts
much less, and says where a DCI answer's extra cost is: the service's worker, its receipt
signer child, the PostgreSQL backends, the load generator. The service runs as P11 runs it
(`bench/run`'s server: uvicorn, one worker, production settings, receipts on), driven by the
same load generator with the same bodies; the two faces alternate round by round.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

from app.config import Settings
from bench.common import server_url
from bench.prepare import prepare
from bench.suite import CONNECTIONS_SMALL, MODES, Run

PATHS = {"REST": "/v1/people/lookup", "DCI": "/dci/registry/sync/search"}


def _postgres() -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["name"]) if (p.info["name"] or "") == "postgres"]


@contextlib.contextmanager
def _database_cpu() -> Iterator[list[float]]:
    """The CPU seconds all PostgreSQL processes used during the block (backends come and go:
    those that existed at its start, and those alive at its end)."""
    out: list[float] = []
    before: dict[int, float] = {}
    for p in _postgres():
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            before[p.pid] = t.user + t.system
    try:
        yield out
    finally:
        used = 0.0
        for p in _postgres():
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                used += t.user + t.system - before.get(p.pid, 0.0)
        out.append(used)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load")
    parser.add_argument("--workdir", type=Path, default=Path(".tepat/bench"))
    args = parser.parse_args()
    mode = dataclasses.replace(MODES["quick"], name="face-cpu", duration=args.duration, warmup=1.0)
    url = server_url(Settings())
    data = prepare(url, mode.people, args.workdir)
    run = Run(mode, 1, args.workdir, url, data)
    bodies = {"REST": run.single_bodies(), "DCI": run.dci_bodies(mode.bodies * 50)}
    rows: dict[str, list[dict[str, float]]] = {"REST": [], "DCI": []}
    try:
        for face in PATHS:
            run.probe("service", PATHS[face], bodies[face][0], face)
        for i in range(args.rounds):
            for face, path in PATHS.items():
                started = time.perf_counter()
                with _database_cpu() as database:
                    m = run.load(f"{face}-{i}", "service", path, bodies[face], CONNECTIONS_SMALL)
                wall = time.perf_counter() - started
                # Shares of one core over the load divided by the rate: CPU s per request.
                per = 1e6 / max(m.rps, 1e-9)
                worker, *children = m.usage.cpu or [0.0]
                row = {
                    "rps": m.rps,
                    "worker": worker * per,
                    "children": sum(children) * per,
                    "database": database[0] / wall * per,
                    "generator": float(m.result["generator_cpu"]) * per,
                }
                rows[face].append(row)
                print(
                    f"round {i + 1} {face:4s} {m.rps:8,.0f} req/s  CPU us/request: "
                    + "  ".join(f"{k} {v:6.0f}" for k, v in row.items() if k != "rps"),
                    flush=True,
                )
    finally:
        run.stop_all()
    med = {f: {k: statistics.median(r[k] for r in rows[f]) for k in rows[f][0]} for f in rows}
    print("median CPU us per request (REST / DCI):")
    for k in ("worker", "children", "database", "generator"):
        print(
            f"  {k:10s} {med['REST'][k]:7.0f} {med['DCI'][k]:7.0f}  x{med['DCI'][k] / max(med['REST'][k], 1e-9):.2f}"
        )
    print(f"  throughput ratio DCI/REST (medians): {med['DCI']['rps'] / med['REST']['rps']:.3f}")


if __name__ == "__main__":
    main()
