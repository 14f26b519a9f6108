"""Fresh synthetic families: where they live, who is in them, and their family-level attributes."""

from __future__ import annotations

import datetime as dt
import random

from app.synth.population import (
    ASN_BY_DECILE,
    ASN_UNRANKED,
    CHILDREN_WEIGHTS,
    MAX_AGE,
    P_SINGLE,
    P_SINGLE_PARENT,
    P_TWINS,
    P_UNRANKED,
    Identities,
    PersonModel,
    draw_recipients,
)
from app.synth.reference import WeightedPicker, regions, years_before

# (hubungan_kk, female, birth date, status_kawin, surname or None)
MemberSpec = tuple[int, bool, dt.date, str, str | None]
Family = tuple[list[str], list[list[str]]]  # keluarga row, anggota rows (head first)

_CHILDREN = WeightedPicker([str(i) for i in range(len(CHILDREN_WEIGHTS))], CHILDREN_WEIGHTS)
# Share of grown children still on their parents' card, by age band.
_STAY_HOME = ((18, 1.0), (23, 0.8), (28, 0.45), (36, 0.2), (200, 0.08))
KK_EARLIEST = dt.date(2001, 1, 1)  # keeps issue years unambiguous without a century


def stay_probability(age: int) -> float:
    for limit, p in _STAY_HOME:
        if age < limit:
            return p
    return 0.0


