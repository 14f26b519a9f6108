"""The next quarter's release from a previous one: births, deaths, marriages, splits, moves, re-ranks.

The previous release is streamed family by family (the generator writes both files in family
order), so memory holds one family plus the NIK and No. KK serial counters of the new quarter.
Knobs (per quarter): `ANNUAL_DEATH_RATE` by age (divided by four), `P_BIRTH_IF_PREGNANT`,
`P_NEW_PREGNANCY`, `P_MARRY` (adult single children leave to a new card, paired by sex when
possible), `P_SPLIT` (a child-in-law's couple and the grandchildren leave), `P_DIVORCE`,
`P_MOVE`, `P_RERANK` (1-3 deciles, a move out of 1-10 is dropped so the groups stay equal).
A No. KK changes when the family moves, splits, divorces or its head dies (docs/rules.md); NIKs
never change. School levels move up when the window contains the start of a school year (July).
The size of the new release follows the churn; `people` is not used.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from app.synth.population import (
    MAX_AGE,
    P_TWINS,
    Identities,
    PersonModel,
    draw_recipients,
)
from app.synth.reference import (
    A_BEKERJA,
    A_DISABILITAS,
    A_HAMIL,
    A_HUBUNGAN,
    A_JENJANG,
    A_JK,
    A_KAWIN,
    A_KRONIS,
    A_LAHIR,
    A_NIK,
    A_NO_KK,
    A_PBI,
    A_SEKOLAH,
    ANGGOTA_COLUMNS,
    K_ASN,
    K_BPNT,
    K_DESIL,
    K_NO_KK,
    K_PKH,
    K_WILAYAH,
    KELUARGA_COLUMNS,
    age_on,
    label_for,
    regions,
)
from app.synth.release_io import (
    FileFormat,
    ReleaseWriter,
    iter_rows,
    read_manifest,
    table_file,
)

Family = tuple[list[str], list[list[str]]]
K_HOUSING = slice(4, 10)  # kepemilikan_rumah .. daya_listrik_va

ANNUAL_DEATH_RATE = ((1, 0.02), (40, 0.002), (50, 0.004), (60, 0.01), (70, 0.025), (80, 0.06))
DEATH_RATE_OLDEST = 0.14
P_BIRTH_IF_PREGNANT = 0.5
P_STILL_PREGNANT = 0.55
P_POSTPARTUM = 0.5
P_BIRTH_UNFLAGGED = 0.004  # married women 18-44 giving birth without a hamil flag
P_NEW_PREGNANCY = 0.025
P_MARRY = 0.02
P_SPLIT = 0.06
P_DIVORCE = 0.002
P_MOVE = 0.01
P_MOVE_SAME_REGENCY = 0.6
P_RERANK = 0.15
RERANK_STEPS = (0.6, 0.3, 0.1)  # shift by 1, 2 or 3 deciles
P_RANK_UNRANKED = 0.3
P_UNRANK = 0.002
P_NEW_FAMILY_UNRANKED = 0.25
P_REDRAW_RECIPIENTS = 0.5
PROGRESS_EVERY = 10_000

# School levels: where an attending pupil moves at the start of a school year, and the age at
# which someone still at that level leaves it (keeps age and level consistent quarter after
# quarter).
_LEVEL_UP_AGE = {"SD": 12, "SMP": 15, "SMA": 18, "PT": 22}
_LEVEL_LEAVE_AGE = {"SD": 15, "SMP": 18, "SMA": 22, "PT": 30}


def death_rate(age: int) -> float:
    for limit, rate in ANNUAL_DEATH_RATE:
        if age < limit:
            return rate / 4
    return DEATH_RATE_OLDEST / 4


def _families(folder: Path, manifest: dict[str, Any]) -> Iterator[Family]:
    keluarga = iter_rows(table_file(folder, manifest, "keluarga"), KELUARGA_COLUMNS)
    anggota = iter_rows(table_file(folder, manifest, "anggota"), ANGGOTA_COLUMNS)
    pending = next(anggota, None)
    for k in keluarga:
        members: list[list[str]] = []
        while pending is not None and pending[A_NO_KK] == k[K_NO_KK]:
            members.append(pending)
            pending = next(anggota, None)
        if not members:
            raise ValueError("previous release is not in family order (as `generate` writes it)")
        yield k, members
    if pending is not None:
        raise ValueError("previous release is not in family order (as `generate` writes it)")


def _seed_serials(
    folder: Path, manifest: dict[str, Any], ids: Identities, window: list[dt.date]
) -> None:
    """Start the new quarter's serials after any NIK/No. KK sharing a date prefix with the window.

    New NIKs (births) and new No. KKs are all dated inside the window, so only identifiers whose
    DDMMYY falls on a window date (a century earlier, or a reissued card) can collide.
    """
    dates = {f"{d.day:02d}{d.month:02d}{d.year % 100:02d}" for d in window}
    dates |= {f"{d.day + 40:02d}{d.month:02d}{d.year % 100:02d}" for d in window}
    for table, columns, position, serials in (
        ("anggota", ANGGOTA_COLUMNS, A_NIK, ids.nik_serials),
        ("keluarga", KELUARGA_COLUMNS, K_NO_KK, ids.kk_serials),
    ):
        for row in iter_rows(table_file(folder, manifest, table), columns):
            value = row[position]
            if value[6:12] in dates:
                key = int(value[:12])
                serials[key] = max(serials.get(key, 0), int(value[12:]))


class Quarter:
    """Applies one quarter of churn to each family of the previous release."""

    def __init__(
        self, rng: random.Random, previous: dt.date, cutoff: dt.date, ids: Identities
    ) -> None:
        self.rng = rng
        self.previous = previous
        self.cutoff = cutoff
        self.ids = ids
        self.people = PersonModel(rng, cutoff)
        self.regions = regions()
        self.window_lo = previous.toordinal() + 1
        self.window_hi = cutoff.toordinal()
        self.school_year_starts = any(
            dt.date(y, 7, 15).toordinal() in range(self.window_lo, self.window_hi + 1)
            for y in range(previous.year, cutoff.year + 1)
        )
        self._single: list[str] | None = None  # a mover waiting for a partner of the other sex
        self._single_origin: list[str] | None = None

    def _in_window(self) -> dt.date:
        return dt.date.fromordinal(self.rng.randint(self.window_lo, self.window_hi))

    def _new_kk(self, wilayah: str) -> str:
        return self.ids.no_kk(wilayah[:6], self._in_window())

    def _age(self, m: list[str]) -> int:
        return age_on(dt.date.fromisoformat(m[A_LAHIR]), self.cutoff)

    def family(self, keluarga: list[str], members: list[list[str]]) -> list[Family]:
        rng = self.rng
        out: list[Family] = []
        new_card = False
        members, head_died = self._deaths(members)
        if not members:
            return out
        if head_died:
            self._succeed(members)
            new_card = True
        members.extend(self._births(keluarga, members))
        for m in members:
            self._advance(m)

        for m in list(members):
            if (
                m[A_HUBUNGAN] == "3"
                and m[A_KAWIN] == "1"
                and 20 <= self._age(m) <= 35
                and rng.random() < P_MARRY
            ):
                members.remove(m)
                out.extend(self._marry(m, keluarga))
        if rng.random() < P_SPLIT:
            split = self._split(members)
            if split:
                out.append(self._new_family(keluarga, split))
        if rng.random() < P_DIVORCE:
            leaving = self._divorce(members)
            if leaving:
                out.append(self._new_family(keluarga, leaving))
                new_card = True

        if rng.random() < P_MOVE:
            keluarga[K_WILAYAH] = self._moved(keluarga[K_WILAYAH])
            keluarga[K_HOUSING] = self.people.housing(  # a new home
                int(keluarga[K_DESIL] or 0),
                keluarga[K_ASN] == "1",
                self.regions.is_city(keluarga[K_WILAYAH][:6]),
            )
            new_card = True
        if new_card:
            keluarga[K_NO_KK] = self._new_kk(keluarga[K_WILAYAH])
        for m in members:
            m[A_NO_KK] = keluarga[K_NO_KK]
        if self._rerank(keluarga) and rng.random() < P_REDRAW_RECIPIENTS:
            keluarga[K_PKH], keluarga[K_BPNT] = draw_recipients(
                rng, int(keluarga[K_DESIL] or 0), keluarga[K_ASN] == "1", members, self.cutoff
            )
        out.insert(0, (keluarga, members))
        return out

    def finish(self) -> list[Family]:
        """The last mover still waiting for a partner starts a family alone."""
        if self._single is None or self._single_origin is None:
            return []
        family = self._new_family(self._single_origin, [self._single])
        self._single = None
        return [family]

    def _deaths(self, members: list[list[str]]) -> tuple[list[list[str]], bool]:
        rng = self.rng
        alive: list[list[str]] = []
        head_died = False
        spouse_died = False
        for m in members:
            if rng.random() < death_rate(self._age(m)):
                head_died |= m[A_HUBUNGAN] == "1"
                spouse_died |= m[A_HUBUNGAN] == "2"
            else:
                alive.append(m)
        if spouse_died:
            for m in alive:
                if m[A_HUBUNGAN] == "1":
                    m[A_KAWIN] = "4"
        return alive, head_died

    def _succeed(self, members: list[list[str]]) -> None:
        """A new head after the head's death: the spouse, else the oldest adult, else the oldest."""
        spouses = [m for m in members if m[A_HUBUNGAN] == "2"]
        if spouses:
            heir = spouses[0]
            heir[A_KAWIN] = "4"
        else:
            family = [m for m in members if m[A_HUBUNGAN] != "7"] or members
            heir = min(family, key=lambda m: m[A_LAHIR])
            for m in members:
                if m is not heir and m[A_HUBUNGAN] != "7":
                    m[A_HUBUNGAN] = "8"  # relation to the new head unknown: "other"
        for m in members:
            if m is not heir and m[A_HUBUNGAN] == "2":
                m[A_HUBUNGAN] = "8"  # a second spouse of the late head
        heir[A_HUBUNGAN] = "1"

    def _births(self, keluarga: list[str], members: list[list[str]]) -> list[list[str]]:
        rng = self.rng
        newborns: list[list[str]] = []
        for m in members:
            if m[A_JK] != "2" or m[A_KAWIN] not in ("2", "3", "4"):
                continue
            age = self._age(m)
            pregnant = m[A_HAMIL] == "1"
            married = m[A_KAWIN] == "2"
            p_birth = (
                P_BIRTH_IF_PREGNANT
                if pregnant
                else P_BIRTH_UNFLAGGED * (married and 18 <= age <= 44)
            )
            if rng.random() < p_birth:
                role = {"1": "3", "2": "3", "3": "5", "4": "5"}.get(m[A_HUBUNGAN], "8")
                birth = self._in_window()
                twins = 2 if rng.random() < P_TWINS else 1
                newborns.extend(self._newborn(keluarga, m, role, birth) for _ in range(twins))
                m[A_HAMIL] = "1" if rng.random() < P_POSTPARTUM else "0"
            elif pregnant:
                m[A_HAMIL] = "1" if rng.random() < P_STILL_PREGNANT else "0"
            elif married and 15 <= age <= 49 and rng.random() < P_NEW_PREGNANCY:
                m[A_HAMIL] = "1"
        return newborns

    def _newborn(
        self, keluarga: list[str], mother: list[str], role: str, birth: dt.date
    ) -> list[str]:
        female = self.rng.random() < 0.49
        district = keluarga[K_WILAYAH][:6]
        return [
            self.ids.nik(district, birth, female),
            keluarga[K_NO_KK],
            self.people.name(female),
            role,
            "2" if female else "1",
            birth.isoformat(),
            "1",
            "",
            "",
            "",
            "0",
            "0",
            "",
            mother[A_PBI],
        ]

    def _advance(self, m: list[str]) -> None:
        """Age-driven updates: school levels at the start of a school year, flags coming of age."""
        rng = self.rng
        age = self._age(m)
        status, level = m[A_SEKOLAH], m[A_JENJANG]
        if self.school_year_starts:
            if status == "1" and age >= _LEVEL_UP_AGE.get(level, 200):
                r = rng.random()
                if level == "SD":
                    status, level = ("1", "SMP") if r < 0.85 else ("2", "")
                elif level == "SMP":
                    status, level = ("1", "SMA") if r < 0.75 else ("2", "")
                elif level == "SMA":
                    status, level = ("1", "PT") if r < 0.3 else ("2", "")
                elif r < 0.35:
                    status, level = "2", ""
            elif status in ("", "0") and 6 <= age <= 7 and rng.random() < 0.9:
                status, level = "1", "SD"
        if status == "1" and age >= _LEVEL_LEAVE_AGE.get(level, 200):
            status, level = "2", ""
        if status == "" and age >= 5:
            status = "0"
        m[A_SEKOLAH], m[A_JENJANG] = status, level
        if age >= 10:
            if m[A_BEKERJA] == "":
                m[A_BEKERJA] = "0"
            if m[A_JK] == "2" and m[A_HAMIL] == "":
                m[A_HAMIL] = "0"
        if age > MAX_AGE - 35 and m[A_DISABILITAS] == "0" and rng.random() < 0.005:
            m[A_DISABILITAS] = "1"
        if age >= 40 and m[A_KRONIS] == "0" and rng.random() < 0.003:
            m[A_KRONIS] = "1"

    def _marry(self, mover: list[str], origin: list[str]) -> list[Family]:
        """An adult child leaves to a new card; two movers of the other sex form one couple."""
        mover[A_HUBUNGAN] = "1"  # heads their own card unless paired with a husband below
        mover[A_KAWIN] = "2"
        mover[A_HAMIL] = "0" if mover[A_JK] == "2" else ""
        if self._single is None or self._single_origin is None:
            self._single, self._single_origin = mover, origin
            return []
        other, other_origin = self._single, self._single_origin
        if other[A_JK] == mover[A_JK]:
            self._single, self._single_origin = mover, origin
            return [self._new_family(other_origin, [other])]
        self._single = self._single_origin = None
        husband, wife = (mover, other) if mover[A_JK] == "1" else (other, mover)
        husband_origin = origin if husband is mover else other_origin
        husband[A_HUBUNGAN], wife[A_HUBUNGAN] = "1", "2"
        return [self._new_family(husband_origin, [husband, wife])]

    def _split(self, members: list[list[str]]) -> list[list[str]]:
        """A child-in-law, their spouse (a married child) and the grandchildren leave together."""
        in_law = next((m for m in members if m[A_HUBUNGAN] == "4"), None)
        if in_law is None:
            return []
        partner = next(
            (
                m
                for m in members
                if m[A_HUBUNGAN] == "3" and m[A_JK] != in_law[A_JK] and self._age(m) >= 19
            ),
            None,
        )
        grandchildren = [m for m in members if m[A_HUBUNGAN] == "5"]
        couple = [in_law] if partner is None else [in_law, partner]
        couple.sort(key=lambda m: m[A_JK])  # the man heads the card when there is one
        couple[0][A_HUBUNGAN] = "1"
        for m in couple:
            m[A_KAWIN] = "2"
        if len(couple) == 2:
            couple[1][A_HUBUNGAN] = "2"
        for m in grandchildren:
            m[A_HUBUNGAN] = "3"
        leaving = couple + grandchildren
        for m in leaving:
            members.remove(m)
        return leaving

    def _divorce(self, members: list[list[str]]) -> list[list[str]]:
        """The spouse leaves with some of the young children and becomes a head."""
        spouse = next((m for m in members if m[A_HUBUNGAN] == "2"), None)
        if spouse is None:
            return []
        leaving = [spouse] + [
            m
            for m in members
            if m[A_HUBUNGAN] == "3" and self._age(m) < 18 and self.rng.random() < 0.6
        ]
        for m in leaving:
            members.remove(m)
        spouse[A_HUBUNGAN] = "1"
        spouse[A_KAWIN] = "3"
        spouse[A_HAMIL] = "0" if spouse[A_JK] == "2" else ""
        for m in members:
            if m[A_HUBUNGAN] == "1":
                m[A_KAWIN] = "3"
        return leaving

    def _new_family(self, origin: list[str], members: list[list[str]]) -> Family:
        """A new card in the origin's village; decile near the origin's, often not yet ranked."""
        rng = self.rng
        wilayah = origin[K_WILAYAH]
        if rng.random() < P_NEW_FAMILY_UNRANKED:
            desil = 0
        else:
            base = int(origin[K_DESIL] or rng.randint(1, 10))
            desil = min(10, max(1, base + rng.randint(-1, 1)))
        asn = origin[K_ASN] == "1" and rng.random() < 0.3
        no_kk = self._new_kk(wilayah)
        for m in members:
            m[A_NO_KK] = no_kk
        keluarga = [
            no_kk,
            wilayah,
            str(desil) if desil else "",
            "1" if asn else "0",
            *self.people.housing(desil, asn, self.regions.is_city(wilayah[:6])),
            "0",  # not yet enrolled in PKH or BPNT under the new card
            "0",
        ]
        return keluarga, members

    def _moved(self, wilayah: str) -> str:
        rng = self.rng
        district = wilayah[:6]
        if rng.random() < P_MOVE_SAME_REGENCY:
            nearby = [d for d in self.regions.by_province[district[:2]] if d[:4] == district[:4]]
            district = rng.choice(nearby or [district])
        else:
            district = self.regions.pick_district(rng)
        kind = "1" if self.regions.is_city(district) else "2"
        new = f"{district}{kind}{1 + rng.randrange(30):03d}"
        return new if new != wilayah else f"{district}{kind}{1 + int(wilayah[7:]) % 30:03d}"

    def _rerank(self, keluarga: list[str]) -> bool:
        rng = self.rng
        desil = int(keluarga[K_DESIL] or 0)
        if desil == 0:
            new = rng.randint(1, 10) if rng.random() < P_RANK_UNRANKED else 0
        elif rng.random() < P_UNRANK:
            new = 0
        elif rng.random() < P_RERANK:
            r = rng.random()
            step = 1 if r < RERANK_STEPS[0] else 2 if r < RERANK_STEPS[0] + RERANK_STEPS[1] else 3
            new = desil + (step if rng.random() < 0.5 else -step)
            if not 1 <= new <= 10:
                new = desil  # dropped, not clamped: clamping would pile families up at 1 and 10
        else:
            new = desil
        keluarga[K_DESIL] = str(new) if new else ""
        return new != desil


