"""Next-quarter releases (`from_dir`): stable NIKs, churn, and still a valid release."""

from __future__ import annotations

import csv
import datetime as dt
from collections import Counter
from pathlib import Path

import pytest

from app.synth.generate import generate_release
from app.synth.reference import age_on
from tests.synth.synth_checks import check_release

LEVEL_AGES = {"SD": (6, 14), "SMP": (11, 17), "SMA": (14, 21), "PT": (16, 29)}


def load(folder: Path) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]]:
    with (folder / "keluarga.csv").open(newline="") as f:
        families = {r["no_kk"]: r for r in csv.DictReader(f)}
    with (folder / "anggota.csv").open(newline="") as f:
        people = {r["nik"]: r for r in csv.DictReader(f)}
    return families, people


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Jan 2026 -> Apr 2026 -> Jul 2026 (the July quarter contains a new school year)."""
    base = tmp_path_factory.mktemp("chain")
    folders = [base / "q0"]
    generate_release(folders[0], people=20_000, seed=21)
    for i in (1, 2):
        folders.append(base / f"q{i}")
        generate_release(folders[i], people=0, seed=21, from_dir=folders[i - 1])
    return folders


def test_quarters_are_valid_releases(chain: list[Path]) -> None:
    for folder in chain[1:]:
        report = check_release(folder)
        assert report.refusals == []
        assert report.warnings == []
    cutoffs = [(f / "manifest.json").read_text() for f in chain]
    assert '"release": "2026-04-23"' in cutoffs[1]
    assert "DTSEN per 23 Juli 2026" in cutoffs[2]


def test_niks_are_stable_and_churn_happens(chain: list[Path]) -> None:
    prev_fam, prev = load(chain[0])
    next_fam, now = load(chain[1])
    window = (dt.date(2026, 1, 23), dt.date(2026, 4, 23))
    for nik, p in now.items():
        if nik in prev:
            old = prev[nik]
            for col in ("nama", "jenis_kelamin", "tanggal_lahir"):
                assert p[col] == old[col]
        else:  # a birth this quarter
            assert window[0] < dt.date.fromisoformat(p["tanggal_lahir"]) <= window[1]
            assert p["hubungan_kk"] in ("3", "5", "8")
    deaths = set(prev) - set(now)
    births = set(now) - set(prev)
    new_cards = set(next_fam) - set(prev_fam)
    assert 20 < len(deaths) < 200
    assert 50 < len(births) < 300
    assert len(new_cards) > 60
    for kk in new_cards:
        issued = dt.date(2000 + int(kk[10:12]), int(kk[8:10]), int(kk[6:8]))
        assert window[0] < issued <= window[1]
    moved = [
        n
        for n in set(prev) & set(now)
        if prev_fam[prev[n]["no_kk"]]["kode_wilayah"] != next_fam[now[n]["no_kk"]]["kode_wilayah"]
    ]
    assert moved
    # a move always comes with a new card
    assert all(now[n]["no_kk"] not in prev_fam for n in moved)
    mover_families = {now[n]["no_kk"] for n in moved}
    assert len(mover_families) >= 10


def test_reranking_and_deciles(chain: list[Path]) -> None:
    prev_fam, prev = load(chain[0])
    next_fam, now = load(chain[1])
    steps: Counter[int] = Counter()
    kept = 0
    for nik, p in prev.items():
        if p["hubungan_kk"] != "1" or nik not in now or now[nik]["hubungan_kk"] != "1":
            continue
        before, after = prev_fam[p["no_kk"]]["desil"], next_fam[now[nik]["no_kk"]]["desil"]
        if not before or not after:
            continue
        kept += 1
        if before != after:
            steps[abs(int(before) - int(after))] += 1
    assert 0.08 < sum(steps.values()) / kept < 0.22
    assert set(steps) <= {1, 2, 3}
    shares = Counter(f["desil"] for f in next_fam.values())
    for d in range(1, 11):
        assert 0.08 < shares[str(d)] / len(next_fam) < 0.12


def test_ages_schools_and_pregnancies_advance(chain: list[Path]) -> None:
    _, april = load(chain[1])
    _, july = load(chain[2])
    cutoff = dt.date(2026, 7, 23)
    moves: Counter[tuple[str, str]] = Counter()
    pregnancies: Counter[tuple[str, str]] = Counter()
    for nik, p in july.items():
        age = age_on(dt.date.fromisoformat(p["tanggal_lahir"]), cutoff)
        level = p["jenjang_sekolah"]
        assert (level != "") == (p["status_sekolah"] == "1")
        if level:
            lo, hi = LEVEL_AGES[level]
            assert lo <= age <= hi, (level, age)
        if p["hamil"] == "1":
            assert p["jenis_kelamin"] == "2"
        if nik in april:
            moves[(april[nik]["jenjang_sekolah"], level)] += 1
            pregnancies[(april[nik]["hamil"], p["hamil"])] += 1
    assert moves[("SD", "SMP")] > 50
    assert moves[("SMP", "SMA")] > 30
    assert moves[("", "SD")] > 30
    assert pregnancies[("0", "1")] > 10  # pregnancies start
    assert pregnancies[("1", "0")] > 10  # and end


def test_from_is_deterministic_and_reads_other_formats(tmp_path: Path) -> None:
    generate_release(
        tmp_path / "p", people=3000, seed=2, file_format="parquet", release="2025-11-30"
    )
    progress: list[int] = []
    a = generate_release(
        tmp_path / "a",
        people=0,
        seed=2,
        from_dir=tmp_path / "p",
        file_format="csv.gz",
        progress=progress.append,
    )
    assert sum(progress) == a["files"]["anggota.csv.gz"]["rows"]
    b = generate_release(
        tmp_path / "b", people=0, seed=2, from_dir=tmp_path / "p", file_format="csv.gz"
    )
    assert a == b
    assert a["release"] == "2026-02-28"  # 30 Nov + 3 months, clamped to the month's end
    assert check_release(tmp_path / "a").refusals == []
    c = generate_release(
        tmp_path / "c", people=0, seed=2, from_dir=tmp_path / "p", release="2026-03-31"
    )
    assert c["cutoff_date"] == "2026-03-31"
    assert check_release(tmp_path / "c").refusals == []
    with pytest.raises(ValueError, match="after the previous"):
        generate_release(
            tmp_path / "d", people=0, seed=2, from_dir=tmp_path / "p", release="2025-11-30-r2"
        )
