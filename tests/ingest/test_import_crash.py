"""kill -9 of a real importer process at each phase: nothing half-loaded is ever visible."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import psutil
import pytest

from app.ingest.importer import import_release
from app.synth.generate import generate_release
from tests.helpers import drop_release, visible_tables

SERVED = "2020-06-30"
BIG = "2020-09-30"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("crash")
    served = root / SERVED
    generate_release(served, people=2000, seed=11, release=SERVED)
    big = root / BIG
    generate_release(big, people=150_000, seed=12, release=BIG)
    return served, big


async def _wait_for_phase(
    raw: asyncpg.Connection, pattern: str, proc: subprocess.Popen[bytes]
) -> bool:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        seen = await raw.fetchval(
            """SELECT count(*) FROM pg_stat_activity
               WHERE datname = current_database() AND pid <> pg_backend_pid()
                 AND state = 'active' AND query ILIKE $1""",
            pattern,
        )
        if seen:
            return True
        await asyncio.sleep(0.005)
    return False


@pytest.mark.parametrize(
    ("phase", "jobs"),
    [
        ("%COPY%families_%", 1),
        ("%COPY%people_%", 1),
        ("%CREATE UNIQUE INDEX people_%", 1),
        ("%NOT EXISTS%", 1),
        # --jobs 2: killed while its processes COPY (committing into tepat_loading), and in
        # the publishing transaction.
        ("%COPY%people_%", 2),
        ("%CREATE UNIQUE INDEX people_%", 2),
    ],
)
async def test_kill_9_leaves_served_snapshot_intact_and_rerun_succeeds(
    raw: asyncpg.Connection,
    releases: tuple[Path, Path],
    phase: str,
    jobs: int,
    database_url: str,
) -> None:
    served, big = releases
    try:
        first = await import_release(raw, served)
        assert first.published
        served_before = await raw.fetchrow(
            "SELECT key, checksum, people_count FROM snapshots WHERE id = $1", SERVED
        )
        tables_before = await visible_tables(raw)

        env = {**os.environ, "TEPAT_DATABASE_URL": database_url}
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app.cli",
                "snapshot",
                "import",
                str(big),
                "--json",
                "--jobs",
                str(jobs),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        reached = await _wait_for_phase(raw, phase, proc)
        try:
            workers = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            workers = []
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert reached, f"the importer finished before reaching {phase}"
        # Its worker processes (--jobs) notice and exit: none lingers.
        _, alive = psutil.wait_procs(workers, timeout=30)
        assert not alive, alive

        # The server notices the dead client and rolls its transaction back.
        for _ in range(200):
            busy = await raw.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = 'tepat' AND pid <> pg_backend_pid() AND state <> 'idle'"
            )
            if not busy:
                break
            await asyncio.sleep(0.05)

        status = await raw.fetchval("SELECT status FROM snapshots WHERE id = $1", BIG)
        assert status in (None, "loading")  # never published, at most a stale claim
        assert await visible_tables(raw) == tables_before  # no partition of the killed import
        served_after = await raw.fetchrow(
            "SELECT key, checksum, people_count FROM snapshots WHERE id = $1", SERVED
        )
        assert served_after == served_before
        assert (
            await raw.fetchval(
                "SELECT count(*) FROM people WHERE snapshot_key = $1", served_before["key"]
            )
            == served_before["people_count"]
        )

        rerun = await import_release(raw, big)
        assert rerun.published, rerun.report.to_dict()
        # What the killed run's processes committed into the loading schema is gone too.
        assert not await raw.fetchval(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'tepat_loading'"
        )
        assert await raw.fetchval("SELECT status FROM snapshots WHERE id = $1", BIG) == "published"
    finally:
        await drop_release(raw, BIG)
        await drop_release(raw, SERVED)
