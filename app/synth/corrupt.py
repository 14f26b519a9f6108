"""Broken copies of a valid CSV release, one refusal rule at a time, for the importer's tests.

`corrupt_release` returns, per rule, the 1-based lines (header = line 1) of the rows it broke in
the file named by `RULE_FILES[rule]` ("manifest" rules return no lines). Where a rule is about a
family rather than a row, the line is the row an importer should point at:

- `family_without_head`, `family_without_members`, `duplicate_no_kk` (the second occurrence):
  keluarga.csv;
- `family_multiple_heads`: the extra head's anggota.csv line;
- `no_kk_format`: the family's keluarga.csv line; its members carry the same malformed value
  (so no `unknown_family` arises), which an importer may also report in anggota.csv;
- `missing_column`: line 1 of anggota.csv (`nama` is dropped).
Each injection uses families no other injection touches, and keeps exactly one head per family,
unique identifiers and valid values, so only the named rules break.
"""

from __future__ import annotations

import csv
import datetime as dt
import random
from collections.abc import Callable, Sequence
from pathlib import Path

from app.synth.reference import (
    A_HUBUNGAN,
    A_JENJANG,
    A_JK,
    A_LAHIR,
    A_NIK,
    A_NO_KK,
    A_SEKOLAH,
    K_NO_KK,
)
from app.synth.release_io import read_manifest, sha256_of, write_manifest

MANIFEST_RULES = (
    "manifest_missing",
    "manifest_format",
    "file_missing",
    "file_checksum",
    "file_rows",
)
REFUSAL_RULES: tuple[str, ...] = (
    *MANIFEST_RULES,
    "missing_column",
    "nik_format",
    "nik_date",
    "nik_serial",
    "no_kk_format",
    "duplicate_nik",
    "duplicate_no_kk",
    "unknown_family",
    "family_without_members",
    "family_without_head",
    "family_multiple_heads",
    "value_invalid",
    "missing_value",
    "birth_date_after_cutoff",
)
RULE_FILES: dict[str, str] = {
    **dict.fromkeys(MANIFEST_RULES, "manifest"),
    **dict.fromkeys(
        ("no_kk_format", "duplicate_no_kk", "family_without_members", "family_without_head"),
        "keluarga",
    ),
}
for _rule in REFUSAL_RULES:
    RULE_FILES.setdefault(_rule, "anggota")

Row = list[str]


def _read_csv(path: Path) -> tuple[Row, list[Row]]:
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def _write_csv(path: Path, header: Row, rows: list[Row]) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


class _Release:
    """A release in memory (test-sized), with the bookkeeping that keeps injections apart."""

    def __init__(self, src: Path, rng: random.Random) -> None:
        self.manifest = read_manifest(src)
        names = list(self.manifest["files"])
        if sorted(names) != ["anggota.csv", "keluarga.csv"]:
            raise ValueError("corrupt_release works on plain CSV releases")
        self.k_header, self.keluarga = _read_csv(src / "keluarga.csv")
        self.a_header, self.anggota = _read_csv(src / "anggota.csv")
        self.cutoff = dt.date.fromisoformat(self.manifest["cutoff_date"])
        self.rng = rng
        self.members: dict[str, list[Row]] = {}
        for m in self.anggota:
            self.members.setdefault(m[A_NO_KK], []).append(m)
        self.family_rows = {k[K_NO_KK]: k for k in self.keluarga}
        self.position = {kk: i for i, kk in enumerate(self.family_rows)}
        self.order = list(self.family_rows)
        rng.shuffle(self.order)
        self.used: set[str] = set()
        self.niks = {m[A_NIK] for m in self.anggota}
        self.kks = set(self.family_rows)

    def family(self, ok: Callable[[list[Row]], bool] = lambda members: True) -> str:
        """An untouched family whose members pass `ok`; it is then marked as used."""
        for kk in self.order:
            if kk not in self.used and ok(self.members[kk]):
                self.used.add(kk)
                return kk
        raise ValueError("release too small for the requested corruptions")

    def non_head(self, kk: str) -> Row:
        return next(m for m in self.members[kk] if m[A_HUBUNGAN] != "1")

    def fresh_kk(self, like: str) -> str:
        for serial in range(9999, 0, -1):
            candidate = f"{like[:12]}{serial:04d}"
            if candidate not in self.kks:
                self.kks.add(candidate)
                return candidate
        raise ValueError("no free No. KK serial")

    def set_nik(self, person: Row, value: str) -> bool:
        if value in self.niks:
            return False
        self.niks.add(value)
        person[A_NIK] = value
        return True


