"""Streaming readers for a release's files: CSV, gzip'd CSV and Parquet, hashing as they read."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUFFIXES = (".csv", ".csv.gz", ".parquet")
CHUNK = 1 << 20


class HashingReader(io.RawIOBase):
    """A binary file that feeds every byte it reads to sha256 (the manifest's checksum)."""

    def __init__(self, path: Path) -> None:
        self._f = path.open("rb")
        self.sha256 = hashlib.sha256()
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = self._f.readinto(b)
        if n:
            self.sha256.update(memoryview(b)[:n])
            self.bytes_read += n
        return n or 0

    def close(self) -> None:
        self._f.close()
        super().close()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def table_file(folder: Path, table: str, declared: dict[str, Any]) -> Path | None:
    """The file of `table` (keluarga or anggota): the declared one, else one present on disk."""
    for suffix in SUFFIXES:
        if table + suffix in declared:
            return folder / (table + suffix)
    for suffix in SUFFIXES:
        if (folder / (table + suffix)).exists():
            return folder / (table + suffix)
    return None


@dataclass
class RowStream:
    """Rows of one file as lists of strings ('' = absent), with their line numbers.

    For CSV the line is the physical line where the record starts (header = line 1); for
    Parquet it is the row number + 1, so that both read the same in reports.
    """

    path: Path
    header: list[str] = field(default_factory=list)
    sha256: str | None = None  # set once the stream is exhausted
    rows: int = 0
    bytes_read: int = 0
    _iter: Iterator[tuple[int, list[str]]] | None = None

    def __iter__(self) -> Iterator[tuple[int, list[str]]]:
        assert self._iter is not None
        return self._iter


def open_rows(path: Path) -> RowStream:
    stream = RowStream(path)
    rows = (
        _parquet_rows(path, stream) if path.name.endswith(".parquet") else _csv_rows(path, stream)
    )
    next(rows)  # runs up to the header marker: the header is known, no data row consumed
    stream._iter = rows
    return stream


def _csv_rows(path: Path, stream: RowStream) -> Iterator[tuple[int, list[str]]]:
    raw = HashingReader(path)
    try:
        binary: Any = gzip.GzipFile(fileobj=raw) if path.name.endswith(".gz") else raw
        buffered = io.BufferedReader(binary, buffer_size=CHUNK)
        text = io.TextIOWrapper(buffered, encoding="utf-8", newline="")
        reader = csv.reader(text, strict=True)
        try:
            stream.header = [h.strip().lstrip("\ufeff") for h in next(reader)]
        except StopIteration:
            stream.header = []
        yield 0, []  # header marker (see open_rows)
        line = reader.line_num + 1
        for row in reader:
            stream.rows += 1
            yield line, row
            line = reader.line_num + 1
        stream.sha256 = raw.sha256.hexdigest()
        stream.bytes_read = raw.bytes_read
    finally:
        raw.close()


def _parquet_rows(path: Path, stream: RowStream) -> Iterator[tuple[int, list[str]]]:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    stream.header = list(pf.schema_arrow.names)
    yield 0, []  # header marker (see open_rows)
    line = 1
    for batch in pf.iter_batches(batch_size=65536):
        columns = []
        for column in batch.columns:
            if pa.types.is_boolean(column.type):
                column = pc.cast(column, pa.int8())
            if not pa.types.is_string(column.type):
                column = pc.cast(column, pa.string())
            columns.append(column.fill_null("").to_pylist())
        for row in zip(*columns, strict=True):
            line += 1
            stream.rows += 1
            yield line, list(row)
    stream.sha256 = file_sha256(path)
    stream.bytes_read = path.stat().st_size
