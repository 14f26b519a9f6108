"""What synthetic families and people look like: identities, composition and attribute models.

Everything is drawn from one `random.Random` owned by the caller (never the global generator, never
the clock), so a seed fixes every byte. The knobs below are the realism levers; they aim at the
published DTSEN figures without claiming precision:

- family composition (`CHILDREN_WEIGHTS`, `P_*` composition knobs): ~3.0-3.1 people per family,
  single-person families ~13 %, elderly parents, grandchildren, children-in-law, domestic workers.
- deciles: ten equal groups of families (shuffled blocks of ten), `P_UNRANKED` left unranked.
- `ASN_BY_DECILE`: ~5 % of families, concentrated in high deciles.
- housing pickers per decile tier (1-3, 4-7, 8-10) and floor area rising with the decile.
- recipients: `P_*_IN` = 1 - exclusion error for families meeting the criteria (PKH 28 %, BPNT
  18 %); `*_OUT_BY_DECILE` places recipients outside the criteria so the inclusion error is
  ~40 % (PKH) and ~30 % (BPNT); PBI JK is drawn per family and then per member (`P_PBI_FOLLOW`).
- people: schooling by age and decile, disability (~1.5 % severe, ~4 % mild, more among the
  elderly), chronic illness rising with age, pregnancy (`P_PREGNANT` of married women 15-49).
- edge cases on purpose: birthdays on the cut-off date and the day after it, more often at the
  rules' threshold ages (`THRESHOLD_AGES`: exact ages 6, 18, 21, 60, 70...), 29 February,
  twins, 6-year-olds in SD and 19-21-year-olds still in SMA.
"""

from __future__ import annotations

import datetime as dt
import random

from app.synth.reference import (
    A_DISABILITAS,
    A_HAMIL,
    A_JENJANG,
    A_LAHIR,
    A_PBI,
    A_SEKOLAH,
    WeightedPicker,
    age_on,
    name_pools,
    regions,
    years_before,
)

P_UNRANKED = 0.015
CHILDREN_WEIGHTS = (0.14, 0.26, 0.31, 0.16, 0.08, 0.05)  # 0..5 children living in the family
P_SINGLE = 0.13
P_SINGLE_PARENT = 0.09
P_TWINS = 0.012
P_BORN_ELSEWHERE = 0.15
P_PREGNANT = 0.05
P_BIRTHDAY_ON_CUTOFF = 0.004
# Ages at the rules' thresholds (0-6 early childhood, 6-21 school components, 18 Sekolah
# Rakyat, 60/70 elderly): more birthdays on the cut-off day or on the day after it.
THRESHOLD_AGES = frozenset({5, 6, 17, 18, 20, 21, 59, 60, 69, 70})
P_THRESHOLD_EDGE = 0.03
P_LEAP_DAY = 0.003
ASN_BY_DECILE = (0.004, 0.005, 0.008, 0.02, 0.025, 0.045, 0.06, 0.09, 0.11, 0.14)
ASN_UNRANKED = 0.03

P_PKH_IN = 0.72
PKH_OUT_BY_DECILE = (0.14, 0.14, 0.14, 0.14, 0.5, 0.35, 0.14, 0.04, 0.01, 0.01)
P_BPNT_IN = 0.82
BPNT_OUT_BY_DECILE = (0.1, 0.1, 0.1, 0.1, 0.1, 0.70, 0.55, 0.30, 0.10, 0.03)
P_PBI_IN = 0.85
PBI_OUT_BY_DECILE = (0.1, 0.1, 0.1, 0.1, 0.1, 0.35, 0.25, 0.12, 0.05, 0.02)
P_OUT_UNRANKED = 0.05
ASN_RECIPIENT_FACTOR = 0.3  # outside the criteria, ASN families are rarer recipients
P_PBI_FOLLOW = 0.95  # a member shares the family's PBI status

