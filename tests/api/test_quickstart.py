"""docs/quickstart.md's examples run as written against a real server process: every `sh`
block (curl) and `python` block not marked `<!-- not run -->`, and the Java example (compiled
and run with the JDK, when one is installed), with TEPAT_URL, TEPAT_KEY and TEPAT_PURPOSE set."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.contracts import ROOT
from tests.server import Server, running_server
from tests.support import PURPOSE, MakeClient

pytestmark = pytest.mark.slow

DOC = (ROOT / "docs" / "quickstart.md").read_text(encoding="utf-8")
BLOCK = re.compile(r"(<!-- not run -->\n)?```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)
BLOCKS = [(lang, code) for skip, lang, code in BLOCK.findall(DOC) if not skip]
SHELL = [code for lang, code in BLOCKS if lang == "sh" and "curl" in code]
PYTHON = [code for lang, code in BLOCKS if lang == "python"]
JAVA = [code for lang, code in BLOCKS if lang == "java"]


def test_the_quickstart_has_the_examples_it_promises() -> None:
    assert len(SHELL) >= 3 and len(PYTHON) >= 4 and len(JAVA) == 1
    assert any("tepat_client" in code for code in PYTHON)
    assert any("import httpx" in code and "tepat_client" not in code for code in PYTHON)
    assert any("bulk/jobs" in code for code in SHELL)


@pytest.fixture(scope="module")
def server(
    database_url: str, published: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("quickstart") / "server.log"
    with running_server(database_url, log, env={"TEPAT_JOBS_WORKER": "true"}) as s:
        yield s


@pytest.fixture(scope="module")
async def key(make_client: MakeClient) -> str:
    return await make_client(bulk=True)


@pytest.fixture
def env(server: Server, key: str) -> dict[str, str]:
    return {
        **os.environ,
        "TEPAT_URL": server.base_url,
        "TEPAT_KEY": key,
        "TEPAT_PURPOSE": PURPOSE,
    }


def _run(args: list[str], env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{args[:2]} exited {done.returncode}:\n{done.stderr[-2000:]}"
    return done.stdout


@pytest.mark.parametrize("code", SHELL, ids=[f"sh-{i}" for i in range(len(SHELL))])
def test_shell_examples_run(code: str, env: dict[str, str], tmp_path: Path) -> None:
    out = _run(["bash", "-euo", "pipefail", "-c", code], env, tmp_path)
    assert '"code"' in out or '"results"' in out or '"summary"' in out or '"line"' in out


@pytest.mark.parametrize("code", PYTHON, ids=[f"python-{i}" for i in range(len(PYTHON))])
def test_python_examples_run(code: str, env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "niks.ndjson").write_text('{"nik": "3201014501150001"}\n3201015506880001\n')
    out = _run([sys.executable, "-c", code], env, tmp_path)
    assert out.strip()


@pytest.mark.skipif(shutil.which("java") is None, reason="no JDK on this machine")
def test_the_java_example_runs(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "Quickstart.java").write_text(JAVA[0])
    out = _run(["java", "Quickstart.java"], env, tmp_path)
    assert '"results"' in out and '"meta"' in out
