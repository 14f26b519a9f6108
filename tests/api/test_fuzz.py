"""Schemathesis over /openapi.json against a real server with every check on: no 5xx, nothing
outside the schema, schema-valid input accepted and invalid input refused, headers and auth as
documented."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.server import running_server
from tests.support import PURPOSE

pytestmark = pytest.mark.slow

CONFIG = Path(__file__).with_name("schemathesis.toml")


def test_openapi_fuzzing_finds_no_server_error(
    database_url: str, published: Path, full_key: str, tmp_path: Path
) -> None:
    with running_server(database_url, tmp_path / "server.log") as server:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "schemathesis.cli",
                "--config-file",
                str(CONFIG),
                "run",
                f"{server.base_url}/openapi.json",
                "--header",
                f"Authorization: Bearer {full_key}",
                "--header",
                f"X-Purpose: {PURPOSE}",
                "--checks",
                "all",
                "--max-examples",
                "25",
                "--seed",
                "1",
                "--workers",
                "1",  # hypothesis parses lambdas with ast: not thread-safe on 3.11
                "--no-color",
                "--request-timeout",
                "20",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.api.schemathesis_hooks"},
        )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
