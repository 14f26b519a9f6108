"""Fresh synthetic releases: determinism, identifiers, structure and realism."""

from __future__ import annotations

import csv
import datetime as dt
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from app.identifiers import nik_birth_date, parse_nik
from app.synth.generate import generate_release
from app.synth.population import has_pkh_component
from app.synth.reference import ANGGOTA_COLUMNS, add_months, age_on
from app.synth.release_io import FileFormat
from tests.synth.synth_checks import DISTRICTS, check_release, read_table

CUTOFF = dt.date(2026, 1, 23)


def load(folder: Path) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    with (folder / "keluarga.csv").open(newline="") as f:
        families = list(csv.DictReader(f))
    with (folder / "anggota.csv").open(newline="") as f:
        people = list(csv.DictReader(f))
    return families, people


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "2026-01-23"
    generate_release(out, people=20_000, seed=7)
    return out


@pytest.mark.parametrize("file_format", ["csv", "csv.gz", "parquet"])
def test_same_seed_is_byte_identical(tmp_path: Path, file_format: FileFormat) -> None:
    a = generate_release(tmp_path / "a", people=3000, seed=3, file_format=file_format)
    b = generate_release(tmp_path / "b", people=3000, seed=3, file_format=file_format)
    assert a == b
    for name in [*a["files"], "manifest.json"]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    c = generate_release(tmp_path / "c", people=3000, seed=4, file_format=file_format)
    assert c["files"] != a["files"]


def test_formats_hold_the_same_rows(tmp_path: Path) -> None:
    tables: dict[str, list[tuple[list[str], list[tuple[int, dict[str, str]]]]]] = {}
    formats: tuple[FileFormat, ...] = ("csv", "csv.gz", "parquet")
    for fmt in formats:
        generate_release(tmp_path / fmt, people=2000, seed=11, file_format=fmt)
        tables[fmt] = []
        for table in ("keluarga", "anggota"):
            header, rows = read_table(tmp_path / fmt / f"{table}.{fmt}")
            tables[fmt].append((header, list(rows)))
        assert check_release(tmp_path / fmt).refusals == []
    assert tables["csv"] == tables["csv.gz"] == tables["parquet"]


def test_valid_release_with_manifest(big: Path) -> None:
    report = check_release(big)
    assert report.refusals == []
    assert report.warnings == []
    manifest = (big / "manifest.json").read_text()
    assert '"format": "dtsen-snapshot/1"' in manifest
    assert "DTSEN per 23 Januari 2026" in manifest
    raw = (big / "anggota.csv").read_bytes()
    assert b"\r\n" not in raw
    assert raw.split(b"\n", 1)[0].decode().split(",") == list(ANGGOTA_COLUMNS)


def test_exact_people_and_one_head_per_family(tmp_path: Path) -> None:
    progress: list[int] = []
    m = generate_release(tmp_path / "r", people=1234, seed=5, progress=progress.append)
    assert m["files"]["anggota.csv"]["rows"] == 1234
    assert sum(progress) == 1234
    families, people = load(tmp_path / "r")
    heads = Counter(p["no_kk"] for p in people if p["hubungan_kk"] == "1")
    assert set(heads) == {f["no_kk"] for f in families}
    assert set(heads.values()) == {1}
    assert check_release(tmp_path / "r").refusals == []


def test_release_id_and_out_dir(tmp_path: Path) -> None:
    m = generate_release(tmp_path / "r", people=50, seed=1, release="2025-09-30-r2")
    assert (m["release"], m["cutoff_date"]) == ("2025-09-30-r2", "2025-09-30")
    assert m["label"] == "DTSEN per 30 September 2025"
    with pytest.raises(ValueError, match="not an empty folder"):
        generate_release(tmp_path / "r", people=50, seed=1)
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        generate_release(tmp_path / "x", people=50, seed=1, release="23-01-2026")
    assert add_months(dt.date(2025, 11, 30), 3) == dt.date(2026, 2, 28)
    assert add_months(dt.date(2023, 11, 29), 3) == dt.date(2024, 2, 29)


def test_niks_encode_district_birth_date_and_sex(big: Path) -> None:
    families, people = load(big)
    niks = [p["nik"] for p in people]
    assert len(set(niks)) == len(niks)
    assert len({f["no_kk"] for f in families}) == len(families)
    born_elsewhere = 0
    family_district = {f["no_kk"]: f["kode_wilayah"][:6] for f in families}
    for p in people:
        info = parse_nik(p["nik"])
        assert info.district in DISTRICTS
        assert nik_birth_date(info, CUTOFF) == dt.date.fromisoformat(p["tanggal_lahir"])
        assert info.female == (p["jenis_kelamin"] == "2")
        born_elsewhere += info.district != family_district[p["no_kk"]]
    assert 0.05 < born_elsewhere / len(people) < 0.25
    for f in families:
        assert f["no_kk"][:6] in DISTRICTS
        assert f["kode_wilayah"][:6] == f["no_kk"][:6]
        assert f["kode_wilayah"][6] == ("1" if int(f["kode_wilayah"][2:4]) >= 71 else "2")
        issued = dt.date(2000 + int(f["no_kk"][10:12]), int(f["no_kk"][8:10]), int(f["no_kk"][6:8]))
        assert issued <= CUTOFF


def test_deciles_are_equal_groups_of_families(big: Path) -> None:
    families, people = load(big)
    n = len(families)
    assert 2.9 < len(people) / n < 3.2  # 289 M / 95 M
    shares = Counter(f["desil"] for f in families)
    for d in range(1, 11):
        assert 0.08 < shares[str(d)] / n < 0.12
    assert 0.003 < shares[""] / n < 0.03


