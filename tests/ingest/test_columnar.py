"""The columnar reader against the row reader, row for row: the same COPY text (which the snapshot
checksum hashes), the same counts, file hash and refusal report, on files full of edges (NULLs,
quotes, unicode and escaped names, boundary dates, CRLF, blank and short rows, a byte-order
mark, gzip, Parquet), read in small blocks so that clean and irregular blocks alternate."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.ingest import columnar
from app.ingest.columnar import ColumnarLoad
from app.ingest.columns import FAMILIES, PEOPLE, TableSpec
from app.ingest.readers import open_rows
from app.ingest.validate import Report, TableLoad
from app.synth.generate import generate_release

RELEASE = "2020-03-31"
CUTOFF = dt.date(2020, 3, 31)

NAMES = [
    "",  # empty required value
    "   ",  # blank
    "\u3000",  # blank to Python's str.strip, no ASCII letter
    "Siti, S.Pd",  # a comma: quoted
    'Budi "Bud" Santoso',  # quotes: doubled
    "Ni Luh Putu Ayu Ṣaraswatī",  # unicode
    "王小明",  # no ASCII letter at all
    "back\\slash",  # COPY escapes
    "tab\there",
    "two\nlines",  # a quoted record over two physical lines
    "cr\rinside",
    "nul\x00byte",
    "  Spaces  ",
    "x" * 60,
]
DATES = [
    "2000-02-29",
    "1900-02-29",  # not a day
    "1900-01-01",  # the placeholder's own value
    "2020-03-31",  # the cut-off
    "2020-04-01",  # the day after
    "2019-W49-5",  # ISO week date: 10 characters, not YYYY-MM-DD
    "20191204",
    "0000-01-01",
    "1999-12-31 ",
    "",
]
CODES = ["", " 1", "1 ", "01", "1.0", "9", "x", "1"]
FLAGS = ["", "0", "1", "2", " 1", "t"]
NIKS = [
    "",
    "0101010101010001",  # leading zero
    "3201014101900000",  # serial 0000
    "3201013202900001",  # 32 February
    "32010141019000",  # short
    "3201014101９00001",  # a non-ASCII digit
    " 3201014101900001",
    "9999994101900001",  # unknown district
]


def _edge_people(header: list[str], rows: list[list[str]], rng: random.Random) -> None:
    """Overwrite fields of the generated people with edge values (in place)."""
    col = {name: i for i, name in enumerate(header)}
    for k, row in enumerate(rows[: 40 * len(NAMES)]):
        if k % 3 == 0:
            row[col["nama"]] = NAMES[(k // 3) % len(NAMES)]
        if k % 4 == 1:
            row[col["tanggal_lahir"]] = DATES[(k // 4) % len(DATES)]
        if k % 5 == 2:
            row[col[rng.choice(["hubungan_kk", "jenis_kelamin", "status_kawin"])]] = rng.choice(
                CODES
            )
        if k % 7 == 3:
            row[col[rng.choice(["hamil", "bekerja", "penerima_pbi"])]] = rng.choice(FLAGS)
        if k % 11 == 4:
            row[col["nik"]] = NIKS[(k // 11) % len(NIKS)]
        if k % 13 == 5:
            row[col["no_kk"]] = rng.choice(["", "0" + row[col["no_kk"]][1:], "12345"])
        if k % 17 == 6:
            row[col["jenjang_sekolah"]] = rng.choice(["sd", "SD ", "PT", ""])


def _edge_families(header: list[str], rows: list[list[str]], rng: random.Random) -> None:
    col = {name: i for i, name in enumerate(header)}
    for k, row in enumerate(rows[:300]):
        if k % 3 == 0:
            row[col["desil"]] = rng.choice(["", " 3", "03", "11", "3"])
        if k % 5 == 1:
            row[col["luas_lantai_m2"]] = rng.choice(["", "007", "0", "1234567890", "-1", "12a"])
        if k % 7 == 2:
            row[col["kode_wilayah"]] = rng.choice(["", "0101010101", "32010101x1", "320101010"])
        if k % 19 == 3:
            row[col["no_kk"]] = rng.choice(["", "0" + row[col["no_kk"]][1:]])


def _write(path: Path, header: list[str], rows: list[list[str]], *, crlf: bool, bom: bool) -> None:
    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator="\r\n" if crlf else "\n")
    w.writerow(header)
    w.writerows(rows)
    data = buf.getvalue().encode()
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("columnar") / RELEASE
    generate_release(out, people=3000, seed=5, release=RELEASE)
    return out


def _variants(src: Path, out: Path) -> list[tuple[TableSpec, Path]]:
    rng = random.Random(3)
    made: list[tuple[TableSpec, Path]] = []
    for spec, edit in ((FAMILIES, _edge_families), (PEOPLE, _edge_people)):
        with (src / f"{spec.name}.csv").open(newline="", encoding="utf-8") as f:
            header, *rows = list(csv.reader(f))
        edit(header, rows, rng)
        for name, crlf, bom in (("lf", False, False), ("crlf", True, False), ("bom", False, True)):
            path = out / name / f"{spec.name}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            _write(path, header, rows, crlf=crlf, bom=bom)
            made.append((spec, path))
        # Irregular rows: a blank line, a short row, a long one, an unknown column, a lone CR.
        ragged = out / "ragged" / f"{spec.name}.csv"
        ragged.parent.mkdir(parents=True, exist_ok=True)
        text = (out / "lf" / f"{spec.name}.csv").read_bytes().split(b"\n")
        text[0] += b",extra"
        for i in range(1, len(text) - 1):
            text[i] += b"," + str(i).encode()
        text[50] = b""
        text[120] = b",".join(text[120].split(b",")[:-3])
        text[200] += b",1,2"
        text[260] = text[260].replace(b",", b"\r", 1) if b'"' not in text[260] else text[260]
        ragged.write_bytes(b"\n".join(text))
        made.append((spec, ragged))
        gz = out / "gz" / f"{spec.name}.csv.gz"
        gz.parent.mkdir(parents=True, exist_ok=True)
        gz.write_bytes(gzip.compress((out / "crlf" / f"{spec.name}.csv").read_bytes(), mtime=0))
        made.append((spec, gz))
    return made


def _rows_reader(spec: TableSpec, path: Path) -> tuple[bytes, int, int, str | None, Any]:
    report = Report()
    stream = open_rows(path)
    load = TableLoad(spec, stream, report, 7, CUTOFF)
    data = b"".join(load.chunks())
    return data, load.rows, load.content_sum, stream.sha256, report.to_dict()


def _columnar_reader(spec: TableSpec, path: Path) -> tuple[bytes, int, int, str | None, Any]:
    report = Report()
    load = ColumnarLoad(spec, path, report, 7, CUTOFF)
    data = b"".join(load.chunks())
    return data, load.rows, load.content_sum, load.sha256, report.to_dict()


@pytest.mark.parametrize("block", [columnar.BLOCK, 4096, 700])
def test_columnar_reader_renders_every_row_as_the_row_reader(
    generated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int
) -> None:
    monkeypatch.setattr(columnar, "BLOCK", block)
    for spec, path in _variants(generated, tmp_path):
        old = _rows_reader(spec, path)
        new = _columnar_reader(spec, path)
        where = f"{path.parent.name}/{path.name}"
        assert new[0].split(b"\n") == old[0].split(b"\n"), where  # row by row first
        assert new[0] == old[0], where
        assert new[1:4] == old[1:4], where
        assert new[4] == old[4], where
        assert not old[4]["ok"]  # the edges are refused, and said so identically


def test_parquet_reads_as_through_the_row_reader(tmp_path: Path) -> None:
    out = tmp_path / RELEASE
    generate_release(out, people=2000, seed=9, release=RELEASE, file_format="parquet")
    for spec in (FAMILIES, PEOPLE):
        path = out / f"{spec.name}.parquet"
        assert _columnar_reader(spec, path) == _rows_reader(spec, path)


def test_a_valid_release_is_mostly_read_by_pyarrow(generated: Path) -> None:
    """The fast path is taken: a generated file is one columnar piece, no row piece."""
    src = columnar._Source((generated / "anggota.csv").open("rb"))
    src.more()
    end = src.buf.find(b"\n")
    header = columnar.header_of(src.buf[: end + 1])
    assert header is not None
    src.pos = end + 1
    pieces = list(columnar.csv_pieces(src, len(header), 2))
    assert [p.rows is None for p in pieces] == [True]
    assert len(pieces[0]) == 3000


async def test_ahead_passes_chunks_in_order_and_raises_the_readers_error() -> None:
    def chunks() -> Iterator[bytes]:
        yield b"a"
        yield b"b"
        raise ValueError("bad block")

    got: list[bytes] = []

    async def consume() -> None:
        async for chunk in columnar.ahead(chunks()):
            got.append(chunk)

    with pytest.raises(ValueError, match="bad block"):
        await consume()
    assert got == [b"a", b"b"]


async def test_ahead_stops_its_thread_when_the_copy_stops_early() -> None:
    produced: list[int] = []

    def chunks() -> Iterator[bytes]:
        for i in range(1000):
            produced.append(i)
            yield b"x"

    source = columnar.ahead(chunks(), depth=2)
    async for _ in source:
        break
    await source.aclose()
    assert not [t for t in threading.enumerate() if t.name == "tepat-import-reader"]
    assert len(produced) < 10  # it stopped, a few chunks ahead at most
