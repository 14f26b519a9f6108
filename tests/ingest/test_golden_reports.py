"""The importer's refusal reports of the generator's corrupted releases, held to golden files.

Each golden file under `golden/` is the JSON report (errors and warnings: rule ids, counts and the
first examples with file, line, column and masked value) that the importer gave for one corrupted
release: one per refusal rule the generator can break, and one with every row rule broken at once.
A change to the reader must give the same reports. After a deliberate change to the rules,
regenerate them with `TEPAT_UPDATE_GOLDEN=1 pytest tests/ingest/test_golden_reports.py`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from app.ingest.importer import import_release
from app.synth.corrupt import MANIFEST_RULES, REFUSAL_RULES, corrupt_release
from app.synth.generate import generate_release

RELEASE = "2020-03-31"  # older than any rule set: never "current"
GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("TEPAT_UPDATE_GOLDEN") == "1"
ALL_ROW_RULES = [r for r in REFUSAL_RULES if r not in MANIFEST_RULES and r != "missing_column"]
CASES: dict[str, list[str]] = {
    **{rule: [rule] for rule in REFUSAL_RULES},
    "all_row_rules": [*ALL_ROW_RULES, "file_checksum", "file_rows"],
}


@pytest.fixture(scope="module")
def base_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("golden") / RELEASE
    generate_release(out, people=3000, seed=7, release=RELEASE)
    return out


def _normalised(report: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The report with the temporary folder's path replaced, so it compares across runs."""
    text = json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False)
    return json.loads(text.replace(str(folder), "<release>"))  # type: ignore[no-any-return]


@pytest.mark.parametrize("case", list(CASES))
async def test_refusal_report_matches_golden(
    raw: asyncpg.Connection, tmp_path: Path, base_release: Path, case: str
) -> None:
    bad = tmp_path / RELEASE
    corrupt_release(base_release, bad, CASES[case], seed=11)
    result = await import_release(raw, bad)
    assert not result.published
    report = _normalised(result.report.to_dict(), bad)
    golden = GOLDEN / f"{case}.json"
    if UPDATE:
        golden.write_text(json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    expected = json.loads(golden.read_text())
    # Rule by rule first, so a failure names the rule that drifted.
    got = {(f["rule"], s): f for s in ("errors", "warnings") for f in report[s]}
    want = {(f["rule"], s): f for s in ("errors", "warnings") for f in expected[s]}
    assert sorted(got) == sorted(want)
    for key, finding in want.items():
        assert got[key]["count"] == finding["count"], key
        assert got[key]["examples"] == finding["examples"], key
    assert report == expected
    for rule in CASES[case]:
        assert any(f["rule"] == rule for f in expected["errors"]), rule