def test_asn_and_housing_follow_the_decile(big: Path) -> None:
    families, _ = load(big)

    def group(deciles: str) -> list[dict[str, str]]:
        return [f for f in families if f["desil"] in deciles.split()]

    def share(rows: list[dict[str, str]], col: str, values: set[str]) -> float:
        return sum(r[col] in values for r in rows) / len(rows)

    assert 0.03 < share(families, "asn_tni_polri", {"1"}) < 0.07
    low, high = group("1 2 3"), group("8 9 10")
    assert share(high, "asn_tni_polri", {"1"}) > 5 * share(low, "asn_tni_polri", {"1"})
    floor = [
        sum(int(f["luas_lantai_m2"]) for f in group(str(d))) / len(group(str(d)))
        for d in range(1, 11)
    ]
    assert floor == sorted(floor)
    assert share(high, "fasilitas_bab", {"1"}) > share(low, "fasilitas_bab", {"1"}) + 0.2
    assert share(high, "daya_listrik_va", {"1300", "2200", "3500", "5500"}) > 0.7
    assert share(low, "daya_listrik_va", {"450", "900", ""}) > 0.8
    assert share(low, "sumber_air_minum", {"6", "8", "9"}) > share(
        high, "sumber_air_minum", {"6", "8", "9"}
    )


def test_people_are_plausible_and_edge_cases_exist(big: Path) -> None:
    _, people = load(big)
    by_family: dict[str, list[dict[str, str]]] = defaultdict(list)
    for p in people:
        by_family[p["no_kk"]].append(p)
    roles = Counter(p["hubungan_kk"] for p in people)
    assert all(roles[str(r)] > 0 for r in range(1, 9))
    assert 0.08 < sum(len(m) == 1 for m in by_family.values()) / len(by_family) < 0.2
    edge: Counter[str] = Counter()
    for members in by_family.values():
        head = next(m for m in members if m["hubungan_kk"] == "1")
        head_age = age_on(dt.date.fromisoformat(head["tanggal_lahir"]), CUTOFF)
        assert head_age >= 17
        births = Counter(m["tanggal_lahir"] for m in members if m["hubungan_kk"] == "3")
        edge["twins"] += any(v >= 2 for v in births.values())
        for m in members:
            born = dt.date.fromisoformat(m["tanggal_lahir"])
            age = age_on(born, CUTOFF)
            status, level = m["status_sekolah"], m["jenjang_sekolah"]
            assert (level != "") == (status == "1")
            if level:
                assert {"SD": (6, 14), "SMP": (11, 17), "SMA": (14, 21), "PT": (16, 29)}[level][
                    0
                ] <= age
                assert (
                    age
                    <= {"SD": (6, 14), "SMP": (11, 17), "SMA": (14, 21), "PT": (16, 29)}[level][1]
                )
            if m["hamil"] == "1":
                assert m["jenis_kelamin"] == "2"
                assert 15 <= age <= 49
            if m["hubungan_kk"] == "3" and age < 17:
                assert m["status_kawin"] == "1"
            if age < 6:
                assert status in ("", "0")
            edge["feb29"] += born.month == 2 and born.day == 29
            on_cutoff = (born.month, born.day) == (CUTOFF.month, CUTOFF.day)
            edge[f"exact{age}"] += on_cutoff
            edge["sd6"] += age == 6 and level == "SD"
            edge["sma19"] += 19 <= age <= 21 and level == "SMA"
    for key in ("twins", "feb29", "sd6", "sma19"):
        assert edge[key] > 0, key
    for age in (6, 60, 70):
        assert edge[f"exact{age}"] > 0, age
    severe = sum(p["disabilitas"] == "2" for p in people) / len(people)
    chronic = sum(p["penyakit_kronis"] == "1" for p in people) / len(people)
    assert 0.005 < severe < 0.03
    assert 0.03 < chronic < 0.1


def test_recipients_have_realistic_targeting_errors(big: Path) -> None:
    families, people = load(big)
    members: dict[str, list[list[str]]] = defaultdict(list)
    for p in people:
        members[p["no_kk"]].append([p[c] for c in ANGGOTA_COLUMNS])

    def errors(col: str, deciles: set[str], component: bool) -> tuple[float, float]:
        def meets(f: dict[str, str]) -> bool:
            return (
                f["desil"] in deciles
                and f["asn_tni_polri"] == "0"
                and (not component or has_pkh_component(members[f["no_kk"]], CUTOFF))
            )

        eligible = [f for f in families if meets(f)]
        recipients = [f for f in families if f[col] == "1"]
        exclusion = sum(f[col] == "0" for f in eligible) / len(eligible)
        inclusion = sum(not meets(f) for f in recipients) / len(recipients)
        return exclusion, inclusion

    pkh_excl, pkh_incl = errors("penerima_pkh", {"1", "2", "3", "4"}, component=True)
    assert 0.2 < pkh_excl < 0.36
    assert 0.3 < pkh_incl < 0.5
    bpnt_excl, bpnt_incl = errors("penerima_bpnt", {"1", "2", "3", "4", "5"}, component=False)
    assert 0.1 < bpnt_excl < 0.26
    assert 0.2 < bpnt_incl < 0.4
    pbi_by_decile: Counter[str] = Counter()
    size_by_decile: Counter[str] = Counter()
    family_decile = {f["no_kk"]: f["desil"] for f in families}
    for p in people:
        d = family_decile[p["no_kk"]]
        size_by_decile[d] += 1
        pbi_by_decile[d] += p["penerima_pbi"] == "1"
    assert pbi_by_decile["2"] / size_by_decile["2"] > 0.7
    assert pbi_by_decile["10"] / size_by_decile["10"] < 0.15