MAX_AGE = 95  # NIKs carry no century: older people would decode to the wrong century

_WATER = (
    WeightedPicker([str(i) for i in range(1, 12)], (2, 8, 6, 18, 22, 12, 8, 8, 8, 5, 3)),
    WeightedPicker([str(i) for i in range(1, 12)], (6, 25, 12, 25, 18, 4, 4, 2, 1, 2, 1)),
    WeightedPicker([str(i) for i in range(1, 12)], (25, 30, 22, 15, 5, 1, 1, 0.5, 0.2, 0.2, 0.1)),
)
_TOILET = (
    WeightedPicker(["1", "2", "3", "4"], (62, 14, 5, 19)),
    WeightedPicker(["1", "2", "3", "4"], (86, 8, 2, 4)),
    WeightedPicker(["1", "2", "3"], (97, 2, 1)),
)
_LIGHT = (
    WeightedPicker(["1", "2", "3", "4"], (74, 13, 8, 5)),
    WeightedPicker(["1", "2", "3", "4"], (92, 5, 2, 1)),
    WeightedPicker(["1", "2"], (99, 1)),
)
_POWER = (
    WeightedPicker(["450", "900", "1300"], (60, 35, 5)),
    WeightedPicker(["450", "900", "1300", "2200"], (22, 50, 22, 6)),
    WeightedPicker(["900", "1300", "2200", "3500", "5500"], (12, 38, 32, 12, 6)),
)
_TENURE = WeightedPicker(["1", "2", "3", "4", "5"], (80, 9, 8, 1, 2))
_TENURE_CITY = WeightedPicker(["1", "2", "3", "4", "5"], (66, 22, 8, 2, 2))
_TENURE_ASN = WeightedPicker(["1", "2", "3", "4", "5"], (70, 12, 3, 14, 1))


def tier(desil: int) -> int:
    """Decile tier for the housing pickers; unranked (0) counts as middle."""
    if desil == 0:
        return 1
    return 0 if desil <= 3 else (1 if desil <= 7 else 2)


class Identities:
    """Issues NIKs and No. KKs, unique by a serial counter per 12-digit prefix."""

    def __init__(self) -> None:
        # int keys: about half the memory of 12-character strings at a million people.
        self.nik_serials: dict[int, int] = {}
        self.kk_serials: dict[int, int] = {}

    def nik(self, district: str, birth: dt.date, female: bool) -> str:
        day = birth.day + 40 if female else birth.day
        key = int(district) * 1_000_000 + day * 10_000 + birth.month * 100 + birth.year % 100
        serial = self.nik_serials.get(key, 0) + 1
        if serial > 9999:
            raise OverflowError("NIK serials exhausted for one district and birth date")
        self.nik_serials[key] = serial
        return f"{key:012d}{serial:04d}"

    def no_kk(self, district: str, issued: dt.date) -> str:
        key = int(district) * 1_000_000 + issued.day * 10_000 + issued.month * 100
        key += issued.year % 100
        serial = self.kk_serials.get(key, 0) + 1
        if serial > 9999:
            raise OverflowError("No. KK serials exhausted for one district and issue date")
        self.kk_serials[key] = serial
        return f"{key:012d}{serial:04d}"


