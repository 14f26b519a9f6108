"""`tepat COMMAND` imports the module of that command only, and shows the same command as the
whole command line does (options, arguments, help)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

_PROBE = """
import sys
from app.cli import {entry}
sys.argv = ["tepat", *{args!r}]
try:
    {call}
except SystemExit:
    pass
print("MODULES", sorted(m for m in sys.modules if m.startswith("app.cli.")))
"""


def _run(args: list[str], lazy: bool) -> tuple[str, list[str]]:
    """The output of `tepat ARGS` (through `main`, or the whole `app` when not lazy) and the
    command modules imported."""
    code = _PROBE.format(
        entry="main" if lazy else "app",
        args=args,
        call="main()" if lazy else "app(prog_name='tepat')",
    )
    env = {**os.environ, "COLUMNS": "100", "TERM": "dumb", "NO_COLOR": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    out, _, modules = done.stdout.rpartition("MODULES ")
    return out, eval(modules)  # noqa: S307 (a list literal printed by the probe above)


@pytest.mark.parametrize(
    ("args", "module"),
    [
        (["snapshot", "import", "--help"], "app.cli.snapshot"),
        (["eligibility", "materialize", "--help"], "app.cli.eligibility"),
        (["generate", "--help"], "app.cli.generate"),
        (["demo", "--help"], "app.cli.serve"),
    ],
)
def test_a_command_imports_its_module_only_and_shows_the_same_help(
    args: list[str], module: str
) -> None:
    lazy, imported = _run(args, lazy=True)
    whole, everything = _run(args, lazy=False)
    assert module in imported
    assert {"app.cli.bulk", "app.cli.worker", "app.cli.audit"} - {module} <= set(everything)
    assert not {"app.cli.bulk", "app.cli.worker", "app.cli.audit"} & set(imported)
    assert lazy == whole and "Usage: tepat" in lazy


def test_the_root_help_lists_every_command() -> None:
    lazy, imported = _run(["--help"], lazy=True)
    whole, _ = _run(["--help"], lazy=False)
    assert lazy == whole
    for name in ("bulk", "generate", "serve", "demo", "worker", "snapshot", "rule-set", "audit"):
        assert f" {name} " in lazy
    assert "app.cli.bulk" in imported


def test_snapshot_import_starts_without_sqlalchemy() -> None:
    """The import speaks plain asyncpg: SQLAlchemy (~0.3 s to import) stays out of its start."""
    code = (
        "import sys\n"
        "import app.cli.snapshot, app.ingest.importer, app.ingest.parallel, app.db\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sqlalchemy'))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
