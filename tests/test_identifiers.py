"""NIK checks: the fast predicate (`is_nik`, hot loops) must agree with `parse_nik` (the rules)."""

from __future__ import annotations

import random
import string

import pytest

from app.identifiers import IdentifierError, is_nik, parse_nik


def _accepted(value: str) -> bool:
    try:
        parse_nik(value)
    except IdentifierError:
        return False
    return True


def test_is_nik_agrees_with_parse_nik_on_every_date_part() -> None:
    # Every DDMMYY (women's days +40 included), with a good and a zero serial.
    checked = 0
    for dd in range(0, 100):
        for mm in range(0, 14):
            for yy in range(0, 100):
                for serial in ("0001", "0000"):
                    nik = f"320101{dd:02d}{mm:02d}{yy:02d}{serial}"
                    assert is_nik(nik) == _accepted(nik), nik
                    checked += 1
    assert checked == 100 * 14 * 100 * 2


@pytest.mark.parametrize(
    "value",
    [
        "320101450190000",  # 15 digits
        "32010145019000011",  # 17 digits
        "3201014501900001 ",
        " 3201014501900001",
        "320101450190000a",
        "３２０１０１４５０１９０００１",  # full-width digits: isdigit() but not ASCII
        "3201012902010001",  # 29 Feb of a year not divisible by 4
        "3201016902010001",
        "",
    ],
)
def test_is_nik_refuses_what_parse_nik_refuses(value: str) -> None:
    assert not _accepted(value)
    assert not is_nik(value)


def test_is_nik_agrees_on_random_strings() -> None:
    rng = random.Random(3)
    alphabet = string.digits * 6 + "x ٣"
    for _ in range(50_000):
        value = "".join(rng.choice(alphabet) for _ in range(rng.choice((15, 16, 16, 16, 17))))
        assert is_nik(value) == _accepted(value), repr(value)


def test_leap_days() -> None:
    assert is_nik("3201012902000001") and _accepted("3201012902000001")  # 2000
    assert is_nik("3201016902960001") and _accepted("3201016902960001")  # a woman, 1996
