"""The importer against real PostgreSQL: publish, refuse every rule with its lines, stay atomic."""

from __future__ import annotations

import shutil
from pathlib import Path

import asyncpg
import pytest

from app.ingest.importer import import_release
from app.ingest.verify import stored_checksum
from app.synth.corrupt import MANIFEST_RULES, REFUSAL_RULES, corrupt_release
from app.synth.generate import generate_release
from tests.helpers import drop_release, visible_tables

RELEASE = "2020-03-31"  # older than any rule set: these snapshots never become "current"


@pytest.fixture(scope="module")
def base_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("release") / RELEASE
    generate_release(out, people=3000, seed=7, release=RELEASE)
    return out


async def test_valid_release_publishes_with_manifest_counts(
    raw: asyncpg.Connection, base_release: Path
) -> None:
    try:
        result = await import_release(raw, base_release)
        assert result.report.ok, result.report.to_dict()
        assert result.published
        manifest = (base_release / "manifest.json").read_text()
        row = await raw.fetchrow(
            "SELECT status, family_count, people_count, checksum, key FROM snapshots WHERE id = $1",
            RELEASE,
        )
        assert row["status"] == "published"
        assert f'"rows": {row["people_count"]}' in manifest
        assert f'"rows": {row["family_count"]}' in manifest
        # Readable through the partitioned parents, and the checksum recomputes from the rows.
        assert (
            await raw.fetchval("SELECT count(*) FROM people WHERE snapshot_key = $1", row["key"])
            == row["people_count"]
        )
        cutoff = await raw.fetchval("SELECT cutoff_date FROM snapshots WHERE id = $1", RELEASE)
        assert await stored_checksum(raw, row["key"], RELEASE, cutoff) == row["checksum"]
        # A second import of the same release id is refused, with the full report still made.
        again = await import_release(raw, base_release)
        assert not again.published
        assert [f.rule for f in again.report.errors] == ["release_exists"]
    finally:
        await drop_release(raw, RELEASE)


async def test_tampered_rows_fail_verification(raw: asyncpg.Connection, base_release: Path) -> None:
    try:
        result = await import_release(raw, base_release)
        key = result.snapshot_key
        assert key is not None
        cutoff = await raw.fetchval("SELECT cutoff_date FROM snapshots WHERE id = $1", RELEASE)
        await raw.execute(f"UPDATE people_{key} SET name = name || 'x' WHERE source_line = 2")
        assert await stored_checksum(raw, key, RELEASE, cutoff) != result.checksum
    finally:
        await drop_release(raw, RELEASE)


@pytest.mark.parametrize("file_format", ["csv.gz", "parquet"])
async def test_gzip_and_parquet_load_the_same_content(
    raw: asyncpg.Connection, tmp_path: Path, base_release: Path, file_format: str
) -> None:
    other = tmp_path / RELEASE
    generate_release(other, people=3000, seed=7, release=RELEASE, file_format=file_format)  # type: ignore[arg-type]
    csv_result = await import_release(raw, base_release, dry_run=True)
    try:
        result = await import_release(raw, other)
        assert result.published, result.report.to_dict()
        # The checksum covers the content, not the file encoding.
        assert result.checksum == csv_result.checksum
    finally:
        await drop_release(raw, RELEASE)


async def test_dry_run_validates_and_loads_nothing(
    raw: asyncpg.Connection, base_release: Path
) -> None:
    before = await visible_tables(raw)
    result = await import_release(raw, base_release, dry_run=True)
    assert result.report.ok and not result.published
    assert result.counts["people"] == 3000
    assert await raw.fetchval("SELECT count(*) FROM snapshots WHERE id = $1", RELEASE) == 0
    assert await visible_tables(raw) == before


@pytest.mark.parametrize("rule", REFUSAL_RULES)
async def test_each_refusal_rule_is_reported_and_nothing_is_visible(
    raw: asyncpg.Connection, tmp_path: Path, base_release: Path, rule: str
) -> None:
    bad = tmp_path / "bad"
    lines = corrupt_release(base_release, bad, [rule], seed=3)
    before = await visible_tables(raw)
    result = await import_release(raw, bad)
    errors = {f.rule: f for f in result.report.errors}
    assert not result.published
    assert rule in errors, result.report.to_dict()
    if lines[rule]:
        reported = {e["line"] for e in errors[rule].examples}
        assert reported & set(lines[rule]), (reported, lines[rule])
        assert errors[rule].count >= len(lines[rule]) or rule.startswith("duplicate")
    assert await raw.fetchval("SELECT count(*) FROM snapshots WHERE id = $1", RELEASE) == 0
    assert await visible_tables(raw) == before


