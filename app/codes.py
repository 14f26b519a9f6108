"""The code tables of a release export's coded columns: ONE source for the importer's checks
(app.ingest.columns), the OpenAPI enums (app.schemas.codes) and docs/codes.md (a test compares
the document with these tables).

Each code has a name for generated clients (`x-enum-varnames`), its usual Indonesian term and
an English gloss.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Code:
    value: int
    name: str  # an identifier for generated clients: MALE, OWNED, ...
    indonesian: str
    english: str


@dataclass(frozen=True, slots=True)
class CodeTable:
    column: str  # the export's column
    field: str  # the database column and the API field
    title: str  # the enum's name in the contract
    codes: tuple[Code, ...]

    @property
    def values(self) -> tuple[int, ...]:
        return tuple(c.value for c in self.codes)

    def describe(self) -> str:
        """The codes and their meanings, one a line: the enum's description in the contract."""
        lines = [f"`{self.column}` in the export (docs/codes.md):"]
        lines += [f"* {c.value}: {c.english} ({c.indonesian})" for c in self.codes]
        return "\n".join(lines)


def _table(column: str, field: str, title: str, *codes: tuple[int, str, str, str]) -> CodeTable:
    return CodeTable(column, field, title, tuple(Code(*c) for c in codes))


HOME_OWNERSHIP = _table(
    "kepemilikan_rumah",
    "home_ownership",
    "HomeOwnership",
    (1, "OWNED", "milik sendiri", "owned"),
    (2, "RENTED", "kontrak / sewa", "rented or on contract"),
    (3, "RENT_FREE", "bebas sewa", "occupied rent-free"),
    (4, "OFFICIAL", "dinas", "official (employer's) housing"),
    (5, "OTHER", "lainnya", "other"),
)

DRINKING_WATER = _table(
    "sumber_air_minum",
    "drinking_water",
    "DrinkingWater",
    (1, "BOTTLED", "air kemasan bermerk", "bottled water"),
    (2, "REFILL", "air isi ulang", "refill water"),
    (3, "PIPED", "leding", "piped water"),
    (4, "BORE_WELL", "sumur bor / pompa", "bore well or pump"),
    (5, "PROTECTED_WELL", "sumur terlindung", "protected well"),
    (6, "UNPROTECTED_WELL", "sumur tak terlindung", "unprotected well"),
    (7, "PROTECTED_SPRING", "mata air terlindung", "protected spring"),
    (8, "UNPROTECTED_SPRING", "mata air tak terlindung", "unprotected spring"),
    (
        9,
        "SURFACE",
        "air permukaan (sungai, danau, waduk)",
        "surface water (river, lake, reservoir)",
    ),
    (10, "RAIN", "air hujan", "rainwater"),
    (11, "OTHER", "lainnya", "other"),
)

TOILET = _table(
    "fasilitas_bab",
    "toilet",
    "Toilet",
    (1, "OWN", "sendiri", "the family's own"),
    (2, "SHARED", "bersama", "shared with other households"),
    (3, "PUBLIC", "umum", "public"),
    (4, "NONE", "tidak ada", "none"),
)

LIGHTING = _table(
    "sumber_penerangan",
    "lighting",
    "Lighting",
    (1, "PLN_METERED", "listrik PLN dengan meteran", "PLN (state utility) electricity, metered"),
    (2, "PLN_UNMETERED", "listrik PLN tanpa meteran", "PLN electricity, not metered"),
    (3, "OTHER_ELECTRIC", "listrik non-PLN", "electricity from another source"),
    (4, "NOT_ELECTRIC", "bukan listrik", "not electric"),
)

RELATIONSHIP = _table(
    "hubungan_kk",
    "relationship",
    "Relationship",
    (1, "HEAD", "kepala keluarga", "head of the family"),
    (2, "SPOUSE", "istri / suami", "spouse"),
    (3, "CHILD", "anak", "child"),
    (4, "CHILD_IN_LAW", "menantu", "child-in-law"),
    (5, "GRANDCHILD", "cucu", "grandchild"),
    (6, "PARENT", "orang tua / mertua", "parent or parent-in-law"),
    (7, "DOMESTIC_WORKER", "pembantu rumah tangga", "domestic worker"),
    (8, "OTHER", "lainnya", "other"),
)

SEX = _table(
    "jenis_kelamin",
    "sex",
    "Sex",
    (1, "MALE", "laki-laki", "male"),
    (2, "FEMALE", "perempuan", "female"),
)

MARITAL_STATUS = _table(
    "status_kawin",
    "marital_status",
    "MaritalStatus",
    (1, "SINGLE", "belum kawin", "single, never married"),
    (2, "MARRIED", "kawin", "married"),
    (3, "DIVORCED", "cerai hidup", "divorced"),
    (4, "WIDOWED", "cerai mati", "widowed"),
)

SCHOOL_STATUS = _table(
    "status_sekolah",
    "school_status",
    "SchoolStatus",
    (0, "NEVER", "tidak / belum pernah sekolah", "never attended school"),
    (1, "ATTENDING", "masih sekolah", "attending school now"),
    (2, "LEFT", "tidak bersekolah lagi", "no longer attending"),
)

DISABILITY = _table(
    "disabilitas",
    "disability",
    "Disability",
    (0, "NONE", "tidak ada", "none"),
    (1, "MILD_OR_MODERATE", "ringan / sedang", "mild or moderate"),
    (2, "SEVERE", "berat", "severe"),
)

CODE_TABLES: tuple[CodeTable, ...] = (
    HOME_OWNERSHIP,
    DRINKING_WATER,
    TOILET,
    LIGHTING,
    RELATIONSHIP,
    SEX,
    MARITAL_STATUS,
    SCHOOL_STATUS,
    DISABILITY,
)
