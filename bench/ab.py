"""A/B of two checkouts on one face: which code answers it faster, on the machine of the moment.

    TEPAT_DATABASE_URL=... python -m bench.ab OTHER_CHECKOUT [--face DCI] [--rounds 10]

A diagnosis beside the targets, not a target. A throughput measured a minute after another
compares two machines as much as two codes (bench/README.md: this machine's speed drifts by a
third within seconds). Here two servers are alive at once, one running this checkout's `app`
and one OTHER_CHECKOUT's (a `git worktree add /tmp/before HEAD~1`, say), each as the targets run
it (bench.suite's service: uvicorn, one worker, production settings, receipts on); they are
loaded in turn, the order swapped each round, with the same bodies. Per round: each one's rate
and its worker's CPU per request; at the end the medians of the rounds' ratios (this / other).
Both servers share the bench database and its audit log.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
from pathlib import Path

from app.config import Settings
from bench.common import server_url
from bench.prepare import prepare
from bench.suite import CONNECTIONS_SMALL, MODES, Measured, Run

PATHS = {"REST": "/v1/people/lookup", "DCI": "/dci/registry/sync/search"}
HERE = Path(__file__).resolve().parent.parent


def _cpu_us(m: Measured) -> float:
    """The worker's CPU microseconds per answered request."""
    worker = (m.usage.cpu or [0.0])[0]
    return worker * 1e6 / max(m.rps, 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("other", type=Path, help="the other checkout (its `app` is served)")
    parser.add_argument("--face", choices=sorted(PATHS), default="DCI")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per load")
    parser.add_argument("--workdir", type=Path, default=HERE / ".tepat/bench")
    args = parser.parse_args()
    other = args.other.resolve()
    if not (other / "app").is_dir():
        parser.error(f"{other} holds no `app` package: give a checkout of this repository")
    mode = dataclasses.replace(MODES["quick"], name="ab", duration=args.duration, warmup=0.5)
    url = server_url(Settings())
    args.workdir = args.workdir.resolve()
    data = prepare(url, mode.people, args.workdir)
    # `python -m` puts its working directory first on sys.path: from a directory without an
    # `app`, each server imports the checkout its PYTHONPATH names (the load generators, this
    # one's `bench`).
    os.environ["PYTHONPATH"] = str(HERE)
    os.chdir(tempfile.mkdtemp(prefix="tepat-ab-"))
    runs: dict[str, Run] = {}
    for name, root in (("this", HERE), ("other", other)):
        run = Run(mode, 1, args.workdir, url, data)
        run.extra_env = {"PYTHONPATH": str(root)}
        runs[name] = run
    face, path = args.face, PATHS[args.face]
    first = runs["this"]
    bodies = first.single_bodies() if face == "REST" else first.dci_bodies(mode.bodies * 50)
    rates: list[float] = []
    cpus: list[float] = []
    try:
        for run in runs.values():
            run.probe("service", path, bodies[0], face)
        for i in range(args.rounds):
            order = ("this", "other") if i % 2 == 0 else ("other", "this")
            got = {
                name: runs[name].load(f"ab-{i}", "service", path, bodies, CONNECTIONS_SMALL)
                for name in order
            }
            this, that = got["this"], got["other"]
            rates.append(this.rps / that.rps)
            cpus.append(_cpu_us(that) / _cpu_us(this))
            print(
                f"round {i + 1}: {face} req/s this {this.rps:8,.0f} other {that.rps:8,.0f}"
                f" ({rates[-1]:.3f})  worker CPU us/request this {_cpu_us(this):5.0f}"
                f" other {_cpu_us(that):5.0f}",
                flush=True,
            )
    finally:
        for run in runs.values():
            run.stop_all()
    print(
        f"{face}: this/other req/s, median of {len(rates)} rounds {statistics.median(rates):.3f}"
        f" (mean {statistics.mean(rates):.3f}); other/this worker CPU per request, median"
        f" {statistics.median(cpus):.3f}"
    )


if __name__ == "__main__":
    main()
