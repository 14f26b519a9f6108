"""The release manifest (docs/snapshot-format.md): reading and checking it, the files it declares,
and the release's content checksum."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from pathlib import Path
from typing import Any

from app.ingest.columns import FAMILIES, PEOPLE
from app.ingest.readers import table_file
from app.ingest.validate import HASH_MOD, Report

FORMAT = "dtsen-snapshot/1"
RELEASE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}(-r[1-9]\d*)?$")


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


def manifest_json(manifest: dict[str, Any]) -> str:
    """The manifest as stored on the snapshot row: without the keys read_manifest added."""
    return json.dumps({k: v for k, v in manifest.items() if not k.startswith("_")})


def release_files(folder: Path, manifest: dict[str, Any], report: Report) -> dict[str, Path]:
    """The release's files by export name (keluarga, anggota): missing or undeclared ones are
    reported; a missing one is left out."""
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
    return paths


def declared_rows(declared: dict[str, Any]) -> int | None:
    """The row count a file's manifest entry declares, if it declares one."""
    rows = declared.get("rows")
    return rows if isinstance(rows, int) else None


def check_file(
    report: Report, name: str, declared: dict[str, Any], rows: int, sha256: str | None
) -> None:
    """A loaded file against its manifest entry: row count and (when known) sha256."""
    expected = declared_rows(declared)
    if expected is not None and expected != rows:
        report.add(
            "file_rows",
            file=name,
            value=str(rows),
            message=f"manifest declares {expected} rows, the file has {rows}",
        )
    sha = declared.get("sha256")
    if sha256 is not None and sha != sha256:
        report.add(
            "file_checksum",
            file=name,
            value=sha256,
            message=f"manifest declares sha256 {sha}",
        )


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
