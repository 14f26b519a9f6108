"""Snapshot and rule-set ids: one definition, the models' anchored patterns and the fast paths'
ASCII `fullmatch` agree on what they accept."""

from __future__ import annotations

import re

import pytest

from app.identifiers import RULE_SET_ID, RULE_SET_ID_PATTERN, SNAPSHOT_ID, SNAPSHOT_ID_PATTERN


def test_the_published_patterns_are_unchanged() -> None:
    assert SNAPSHOT_ID_PATTERN == r"^\d{4}-\d{2}-\d{2}(-r[1-9]\d*)?$"
    assert RULE_SET_ID_PATTERN == r"^[a-z0-9][a-z0-9-]{2,63}$"


@pytest.mark.parametrize(
    ("value", "snapshot", "rule_set"),
    [
        ("2026-01-23", True, True),
        ("2026-01-23-r2", True, True),
        ("2026-01-23-r0", False, True),
        ("2026-01-23\n", False, False),
        ("kepmensos-79-2025", False, True),
        ("Kepmensos", False, False),
        ("ab", False, False),
        ("٢٠٢٦-01-23", False, False),  # non-ASCII digits: never on the fast paths
    ],
)
def test_fast_path_checks_accept_what_the_models_accept_in_ascii(
    value: str, snapshot: bool, rule_set: bool
) -> None:
    assert (SNAPSHOT_ID.fullmatch(value) is not None) is snapshot
    assert (RULE_SET_ID.fullmatch(value) is not None) is rule_set
    if value.isascii() and "\n" not in value:
        assert (re.search(SNAPSHOT_ID_PATTERN, value) is not None) is snapshot
        assert (re.search(RULE_SET_ID_PATTERN, value) is not None) is rule_set


def test_the_published_nik_pattern_is_exactly_what_validation_accepts() -> None:
    from app.identifiers import NIK_PATTERN, NO_KK_PATTERN, check_no_kk, is_nik

    nik = re.compile(NIK_PATTERN)
    # Every day-month-year of a NIK, women's days too, with a zero and a valid serial.
    for dm in range(10_000):
        for yy in range(100):
            for serial in ("0000", "0001", "9000"):
                value = f"320101{dm:04d}{yy:02d}{serial}"
                assert (nik.fullmatch(value) is not None) is is_nik(value), value
    for odd in ("0000000000000000", "320101450190001", "32010145019000011", "３２01014501900001"):
        assert (nik.fullmatch(odd) is not None) is is_nik(odd), odd
    assert nik.fullmatch("3201016902000001") and not nik.fullmatch("3201016902010001")
    assert re.fullmatch(NO_KK_PATTERN, "0000000000000000")
    check_no_kk("0000000000000000")