def next_quarter(
    from_dir: Path,
    out_dir: Path,
    release: str,
    cutoff: dt.date,
    *,
    seed: int,
    file_format: FileFormat,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    manifest = read_manifest(from_dir)
    previous = dt.date.fromisoformat(manifest["cutoff_date"])
    if cutoff <= previous:
        raise ValueError("the new cut-off date must be after the previous release's")
    writer = ReleaseWriter(out_dir, file_format)
    ids = Identities()
    window = [
        dt.date.fromordinal(o) for o in range(previous.toordinal() + 1, cutoff.toordinal() + 1)
    ]
    _seed_serials(from_dir, manifest, ids, window)
    # A string seed is hashed deterministically; mixing in the release keeps chained quarters
    # generated with one seed from repeating the same draws.
    quarter = Quarter(random.Random(f"{seed}:{release}"), previous, cutoff, ids)
    written = reported = 0
    for keluarga, members in _families(from_dir, manifest):
        for fam in quarter.family(keluarga, members):
            writer.write_family(*fam)
            written += len(fam[1])
        if progress is not None and written - reported >= PROGRESS_EVERY:
            progress(written - reported)
            reported = written
    for fam in quarter.finish():
        writer.write_family(*fam)
        written += len(fam[1])
    if progress is not None and written > reported:
        progress(written - reported)
    return writer.finish(
        release,
        cutoff.isoformat(),
        label_for(cutoff),
        f"BPS (synthetic: tepat generate --from {manifest['release']}, seed {seed})",
    )
