"""NIK and No. KK: parsing, validation and masking (docs/snapshot-format.md, docs/codes.md)."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from functools import lru_cache


class IdentifierError(ValueError):
    """A NIK or No. KK that cannot be one. `rule` is a stable id; the message names no digits."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


@dataclass(frozen=True, slots=True)
class NikInfo:
    district: str  # 6-digit prefix PPRRDD
    birth_day: int
    birth_month: int
    birth_yy: int  # two digits, no century
    female: bool
    serial: int


def _digits16(value: str, what: str) -> None:
    if len(value) != 16 or not value.isascii() or not value.isdigit():
        raise IdentifierError(
            f"{what}_format", f"{what.upper().replace('_', ' ')} must be 16 digits"
        )


def parse_nik(value: str) -> NikInfo:
    """Validate a NIK's structure: 16 ASCII digits, a real date (day + 40 for women), serial > 0.

    There is no century in a NIK, so 29 Feb is accepted for any two-digit year that has one in
    some century (every year divisible by 4 does: 1900 is not leap, 2000 is).
    """
    _digits16(value, "nik")
    day = int(value[6:8])
    month = int(value[8:10])
    yy = int(value[10:12])
    serial = int(value[12:16])
    female = day > 40
    real_day = day - 40 if female else day
    if not _real_date(real_day, month, yy):
        raise IdentifierError("nik_date", "NIK date part is not a real date")
    if serial == 0:
        raise IdentifierError("nik_serial", "NIK serial must not be 0000")
    return NikInfo(value[:6], real_day, month, yy, female, serial)


@lru_cache(maxsize=4096)
def _real_date(day: int, month: int, yy: int) -> bool:
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return False
    for century in (2000, 1900):
        try:
            dt.date(century + yy, month, day)
        except ValueError:
            continue
        return True
    return False


def _day_months() -> frozenset[str]:
    out = set()
    for month in range(1, 13):
        for day in range(1, 32):
            if any(_real_date(day, month, yy) for yy in (0, 1)):  # 2000 is leap: 29 Feb counts
                out.add(f"{day:02d}{month:02d}")
                out.add(f"{day + 40:02d}{month:02d}")
    return frozenset(out)


_DAY_MONTHS = _day_months()
_FEB_29 = ("2902", "6902")


def is_nik(value: str) -> bool:
    """True exactly when `parse_nik(value)` would accept it, without building anything.

    For hot loops (a bulk job checks millions): a set lookup for day and month, a modulo for
    29 February (a two-digit year divisible by 4 is leap in the century 2000 or 1900).
    """
    return (
        len(value) == 16
        and value.isdigit()
        and value.isascii()
        and value[6:10] in _DAY_MONTHS
        and (value[6:10] not in _FEB_29 or int(value[10:12]) % 4 == 0)
        and value[12:] != "0000"
    )


def _nik_pattern() -> str:
    """The regular expression `is_nik` is: anchored, ASCII digits, no look-around (JSON Schema
    and every regex engine a client generator uses read it alike)."""
    day_31 = "0[1-9]|[12][0-9]|3[01]|4[1-9]|[56][0-9]|7[01]"  # women: day + 40
    day_30 = "0[1-9]|[12][0-9]|30|4[1-9]|[56][0-9]|70"
    day_28 = "0[1-9]|1[0-9]|2[0-8]|4[1-9]|5[0-9]|6[0-8]"
    date = (
        f"(?:(?:{day_31})(?:0[13578]|1[02])[0-9]{{2}}"
        f"|(?:{day_30})(?:0[469]|11)[0-9]{{2}}"
        f"|(?:{day_28})02[0-9]{{2}}"
        "|(?:29|69)02(?:[02468][048]|[13579][26]))"  # 29 February: a leap year in some century
    )
    serial = "(?:000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})"  # not 0000
    return f"^[0-9]{{6}}{date}{serial}$"


# Published in the OpenAPI document: exactly what `is_nik` and `check_no_kk` accept.
NIK_PATTERN = _nik_pattern()
NO_KK_PATTERN = "^[0-9]{16}$"


def check_no_kk(value: str) -> None:
    _digits16(value, "no_kk")


def nik_birth_date(info: NikInfo, on_or_before: dt.date) -> dt.date | None:
    """The birth date a NIK encodes, choosing the century that is not after `on_or_before`."""
    for century in (2000, 1900, 1800):
        try:
            d = dt.date(century + info.birth_yy, info.birth_month, info.birth_day)
        except ValueError:
            continue
        if d <= on_or_before:
            return d
    return None


def mask(value: str) -> str:
    """`3201014501900001` -> `3201********0001`: enough to recognise, not enough to enumerate."""
    if len(value) <= 8:
        return "*" * len(value)
    return value[:4] + "*" * (len(value) - 8) + value[-4:]


def as_int(value: str) -> int:
    """Identifiers are stored as int8 (16 digits fit; no leading zero: province codes are 11-94)."""
    return int(value)


def as_str(value: int) -> str:
    return f"{value:016d}"


# Snapshot ids (DTSEN release ids: a date, then -rN for a re-release) and rule-set ids
# (lower-case slugs), defined once here.


def _snapshot_id(digit: str) -> str:
    return f"{digit}{{4}}-{digit}{{2}}-{digit}{{2}}(-r[1-9]{digit}*)?"


_RULE_SET_ID = "[a-z0-9][a-z0-9-]{2,63}"
# As the request models write them (pydantic `pattern`, anchored): these strings are published
# in the OpenAPI document.
SNAPSHOT_ID_PATTERN = "^" + _snapshot_id(r"\d") + "$"
RULE_SET_ID_PATTERN = "^" + _RULE_SET_ID + "$"
# As the fast paths and the services check them: ASCII digits only, and always with
# `fullmatch` (a `$` would let a trailing newline through). What fails here goes on to the
# request models, which name the field in their refusal.
SNAPSHOT_ID = re.compile(_snapshot_id("[0-9]"))
RULE_SET_ID = re.compile(_RULE_SET_ID)

_ECHO_CHARS = 32
_LONG_DIGITS = re.compile(r"[0-9]{8,}")


def echo(value: object, *, identifier: bool = False, limit: int = _ECHO_CHARS) -> str:
    """A bad value as an error may echo it: at most `limit` characters (then "…"), any run of
    8 or more digits (a NIK, a No. KK or a piece of one) masked as `mask` does; a value given
    for an identifier (`identifier`) is masked whole, whatever its characters."""
    text = value if isinstance(value, str) else str(value)
    clipped = text[:limit]
    out = mask(clipped) if identifier else _LONG_DIGITS.sub(lambda m: mask(m.group()), clipped)
    return out + "…" if len(text) > limit else out