class FamilyFactory:
    """Draws one family after another; districts come in runs so families cluster."""

    def __init__(self, rng: random.Random, cutoff: dt.date, identities: Identities) -> None:
        self.rng = rng
        self.cutoff = cutoff
        self.ids = identities
        self.people = PersonModel(rng, cutoff)
        self.regions = regions()
        self._district = ""
        self._district_left = 0
        self._villages = 1
        self._deciles: list[int] = []

    def _desil(self) -> int:
        if self.rng.random() < P_UNRANKED:
            return 0
        if not self._deciles:
            # Shuffled blocks of ten make the ten groups equal up to one family.
            self._deciles = list(range(1, 11))
            self.rng.shuffle(self._deciles)
        return self._deciles.pop()

    def _district_code(self) -> str:
        rng = self.rng
        if self._district_left <= 0:
            self._district = self.regions.pick_district(rng)
            self._district_left = 1 + int(rng.expovariate(1 / 12))
            self._villages = 3 + rng.randrange(28)
        self._district_left -= 1
        return self._district

    def village_code(self, district: str) -> str:
        kind = "1" if self.regions.is_city(district) else "2"
        return f"{district}{kind}{1 + self.rng.randrange(self._villages):03d}"

    def issue_date(self, head_birth: dt.date) -> dt.date:
        adult = years_before(head_birth, -17)
        lo = max(KK_EARLIEST, adult).toordinal()
        hi = self.cutoff.toordinal()
        return dt.date.fromordinal(self.rng.randint(min(lo, hi), hi))

    def family(self) -> Family:
        rng = self.rng
        desil = self._desil()
        asn = rng.random() < (ASN_BY_DECILE[desil - 1] if desil else ASN_UNRANKED)
        district = self._district_code()
        specs = self.composition(desil)
        no_kk = self.ids.no_kk(district, self.issue_date(specs[0][2]))
        people = self.people
        rows = [
            people.person(no_kk, district, self.ids, role, female, birth, kawin, desil, surname)
            for role, female, birth, kawin, surname in specs
        ]
        pkh, bpnt = draw_recipients(rng, desil, asn, rows, self.cutoff)
        keluarga = [
            no_kk,
            self.village_code(district),
            str(desil) if desil else "",
            "1" if asn else "0",
            *people.housing(desil, asn, self.regions.is_city(district)),
            pkh,
            bpnt,
        ]
        return keluarga, rows

    def composition(self, desil: int) -> list[MemberSpec]:
        rng = self.rng
        birth = self.people.birth_for_age
        names = self.people.names
        surname = rng.choice(names.last_male) if rng.random() < 0.55 else None
        r = rng.random()
        if r < P_SINGLE:
            kind = rng.random()
            if kind < 0.5:
                age, female = rng.randint(19, 35), rng.random() < 0.4
                kawin = "1" if rng.random() < 0.9 else "3"
            elif kind < 0.65:
                age, female = rng.randint(36, 59), rng.random() < 0.45
                kawin = "3" if rng.random() < 0.5 else ("4" if rng.random() < 0.5 else "1")
            else:
                age, female = rng.randint(60, 92), rng.random() < 0.65
                kawin = "4" if rng.random() < 0.8 else "3"
            return [(1, female, birth(age), kawin, None if female else surname)]

        specs: list[MemberSpec] = []
        if r < P_SINGLE + P_SINGLE_PARENT:
            female = rng.random() < 0.72
            head_age = int(rng.triangular(25, 80, 45))
            kawin = "4" if rng.random() < 0.55 else "3"
            specs.append((1, female, birth(head_age), kawin, None if female else surname))
            mother_age = head_age if female else head_age - rng.randint(0, 6)
        else:
            head_female = rng.random() < 0.03
            head_age = int(rng.triangular(21, 80, 38))
            if head_female:
                spouse_age = head_age + rng.randint(-2, 8)
            else:
                spouse_age = head_age - rng.randint(-3, 8)
            spouse_age = max(17, min(MAX_AGE, spouse_age))
            specs.append((1, head_female, birth(head_age), "2", None if head_female else surname))
            specs.append((2, not head_female, birth(spouse_age), "2", None))
            mother_age = head_age if head_female else spouse_age

        self._children(specs, desil, mother_age, surname)
        self._extended(specs, head_age, desil, surname)
        return specs

    def _children(
        self, specs: list[MemberSpec], desil: int, mother_age: int, surname: str | None
    ) -> None:
        rng = self.rng
        n = int(_CHILDREN(rng))
        if 0 < desil <= 3 and rng.random() < 0.25:
            n += 1  # poorer families are larger (the ranking is per capita)
        mother_at_birth = rng.randint(18, 30)
        added = 0
        while added < n and mother_at_birth <= 44:
            child_age = mother_age - mother_at_birth
            if child_age < 0:
                break
            mother_at_birth += rng.randint(1, 5)
            if rng.random() >= stay_probability(child_age):
                added += 1
                continue
            b = self.people.birth_for_age(child_age)
            kawin = "1" if child_age < 20 or rng.random() < 0.88 else "3"
            twins = 2 if rng.random() < P_TWINS else 1
            for _ in range(twins):
                female = rng.random() < 0.49
                family_name = surname if not female and rng.random() < 0.4 else None
                specs.append((3, female, b, kawin, family_name))
            added += twins

    def _extended(
        self, specs: list[MemberSpec], head_age: int, desil: int, surname: str | None
    ) -> None:
        rng = self.rng
        birth = self.people.birth_for_age
        if head_age >= 45 and rng.random() < 0.12:
            if rng.random() < 0.4:
                specs.append((4, rng.random() < 0.7, birth(rng.randint(22, 35)), "2", None))
            for _ in range(1 + (rng.random() < 0.35)):
                age = rng.randint(0, max(0, min(12, head_age - 40)))
                specs.append((5, rng.random() < 0.49, birth(age), "1", None))
        if 28 <= head_age <= 62 and rng.random() < 0.07:
            both = rng.random() < 0.2
            for i in range(2 if both else 1):
                age = min(MAX_AGE, head_age + rng.randint(20, 35))
                female = (i == 1) if both else rng.random() < 0.7
                specs.append((6, female, birth(age), "2" if both else "4", None))
        if desil >= 8 and rng.random() < 0.04:
            kawin = "1" if rng.random() < 0.6 else "2"
            specs.append((7, rng.random() < 0.85, birth(rng.randint(18, 55)), kawin, None))
        if rng.random() < 0.02:
            specs.append((8, rng.random() < 0.5, birth(rng.randint(3, 40)), "1", None))
