"""Reading and writing release folders (docs/snapshot-format.md): CSV, gzip CSV, Parquet, manifest."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from app.synth.reference import ANGGOTA_COLUMNS, FORMAT_ID, KELUARGA_COLUMNS

FileFormat = Literal["csv", "csv.gz", "parquet"]
FILE_FORMATS: tuple[FileFormat, ...] = ("csv", "csv.gz", "parquet")
RELEASE_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})(-r[1-9]\d*)?$")
_BATCH_ROWS = 50_000


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class _TableWriter:
    """One table file; rows are buffered and flushed in batches (csv.writerows, Parquet groups)."""

    def __init__(self, path: Path, columns: tuple[str, ...], file_format: FileFormat) -> None:
        self.path = path
        self.columns = columns
        self.file_format = file_format
        self.rows = 0
        self._buffer: list[list[str]] = []
        self._raw: IO[bytes] | None = None
        self._gzip: gzip.GzipFile | None = None
        self._text: io.TextIOWrapper | None = None
        self._parquet: pq.ParquetWriter | None = None
        if file_format == "parquet":
            self._schema = pa.schema([(c, pa.string()) for c in columns])
            self._parquet = pq.ParquetWriter(str(path), self._schema, compression="zstd")
            return
        self._raw = path.open("wb")
        binary: IO[bytes] | gzip.GzipFile = self._raw
        if file_format == "csv.gz":
            # mtime=0 and an empty name: the gzip header carries no time and no path.
            self._gzip = gzip.GzipFile(
                filename="", mode="wb", fileobj=self._raw, mtime=0, compresslevel=6
            )
            binary = self._gzip
        self._text = io.TextIOWrapper(binary, encoding="utf-8", newline="")
        self._csv = csv.writer(self._text, lineterminator="\n")
        self._csv.writerow(columns)

    def write(self, row: list[str]) -> None:
        self._buffer.append(row)
        if len(self._buffer) >= _BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        self.rows += len(self._buffer)
        if self._parquet is not None:
            # Strings throughout, null for empty: the same values as the CSV, typing left to
            # the importer's validation exactly as for CSV.
            arrays = [
                pa.array([v or None for v in col], type=pa.string())
                for col in zip(*self._buffer, strict=True)
            ]
            self._parquet.write_table(pa.Table.from_arrays(arrays, schema=self._schema))
        else:
            self._csv.writerows(self._buffer)
        self._buffer = []

    def close(self) -> None:
        self.flush()
        if self._parquet is not None:
            self._parquet.close()
            return
        assert self._text is not None
        assert self._raw is not None
        self._text.flush()
        self._text.detach()
        if self._gzip is not None:
            self._gzip.close()
        self._raw.close()


class ReleaseWriter:
    """Streams keluarga and anggota side by side, then writes manifest.json last."""

    def __init__(self, out_dir: Path, file_format: FileFormat) -> None:
        if file_format not in FILE_FORMATS:
            raise ValueError(f"unknown file format {file_format!r}")
        if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
            raise ValueError(f"{out_dir} exists and is not an empty folder")
        out_dir.mkdir(parents=True, exist_ok=True)
        self.out_dir = out_dir
        self.keluarga = _TableWriter(
            out_dir / f"keluarga.{file_format}", KELUARGA_COLUMNS, file_format
        )
        self.anggota = _TableWriter(
            out_dir / f"anggota.{file_format}", ANGGOTA_COLUMNS, file_format
        )

    def write_family(self, keluarga: list[str], members: list[list[str]]) -> None:
        self.keluarga.write(keluarga)
        for m in members:
            self.anggota.write(m)

    def finish(self, release: str, cutoff: str, label: str, produced_by: str) -> dict[str, Any]:
        files: dict[str, Any] = {}
        for table in (self.keluarga, self.anggota):
            table.close()
            files[table.path.name] = {"rows": table.rows, "sha256": sha256_of(table.path)}
        manifest: dict[str, Any] = {
            "format": FORMAT_ID,
            "release": release,
            "cutoff_date": cutoff,
            "label": label,
            "produced_by": produced_by,
            "files": files,
        }
        write_manifest(self.out_dir, manifest)
        return manifest


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    text = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
    (folder / "manifest.json").write_text(text, encoding="utf-8", newline="\n")


def read_manifest(folder: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    return manifest


def table_file(folder: Path, manifest: dict[str, Any], table: str) -> Path:
    for name in manifest["files"]:
        if name.split(".", 1)[0] == table:
            return folder / str(name)
    raise ValueError(f"manifest of {folder} declares no {table} file")


def iter_rows(path: Path, columns: tuple[str, ...]) -> Iterator[list[str]]:
    """Rows as lists of strings in `columns` order ("" for empty), whatever the file's format."""
    if path.name.endswith(".parquet"):
        parquet = pq.ParquetFile(str(path))
        for batch in parquet.iter_batches(batch_size=_BATCH_ROWS, columns=list(columns)):
            cols = [batch.column(c).to_pylist() for c in columns]
            for values in zip(*cols, strict=True):
                yield [v if v is not None else "" for v in values]
        return
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        positions = [header.index(c) for c in columns]
        if positions == list(range(len(columns))) and len(header) == len(columns):
            yield from reader
            return
        for row in reader:
            yield [row[i] for i in positions]