class PersonModel:
    """Per-person attributes on a cut-off date; shared by fresh releases and quarterly churn."""

    def __init__(self, rng: random.Random, cutoff: dt.date) -> None:
        self.rng = rng
        self.cutoff = cutoff
        self.names = name_pools()
        self.regions = regions()
        # Ordinal window of birth dates for each age on the cut-off date.
        self._age_window = [
            (
                years_before(cutoff, age + 1).toordinal() + 1,
                years_before(cutoff, age).toordinal(),
            )
            for age in range(MAX_AGE + 2)
        ]

    def birth_for_age(self, age: int) -> dt.date:
        rng = self.rng
        age = max(0, min(age, MAX_AGE))
        lo, hi = self._age_window[age]
        r = rng.random()
        if r < P_BIRTHDAY_ON_CUTOFF or (age in THRESHOLD_AGES and r < P_THRESHOLD_EDGE):
            return dt.date.fromordinal(hi)  # turns exactly `age` on the cut-off date
        if age in THRESHOLD_AGES and r < 2 * P_THRESHOLD_EDGE:
            return dt.date.fromordinal(lo)  # turns `age + 1` the day after the cut-off
        birth = dt.date.fromordinal(rng.randint(lo, hi))
        if r > 1 - P_LEAP_DAY:
            for year in (birth.year, birth.year - 1):
                if year % 4 == 0 and year != 1900:
                    leap = dt.date(year, 2, 29)
                    if leap <= self.cutoff:
                        return leap
        return birth

    def name(self, female: bool, surname: str | None = None) -> str:
        rng = self.rng
        names = self.names
        first = rng.choice(names.first_female if female else names.first_male)
        if rng.random() < 0.15:  # two given names
            second = rng.choice(names.first_female if female else names.first_male)
            if second != first:
                first = f"{first} {second}"
        if surname is None:
            if rng.random() < 0.3:
                return first
            surname = rng.choice(names.last_female if female else names.last_male)
        return f"{first} {surname}"

    def nik_district(self, home: str) -> str:
        rng = self.rng
        if rng.random() >= P_BORN_ELSEWHERE:
            return home
        if rng.random() < 0.6:
            return rng.choice(self.regions.by_province[home[:2]])
        return self.regions.pick_district(rng)

    def school(self, age: int, desil: int) -> tuple[str, str]:
        """(status_sekolah, jenjang_sekolah) by age; poorer families drop out more often."""
        r = self.rng.random()
        poor = 0 < desil <= 3
        rich = desil >= 8
        if age < 5:
            return ("" if r < 0.6 else "0"), ""
        if age == 5:
            return "0", ""
        if age == 6:
            return ("1", "SD") if r < 0.45 else ("0", "")
        if age <= 12:
            if r < (0.93 if poor else 0.975):
                return ("1", "SMP") if age == 12 and r < 0.05 else ("1", "SD")
            return ("0", "") if r < 0.985 else ("2", "")
        if age <= 15:
            if r < 0.06 and age == 13:
                return "1", "SD"
            if r < (0.80 if poor else 0.90):
                return "1", "SMP"
            return "2", ""
        if age <= 18:
            if r < 0.05 and age == 16:
                return "1", "SMP"
            if r < (0.55 if poor else 0.75):
                return "1", "SMA"
            return "2", ""
        if age <= 21:
            if age <= 20 and r < 0.05:
                return "1", "SMA"  # repeaters and late starters, an edge case for the rules
            if r < (0.10 if poor else 0.45 if rich else 0.25):
                return "1", "PT"
            return "2", ""
        if age <= 24:
            return ("1", "PT") if r < (0.04 if poor else 0.18) else ("2", "")
        if age >= 60:
            return ("0", "") if r < 0.15 else ("2", "")
        return ("0", "") if r < 0.04 else ("2", "")

    def health(self, age: int) -> tuple[str, str]:
        """(disabilitas, penyakit_kronis), both rising with age."""
        rng = self.rng
        r = rng.random()
        if age >= 70:
            disab = "2" if r < 0.06 else "1" if r < 0.18 else "0"
        elif age >= 60:
            disab = "2" if r < 0.03 else "1" if r < 0.10 else "0"
        else:
            disab = "2" if r < 0.01 else "1" if r < 0.035 else "0"
        p_chronic = 0.02 if age < 40 else 0.08 if age < 60 else 0.2
        return disab, ("1" if rng.random() < p_chronic else "0")

    def works(self, age: int, female: bool, attending: bool) -> str:
        if age < 10:
            return ""
        r = self.rng.random()
        if age < 15:
            return "1" if r < 0.03 else "0"
        if attending:
            return "1" if r < 0.08 else "0"
        if age < 25:
            return "1" if r < (0.45 if female else 0.65) else "0"
        if age < 60:
            return "1" if r < (0.52 if female else 0.9) else "0"
        if age < 70:
            return "1" if r < (0.30 if female else 0.55) else "0"
        return "1" if r < 0.15 else "0"

    def person(
        self,
        no_kk: str,
        home: str,
        identities: Identities,
        role: int,
        female: bool,
        birth: dt.date,
        kawin: str,
        desil: int,
        surname: str | None = None,
    ) -> list[str]:
        age = age_on(birth, self.cutoff)
        nik = identities.nik(self.nik_district(home), birth, female)
        hamil = ""
        if female and age >= 10:
            hamil = (
                "1" if kawin == "2" and 15 <= age <= 49 and self.rng.random() < P_PREGNANT else "0"
            )
        status, level = self.school(age, desil)
        disab, chronic = self.health(age)
        return [
            nik,
            no_kk,
            self.name(female, surname),
            str(role),
            "2" if female else "1",
            birth.isoformat(),
            kawin,
            hamil,
            status,
            level,
            disab,
            chronic,
            self.works(age, female, status == "1"),
            "",
        ]

    def housing(self, desil: int, asn: bool, city: bool) -> list[str]:
        """kepemilikan_rumah .. daya_listrik_va for a family of this decile."""
        rng = self.rng
        t = tier(desil)
        d = desil or 5
        tenure = (_TENURE_ASN if asn else _TENURE_CITY if city else _TENURE)(rng)
        floor = max(9, int(rng.gauss(20 + 9 * d, 5 + 2.5 * d)))
        light = _LIGHT[t](rng)
        power = ""
        if light == "1":
            power = _POWER[t](rng)
        elif light == "2":
            power = "450" if rng.random() < 0.7 else "900"
        return [tenure, str(floor), _WATER[t](rng), _TOILET[t](rng), light, power]


