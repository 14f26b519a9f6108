"""`tepat snapshot import --jobs N`: the files parsed, validated and COPYed by N processes.

A plain CSV file is cut into N byte ranges at line ends; each range goes to a spawned process
that reads it with the columnar reader and COPYs it over its own connection into the release's
partition (in the loading schema, app.repositories.imports.LOADING_SCHEMA) and commits. The
planning pass in the parent reads the file once: its sha256, its header, and the line number at
which each range starts, so every row keeps the line (and the COPY text) one process gives it.
Each process keeps its own report; the parent merges them in file order, so counts and first
examples are those of one process reading the file from the top.

A file that cannot be cut exactly (gzip'd, Parquet, or with a `"`, where a quoted field may hold
a line end, or a lone CR, which Python's csv module counts as a line) is one range, read whole
by one process; the other processes take the other file or the other ranges.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from app import db
from app.config import Settings
from app.ingest import columnar
from app.ingest.columnar import ColumnarLoad, header_of
from app.ingest.columns import TABLES, TableSpec
from app.ingest.validate import HASH_MOD, Report
from app.repositories import imports as repo


@dataclass(frozen=True)
class Range:
    start: int  # byte offset of the first record
    end: int  # byte offset past the last record's line end
    first_line: int


@dataclass(frozen=True)
class Plan:
    """How one file is read: whole by one process (`ranges` empty), or by ranges."""

    path: Path
    header: list[str] | None = None
    ranges: tuple[Range, ...] = ()
    sha256: str | None = None


def plan(path: Path, parts: int) -> Plan:
    """Cut a plain CSV file into `parts` ranges at line ends, reading it once (its sha256)."""
    if parts <= 1 or not path.name.endswith(".csv"):
        return Plan(path)
    size = path.stat().st_size
    h = hashlib.sha256()
    header: list[str] | None = None
    data_start = 0
    targets: list[int] = []
    cuts: list[tuple[int, int]] = []  # (offset, line of the record there)
    offset = lines = 0
    cr = crlf = 0
    last = b""
    with path.open("rb") as f:
        while block := f.read(columnar.BLOCK):
            h.update(block)
            if b'"' in block:
                return Plan(path)
            cr += block.count(b"\r")
            crlf += block.count(b"\r\n") + (last == b"\r" and block[:1] == b"\n")
            if header is None:
                end = block.find(b"\n")
                header = header_of(block[: end + 1]) if end >= 0 else None
                if header is None:
                    return Plan(path)
                data_start = end + 1
                step = (size - data_start) // parts
                targets = [data_start + i * step for i in range(1, parts)]
            while targets and targets[0] < offset + len(block):
                nl = block.find(b"\n", max(targets[0] - offset, 0))
                if nl < 0:
                    targets[0] = offset + len(block)  # the line ends in a later block
                    break
                cut = offset + nl + 1
                cuts.append((cut, 1 + lines + block.count(b"\n", 0, nl + 1)))
                targets.pop(0)
            lines += block.count(b"\n")
            offset += len(block)
            last = block[-1:]
    if header is None or cr != crlf:
        return Plan(path)
    starts = [(data_start, 2), *((c, line) for c, line in cuts if c < size)]
    ends = [s for s, _ in starts[1:]] + [size]
    ranges = tuple(Range(s, e, line) for (s, line), e in zip(starts, ends, strict=True) if e > s)
    return Plan(path, header, ranges, h.hexdigest())


def _watch_parent(parent: int) -> None:
    """In each worker: exit when the importer is gone (killed, say), rather than linger idle or
    finish a COPY nobody will publish; its connection closes and its transaction rolls back."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, name="tepat-import-parent-watch", daemon=True).start()


@dataclass
class Done:
    """What one process loaded and found."""

    rows: int
    content_sum: int
    report: Report
    sha256: str | None


def _load_part(
    settings: Settings,
    table: str,
    path: Path,
    key: int,
    cutoff: dt.date,
    header: list[str] | None,
    part: Range | None,
) -> Done:
    """One process: a range of a file (or the whole file) COPYed into its partition."""
    spec = next(s for s in TABLES if s.table == table)
    report = Report()
    load = ColumnarLoad(spec, path, report, key, cutoff)
    if part is None:
        chunks = load.chunks()
    else:
        assert header is not None
        # A throw-away report takes the header's findings: the parent reports them once.
        load.report = Report()
        load.header = header
        indexes = load.header_indexes()
        load.report = report
        chunks = _chunks_from(load, part, indexes)

    async def go() -> None:
        conn = await db.connect_raw(settings)
        try:
            async with conn.transaction():
                await repo.copy_into_partition(
                    conn,
                    spec.table,
                    key,
                    ["snapshot_key", "source_line", *spec.content_columns],
                    columnar.ahead(chunks),
                    schema=repo.LOADING_SCHEMA,
                )
        finally:
            await conn.close()

    asyncio.run(go())
    return Done(load.rows, load.content_sum, report, load.sha256)


def _chunks_from(load: ColumnarLoad, part: Range, indexes: list[int | None]) -> Iterator[bytes]:
    with load.path.open("rb") as f:
        f.seek(part.start)
        src = columnar._Source(f, part.end - part.start)
        yield from load.render(columnar.csv_pieces(src, len(load.header), part.first_line), indexes)


@dataclass
class Loaded:
    rows: int
    content_sum: int
    sha256: str | None


async def load_tables(
    settings: Settings,
    specs: list[tuple[TableSpec, Path]],
    key: int,
    cutoff: dt.date,
    report: Report,
    jobs: int,
) -> list[Loaded]:
    """Every table of `specs` loaded by `jobs` processes; findings merged into `report` in file
    order (header findings first, then ranges in order), one Loaded per table."""
    plans = [plan(path, jobs) for _, path in specs]
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(
        jobs, mp_context=get_context("spawn"), initializer=_watch_parent, initargs=(os.getpid(),)
    ) as pool:
        futures: list[list[asyncio.Future[Done]]] = []
        for (spec, path), p in zip(specs, plans, strict=True):
            parts: list[Range | None] = list(p.ranges) or [None]
            futures.append(
                [
                    loop.run_in_executor(
                        pool, _load_part, settings, spec.table, path, key, cutoff, p.header, part
                    )
                    for part in parts
                ]
            )
        try:
            results = [await asyncio.gather(*fs) for fs in futures]
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    out: list[Loaded] = []
    for (spec, path), p, done in zip(specs, plans, results, strict=True):
        if p.ranges:
            # The header's findings, once, before the rows' (as one reader gives them).
            header_report = ColumnarLoad(spec, path, report, key, cutoff)
            header_report.header = list(p.header or [])
            header_report.header_indexes()
        for d in done:
            report.merge(d.report)
        out.append(
            Loaded(
                sum(d.rows for d in done),
                sum(d.content_sum for d in done) % HASH_MOD,
                p.sha256 if p.ranges else done[0].sha256,
            )
        )
    return out