def _two_plus(members: list[Row]) -> bool:
    return len(members) >= 2


def _nik_variants(rel: _Release, variants: Sequence[Callable[[Row], str]]) -> list[Row]:
    broken: list[Row] = []
    for variant in variants:
        while True:
            person = rel.members[rel.family()][0]
            if rel.set_nik(person, variant(person)):
                broken.append(person)
                break
    return broken


def _inject(rel: _Release, rule: str) -> list[Row]:
    """Break `rule` in a few rows; returns the rows whose lines are reported."""
    rng = rel.rng
    if rule == "missing_column":
        return []  # applied last, once every row-level injection is in place
    if rule == "nik_format":
        return _nik_variants(
            rel, [lambda p: p[A_NIK][:15], lambda p: p[A_NIK] + "7", lambda p: p[A_NIK][:8] + "AB" + p[A_NIK][10:]]
        )  # fmt: skip
    if rule == "nik_date":

        def bad_day(p: Row) -> str:
            return p[A_NIK][:6] + ("72" if p[A_JK] == "2" else "32") + p[A_NIK][8:]

        return _nik_variants(rel, [bad_day, lambda p: p[A_NIK][:8] + "13" + p[A_NIK][10:]])
    if rule == "nik_serial":
        return _nik_variants(rel, [lambda p: p[A_NIK][:12] + "0000"] * 2)
    if rule == "duplicate_nik":
        broken = []
        for _ in range(2):
            # The copy goes to the later family in the file, so it is the line reported.
            earlier, later = sorted((rel.family(), rel.family()), key=rel.position.__getitem__)
            target = next(
                (m for m in rel.members[later] if m[A_HUBUNGAN] != "1"), rel.members[later][0]
            )
            target[A_NIK] = rel.members[earlier][0][A_NIK]
            broken.append(target)
        return broken
    if rule == "unknown_family":
        broken = []
        for _ in range(2):
            person = rel.non_head(rel.family(_two_plus))
            person[A_NO_KK] = rel.fresh_kk(person[A_NO_KK])
            broken.append(person)
        return broken
    if rule == "no_kk_format":
        broken = []
        variants: list[Callable[[str], str]] = [
            lambda v: v[:15],
            lambda v: v + "0",
            lambda v: v[:10] + "X" + v[11:],
        ]
        for variant in variants:
            kk = rel.family()
            bad = variant(kk)
            rel.family_rows[kk][K_NO_KK] = bad
            for m in rel.members[kk]:
                m[A_NO_KK] = bad
            broken.append(rel.family_rows[kk])
        return broken
    if rule == "duplicate_no_kk":
        broken = []
        for _ in range(2):
            original = rel.family_rows[rel.family()]
            copy = list(original)
            rel.keluarga.insert(
                next(i for i, k in enumerate(rel.keluarga) if k is original) + 1, copy
            )
            broken.append(copy)
        return broken
    if rule == "family_without_members":
        broken = []
        for _ in range(2):
            template = rel.family_rows[rel.family()]
            row = list(template)
            row[K_NO_KK] = rel.fresh_kk(template[K_NO_KK])
            rel.keluarga.append(row)
            broken.append(row)
        return broken
    if rule == "family_without_head":
        broken = []
        for _ in range(2):
            kk = rel.family(_two_plus)
            for m in rel.members[kk]:
                if m[A_HUBUNGAN] == "1":
                    m[A_HUBUNGAN] = "2"
            broken.append(rel.family_rows[kk])
        return broken
    if rule == "family_multiple_heads":
        broken = []
        for _ in range(2):
            person = rel.non_head(rel.family(_two_plus))
            person[A_HUBUNGAN] = "1"
            broken.append(person)
        return broken
    if rule == "value_invalid":
        hub = rel.non_head(rel.family(_two_plus))
        hub[A_HUBUNGAN] = "9"
        pupil_kk = rel.family(lambda ms: any(m[A_SEKOLAH] == "1" for m in ms))
        pupil = next(m for m in rel.members[pupil_kk] if m[A_SEKOLAH] == "1")
        pupil[A_JENJANG] = "S3"
        dated = rel.non_head(rel.family(_two_plus))
        dated[A_LAHIR] = "2020-02-30"
        return [hub, pupil, dated]
    if rule == "missing_value":
        broken = []
        for column in (A_JK, A_LAHIR, A_HUBUNGAN):
            person = rel.non_head(rel.family(_two_plus))
            person[column] = ""
            broken.append(person)
        return broken
    if rule == "birth_date_after_cutoff":
        broken = []
        for _ in range(2):
            person = rel.non_head(rel.family(_two_plus))
            person[A_LAHIR] = (rel.cutoff + dt.timedelta(days=rng.randint(1, 60))).isoformat()
            broken.append(person)
        return broken
    raise ValueError(f"unknown rule {rule!r}")


