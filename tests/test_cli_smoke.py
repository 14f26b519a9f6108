"""One real `tepat` process per command group: the installed entry point, its argument parsing
and settings read from the environment, end to end. Everything else about the CLI runs in-process
(tests/cli.py); serve, demo and the import crash keep their own processes."""

from __future__ import annotations

import csv
import json
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth import keys
from app.models import api_clients
from tests.audit.conftest import random_nik
from tests.cli import tepat_process
from tests.support import RELEASE

pytestmark = pytest.mark.slow


def _first_niks(published: Path, n: int) -> list[str]:
    with (published / "anggota.csv").open() as f:
        return [row["nik"] for _, row in zip(range(n), csv.DictReader(f), strict=False)]


def test_db(engine: AsyncEngine) -> None:
    done = tepat_process("db", "upgrade")
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("schema at ")


def test_generate(tmp_path: Path) -> None:
    folder = tmp_path / "2021-06-30"
    done = tepat_process("generate", str(folder), "--people", "50", "--release", "2021-06-30")
    assert done.returncode == 0, done.stderr
    assert json.loads((folder / "manifest.json").read_text())["release"] == "2021-06-30"
    assert "wrote release 2021-06-30" in done.stderr


def test_snapshot(published: Path) -> None:
    done = tepat_process("snapshot", "show", RELEASE, "--json")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert (shown["id"], shown["status"]) == (RELEASE, "published")


def test_rule_set(published: Path) -> None:
    done = tepat_process("rule-set", "list", "--json")
    assert done.returncode == 0, done.stderr
    assert "kepmensos-79-2025" in {r["id"] for r in json.loads(done.stdout)}


def test_eligibility(published: Path) -> None:
    (nik,) = _first_niks(published, 1)
    done = tepat_process("eligibility", "explain", "--nik", nik, "--snapshot", RELEASE, "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["meta"]["snapshot"]["id"] == RELEASE
    assert answer["result"]["found"] is True


@pytest.fixture
async def created(engine: AsyncEngine) -> AsyncIterator[list[str]]:
    ids: list[str] = []
    yield ids
    async with engine.begin() as conn:
        await conn.execute(delete(api_clients).where(api_clients.c.id.in_(ids)))


def test_client(created: list[str]) -> None:
    done = tepat_process(
        "client", "create", "Smoke", "--programs", "PKH", "--fields", "decision",
        "--purpose", "smoke-test",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    created.append(done.stderr.split("created client ")[1].split()[0])
    assert keys.parse_key(done.stdout.strip())  # the key alone on stdout


def test_audit(engine: AsyncEngine) -> None:
    done = tepat_process("audit", "trail", "--nik", random_nik(), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_bulk(published: Path, tmp_path: Path) -> None:
    niks = _first_niks(published, 3)
    src, out = tmp_path / "in.ndjson", tmp_path / "out.ndjson"
    src.write_text("".join(f"{nik}\n" for nik in niks))
    done = tepat_process("bulk", str(src), "--out", str(out), "--snapshot", RELEASE)
    assert done.returncode == 0, done.stderr
    *answers, last = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [a["nik"] for a in answers] == niks
    assert last["summary"]["found"] == 3
    assert "3 lines: 3 found" in done.stderr
