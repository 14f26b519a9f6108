"""A real server answers a 300,000-line job in flat memory (QUALITY P4: RSS bounded, not time)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import psutil
import pytest

from app.config import Settings
from tests.bulk.conftest import found_and_absent, ndjson
from tests.bulk.duplex import stream_job
from tests.support import auth

ROOT = Path(__file__).resolve().parents[2]
GROWTH_LIMIT = 60 * 2**20
UVICORN = [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory"]
UVICORN += ["--host", "127.0.0.1", "--no-access-log"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def server(
    published: Path, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[int, int]]:
    """uvicorn in its own process on a free port: (port, pid). Its log: server.log."""
    port = free_port()
    log = tmp_path_factory.mktemp("bulk-server") / "server.log"
    env = {
        **os.environ,
        "TEPAT_DATABASE_URL": os.environ["TEPAT_DATABASE_URL"],
        "TEPAT_AUDIT_HMAC_KEY": settings.audit_hmac_key.get_secret_value(),
        "TEPAT_ENV": "test",
        "TEPAT_LOG_LEVEL": "WARNING",
    }
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [*UVICORN, "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield port, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=15)


class Sampler:
    """The peak RSS of a process, sampled every 20 ms in a thread."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.02)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def job_body(niks: list[str], lines: int, batch: int = 2000) -> Iterator[bytes]:
    """`lines` lines, generated as they are sent (the test holds no big body either)."""
    for start in range(0, lines, batch):
        yield ndjson(
            {"nik": niks[(start + i) % len(niks)]} for i in range(min(batch, lines - start))
        )


def run_job(port: int, key: str, niks: list[str], lines: int) -> dict[str, object]:
    last: list[bytes] = [b""]
    count = 0

    def on_line(line: bytes) -> None:
        nonlocal count
        count += 1
        last[0] = line

    status = stream_job(port, auth(key), job_body(niks, lines), on_line)
    assert status == 200, last[0][:300]
    assert b"summary" in last[0], last[0][:300]
    summary: dict[str, object] = orjson.loads(last[0])["summary"]
    assert count == lines + 1
    return summary


@pytest.mark.slow
def test_memory_stays_flat_for_300k_lines(
    server: tuple[int, int], full_key: str, release_niks: list[str]
) -> None:
    port, pid = server
    niks = found_and_absent(release_niks, 50_000, every=10)
    run_job(port, full_key, niks, 20_000)  # warm-up: caches, pools, prepared statements
    baseline = psutil.Process(pid).memory_info().rss
    with Sampler(pid) as rss:
        summary = run_job(port, full_key, niks, 300_000)
    assert summary["lines"] == 300_000
    assert summary["found"] == 30_000
    growth = rss.peak - baseline
    print(f"baseline {baseline / 2**20:.0f} MB, peak {rss.peak / 2**20:.0f} MB")
    assert growth < GROWTH_LIMIT, f"RSS grew {growth / 2**20:.0f} MB over {baseline / 2**20:.0f} MB"
    assert rss.peak < 250 * 2**20  # QUALITY P4, whatever the input size
