"""bench/ in its smoke mode: every target line comes out (no timing is asserted here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

TARGETS = {
    "P1",
    "P1-p99",
    "P2",
    "P3",
    "P4",
    "P4-rss",
    "P5",
    "P5-rss",
    "P6",
    "P7",
    "P7-rss",
    "P8",
    "P8-rss",
    "P9",
    "P9-rss",
    "P11",
}


def test_bench_smoke_prints_every_target(database_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "TEPAT_DATABASE_URL": database_url}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    seen = {line["target"] for line in lines}
    assert seen >= TARGETS, sorted(TARGETS - seen)
    for line in lines:
        assert {"service", "baseline", "ratio", "goal"} <= set(line), line
        assert line.get("available", True), line


def test_checkpoint_bench_runs_and_verifies(database_url: str) -> None:
    """bench/checkpoint.py at a tiny size: every measure prints, and the verify step (which
    asserts both checkpoints hold) passes."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.checkpoint", "--records", "300", "--more", "7", database_url],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    whats = [line["what"] for line in lines]
    assert any(w.startswith("first checkpoint") for w in whats), whats
    assert any(w.startswith("verify --checkpoints") for w in whats), whats
    first = next(line for line in lines if line["what"].startswith("first checkpoint"))
    assert first["records"] == 300
