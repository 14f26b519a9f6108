"""Import a release folder: validate in one pass, COPY into new partitions, publish atomically.

The sequence (docs/architecture.md, "Import and publish"):

1. a `loading` row is committed for the release (operators see the import; it is never served);
2. in ONE transaction: the partitions are created as standalone tables, both files are streamed
   through validation into COPY, indexes are built, the set-based rules run in SQL, and, only
   if nothing was refused, the partitions are attached and the row turns `published`;
3. refused, or killed at any point: that transaction rolls back, so no row of the release is
   ever visible; a stale `loading` row is taken over by the next run (its advisory lock is free).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from app.identifiers import as_str, mask
from app.ingest.columns import FAMILIES, PEOPLE, TableSpec
from app.ingest.readers import RowStream, open_rows, table_file
from app.ingest.validate import HASH_MOD, Report, TableLoad

FORMAT = "dtsen-snapshot/1"
RELEASE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}(-r[1-9]\d*)?$")
IMPORT_LOCK = 7411  # advisory lock class: (IMPORT_LOCK, snapshot key) held by a live importer

ProgressHook = Callable[[str, int, int | None], None]  # (table, rows done so far, rows expected)


@dataclass
class ImportResult:
    release: str | None
    report: Report
    dry_run: bool
    published: bool = False
    snapshot_key: int | None = None
    checksum: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        rows = sum(self.counts.values())
        return {
            "release": self.release,
            "published": self.published,
            "dry_run": self.dry_run,
            "checksum": self.checksum,
            "counts": self.counts,
            "seconds": round(self.seconds, 3),
            "rows_per_second": round(rows / self.seconds) if self.seconds else None,
            **self.report.to_dict(),
        }


def snapshot_checksum(release: str, cutoff: dt.date, sums: dict[str, tuple[int, int]]) -> str:
    """The content checksum: order-independent sums of row hashes per table, then sha256.

    `sums` maps the database table to (row count, sum of row hashes mod 2**128). The same
    function serves import (hashes of the rows as loaded) and verify (as read back).
    """
    parts = [FORMAT, release, cutoff.isoformat()]
    for table in ("families", "people"):
        count, total = sums[table]
        parts.append(f"{table}:{count}:{total % HASH_MOD:032x}")
    return "sha256:" + hashlib.sha256("|".join(parts).encode()).hexdigest()


def partition_name(table: str, key: int) -> str:
    return f"{table}_{int(key)}"


def read_manifest(folder: Path, report: Report) -> dict[str, Any] | None:
    path = folder / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        report.add("manifest_missing", file="manifest.json", message=f"no manifest in {folder}")
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        report.add("manifest_missing", file="manifest.json", message=f"not valid JSON: {e}")
        return None
    if not isinstance(manifest, dict):
        report.add("manifest_format", file="manifest.json", message="not a JSON object")
        return None
    if manifest.get("format") != FORMAT:
        report.add(
            "manifest_format",
            file="manifest.json",
            column="format",
            value=str(manifest.get("format")),
            message=f"must be {FORMAT}",
        )
    release = manifest.get("release")
    if not isinstance(release, str) or not RELEASE_RE.match(release):
        report.add(
            "manifest_format",
            file="manifest.json",
            column="release",
            value=str(release),
            message="must be YYYY-MM-DD or YYYY-MM-DD-rN",
        )
        return None
    try:
        cutoff = dt.date.fromisoformat(str(manifest.get("cutoff_date")))
    except ValueError:
        report.add(
            "manifest_format",
            file="manifest.json",
            column="cutoff_date",
            value=str(manifest.get("cutoff_date")),
            message="must be a date YYYY-MM-DD",
        )
        return None
    if not release.startswith(cutoff.isoformat()):
        report.add(
            "manifest_format",
            file="manifest.json",
            column="release",
            value=release,
            message="must start with the cut-off date",
        )
    if not isinstance(manifest.get("files"), dict):
        report.add(
            "manifest_format",
            file="manifest.json",
            column="files",
            message="must map file names to {rows, sha256}",
        )
        manifest["files"] = {}
    manifest["_cutoff"] = cutoff
    return manifest


async def _claim(conn: asyncpg.Connection, manifest: dict[str, Any], report: Report) -> int | None:
    """Commit a `loading` row for the release (or take over a stale one); None if refused."""
    release = manifest["release"]
    async with conn.transaction():
        row = await conn.fetchrow(
            "SELECT key, status FROM snapshots WHERE id = $1 FOR UPDATE", release
        )
        if row is not None and row["status"] != "loading":
            report.add(
                "release_exists",
                file="manifest.json",
                column="release",
                value=release,
                message=f"release {release} is already loaded ({row['status']})",
            )
            return None
        if row is not None:
            key: int = row["key"]
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", IMPORT_LOCK, key):
                report.add(
                    "release_exists",
                    file="manifest.json",
                    column="release",
                    value=release,
                    message="another import of this release is running",
                )
                return None
            await conn.execute(
                "UPDATE snapshots SET created_at = now(), manifest = $2 WHERE key = $1",
                key,
                _manifest_json(manifest),
            )
            return key
        key = await conn.fetchval(
            """INSERT INTO snapshots (id, label, cutoff_date, status, manifest)
               VALUES ($1, $2, $3, 'loading', $4) RETURNING key""",
            release,
            str(manifest.get("label") or f"DTSEN {release}"),
            manifest["_cutoff"],
            _manifest_json(manifest),
        )
        await conn.fetchval("SELECT pg_advisory_lock($1, $2)", IMPORT_LOCK, key)
        return key


def _manifest_json(manifest: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in manifest.items() if not k.startswith("_")})


async def _aiter(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def _copy_table(
    conn: asyncpg.Connection,
    spec: TableSpec,
    stream: RowStream,
    key: int,
    cutoff: dt.date,
    report: Report,
    declared: dict[str, Any],
    progress: ProgressHook | None,
) -> TableLoad:
    expected = declared.get("rows") if isinstance(declared.get("rows"), int) else None
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(spec.name, done, expected)

    load = TableLoad(spec, stream, report, key, cutoff, progress=tick)
    await conn.copy_to_table(
        partition_name(spec.table, key),
        source=_aiter(load.chunks()),
        columns=["snapshot_key", "source_line", *spec.content_columns],
        format="text",
    )
    name = stream.path.name
    if expected is not None and expected != load.rows:
        report.add(
            "file_rows",
            file=name,
            value=str(load.rows),
            message=f"manifest declares {expected} rows, the file has {load.rows}",
        )
    sha = declared.get("sha256")
    if stream.sha256 is not None and sha != stream.sha256:
        report.add(
            "file_checksum",
            file=name,
            value=stream.sha256,
            message=f"manifest declares sha256 {sha}",
        )
    return load


async def _create_partitions(conn: asyncpg.Connection, key: int) -> None:
    for table in ("families", "people"):
        name = partition_name(table, key)
        # The CHECK matches the partition bound, so ATTACH needs no validation scan.
        await conn.execute(
            f"CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS, "
            f"CONSTRAINT {name}_snapshot CHECK (snapshot_key IS NOT NULL AND snapshot_key = {key}))"
        )


async def _set_checks(
    conn: asyncpg.Connection, key: int, report: Report, files: dict[str, str]
) -> None:
    """The rules that need the whole release: uniqueness and family structure, in SQL."""
    fam, ppl = partition_name("families", key), partition_name("people", key)
    kfile, afile = files["keluarga"], files["anggota"]
    try:
        async with conn.transaction():
            await conn.execute(f"CREATE UNIQUE INDEX {fam}_no_kk ON {fam} (no_kk)")
    except asyncpg.UniqueViolationError:
        await _report_query(
            conn,
            report,
            "duplicate_no_kk",
            kfile,
            "no_kk",
            f"""SELECT f.source_line, f.no_kk FROM {fam} f
                JOIN (SELECT no_kk FROM {fam} GROUP BY no_kk HAVING count(*) > 1) d USING (no_kk)""",
        )
        await conn.execute(f"CREATE INDEX {fam}_no_kk ON {fam} (no_kk)")
    try:
        async with conn.transaction():
            await conn.execute(f"CREATE UNIQUE INDEX {ppl}_nik ON {ppl} (nik)")
    except asyncpg.UniqueViolationError:
        await _report_query(
            conn,
            report,
            "duplicate_nik",
            afile,
            "nik",
            f"""SELECT p.source_line, p.nik FROM {ppl} p
                JOIN (SELECT nik FROM {ppl} GROUP BY nik HAVING count(*) > 1) d USING (nik)""",
        )
    await conn.execute(f"CREATE INDEX {ppl}_no_kk ON {ppl} (no_kk)")
    await _report_query(
        conn,
        report,
        "unknown_family",
        afile,
        "no_kk",
        f"""SELECT p.source_line, p.no_kk FROM {ppl} p
            WHERE NOT EXISTS (SELECT 1 FROM {fam} f WHERE f.no_kk = p.no_kk)""",
    )
    await _report_query(
        conn,
        report,
        "family_without_members",
        kfile,
        "no_kk",
        f"""SELECT f.source_line, f.no_kk FROM {fam} f
            WHERE NOT EXISTS (SELECT 1 FROM {ppl} p WHERE p.no_kk = f.no_kk)""",
    )
    await _report_query(
        conn,
        report,
        "family_without_head",
        kfile,
        "no_kk",
        f"""SELECT f.source_line, f.no_kk FROM {fam} f
            WHERE EXISTS (SELECT 1 FROM {ppl} p WHERE p.no_kk = f.no_kk)
              AND NOT EXISTS (SELECT 1 FROM {ppl} p WHERE p.no_kk = f.no_kk AND p.relationship = 1)""",
    )
    # Several heads: the examples are the head rows themselves (what the operator must fix).
    await _report_query(
        conn,
        report,
        "family_multiple_heads",
        afile,
        "hubungan_kk",
        f"""SELECT p.source_line, p.no_kk, dense_rank() OVER (ORDER BY p.no_kk) AS family FROM {ppl} p
            JOIN (SELECT no_kk FROM {ppl} WHERE relationship = 1 GROUP BY no_kk HAVING count(*) > 1) h
              USING (no_kk)
            WHERE p.relationship = 1""",
        count_distinct="no_kk",
    )


async def _report_query(
    conn: asyncpg.Connection,
    report: Report,
    rule: str,
    file: str,
    column: str,
    query: str,
    *,
    count_distinct: str | None = None,
) -> None:
    """Count what `query` finds (rows, or distinct `count_distinct`) and keep the first five."""
    counted = f"count(DISTINCT {count_distinct})" if count_distinct else "count(*)"
    rows = await conn.fetch(
        f"""WITH bad AS MATERIALIZED ({query})
            SELECT (SELECT {counted} FROM bad) AS total, b.*
            FROM (SELECT * FROM bad ORDER BY source_line LIMIT 5) b"""
    )
    for i, r in enumerate(rows):
        report.add(
            rule,
            file=file,
            line=r[1],
            column=column,
            value=mask(as_str(r[2])),
            count=r["total"] if i == 0 else 0,
        )


async def _attach_and_publish(
    conn: asyncpg.Connection, key: int, checksum: str, counts: dict[str, int], report: Report
) -> None:
    for table in ("families", "people"):
        name = partition_name(table, key)
        await conn.execute(f"ANALYZE {name}")
        await conn.execute(f"ALTER TABLE {table} ATTACH PARTITION {name} FOR VALUES IN ({key})")
    await conn.execute(
        """UPDATE snapshots SET status = 'published', published_at = now(), checksum = $2,
                  family_count = $3, people_count = $4, import_report = $5
           WHERE key = $1""",
        key,
        checksum,
        counts["families"],
        counts["people"],
        json.dumps(report.to_dict()),
    )


async def import_release(
    conn: asyncpg.Connection,
    folder: Path,
    *,
    dry_run: bool = False,
    progress: ProgressHook | None = None,
) -> ImportResult:
    """Validate and (unless dry_run or refused) publish the release in `folder`."""
    started = time.perf_counter()
    report = Report()
    manifest = read_manifest(folder, report)
    result = ImportResult(manifest["release"] if manifest else None, report, dry_run)
    if manifest is None:
        return result
    declared: dict[str, Any] = manifest["files"]
    paths: dict[str, Path] = {}
    for spec in (FAMILIES, PEOPLE):
        path = table_file(folder, spec.name, declared)
        if path is None or not path.exists():
            report.add(
                "file_missing",
                file=path.name if path else f"{spec.name}.csv",
                message=f"the {spec.name} file is missing",
            )
        else:
            paths[spec.name] = path
            if path.name not in declared:
                report.add(
                    "manifest_format",
                    file="manifest.json",
                    column="files",
                    value=path.name,
                    message="the file is not declared in the manifest",
                )
    exists = await conn.fetchrow("SELECT status FROM snapshots WHERE id = $1", manifest["release"])
    if exists is not None and exists["status"] != "loading":
        report.add(
            "release_exists",
            file="manifest.json",
            column="release",
            value=manifest["release"],
            message=f"release {manifest['release']} is already loaded ({exists['status']})",
        )
    if len(paths) < 2:
        return result

    claimed: int | None = None
    if not dry_run and report.ok:
        claimed = await _claim(conn, manifest, report)
        if claimed is None:
            return result
    tx = conn.transaction()
    await tx.start()
    try:
        key = claimed
        if key is None:  # dry run: a throw-away key inside the transaction
            key = await conn.fetchval(
                """INSERT INTO snapshots (id, label, cutoff_date, status, manifest)
                   VALUES ($1, 'dry run', $2, 'loading', '{}') RETURNING key""",
                f"dry-run-{manifest['release']}-{time.time_ns()}",
                manifest["_cutoff"],
            )
        result.snapshot_key = key
        await _create_partitions(conn, key)
        loads: dict[str, TableLoad] = {}
        for spec in (FAMILIES, PEOPLE):
            path = paths[spec.name]
            loads[spec.table] = await _copy_table(
                conn,
                spec,
                open_rows(path),
                key,
                manifest["_cutoff"],
                report,
                declared.get(path.name) or {},
                progress,
            )
        result.counts = {t: load.rows for t, load in loads.items()}
        await _set_checks(conn, key, report, {s: p.name for s, p in paths.items()})
        result.checksum = snapshot_checksum(
            manifest["release"],
            manifest["_cutoff"],
            {t: (load.rows, load.content_sum) for t, load in loads.items()},
        )
        if report.ok and not dry_run:
            await _attach_and_publish(conn, key, result.checksum, result.counts, report)
            await tx.commit()
            result.published = True
        else:
            await tx.rollback()
    except BaseException:
        await tx.rollback()
        raise
    finally:
        if claimed is not None and not conn.is_closed():
            # Refused or failed: the loading row goes too. (Killed: it stays, stale, and the
            # next run takes it over; it is never served.)
            with contextlib.suppress(asyncpg.PostgresError, OSError):
                if not result.published:
                    await conn.execute("DELETE FROM snapshots WHERE key = $1", claimed)
                await conn.execute("SELECT pg_advisory_unlock($1, $2)", IMPORT_LOCK, claimed)
        result.seconds = time.perf_counter() - started
    return result
