"""`tepat changes list|report`: the same list as the API (NDJSON or a CSV a BPJS job loads),
audited as the operator; the report's counts equal the list's."""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.cli.bulk import CLIENT_ID
from tests.changes import expected
from tests.cli import tepat
from tests.helpers import CHANGES_FROM, CHANGES_TO

pytestmark = pytest.mark.slow


async def test_ndjson_list_equals_the_engine_and_is_audited_as_the_operator(
    tmp_path: Path,
    full_list: dict[str, dict[str, Any]],
    engine: AsyncEngine,
    quarters: tuple[Path, Path],
) -> None:
    out = tmp_path / "changes.ndjson"
    done = await asyncio.to_thread(
        tepat, "changes", "list", "--from", CHANGES_FROM, "--to", CHANGES_TO, "--out", str(out)
    )
    assert done.returncode == 0, done.stderr
    *lines, last = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    assert {line["nik"]: line for line in lines} == full_list
    summary = last["summary"]
    assert f"{summary['listed']:,} people listed" in done.stderr
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT client_id, operation FROM audit_log WHERE id = ANY(:ids)"),
                {"ids": summary["audit_ids"]},
            )
        ).all()
    assert len(rows) == len(summary["audit_ids"]) >= 1
    assert {(r.client_id, r.operation) for r in rows} == {(CLIENT_ID, "changes")}
    for nik in full_list:  # NIKs stay out of the terminal
        assert nik not in done.stderr and nik not in done.stdout


async def test_csv_has_the_header_and_the_effective_date(
    tmp_path: Path, full_list: dict[str, dict[str, Any]], quarters: tuple[Path, Path]
) -> None:
    out = tmp_path / "pbi.csv"
    done = await asyncio.to_thread(
        tepat, "changes", "list", "--from", CHANGES_FROM, "--to", CHANGES_TO,
        "--program", "PBI_JK", "--format", "csv", "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with out.open() as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = [tuple(r) for r in reader]
    assert header == ["nik", "program", "change", "reasons", "effective_date"]
    want = {
        (nik, c["program"], c["change"], ";".join(c["reasons"]), CHANGES_TO)
        for nik, line in expected.narrowed(full_list, programs={"PBI_JK"}).items()
        for c in line["changes"]
    }
    assert rows and set(rows) == want and len(rows) == len(want)


async def test_report_counts_equal_the_lists(
    tmp_path: Path, full_list: dict[str, dict[str, Any]], quarters: tuple[Path, Path]
) -> None:
    done = await asyncio.to_thread(
        tepat, "changes", "report", "--from", CHANGES_FROM, "--to", CHANGES_TO, "--json"
    )
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout)
    # The list's own counts per province (the `to` region, the `from` one for leavers).
    want: dict[tuple[str, str], list[int]] = {}
    for line in full_list.values():
        side = line["family"]["to"] or line["family"]["from"]
        for c in line["changes"]:
            if c["change"] in ("gained", "lost"):
                counts = want.setdefault((side["kode_wilayah"][:2], c["program"]), [0, 0])
                counts[c["change"] == "lost"] += 1
    got = {(r["region"], r["program"]): [r["gained"], r["lost"]] for r in report["rows"]}
    assert {k: v for k, v in got.items() if v != [0, 0]} == want
    for r in report["rows"]:
        assert r["net"] == r["gained"] - r["lost"]
    relative = [r["relative"] for r in report["rows"] if r["relative"] is not None]
    assert relative == sorted(relative)  # the largest relative drops first
    assert "nik" not in done.stdout
    # The table says the same, with the region names.
    done = await asyncio.to_thread(
        tepat, "changes", "report", "--from", CHANGES_FROM, "--to", CHANGES_TO, "--by", "regency"
    )
    assert done.returncode == 0, done.stderr
    assert "gained" in done.stdout


async def test_cli_errors_name_the_problem(quarters: tuple[Path, Path]) -> None:
    done = await asyncio.to_thread(
        tepat, "changes", "report", "--from", "2019-01-01", "--to", CHANGES_TO
    )
    assert done.returncode == 1 and "2019-01-01" in done.stderr
    done = await asyncio.to_thread(
        tepat, "changes", "list", "--from", CHANGES_FROM, "--to", CHANGES_TO,
        "--format", "xml", "--out", "-",
    )  # fmt: skip
    assert done.returncode == 2 and "--format" in done.stderr