def corrupt_release(
    src_dir: Path, out_dir: Path, rules: Sequence[str], *, seed: int = 0
) -> dict[str, list[int]]:
    """Copy the CSV release at `src_dir` to `out_dir`, breaking exactly `rules` (see module doc)."""
    unknown = [r for r in rules if r not in REFUSAL_RULES]
    if unknown:
        raise ValueError(f"unknown rules {unknown}")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ValueError(f"{out_dir} is not empty")
    rel = _Release(src_dir, random.Random(seed))
    wanted = list(dict.fromkeys(rules))
    broken = {rule: _inject(rel, rule) for rule in wanted if rule not in MANIFEST_RULES}
    if "missing_column" in broken:
        drop = rel.a_header.index("nama")
        del rel.a_header[drop]
        for m in rel.anggota:
            del m[drop]

    out_dir.mkdir(parents=True, exist_ok=True)
    _write_csv(out_dir / "keluarga.csv", rel.k_header, rel.keluarga)
    _write_csv(out_dir / "anggota.csv", rel.a_header, rel.anggota)
    lines = {
        "keluarga": {id(row): i + 2 for i, row in enumerate(rel.keluarga)},
        "anggota": {id(row): i + 2 for i, row in enumerate(rel.anggota)},
    }
    result: dict[str, list[int]] = {}
    for rule in wanted:
        if rule == "missing_column":
            result[rule] = [1]
        elif rule in MANIFEST_RULES:
            result[rule] = []
        else:
            result[rule] = sorted(lines[RULE_FILES[rule]][id(row)] for row in broken[rule])

    manifest = rel.manifest
    manifest["files"] = {
        "keluarga.csv": {"rows": len(rel.keluarga), "sha256": sha256_of(out_dir / "keluarga.csv")},
        "anggota.csv": {"rows": len(rel.anggota), "sha256": sha256_of(out_dir / "anggota.csv")},
    }
    if "manifest_format" in wanted:
        manifest["format"] = "dtsen-snapshot/2"
    if "file_checksum" in wanted:
        digest = manifest["files"]["anggota.csv"]["sha256"]
        manifest["files"]["anggota.csv"]["sha256"] = ("1" if digest[0] == "0" else "0") + digest[1:]
    if "file_rows" in wanted:
        manifest["files"]["keluarga.csv"]["rows"] += 1
    if "file_missing" in wanted:
        (out_dir / "anggota.csv").unlink()
    if "manifest_missing" not in wanted:
        write_manifest(out_dir, manifest)
    return result
