"""`tepat bulk`: a file in, the same answer lines out, audited as the operator."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.bulk.conftest import absent_nik, ndjson
from tests.cli import tepat
from tests.support import RELEASE


async def _operator_records(engine: AsyncEngine, audit_ids: list[str]) -> list[tuple[str, str]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT client_id, purpose FROM audit_log WHERE id = ANY(:ids)"),
            {"ids": audit_ids},
        )
        return [(r[0], r[1]) for r in rows]


async def test_ndjson_file(tmp_path: Path, release_niks: list[str], engine: AsyncEngine) -> None:
    src = tmp_path / "in.ndjson"
    asked = [*release_niks[:1500], absent_nik(3)]
    src.write_bytes(ndjson([{"nik": n} for n in asked]) + b"\nbad\n")
    out = tmp_path / "out.ndjson"
    done = await asyncio.to_thread(
        tepat, "bulk", str(src), "--out", str(out), "--programs", "PBI_JK,PKH"
    )
    assert done.returncode == 0, done.stderr
    *answers, last = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    assert [x["nik"] for x in answers[:-1]] == asked
    assert answers[-1] == {
        "line": 1503,
        "error": {"code": "nik_format", "message": "NIK must be 16 digits", "nik": "***"},
    }
    assert {d["program"] for x in answers[:1500] for d in x["decisions"]} == {"PKH", "PBI_JK"}
    summary = last["summary"]
    assert (summary["lines"], summary["found"], summary["not_found"], summary["errors"]) == (
        1502,
        1500,
        1,
        1,
    )
    assert summary["snapshot"]["id"] == RELEASE
    assert "1,502 lines" in done.stderr
    records = await _operator_records(engine, summary["audit_ids"])
    assert records == [("cli-operator", "operator-bulk")] * 2


def test_csv_file_with_a_nik_column(tmp_path: Path, release_niks: list[str]) -> None:
    src = tmp_path / "in.csv"
    rows = ["ref,NIK", *(f"r{i},{n}" for i, n in enumerate(release_niks[:3])), "r9,", "r10,12"]
    src.write_text("\n".join(rows) + "\n")
    out = tmp_path / "out.ndjson"
    done = tepat("bulk", str(src), "--out", str(out), "--json")
    assert done.returncode == 0, done.stderr
    lines = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    assert [x["line"] for x in lines[:-1]] == [2, 3, 4, 5, 6]  # the file's line numbers
    assert [x.get("nik") for x in lines[:3]] == release_niks[:3]
    assert [x["error"]["code"] for x in lines[3:5]] == ["nik_format", "nik_format"]
    assert orjson.loads(done.stdout) == lines[-1]


def test_a_refused_job_writes_nothing(tmp_path: Path) -> None:
    src = tmp_path / "in.ndjson"
    src.write_bytes(ndjson([absent_nik(1)]))
    done = tepat("bulk", str(src), "--out", str(tmp_path / "out.ndjson"), "--snapshot", "1999")
    assert done.returncode == 1
    assert not (tmp_path / "out.ndjson").exists()
    assert "no snapshot" in done.stderr.lower() or "1999" in done.stderr