async def test_many_broken_rules_are_all_reported_in_one_run(
    raw: asyncpg.Connection, tmp_path: Path, base_release: Path
) -> None:
    rules = [r for r in REFUSAL_RULES if r not in MANIFEST_RULES and r != "missing_column"]
    rules += ["file_checksum", "file_rows"]
    lines = corrupt_release(base_release, tmp_path / "bad", rules, seed=5)
    result = await import_release(raw, tmp_path / "bad")
    reported = {f.rule for f in result.report.errors}
    assert set(rules) <= reported, sorted(set(rules) - reported)
    for rule in rules:
        finding = result.report.findings[rule]
        assert finding.count >= 1
        if lines[rule]:
            assert all("line" in e and "file" in e for e in finding.examples)


async def test_warnings_are_counted_and_do_not_refuse(
    raw: asyncpg.Connection, tmp_path: Path, base_release: Path
) -> None:
    release = tmp_path / RELEASE
    shutil.copytree(base_release, release)
    anggota = release / "anggota.csv"
    text = anggota.read_text().splitlines(keepends=True)
    header = text[0].rstrip("\n").split(",")
    row = text[1].rstrip("\n").split(",")
    # An extra column, and a man recorded as pregnant: both warnings.
    row[header.index("hamil")] = "1"
    row[header.index("jenis_kelamin")] = "1"
    text[1] = ",".join(row) + "\n"
    # A birth date and a sex that disagree with the NIK: warnings too (NIKs are not reissued).
    row = text[2].rstrip("\n").split(",")
    born = row[header.index("tanggal_lahir")]
    row[header.index("tanggal_lahir")] = f"{int(born[:4]) - 1}{born[4:]}".replace(
        "-02-29", "-02-28"
    )
    text[2] = ",".join(row) + "\n"
    row = text[3].rstrip("\n").split(",")
    sex = header.index("jenis_kelamin")
    row[sex] = "2" if row[sex] == "1" else "1"
    row[header.index("hamil")] = "0"
    text[3] = ",".join(row) + "\n"
    text = [line.rstrip("\n") + (",x\n" if i else ",catatan\n") for i, line in enumerate(text)]
    anggota.write_text("".join(text))
    _refresh_manifest(release)
    result = await import_release(raw, release, dry_run=True)
    warnings = {f.rule: f.count for f in result.report.warnings}
    assert result.report.ok, result.report.to_dict()
    assert warnings.get("unknown_column") == 1
    assert warnings.get("pregnant_male", 0) >= 1
    assert warnings.get("nik_birth_date_mismatch") == 1
    assert warnings.get("nik_sex_mismatch", 0) >= 1
    clean = await import_release(raw, base_release, dry_run=True)
    assert clean.report.warnings == []  # the generator writes consistent NIKs


def _refresh_manifest(folder: Path) -> None:
    import hashlib
    import json

    manifest = json.loads((folder / "manifest.json").read_text())
    for name, entry in manifest["files"].items():
        data = (folder / name).read_bytes()
        entry["sha256"] = hashlib.sha256(data).hexdigest()
        entry["rows"] = data.count(b"\n") - 1
    (folder / "manifest.json").write_text(json.dumps(manifest))


async def test_next_quarter_imports_beside_the_first(
    raw: asyncpg.Connection, tmp_path: Path, base_release: Path
) -> None:
    nxt = tmp_path / "next"
    manifest = generate_release(nxt, people=0, seed=8, from_dir=base_release)
    second = manifest["release"]
    assert second == "2020-06-30"  # a quarter after 2020-03-31
    try:
        assert (await import_release(raw, base_release)).published
        result = await import_release(raw, nxt)
        assert result.published, result.report.to_dict()
        rows = await raw.fetch(
            "SELECT id, people_count FROM snapshots WHERE id = ANY($1::text[]) ORDER BY id",
            [RELEASE, second],
        )
        assert [r["id"] for r in rows] == [RELEASE, second]
        # NIKs are stable across releases; most people are in both.
        common = await raw.fetchval(
            """SELECT count(*) FROM people a JOIN people b ON a.nik = b.nik
               WHERE a.snapshot_key = (SELECT key FROM snapshots WHERE id = $1)
                 AND b.snapshot_key = (SELECT key FROM snapshots WHERE id = $2)""",
            RELEASE,
            second,
        )
        assert common > 0.9 * rows[0]["people_count"]
    finally:
        await drop_release(raw, second)
        await drop_release(raw, RELEASE)


async def test_published_partitions_are_written_frozen(
    raw: asyncpg.Connection, base_release: Path
) -> None:
    """COPY FREEZE in the publishing transaction: every page of both partitions is all-visible
    when the snapshot appears (no later VACUUM or freeze pass has to rewrite them)."""
    try:
        result = await import_release(raw, base_release)
        assert result.published
        key = result.snapshot_key
        for table in ("families", "people"):
            pages, visible = await raw.fetchrow(
                "SELECT relpages, relallvisible FROM pg_class WHERE relname = $1",
                f"{table}_{key}",
            )
            assert pages > 0
            assert visible == pages, (table, pages, visible)
    finally:
        await drop_release(raw, RELEASE)