def has_pkh_component(members: list[list[str]], cutoff: dt.date) -> bool:
    """A member that would carry a PKH component (docs/rules.md), approximated for targeting."""
    for m in members:
        if m[A_HAMIL] == "1" or m[A_DISABILITAS] == "2":
            return True
        age = age_on(dt.date.fromisoformat(m[A_LAHIR]), cutoff)
        if age <= 6 or age >= 60:
            return True
        if m[A_SEKOLAH] == "1" and m[A_JENJANG] in ("SD", "SMP", "SMA") and age <= 21:
            return True
    return False


def draw_recipients(
    rng: random.Random, desil: int, asn: bool, members: list[list[str]], cutoff: dt.date
) -> tuple[str, str]:
    """(penerima_pkh, penerima_bpnt) for a family; also sets each member's penerima_pbi."""

    def draw(in_criteria: bool, p_in: float, out: tuple[float, ...]) -> bool:
        if in_criteria:
            return rng.random() < p_in
        p = out[desil - 1] if desil else P_OUT_UNRANKED
        return rng.random() < (p * ASN_RECIPIENT_FACTOR if asn else p)

    ranked_low4 = 1 <= desil <= 4 and not asn
    ranked_low5 = 1 <= desil <= 5 and not asn
    pkh = draw(ranked_low4 and has_pkh_component(members, cutoff), P_PKH_IN, PKH_OUT_BY_DECILE)
    bpnt = draw(ranked_low5, P_BPNT_IN, BPNT_OUT_BY_DECILE)
    pbi = draw(ranked_low5, P_PBI_IN, PBI_OUT_BY_DECILE)
    for m in members:
        own = pbi if rng.random() < P_PBI_FOLLOW else not pbi
        m[A_PBI] = "1" if own else "0"
    return ("1" if pkh else "0"), ("1" if bpnt else "0")
