"""Shared pieces of the benchmarks: where the database is, and how results are printed."""

from __future__ import annotations

import json
from typing import Any

from app import db
from app.config import Settings


def server_url(settings: Settings) -> str:
    """TEPAT_DATABASE_URL, else the embedded server (started and kept for the run)."""
    return db.resolve_url(settings)


def emit(
    target: str,
    what: str,
    service: float,
    baseline: float,
    goal: float | None,
    *,
    unit: str,
    lower_is_better: bool = False,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One row of the table on stderr and one JSON line on stdout.

    ratio = service / baseline. For a ratio target `goal` is the least acceptable ratio; for an
    absolute bound (lower_is_better, goal None) the baseline is the bound and ratio must be <= 1.
    """
    ratio = service / baseline if baseline else float("nan")
    ok = ratio <= 1 if lower_is_better else (goal is None or ratio >= goal)
    line = {
        "target": target,
        "what": what,
        "unit": unit,
        "service": round(service, 1),
        "baseline": round(baseline, 1),
        "ratio": round(ratio, 3),
        "goal": (f"<= {baseline:g} {unit}" if lower_is_better else f">= {goal} x baseline"),
        "met": ok,
        **(extra or {}),
    }
    print(json.dumps(line), flush=True)
    import sys

    print(
        f"{target:<3} {what:<62} service {service:>12,.1f} {unit:<7} baseline {baseline:>12,.1f}"
        f"  ratio {ratio:6.3f}  {'met' if ok else 'MISSED'}",
        file=sys.stderr,
    )
    return line
