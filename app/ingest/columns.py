"""The export's columns (docs/snapshot-format.md) mapped to the database's, with their parsers.

Each parser takes the raw text of a field and returns the PostgreSQL COPY text of the value
(`\\N` for absent) or raises `FieldError(rule)`. The COPY text is also what the content checksum
hashes, so it must be exactly what `COPY ... TO STDOUT` prints back (app.ingest.checksum).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from app.codes import (
    DISABILITY,
    DRINKING_WATER,
    HOME_OWNERSHIP,
    LIGHTING,
    MARITAL_STATUS,
    RELATIONSHIP,
    SCHOOL_STATUS,
    SEX,
    TOILET,
    CodeTable,
)
from app.eligibility.engine import SCHOOL_LEVELS
from app.identifiers import IdentifierError, parse_nik

NULL = "\\N"


class FieldError(ValueError):
    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


Parser = Callable[[str], str]


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    source: str  # the export's column name
    target: str  # the database column
    required: bool  # the column must be present in the header
    nullable: bool  # an empty value is allowed
    parse: Parser
    identifier: bool = False  # a NIK or No. KK: masked in reports


def _codes(lo: int, hi: int) -> Parser:
    return _values(range(lo, hi + 1))


def _coded(table: CodeTable) -> Parser:
    """A coded column: the codes of its table (app.codes), nothing else."""
    return _values(table.values)


def _values(values: Sequence[int]) -> Parser:
    allowed = {str(i): str(i) for i in values}
    lo, hi = min(values), max(values)
    listed = f"{lo}..{hi}" if list(values) == list(range(lo, hi + 1)) else ", ".join(allowed)

    def parse(raw: str) -> str:
        try:
            return allowed[raw]
        except KeyError:
            raw = raw.strip()
            if raw in allowed:
                return allowed[raw]
            raise FieldError("value_invalid", f"must be one of {listed}") from None

    parse.codes = allowed  # type: ignore[attr-defined]  # the fast path of app.ingest.validate
    return parse


def _flag(raw: str) -> str:
    if raw == "0":
        return "f"
    if raw == "1":
        return "t"
    raise FieldError("value_invalid", "must be 0 or 1")


_flag.codes = {"0": "f", "1": "t"}  # type: ignore[attr-defined]


def _non_negative_int(raw: str) -> str:
    if raw.isascii() and raw.isdigit() and len(raw) <= 9:
        return str(int(raw))
    raise FieldError("value_invalid", "must be a non-negative integer")


def _digits(n: int, rule: str, what: str) -> Parser:
    def parse(raw: str) -> str:
        if len(raw) == n and raw.isdigit() and raw.isascii():
            # The COPY text of an int8 has no leading zero (the checksum hashes that text).
            return raw if raw[0] != "0" else str(int(raw))
        raise FieldError(rule, f"{what} must be {n} digits")

    # The columnar reader's fast path (app.ingest.columnar): a value matching this renders as
    # itself; any other goes through `parse`.
    parse.pattern = f"^[1-9][0-9]{{{n - 1}}}$"  # type: ignore[attr-defined]
    return parse


def _nik_date_parts() -> frozenset[str]:
    """Every DDMMYY a NIK may carry (day + 40 for women): 29 Feb for any year divisible by 4."""
    out = set()
    for yy in range(100):
        for month in range(1, 13):
            for day in range(1, 32):
                try:
                    dt.date(2000 + yy, month, day)
                except ValueError:
                    try:
                        dt.date(1900 + yy, month, day)
                    except ValueError:
                        continue
                out.add(f"{day:02d}{month:02d}{yy:02d}")
                out.add(f"{day + 40:02d}{month:02d}{yy:02d}")
    return frozenset(out)


_NIK_DATES = _nik_date_parts()


def _nik(raw: str) -> str:
    # Fast path for the common valid NIK; anything else goes through parse_nik for its rule.
    if (
        len(raw) == 16
        and raw.isdigit()
        and raw.isascii()
        and raw[6:12] in _NIK_DATES
        and raw[12:] != "0000"
        and raw[0] != "0"
    ):
        return raw
    try:
        parse_nik(raw)
    except IdentifierError as e:
        raise FieldError(e.rule, str(e)) from None
    return str(int(raw))


# The columnar fast path also checks the date part (in _NIK_DATES) and the serial (not 0000).
_nik.pattern = "^[1-9][0-9]{15}$"  # type: ignore[attr-defined]


def _date(raw: str) -> str:
    try:
        if len(raw) != 10:
            raise ValueError
        return dt.date.fromisoformat(raw).isoformat()
    except ValueError:
        raise FieldError("value_invalid", "must be a date YYYY-MM-DD") from None


def _school_level(raw: str) -> str:
    try:
        return str(SCHOOL_LEVELS[raw])
    except KeyError:
        raise FieldError("value_invalid", "must be one of SD, SMP, SMA, PT") from None


_TEXT_ESCAPES = str.maketrans(
    {"\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}
)


_school_level.codes = {k: str(v) for k, v in SCHOOL_LEVELS.items()}  # type: ignore[attr-defined]


def _text(raw: str) -> str:
    if not raw.strip():
        raise FieldError("missing_value", "must not be empty")
    if "\x00" in raw:
        raise FieldError("value_invalid", "must not contain NUL")
    return raw.translate(_TEXT_ESCAPES)


def col(
    source: str,
    target: str,
    parse: Parser,
    *,
    required: bool = False,
    nullable: bool = True,
    identifier: bool = False,
) -> ColumnSpec:
    return ColumnSpec(source, target, required, nullable, parse, identifier)


# Order = the database column order after (snapshot_key, source_line): see app.models.tables.
FAMILY_COLUMNS: tuple[ColumnSpec, ...] = (
    col(
        "no_kk",
        "no_kk",
        _digits(16, "no_kk_format", "No. KK"),
        required=True,
        nullable=False,
        identifier=True,
    ),
    col(
        "kode_wilayah",
        "region_code",
        _digits(10, "value_invalid", "kode_wilayah"),
        required=True,
        nullable=False,
    ),
    col("luas_lantai_m2", "floor_area_m2", _non_negative_int),
    col("daya_listrik_va", "power_va", _non_negative_int),
    # Required column, but an empty value is meaningful: unranked ("non-desil").
    col("desil", "decile", _codes(1, 10), required=True),
    col("kepemilikan_rumah", "home_ownership", _coded(HOME_OWNERSHIP)),
    col("sumber_air_minum", "drinking_water", _coded(DRINKING_WATER)),
    col("fasilitas_bab", "toilet", _coded(TOILET)),
    col("sumber_penerangan", "lighting", _coded(LIGHTING)),
    col("asn_tni_polri", "asn_tni_polri", _flag, required=True, nullable=False),
    col("penerima_pkh", "pkh_recipient", _flag),
    col("penerima_bpnt", "bpnt_recipient", _flag),
)

PERSON_COLUMNS: tuple[ColumnSpec, ...] = (
    col("nik", "nik", _nik, required=True, nullable=False, identifier=True),
    col(
        "no_kk",
        "no_kk",
        _digits(16, "no_kk_format", "No. KK"),
        required=True,
        nullable=False,
        identifier=True,
    ),
    col("tanggal_lahir", "birth_date", _date, required=True, nullable=False),
    col("hubungan_kk", "relationship", _coded(RELATIONSHIP), required=True, nullable=False),
    col("jenis_kelamin", "sex", _coded(SEX), required=True, nullable=False),
    col("status_kawin", "marital_status", _coded(MARITAL_STATUS)),
    col("status_sekolah", "school_status", _coded(SCHOOL_STATUS)),
    col("jenjang_sekolah", "school_level", _school_level),
    col("disabilitas", "disability", _coded(DISABILITY)),
    col("hamil", "pregnant", _flag),
    col("penyakit_kronis", "chronic_illness", _flag),
    col("bekerja", "working", _flag),
    col("penerima_pbi", "pbi_recipient", _flag),
    col("nama", "name", _text, required=True, nullable=False),
)


@dataclass(frozen=True, slots=True)
class TableSpec:
    name: str  # the export's table: keluarga or anggota
    table: str  # the database table
    columns: tuple[ColumnSpec, ...]

    @property
    def content_columns(self) -> tuple[str, ...]:
        return tuple(c.target for c in self.columns)


FAMILIES = TableSpec("keluarga", "families", FAMILY_COLUMNS)
PEOPLE = TableSpec("anggota", "people", PERSON_COLUMNS)
TABLES = (FAMILIES, PEOPLE)
