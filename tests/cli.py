"""`tepat ...` for tests: in this process through Typer's CliRunner, or as a separate process.

`tepat` runs a command in-process, as an operator would run it in a shell but without paying
Python's start-up and imports each time: the settings are read afresh from the environment
(TEPAT_DATABASE_URL, set by tests/conftest.py, or `database_url`), the output is 200 columns
wide, stdout and stderr are kept apart, and an unexpected exception fails the test (a process
would have printed a traceback and exited 1). The commands call asyncio.run, so an `async def`
test calls it in a worker thread: `await asyncio.to_thread(tepat, ...)`.

`tepat_process` runs the installed `tepat` script, for the one smoke test per command group that
keeps the real entry point tested (tests/test_cli_smoke.py).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

from app.cli import app
from app.config import get_settings

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = "200"


@dataclass(frozen=True)
class Ran:
    """What a test looks at, the same whether the command ran in-process or as a process."""

    returncode: int
    stdout: str
    stderr: str


def tepat(*args: str, database_url: str | None = None) -> Ran:
    """Run `tepat ARGS` in this process (not in a thread whose event loop is running)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("the CLI calls asyncio.run: use `await asyncio.to_thread(tepat, ...)`")
    env = {"COLUMNS": COLUMNS}
    if database_url is not None:
        env["TEPAT_DATABASE_URL"] = database_url
    get_settings.cache_clear()  # the command reads the settings of its environment, as a process
    try:
        result = CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)
    finally:
        get_settings.cache_clear()
    return Ran(result.exit_code, result.stdout, result.stderr)


def tepat_process(*args: str, timeout: float = 120) -> Ran:
    """Run `tepat ARGS` as its own process: the console script (`python -m app.cli` without it)."""
    script = Path(sys.executable).with_name("tepat")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "app.cli"]
    done = subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": COLUMNS},
        timeout=timeout,
        cwd=ROOT,
    )
    return Ran(done.returncode, done.stdout, done.stderr)
