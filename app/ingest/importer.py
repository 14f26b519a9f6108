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
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import asyncpg

from app.config import Settings
from app.ingest.checks import set_checks
from app.ingest.columnar import ColumnarLoad, ahead
from app.ingest.columns import FAMILIES, PEOPLE, TableSpec
from app.ingest.manifest import (
    check_file,
    declared_rows,
    manifest_json,
    read_manifest,
    release_files,
    snapshot_checksum,
)
from app.ingest.readers import open_rows
from app.ingest.validate import Report, TableLoad
from app.repositories import imports as repo

ProgressHook = Callable[[str, int, int | None], None]  # (table, rows done so far, rows expected)
Reader = Literal["columnar", "rows"]  # app.ingest.columnar (default) or the row reader


@dataclass(frozen=True)
class Loaded:
    rows: int
    content_sum: int


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


def default_jobs() -> int:
    """`--jobs` by default: half the cores, at least one. Each job is a process reading,
    validating and rendering (with a thread ahead of its COPY) and a server backend taking the
    COPY: on the 2-core machines measured, two jobs contend with their own backends."""
    return max(1, (os.cpu_count() or 1) // 2)


async def _claim(conn: asyncpg.Connection, manifest: dict[str, Any], report: Report) -> int | None:
    """Commit a `loading` row for the release (or take over a stale one); None if refused."""
    release = manifest["release"]
    async with conn.transaction():
        row = await repo.lock_release(conn, release)
        if row is not None and row[1] != "loading":
            report.add(
                "release_exists",
                file="manifest.json",
                column="release",
                value=release,
                message=f"release {release} is already loaded ({row[1]})",
            )
            return None
        if row is not None:
            key = row[0]
            if not await repo.try_import_lock(conn, key):
                report.add(
                    "release_exists",
                    file="manifest.json",
                    column="release",
                    value=release,
                    message="another import of this release is running",
                )
                return None
            await repo.retake_loading(conn, key, manifest_json(manifest))
            return key
        key = await repo.insert_loading(
            conn,
            release,
            str(manifest.get("label") or f"DTSEN {release}"),
            manifest["_cutoff"],
            manifest_json(manifest),
        )
        await repo.import_lock(conn, key)
        return key


async def _aiter(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def _copy_table(
    conn: asyncpg.Connection,
    spec: TableSpec,
    path: Path,
    key: int,
    cutoff: dt.date,
    report: Report,
    declared: dict[str, Any],
    progress: ProgressHook | None,
    reader: Reader,
) -> Loaded:
    expected = declared_rows(declared)
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(spec.name, done, expected)

    columns = ["snapshot_key", "source_line", *spec.content_columns]
    if reader == "rows":
        stream = open_rows(path)
        rows = TableLoad(spec, stream, report, key, cutoff, progress=tick)
        await repo.copy_into_partition(
            conn, spec.table, key, columns, _aiter(rows.chunks()), freeze=True
        )
        check_file(report, path.name, declared, rows.rows, stream.sha256)
        return Loaded(rows.rows, rows.content_sum)
    load = ColumnarLoad(spec, path, report, key, cutoff, progress=tick)
    await repo.copy_into_partition(
        conn, spec.table, key, columns, ahead(load.chunks()), freeze=True
    )
    check_file(report, path.name, declared, load.rows, load.sha256)
    return Loaded(load.rows, load.content_sum)


async def _copy_by_processes(
    settings: Settings,
    paths: dict[str, Path],
    key: int,
    cutoff: dt.date,
    report: Report,
    declared: dict[str, Any],
    progress: ProgressHook | None,
    jobs: int,
) -> dict[str, Loaded]:
    from app.ingest import parallel

    specs = [(spec, paths[spec.name]) for spec in (FAMILIES, PEOPLE)]
    done = await parallel.load_tables(settings, specs, key, cutoff, report, jobs)
    loads: dict[str, Loaded] = {}
    for (spec, path), d in zip(specs, done, strict=True):
        file_declared = declared.get(path.name) or {}
        if progress:
            progress(spec.name, d.rows, declared_rows(file_declared))
        check_file(report, path.name, file_declared, d.rows, d.sha256)
        loads[spec.table] = Loaded(d.rows, d.content_sum)
    return loads


async def import_release(
    conn: asyncpg.Connection,
    folder: Path,
    *,
    dry_run: bool = False,
    progress: ProgressHook | None = None,
    reader: Reader = "columnar",
    jobs: int = 1,
    settings: Settings | None = None,
) -> ImportResult:
    """Validate and (unless dry_run or refused) publish the release in `folder`.

    `jobs` > 1 (with `settings`, for the processes' connections): the files are read, validated
    and COPYed by that many processes (app.ingest.parallel); the set checks and the publish stay
    one transaction on `conn`. Same rows, checksum and report as one process."""
    started = time.perf_counter()
    report = Report()
    manifest = read_manifest(folder, report)
    result = ImportResult(manifest["release"] if manifest else None, report, dry_run)
    if manifest is None:
        return result
    declared: dict[str, Any] = manifest["files"]
    paths = release_files(folder, manifest, report)
    status = await repo.release_status(conn, manifest["release"])
    if status is not None and status != "loading":
        report.add(
            "release_exists",
            file="manifest.json",
            column="release",
            value=manifest["release"],
            message=f"release {manifest['release']} is already loaded ({status})",
        )
    if len(paths) < 2:
        return result

    claimed: int | None = None
    if not dry_run and report.ok:
        claimed = await _claim(conn, manifest, report)
        if claimed is None:
            return result
    several = jobs > 1 and reader == "columnar" and settings is not None
    staged: int | None = None
    tx = conn.transaction()
    in_tx = False
    try:
        loads: dict[str, Loaded] = {}
        if claimed is not None:  # what a killed `--jobs` run of this release left, if any
            await repo.drop_loading_partitions(conn, claimed)
        if several:
            assert settings is not None
            staged = key = claimed if claimed is not None else await repo.next_key(conn)
            result.snapshot_key = key
            await repo.create_loading_partitions(conn, key)
            loads = await _copy_by_processes(
                settings, paths, key, manifest["_cutoff"], report, declared, progress, jobs
            )
            await tx.start()
            in_tx = True
            await repo.move_loading_partitions(conn, key)
        else:
            await tx.start()
            in_tx = True
            if claimed is not None:
                key = claimed
            else:  # dry run: a throw-away key inside the transaction
                key = await repo.insert_dry_run(
                    conn, f"dry-run-{manifest['release']}-{time.time_ns()}", manifest["_cutoff"]
                )
            result.snapshot_key = key
            await repo.create_partitions(conn, key)
            for spec in (FAMILIES, PEOPLE):
                path = paths[spec.name]
                loads[spec.table] = await _copy_table(
                    conn,
                    spec,
                    path,
                    key,
                    manifest["_cutoff"],
                    report,
                    declared.get(path.name) or {},
                    progress,
                    reader,
                )
        result.counts = {t: load.rows for t, load in loads.items()}
        await set_checks(conn, key, report, {s: p.name for s, p in paths.items()})
        result.checksum = snapshot_checksum(
            manifest["release"],
            manifest["_cutoff"],
            {t: (load.rows, load.content_sum) for t, load in loads.items()},
        )
        if report.ok and not dry_run:
            await repo.attach_and_publish(
                conn,
                key,
                result.checksum,
                result.counts["families"],
                result.counts["people"],
                json.dumps(report.to_dict()),
            )
            await tx.commit()
            result.published = True
        else:
            await tx.rollback()
    except BaseException:
        if in_tx:
            await tx.rollback()
        raise
    finally:
        if staged is not None and not conn.is_closed():
            with contextlib.suppress(asyncpg.PostgresError, OSError):
                await repo.drop_loading_partitions(conn, staged)
        if claimed is not None and not conn.is_closed():
            # Refused or failed: the loading row goes too. (Killed: it stays, stale, and the
            # next run takes it over; it is never served.)
            with contextlib.suppress(asyncpg.PostgresError, OSError):
                if not result.published:
                    await repo.delete_snapshot(conn, claimed)
                await repo.import_unlock(conn, claimed)
        result.seconds = time.perf_counter() - started
    return result
