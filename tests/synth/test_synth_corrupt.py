"""`corrupt_release`: each rule breaks exactly that rule, at the lines it reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.synth.corrupt import MANIFEST_RULES, REFUSAL_RULES, RULE_FILES, corrupt_release
from app.synth.generate import generate_release
from tests.synth.synth_checks import check_release

ROW_RULES = [r for r in REFUSAL_RULES if r not in MANIFEST_RULES and r != "missing_column"]


@pytest.fixture(scope="module")
def valid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("corrupt") / "valid"
    generate_release(out, people=3000, seed=9)
    assert check_release(out).refusals == []
    return out


@pytest.mark.parametrize("rule", REFUSAL_RULES)
def test_each_rule_breaks_only_itself(valid: Path, tmp_path: Path, rule: str) -> None:
    lines = corrupt_release(valid, tmp_path / "bad", [rule], seed=1)
    report = check_release(tmp_path / "bad")
    assert report.rules() == {rule}
    if rule in MANIFEST_RULES:
        assert lines == {rule: []}
    elif rule == "missing_column":
        assert lines == {rule: [1]}
        assert report.lines(rule, "anggota") == {1}
    else:
        assert 2 <= len(lines[rule]) <= 3
        assert set(lines[rule]) == report.lines(rule, RULE_FILES[rule])


def test_many_rules_at_once(valid: Path, tmp_path: Path) -> None:
    lines = corrupt_release(valid, tmp_path / "bad", ROW_RULES, seed=2)
    report = check_release(tmp_path / "bad")
    assert report.rules() == set(ROW_RULES)
    for rule in ROW_RULES:
        assert set(lines[rule]) == report.lines(rule, RULE_FILES[rule]), rule


def test_manifest_rules_combine(valid: Path, tmp_path: Path) -> None:
    corrupt_release(valid, tmp_path / "bad", ["file_checksum", "file_rows"])
    assert check_release(tmp_path / "bad").rules() == {"file_checksum", "file_rows"}


def test_deterministic_and_refuses_unknown(valid: Path, tmp_path: Path) -> None:
    a = corrupt_release(valid, tmp_path / "a", ROW_RULES, seed=3)
    b = corrupt_release(valid, tmp_path / "b", ROW_RULES, seed=3)
    assert a == b
    assert (tmp_path / "a" / "anggota.csv").read_bytes() == (
        tmp_path / "b" / "anggota.csv"
    ).read_bytes()
    with pytest.raises(ValueError, match="unknown rules"):
        corrupt_release(valid, tmp_path / "c", ["nope"])
