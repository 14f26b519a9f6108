"""The columnar reader: a release's files parsed by pyarrow (in C, on threads), validated a column
at a time and rendered as the same COPY text as the row reader (app.ingest.validate.TableLoad).

Exactness is by construction, not by re-implementation: every value either takes a fast path
that is provably the parser's own answer (a low-cardinality column's distinct values are parsed
once by the column's parser and memoised; an identifier matching `^[1-9][0-9]{15}$` renders as
itself; a name with no character COPY escapes renders as itself) or goes through the column's
parser in Python, as the row reader does. Findings are collected with their line and column
position and reported in the row reader's order (line, then column), so reports are identical.

CSV is read in blocks of whole lines. A block is handed to pyarrow only when pyarrow must read it
exactly as Python's `csv` module in strict mode does: no `"` (no quoting), no blank line, no `\\r`
but in `\\r\\n`. Any other block (and a block pyarrow refuses, e.g. a row with the wrong number of
fields) is read by Python's `csv` module line by line, exactly as the row reader reads it, up to
the first record boundary past the block; then the columnar reading resumes. Line numbers are
those of the row reader: the physical line where the record starts, header = line 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import datetime as dt
import gzip
import hashlib
import itertools
import queue
import re
import threading
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from app.identifiers import mask
from app.ingest.columns import _NIK_DATES, NULL, ColumnSpec, FieldError, TableSpec, _nik, _text
from app.ingest.readers import HashingReader, file_sha256
from app.ingest.validate import (
    _PLACEHOLDER,
    HASH_MOD,
    Report,
    TableLoad,
    _known_districts,
    person_checks,
)

BLOCK = 2 << 20  # bytes of CSV per columnar piece
PARQUET_BATCH = 65536
MEMO_LIMIT = 200_000  # distinct values remembered per column (dates, codes, sizes...)
_LINE = re.compile(rb"[^\r\n]*(\r\n|\r|\n)?")  # a line as TextIOWrapper(newline="") splits them
_ESCAPED = r"[\\\x00\x08\t\n\x0b\x0c\r]"  # what COPY text escapes, and NUL
_NIK_DATE_SET = pa.array(sorted(_NIK_DATES), pa.string())

Event = tuple[int, int, str, dict[str, Any]]


@lru_cache(maxsize=1)
def _districts() -> pa.Array:
    return pa.array(
        sorted(_known_districts()), pa.string()
    )  # (line, position in the row, rule, example)


async def ahead(chunks: Iterator[bytes], depth: int = 2) -> AsyncGenerator[bytes, None]:
    """`chunks` produced by a thread, up to `depth` in advance, so that the next piece is parsed,
    validated and rendered (pyarrow's kernels release the GIL) while the event loop sends the
    last one to PostgreSQL: the reader and the server's COPY work at the same time."""
    q: queue.Queue[bytes | BaseException | None] = queue.Queue(depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for chunk in chunks:
                while not stop.is_set():
                    try:
                        q.put(chunk, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(None)
        except BaseException as e:  # handed to the consumer, raised there
            q.put(e)

    thread = threading.Thread(target=produce, name="tepat-import-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = await asyncio.to_thread(q.get)
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        await asyncio.to_thread(thread.join)
        # A getter left waiting (the consumer cancelled during `q.get`) must not block the
        # executor's shutdown: wake it. A full queue has no getter waiting.
        with contextlib.suppress(queue.Full):
            q.put_nowait(None)


# --- reading: pieces of rows, columnar where exact, else rows ------------------------------------


@dataclass
class Piece:
    """Consecutive records: `columns` (one string array per header column, records numbered
    from `first_line` on consecutive lines), or `rows` as the row reader gives them."""

    first_line: int
    columns: list[pa.Array] | None = None
    rows: list[tuple[int, list[str]]] | None = None

    def __len__(self) -> int:
        if self.columns is not None:
            return len(self.columns[0]) if self.columns else 0
        return len(self.rows or ())


class _Source:
    """Blocks of a binary stream (up to `limit` bytes); `buf[pos:]` is not yet consumed."""

    def __init__(self, f: BinaryIO, limit: int | None = None) -> None:
        self.f = f
        self.left = limit
        self.buf = b""
        self.pos = 0
        self.eof = False

    def more(self) -> bool:
        """Append the next block to the unconsumed bytes (positions shift: pos becomes 0)."""
        if self.eof:
            return False
        n = BLOCK if self.left is None else min(BLOCK, self.left)
        chunk = self.f.read(n) if n > 0 else b""
        if not chunk:
            self.eof = True
            return False
        if self.left is not None:
            self.left -= len(chunk)
        self.buf = self.buf[self.pos :] + chunk
        self.pos = 0
        return True


def _clean(piece: bytes) -> bool:
    """pyarrow without quoting reads `piece` exactly as Python's csv module does."""
    return (
        b'"' not in piece
        and b"\n\n" not in piece
        and b"\n\r\n" not in piece
        and not piece.startswith((b"\n", b"\r"))
        and piece.count(b"\r") == piece.count(b"\r\n")
        and not piece.startswith(b"\xef\xbb\xbf")  # pyarrow would drop a byte-order mark
    )


def _arrow_columns(piece: bytes, width: int) -> list[pa.Array] | None:
    names = [f"c{i}" for i in range(width)]
    try:
        table = pacsv.read_csv(
            pa.BufferReader(piece),
            read_options=pacsv.ReadOptions(column_names=names, use_threads=True),
            parse_options=pacsv.ParseOptions(
                quote_char=False, newlines_in_values=False, ignore_empty_lines=False
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.string() for n in names},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid:  # e.g. a row with another number of fields: the row path says so
        return None
    table = table.combine_chunks()
    return [col.chunk(0) if col.num_chunks else pa.array([], pa.string()) for col in table.columns]


def _python_rows(src: _Source, at_least: int, line: int) -> tuple[list[tuple[int, list[str]]], int]:
    """Records read by Python's csv module (strict), as the row reader reads them, until at
    least `at_least` bytes are consumed and a record ends; the rows and the next line number."""
    consumed = 0

    def lines() -> Iterator[str]:
        nonlocal consumed
        while True:
            buf, pos = src.buf, src.pos
            m = _LINE.match(buf, pos)
            assert m is not None  # the pattern matches the empty string
            end, term = m.end(), m.group(1)
            if (not term or (term == b"\r" and end == len(buf))) and not src.eof:
                src.more()  # an incomplete line (or a \r whose \n may follow): read on
                continue
            if end == pos:
                return
            src.pos = end
            consumed += end - pos
            yield buf[pos:end].decode("utf-8")

    reader = csv.reader(lines(), strict=True)
    rows: list[tuple[int, list[str]]] = []
    start = line
    for row in reader:
        rows.append((line, row))
        line = start + reader.line_num
        if consumed >= at_least:
            break
    return rows, line


def csv_pieces(src: _Source, width: int, line: int) -> Iterator[Piece]:
    """The records of `src` (positioned after the header, at file line `line`) as pieces."""
    while True:
        if not src.eof and len(src.buf) - src.pos < BLOCK:
            src.more()
        buf, pos = src.buf, src.pos
        if pos >= len(buf):
            if src.eof:
                return
            continue
        cut = len(buf) if src.eof else buf.rfind(b"\n", pos) + 1
        if cut == 0:  # no whole line yet
            src.more()
            continue
        piece = buf[pos:cut]
        if _clean(piece):
            n = piece.count(b"\n") + (0 if piece.endswith(b"\n") else 1)
            columns = _arrow_columns(piece, width)
            if columns is not None and len(columns) == width and len(columns[0]) == n:
                src.pos = cut
                yield Piece(line, columns=columns)
                line += n
                continue
        rows, next_line = _python_rows(src, cut - pos, line)
        yield Piece(line, rows=rows)
        line = next_line


def header_of(first: bytes) -> list[str] | None:
    """The header from the file's first line, as the row reader reads it; None when only the
    row reader can say (quoted, blank, or a lone \\r)."""
    if not first.endswith(b"\n") or b'"' in first:
        return None
    text = first[:-1]
    if text.endswith(b"\r"):
        text = text[:-1]
    if not text or b"\r" in text:
        return None
    return [h.strip().lstrip("\ufeff") for h in text.decode("utf-8").split(",")]


def parquet_pieces(path: Path) -> Iterator[Piece]:
    """A Parquet file's batches, each column turned into text as the row reader does."""
    pf = pq.ParquetFile(path)
    line = 2
    for batch in pf.iter_batches(batch_size=PARQUET_BATCH):
        columns = []
        for column in batch.columns:
            if pa.types.is_boolean(column.type):
                column = pc.cast(column, pa.int8())
            if not pa.types.is_string(column.type):
                column = pc.cast(column, pa.string())
            columns.append(column.fill_null(""))
        yield Piece(line, columns=columns)
        line += batch.num_rows


# --- validation and rendering of a piece ---------------------------------------------------------


def _offsets(arr: pa.Array) -> tuple[memoryview, list[int]]:
    """A string array's data buffer and its n + 1 offsets."""
    _, offs, data = arr.buffers()
    assert offs is not None
    assert data is not None
    o = memoryview(offs).cast("i")[arr.offset : arr.offset + len(arr) + 1].tolist()
    return memoryview(data), o


def _mask_of(n: int, indices: set[int]) -> pa.Array:
    flags = [False] * n
    for i in indices:
        flags[i] = True
    return pa.array(flags, pa.bool_())


@dataclass
class ColumnarLoad:
    """One table through the columnar reader: the same interface and results as TableLoad."""

    spec: TableSpec
    path: Path
    report: Report
    snapshot_key: int
    cutoff: dt.date
    progress: Callable[[int], None] | None = None
    rows: int = 0
    content_sum: int = 0
    sha256: str | None = None
    header: list[str] = field(default_factory=list)
    _memos: dict[int, dict[str, tuple[str, tuple[str, str | None] | None]]] = field(
        default_factory=dict
    )

    @property
    def file(self) -> str:
        return self.path.name

    # The whole file, in one process.

    def chunks(self) -> Iterator[bytes]:
        if self.path.name.endswith(".parquet"):
            pf = pq.ParquetFile(self.path)
            self.header = list(pf.schema_arrow.names)
            yield from self.render(parquet_pieces(self.path), self.header_indexes())
            self.sha256 = file_sha256(self.path)
            return
        raw = HashingReader(self.path)
        try:
            binary: Any = gzip.GzipFile(fileobj=raw) if self.path.name.endswith(".gz") else raw
            src = _Source(binary)
            src.more()
            end = src.buf.find(b"\n")
            header = header_of(src.buf[: end + 1]) if end >= 0 else None
            if header is None:
                yield from self._row_reader()
                return
            self.header = header
            src.pos = end + 1
            indexes = self.header_indexes()
            yield from self.render(csv_pieces(src, len(header), 2), indexes)
            while binary.read(BLOCK):  # the hash covers every byte (a gzip trailer, say)
                pass
            self.sha256 = raw.sha256.hexdigest()
        finally:
            raw.close()

    def _row_reader(self) -> Iterator[bytes]:
        """A file whose header only the row reader reads exactly: the row reader, whole."""
        from app.ingest.readers import open_rows

        stream = open_rows(self.path)
        load = TableLoad(
            self.spec, stream, self.report, self.snapshot_key, self.cutoff, self.progress
        )
        self.header = stream.header
        yield from load.chunks()
        self.rows, self.content_sum, self.sha256 = load.rows, load.content_sum, stream.sha256

    def header_indexes(self) -> list[int | None]:
        return self._table_load().header_indexes()

    def _table_load(self) -> TableLoad:
        from app.ingest.readers import RowStream

        stream = RowStream(self.path, header=self.header)
        return TableLoad(self.spec, stream, self.report, self.snapshot_key, self.cutoff)

    def render(self, pieces: Iterator[Piece], indexes: list[int | None]) -> Iterator[bytes]:
        """COPY text of each piece, its findings reported in the row reader's order."""
        rows = self._table_load()
        render_row = rows.row_renderer(indexes)
        for piece in pieces:
            n = len(piece)
            if piece.rows is not None:
                out = [t for line, row in piece.rows if (t := render_row(line, row)) is not None]
                data = "".join(out).encode()
            else:
                assert piece.columns is not None
                data = self._render_columns(piece, indexes)
            if data:
                yield data
            if self.progress:
                self.progress(n)
        self.rows += rows.rows
        self.content_sum = (self.content_sum + rows.content_sum) % HASH_MOD

    def _render_columns(self, piece: Piece, indexes: list[int | None]) -> bytes:
        assert piece.columns is not None
        n = len(piece)
        first = piece.first_line
        events: list[Event] = []
        rendered: list[pa.Array] = []
        skip: set[int] = set()
        whole_skip = False
        nik_fast: pa.Array | None = None
        for j, (i, c) in enumerate(zip(indexes, self.spec.columns, strict=True)):
            ph = NULL if c.nullable else _PLACEHOLDER.get(c.target, NULL)
            if i is None:
                rendered.append(pa.array([ph] * n, pa.string()))
                whole_skip = whole_skip or c.identifier
                continue
            raw = piece.columns[i]
            if c.identifier or c.parse is _text:
                out, fast = self._by_pattern(j, c, raw, ph, first, events, skip)
                if j == 0 and c.parse is _nik:
                    nik_fast = fast
            else:
                out = self._by_memo(j, c, raw, ph, first, events)
            rendered.append(out)
        self.rows += n
        if whole_skip or len(skip) == n:
            self._flush(events)
            return b""
        kept = None if not skip else pc.invert(_mask_of(n, skip))
        if self.spec.name == "anggota" and indexes[0] is not None:
            self._person_checks(piece, indexes[0], rendered, nik_fast, kept, events)
        self._flush(events)
        lines = pa.array(range(first, first + n), pa.int64())
        if kept is not None:
            rendered = [pc.filter(a, kept) for a in rendered]
            lines = pc.filter(lines, kept)
        content = pc.binary_join_element_wise(*rendered, "\t")
        data, offs = _offsets(content)
        total = 0
        blake2b, from_bytes = hashlib.blake2b, int.from_bytes
        for a, b in itertools.pairwise(offs):
            total += from_bytes(blake2b(data[a:b], digest_size=16).digest(), "big")
        self.content_sum = (self.content_sum + total) % HASH_MOD
        text = pc.binary_join_element_wise(
            pa.scalar(str(self.snapshot_key)), pc.cast(lines, pa.string()), content, "\t"
        )
        text = pc.binary_join_element_wise(text, pa.scalar(""), "\n")
        data, offs = _offsets(text)
        return bytes(data[offs[0] : offs[-1]])

    def _flush(self, events: list[Event]) -> None:
        events.sort(key=lambda e: (e[0], e[1]))
        add = self.report.add
        for line, _, rule, example in events:
            add(rule, line=line, **example)

    def _bad(self, c: ColumnSpec, e: FieldError, r: str) -> dict[str, Any]:
        return {
            "file": self.file,
            "column": c.source,
            "value": mask(r) if c.identifier else r[:40],
            "message": str(e),
        }

    def _by_memo(
        self, j: int, c: ColumnSpec, raw: pa.Array, ph: str, first: int, events: list[Event]
    ) -> pa.Array:
        """A column of few distinct values: each parsed once by the column's own parser."""
        memo = self._memos.setdefault(j, {})
        uniq = pc.unique(raw)
        values: list[str] = []
        bad: list[str] = []
        for u in uniq.to_pylist():
            got = memo.get(u)
            if got is None:
                if not u:
                    got = (NULL, None) if c.nullable else (ph, ("missing_value", None))
                else:
                    try:
                        got = (c.parse(u), None)
                    except FieldError as e:
                        got = (ph, (e.rule, str(e)))
                if len(memo) < MEMO_LIMIT:
                    memo[u] = got
            values.append(got[0])
            if got[1] is not None:
                bad.append(u)
                memo[u] = got
        out = pa.array(values, pa.string()).take(pc.index_in(raw, value_set=uniq))
        if bad:
            hit = pc.is_in(raw, value_set=pa.array(bad, pa.string()))
            for idx in pc.indices_nonzero(hit).to_pylist():
                r = raw[idx].as_py()
                finding = memo[r][1]
                assert finding is not None
                rule, message = finding
                if rule == "missing_value" and message is None:
                    events.append((first + idx, j, rule, {"file": self.file, "column": c.source}))
                else:
                    assert message is not None
                    events.append(
                        (first + idx, j, rule, self._bad(c, FieldError(rule, message), r))
                    )
        return out

    def _by_pattern(
        self,
        j: int,
        c: ColumnSpec,
        raw: pa.Array,
        ph: str,
        first: int,
        events: list[Event],
        skip: set[int],
    ) -> tuple[pa.Array, pa.Array]:
        """A column of mostly distinct values (identifiers, names): a vectorised test of the
        values that render as themselves; the others through the column's parser."""
        if c.parse is _text:
            fast = pc.and_(
                pc.invert(pc.match_substring_regex(raw, _ESCAPED)),
                pc.match_substring_regex(raw, "[A-Za-z0-9]"),
            )
        else:
            fast = pc.match_substring_regex(raw, c.parse.pattern)  # type: ignore[attr-defined]
            if c.parse is _nik:
                fast = pc.and_(
                    fast,
                    pc.and_(
                        pc.is_in(pc.utf8_slice_codeunits(raw, 6, 12), value_set=_NIK_DATE_SET),
                        pc.invert(pc.ends_with(raw, "0000")),
                    ),
                )
        slow = pc.indices_nonzero(pc.invert(fast)).to_pylist()
        if not slow:
            return raw, fast
        replacements: list[str] = []
        for idx in slow:
            r = raw[idx].as_py()
            if not r:
                if c.nullable:
                    replacements.append(NULL)
                    continue
                events.append(
                    (first + idx, j, "missing_value", {"file": self.file, "column": c.source})
                )
                replacements.append(ph)
            else:
                try:
                    replacements.append(c.parse(r))
                    continue
                except FieldError as e:
                    events.append((first + idx, j, e.rule, self._bad(c, e, r)))
                    replacements.append(ph)
            if c.identifier:
                skip.add(idx)
        out = pc.replace_with_mask(raw, pc.invert(fast), pa.array(replacements, pa.string()))
        return out, fast

    def _person_checks(
        self,
        piece: Piece,
        nik_index: int,
        rendered: list[pa.Array],
        nik_fast: pa.Array | None,
        kept: pa.Array | None,
        events: list[Event],
    ) -> None:
        """app.ingest.validate.person_checks over the loaded rows: vectorised where the NIK is
        16 plain digits (the fast path), the function itself for the others."""
        assert piece.columns is not None
        first, n = piece.first_line, len(piece)
        nik = piece.columns[nik_index]
        birth, sex, pregnant = rendered[2], rendered[4], rendered[9]
        fast = nik_fast if nik_fast is not None else pa.array([False] * n)
        ok = fast if kept is None else pc.and_(fast, kept)
        slow = pc.invert(fast) if kept is None else pc.and_(pc.invert(fast), kept)
        for idx in pc.indices_nonzero(slow).to_pylist():
            collected: list[Event] = []

            def add(rule: str, *, line: int, **example: Any) -> None:
                collected.append((line, 100, rule, example))  # noqa: B023

            person_checks(
                add,
                self.file,
                self.cutoff,
                first + idx,
                nik[idx].as_py(),
                birth[idx].as_py(),
                sex[idx].as_py(),
                pregnant[idx].as_py(),
            )
            events.extend(collected)
        placeholder = _PLACEHOLDER["birth_date"]
        real = pc.and_(ok, pc.not_equal(birth, placeholder))
        after = pc.and_(real, pc.greater(birth, self.cutoff.isoformat()))
        district = pc.and_(
            ok,
            pc.invert(pc.is_in(pc.utf8_slice_codeunits(nik, 0, 6), value_set=_districts())),
        )
        day_text = pc.utf8_slice_codeunits(nik, 6, 8)
        day = pc.cast(pc.if_else(fast, day_text, "00"), pa.int16())
        female = pc.greater(day, 40)
        coded = pc.or_(pc.equal(sex, "1"), pc.equal(sex, "2"))
        sex_mismatch = pc.and_(ok, pc.and_(coded, pc.not_equal(pc.equal(sex, "2"), female)))
        woman_day = pc.utf8_lpad(
            pc.cast(pc.subtract(day, pa.scalar(40, pa.int16())), pa.string()), width=2, padding="0"
        )
        expected = pc.binary_join_element_wise(
            pc.if_else(female, woman_day, day_text), pc.utf8_slice_codeunits(nik, 8, 12), ""
        )
        got = pc.binary_join_element_wise(
            pc.utf8_slice_codeunits(birth, 8, 10),
            pc.utf8_slice_codeunits(birth, 5, 7),
            pc.utf8_slice_codeunits(birth, 2, 4),
            "",
        )
        date_mismatch = pc.and_(real, pc.not_equal(got, expected))
        pregnant_male = pc.and_(ok, pc.and_(pc.equal(pregnant, "t"), pc.equal(sex, "1")))
        file = self.file
        for idx in pc.indices_nonzero(after).to_pylist():
            birth_text = birth[idx].as_py()
            events.append(
                (
                    first + idx,
                    100,
                    "birth_date_after_cutoff",
                    {"file": file, "column": "tanggal_lahir", "value": birth_text},
                )
            )
        for rule, hits in (
            ("unknown_district", district),
            ("nik_sex_mismatch", sex_mismatch),
            ("nik_birth_date_mismatch", date_mismatch),
        ):
            for idx in pc.indices_nonzero(hits).to_pylist():
                value = mask(nik[idx].as_py())
                events.append(
                    (first + idx, 100, rule, {"file": file, "column": "nik", "value": value})
                )
        events.extend(
            (first + idx, 100, "pregnant_male", {"file": file, "column": "hamil"})
            for idx in pc.indices_nonzero(pregnant_male).to_pylist()
        )
