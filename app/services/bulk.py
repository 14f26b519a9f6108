"""Bulk eligibility: an NDJSON stream of NIKs in, one answer line per input line out, audited per chunk."""

from __future__ import annotations

import asyncio
import codecs
import csv
import logging
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import read_connection
from app.errors import TepatError
from app.identifiers import IdentifierError, is_nik, mask, parse_nik
from app.services import eligibility
from app.services.audit.records import new_audit_id, nik_subject
from app.services.audit.writer import AuditWriter
from app.services.catalog import Reads
from app.services.lookup import Caller, record_access, view_for
from app.services.pinning import Pinned, pin
from app.services.streams import ClientGone

log = logging.getLogger("tepat.bulk")

OPERATION = "bulk.eligibility"
CHUNK = 1000  # NIKs per SQL statement and per audit record
AHEAD = 8  # chunks answered concurrently (and as many answered, waiting to be sent)
MAX_LINE = 1024  # bytes; a longer line is answered with an error and never buffered whole
_ECHO_MAX = 32  # longer values are not echoed (masked) in error lines

Pace = Callable[[int], Awaitable[None]]  # waits until n more lookups fit the client's rate
ENUMERATION = "enumeration_suspected"


@dataclass(frozen=True, slots=True)
class Guard:
    """Ends a job that looks like an enumeration of the registry, and acts on it.

    Once `min_lines` lines are answered, a job whose found rate (found / NIKs looked up, so far)
    is under `min_found_rate` is ended before its next chunk is sent, with the error line
    `enumeration_suspected` and no summary, after `act` (the API: suspend the client, audited).
    Made-up but well-formed NIKs are mostly absent; a real list of beneficiaries mostly found.
    """

    min_lines: int
    min_found_rate: float
    act: Callable[[Counts], Awaitable[None]]

    def suspects(self, c: Counts) -> bool:
        looked_up = c.found + c.not_found
        return (
            c.lines >= self.min_lines
            and looked_up > 0
            and c.found < self.min_found_rate * looked_up
        )


@dataclass(frozen=True, slots=True)
class Options:
    """What a job asks beyond the NIKs: the transport's query string, the CLI's options."""

    snapshot: str | None = None
    rule_set: str | None = None
    programs: Sequence[str] | None = None
    explain: bool = False


class LineSplitter:
    """Cuts a byte stream into numbered lines, whatever the chunk boundaries, in bounded memory.

    `feed` returns (number, line) pairs; line is None when it exceeded `max_line` bytes (its
    bytes are dropped as they arrive, so a body without newlines cannot grow the buffer).
    """

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self.number = 0
        self._tail = b""
        self._overlong = False

    def feed(self, data: bytes) -> list[tuple[int, bytes | None]]:
        parts = data.split(b"\n")
        last = parts.pop()
        out: list[tuple[int, bytes | None]] = []
        for part in parts:
            self.number += 1
            if self._overlong:
                self._overlong = False
                out.append((self.number, None))
                continue
            line = self._tail + part if self._tail else part
            self._tail = b""
            out.append((self.number, line if len(line) <= self.max_line else None))
        if not self._overlong:
            self._tail = self._tail + last if self._tail else last
            if len(self._tail) > self.max_line:
                self._overlong = True
                self._tail = b""
        return out

    def end(self) -> list[tuple[int, bytes | None]]:
        """The last line when the stream does not end with a newline."""
        if self._overlong:
            self._overlong = False
            self.number += 1
            return [(self.number, None)]
        if self._tail:
            self.number += 1
            line, self._tail = self._tail, b""
            return [(self.number, line)]
        return []


@dataclass(slots=True)
class Item:
    """One non-blank input line: a valid NIK, or the error line that answers it."""

    line: int
    nik: str | None
    error: dict[str, Any] | None = None


def _error(line: int, code: str, message: str, value: str | None = None) -> Item:
    err: dict[str, Any] = {"code": code, "message": message}
    if value is not None and len(value) <= _ECHO_MAX:
        err["nik"] = mask(value)  # enough to find the line, never the identifier itself
    return Item(line, None, err)


def parse_line(number: int, raw: bytes | None) -> Item | None:
    """An input line: `{"nik": "..."}`, a JSON string or a bare NIK. None for a blank line."""
    if raw is None:
        return _error(number, "line_too_long", f"a line must be at most {MAX_LINE} bytes")
    text = raw.strip()
    if not text:
        return None
    value: object
    if len(text) == 26 and text[:8] == b'{"nik":"' and text[24:] == b'"}' and text[8:24].isdigit():
        value = text[8:24].decode("latin-1")  # the usual line, without a JSON parse
    elif text[:1] in (b"{", b'"', b"["):
        try:
            parsed = orjson.loads(text)
        except orjson.JSONDecodeError:
            return _error(number, "malformed_json", "the line is not valid JSON")
        if isinstance(parsed, dict):
            if "nik" not in parsed:
                return _error(number, "nik_missing", 'the object has no "nik" field')
            value = parsed["nik"]
        elif isinstance(parsed, str):
            value = parsed
        else:
            return _error(number, "malformed_json", 'a line must be {"nik": "..."} or a NIK')
    else:
        value = text.decode("utf-8", "replace")
    if not isinstance(value, str):
        return _error(number, "nik_format", "nik must be a string of 16 digits")
    if is_nik(value):
        return Item(number, value)
    try:
        parse_nik(value)
    except IdentifierError as e:
        return _error(number, e.rule, str(e), value)
    return Item(number, value)


def parse_lines(lines: Sequence[tuple[int, bytes | None]]) -> list[Item | None]:
    """`parse_line` over a block of lines; the usual lines (`{"nik":"..."}` as JSON encoders
    write it, with or without the space, and bare NIKs) are recognised without a call each."""
    out: list[Item | None] = []
    append = out.append
    for number, raw in lines:
        if raw is not None:
            size = len(raw)
            if size == 27 and raw[:9] == b'{"nik": "' and raw[25:] == b'"}':
                value = raw[9:25].decode("latin-1")
            elif size == 26 and raw[:8] == b'{"nik":"' and raw[24:] == b'"}':
                value = raw[8:24].decode("latin-1")
            elif size == 16:
                value = raw.decode("latin-1")
            else:
                value = ""
            if value and is_nik(value):
                append(Item(number, value))
                continue
        append(parse_line(number, raw))
    return out


@dataclass(frozen=True, slots=True)
class Chunk:
    """One chunk answered: its exact bytes and what its audit record names (None: no record,
    the chunk had no valid NIK)."""

    data: bytes
    lines: int
    niks: int
    found: int
    subjects: list[str]
    audit_id: str | None


async def seal(
    audit: AuditWriter,
    caller: Caller,
    operation: str,
    pinned: Pinned,
    chunk: Chunk,
    names: tuple[str, str] | None = None,
) -> str | None:
    """Audit one chunk of a stream (its subjects, its count, the digest of its exact bytes),
    durable before it returns, and sign its receipt (None when receipts are off). Bulk chunks
    and change lists (app.services.changes) are sealed alike (`names`: app.services.lookup's
    record_access)."""
    if chunk.audit_id is None:
        raise ValueError("a chunk that discloses nothing has no audit record")
    recorded = await record_access(
        audit, caller, chunk.audit_id, operation, pinned, chunk.subjects, chunk.found, chunk.data,
        names, sign=True,
    )  # fmt: skip
    return recorded.receipt


@dataclass(slots=True)
class Counts:
    lines: int = 0
    found: int = 0
    not_found: int = 0
    errors: int = 0
    blank: int = 0
    audit_ids: list[str] = field(default_factory=list)
    receipts: list[str | None] = field(default_factory=list)  # aligned with audit_ids

    def add(self, chunk: Chunk) -> None:
        self.lines += chunk.lines
        self.found += chunk.found
        self.not_found += chunk.niks - chunk.found
        self.errors += chunk.lines - chunk.niks


def _line(payload: dict[str, Any]) -> bytes:
    return orjson.dumps(payload) + b"\n"


def error_line(code: str, message: str) -> bytes:
    """The last line of a job that had to stop: there is no summary after it."""
    return _line({"error": {"code": code, "message": message}})


@dataclass(frozen=True, slots=True)
class _End:
    """The reader's last word: the body is read (error None) or could not be (the error)."""

    error: Exception | None = None


class Job:
    """One bulk request, pinned to one snapshot and rule set for all its lines."""

    def __init__(
        self,
        engine: AsyncEngine,
        audit: AuditWriter,
        caller: Caller,
        pinned: Pinned,
        view: eligibility.View,
        chunk: int = CHUNK,
        pace: Pace | None = None,
        reads: Reads | None = None,
        ahead: int = AHEAD,
        guard: Guard | None = None,
    ) -> None:
        self.engine = engine
        self.ahead = max(1, ahead)
        self.reads = reads
        self.audit = audit
        self.caller = caller
        self.pinned = pinned
        self.view = view
        self.chunk = chunk
        self.pace = pace
        self.guard = guard
        self.counts = Counts()

    async def stream(self, body: AsyncIterable[bytes]) -> AsyncGenerator[bytes, None]:
        """Answer lines chunk by chunk, then the summary line.

        The next input is read only after the previous output was taken, so a slow reader slows
        the reading (backpressure) and memory stays at about one chunk. A failure before the first
        output raises (the transport can still answer with a problem); after it, the stream ends
        with an error line and no summary, so a client can tell a truncated job from a whole one.
        """
        started = False
        try:
            async for out in self._chunks(body):
                yield out
                started = True
        except ClientGone:
            raise  # nobody left to tell; the transport logs it (one info line)
        except TepatError as e:
            if not started:
                raise
            log.warning("bulk job %s stopped: %s", self.caller.request_id, e.code)
            yield error_line(e.code, e.detail)
        except Exception as e:
            if not started:
                raise
            log.error("bulk job %s stopped", self.caller.request_id, exc_info=e)
            yield error_line("internal", "the job stopped; quote the request id when reporting it")

    async def _chunks(self, body: AsyncIterable[bytes]) -> AsyncGenerator[bytes, None]:
        # Two tasks: this generator sends answers in input order; a reader task reads the body,
        # parses it and starts a chunk's lookup as soon as one of the `ahead` running ones
        # finishes, whichever it is. So a slow chunk at the head delays the sending, not the
        # database's next statements. Memory stays bounded: at most `ahead` chunks running and
        # `ahead` more answered and waiting their turn; when the client reads slowly the queue
        # fills, the reader stops and the body is read no faster than answers are taken.
        running = asyncio.Semaphore(self.ahead)
        order: asyncio.Queue[asyncio.Task[bytes] | _End] = asyncio.Queue(self.ahead)
        reader = asyncio.create_task(self._read(body, running, order))
        try:
            while not isinstance(step := await order.get(), _End):
                data = await step
                if self.guard is not None and self.guard.suspects(self.counts):
                    log.warning(
                        "bulk job %s ended: %s (%d found of %d lines)",
                        self.caller.request_id, ENUMERATION, self.counts.found, self.counts.lines,
                    )  # fmt: skip
                    await self.guard.act(self.counts)
                    yield error_line(
                        ENUMERATION,
                        f"under {self.guard.min_found_rate:.0%} of the NIKs were found after "
                        f"{self.counts.lines:,} lines: the job is ended and the client suspended "
                        "until an operator reinstates it",
                    )
                    return
                yield data
            if step.error is not None:
                raise step.error
            yield self.summary()
        finally:
            # The client went away, or a chunk failed: stop reading, drop answers nobody reads.
            reader.cancel()
            while not order.empty():
                left = order.get_nowait()
                if isinstance(left, asyncio.Task) and not left.cancel() and not left.cancelled():
                    left.exception()  # finished already: its error (if any) is not news

    async def _read(
        self,
        body: AsyncIterable[bytes],
        running: asyncio.Semaphore,
        order: asyncio.Queue[asyncio.Task[bytes] | _End],
    ) -> None:
        """Body to chunks: each chunk's answer starts when a slot is free, queued in order."""

        async def start(items: list[Item]) -> None:
            await running.acquire()
            task = asyncio.create_task(self.answer(items))
            task.add_done_callback(lambda _: running.release())
            try:
                await order.put(task)
            except asyncio.CancelledError:
                task.cancel()  # the job is over: nobody will send this chunk
                raise

        splitter = LineSplitter()
        pending: list[Item] = []
        try:
            async for data in body:
                for item in parse_lines(splitter.feed(data)):
                    if item is None:
                        self.counts.blank += 1
                        continue
                    pending.append(item)
                    if len(pending) >= self.chunk:
                        await start(pending)
                        pending = []
            for number, raw in splitter.end():
                item = parse_line(number, raw)
                if item is None:
                    self.counts.blank += 1
                else:
                    pending.append(item)
            if pending:
                await start(pending)
        except Exception as e:  # the body could not be read: the sender raises it in its turn
            await order.put(_End(e))
            return
        await order.put(_End())

    async def answer(self, items: Sequence[Item]) -> bytes:
        """One chunk: one SQL statement, one audit record (durable before the bytes are returned)."""
        # Named before the first await: chunks run concurrently, the summary lists them in order.
        audit_id = new_audit_id()
        place = len(self.counts.audit_ids)
        if any(i.nik is not None for i in items):  # only malformed lines disclose nothing
            self.counts.audit_ids.append(audit_id)
            self.counts.receipts.append(None)
        chunk = await self.lookup(items, audit_id)
        if chunk.audit_id is not None:
            # Over this chunk's exact bytes; the summary lists them in chunk order.
            self.counts.receipts[place] = await seal(
                self.audit, self.caller, OPERATION, self.pinned, chunk
            )
        self.counts.add(chunk)
        return chunk.data

    async def lookup(self, items: Sequence[Item], audit_id: str) -> Chunk:
        """A chunk's answer lines (one statement), not yet recorded: the stream records it with
        the audit writer, a bulk job in the transaction that stores it (app.services.jobs)."""
        niks = [i.nik for i in items if i.nik is not None]
        rendered = eligibility.Rendered([], 0)
        if niks:
            if self.pace is not None:
                await self.pace(len(niks))
            snapshot, rule_set, view = self.pinned.snapshot, self.pinned.rule_set, self.view
            if self.reads is not None:
                # The API's read nodes (one statement, no transaction; a replica when one is
                # fit, another node if it fails); the CLI reads through the engine.
                rendered = await self.reads.run(
                    lambda conn: eligibility.people(conn, snapshot, rule_set, niks, view)
                )
            else:
                async with read_connection(self.engine) as sa:
                    rendered = await eligibility.people(sa, snapshot, rule_set, niks, view)
        # Each result is a rendered JSON object; the line number goes first: {"line":n,...}.
        lines: list[bytes] = []
        answers = iter(rendered.parts)
        for item in items:
            if item.error is not None:
                lines.append(_line({"line": item.line, "error": item.error}))
            else:
                lines.append(b'{"line":%d,%b\n' % (item.line, next(answers)[1:]))
        subjects = [nik_subject(n) for n in niks]
        subjects += [nik_subject(n) for n in rendered.disclosed]
        return Chunk(
            data=b"".join(lines),
            lines=len(items),
            niks=len(niks),
            found=rendered.found,
            subjects=subjects,
            audit_id=audit_id if niks else None,
        )

    def summary(self) -> bytes:
        return summary_line(
            self.counts, self.pinned.meta(self.caller.request_id), self.audit.keyring is not None
        )


def summary_line(c: Counts, meta: dict[str, Any], receipts: bool) -> bytes:
    """The last line of a whole job: the counts, the pin (`meta`), the audit ids and receipts."""
    return _line(
        {
            "summary": {
                "lines": c.lines,
                "found": c.found,
                "not_found": c.not_found,
                "errors": c.errors,
                "blank": c.blank,
                **meta,
                "audit_ids": c.audit_ids,
                **({"receipts": c.receipts} if receipts else {}),
            }
        }
    )


async def open_job(
    engine: AsyncEngine,
    audit: AuditWriter,
    caller: Caller,
    options: Options,
    pace: Pace | None = None,
    reads: Reads | None = None,
    guard: Guard | None = None,
) -> Job:
    """Check the programs and pin the snapshot and rule set ONCE, before any line is read.

    Everything that can refuse the job (scope, unknown snapshot or rule set) happens here, so
    the transport can still answer with a problem instead of a started stream.
    """
    view = view_for(caller, options.programs, options.explain)
    if reads is not None:
        pinned = await reads.pin(options.snapshot, options.rule_set)
    else:
        async with read_connection(engine) as conn:
            pinned = await pin(conn, options.snapshot, options.rule_set)
    return Job(engine, audit, caller, pinned, view, pace=pace, reads=reads, guard=guard)


# --- CSV input and the chunks a bulk job stores --------------------------------------------------

CSV_RECORD_MAX = 64 * 1024  # a CSV record (a quoted cell may hold newlines) longer than this is
# answered `line_too_long` and dropped, so an unclosed quote cannot hold the rest of the file


class CsvLines:
    """CSV bytes in, bulk lines out, incrementally: each row becomes one line holding its NIK.

    The NIK is the `nik` column when the first row names one (that header row becomes a blank
    line, so `line` in the answers is still the row's number), else the first column. A quoted
    cell may hold newlines: a row stays one line. An empty cell becomes `""`, answered as an
    error line rather than skipped, so every data row gets its answer.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")("replace")
        self._tail = ""  # text after the last newline
        self._record: list[str] = []  # the physical lines of a record whose quote is open
        self._record_size = 0
        self._ready: deque[str] = deque()
        self._reader = csv.reader(self)  # pulls from _ready, one complete record at a time
        self._column: int | None = None

    def __iter__(self) -> CsvLines:
        return self

    def __next__(self) -> str:
        if not self._ready:
            raise StopIteration
        return self._ready.popleft()

    def feed(self, data: bytes) -> bytes:
        text = self._tail + self._decoder.decode(data)
        *lines, self._tail = text.split("\n")
        return self._rows(line + "\n" for line in lines)

    def end(self) -> bytes:
        text = self._tail + self._decoder.decode(b"", final=True)
        self._tail = ""
        out = [self._rows([text] if text else [])]
        if self._record:  # an unclosed quote at the end of the file: the record as it is
            self._ready.extend(self._record)
            self._record = []
            self._drain(out)
        return b"".join(out)

    def _rows(self, lines: Iterable[str]) -> bytes:
        out: list[bytes] = []
        for line in lines:
            self._record.append(line)
            self._record_size += len(line)
            if sum(part.count('"') for part in self._record) % 2 == 0:
                self._ready.extend(self._record)
                self._record, self._record_size = [], 0
                self._drain(out)
            elif self._record_size > CSV_RECORD_MAX:
                self._record, self._record_size = [], 0
                out.append(b"\x00" * (MAX_LINE + 1) + b"\n")  # answered line_too_long
        return b"".join(out)

    def _drain(self, out: list[bytes]) -> None:
        while self._ready:
            try:
                row = next(self._reader)
            except StopIteration:
                return
            except csv.Error:  # e.g. a NUL byte: the row is answered as an error line
                row = [""] * ((self._column or 0) + 1)
            out.append(self._convert(row))

    def _convert(self, row: list[str]) -> bytes:
        if self._column is None:
            header = [c.strip().lower() for c in row]
            self._column = header.index("nik") if "nik" in header else 0
            if "nik" in header:
                return b"\n"
        value = row[self._column] if self._column < len(row) else ""
        value = " ".join(value.split()) or '""'
        return value.encode() + b"\n"


@dataclass(frozen=True, slots=True)
class InputChunk:
    """The lines a bulk job answers as its chunk `number` (as many non-blank lines as the
    stream answers in one chunk): `first_line` is the number of the line before them."""

    number: int
    first_line: int
    data: bytes


class Chunker:
    """Cuts an upload into the chunks the stream would answer, whatever the read boundaries.

    Blank lines are kept in place (they only advance the line numbers); a line over MAX_LINE
    bytes is kept as MAX_LINE + 1 zero bytes, so it is answered `line_too_long` as in the
    stream. `items` counts the non-blank lines, `blank` the blank ones.
    """

    def __init__(self, chunk: int = CHUNK) -> None:
        self.chunk = chunk
        self.items = 0
        self.blank = 0
        self.chunks = 0
        self._splitter = LineSplitter()
        self._lines: list[bytes] = []
        self._first = 0
        self._pending = 0

    def feed(self, data: bytes) -> list[InputChunk]:
        return self._add(self._splitter.feed(data))

    def end(self) -> list[InputChunk]:
        out = self._add(self._splitter.end())
        if self._pending:
            out.append(self._cut())
        return out

    def _add(self, lines: list[tuple[int, bytes | None]]) -> list[InputChunk]:
        out: list[InputChunk] = []
        for number, raw in lines:
            if raw is not None and not raw.strip():
                self.blank += 1
                if self._lines:  # kept in place; before a chunk's first line, not needed
                    self._lines.append(b"")
                continue
            if not self._lines:
                self._first = number - 1
            self._lines.append(raw if raw is not None else b"\x00" * (MAX_LINE + 1))
            self.items += 1
            self._pending += 1
            if self._pending >= self.chunk:
                out.append(self._cut())
        return out

    def _cut(self) -> InputChunk:
        while self._lines and not self._lines[-1]:  # trailing blank lines: counted already
            self._lines.pop()
        cut = InputChunk(self.chunks, self._first, b"\n".join(self._lines))
        self.chunks += 1
        self._lines, self._pending = [], 0
        return cut


def chunk_items(chunk: InputChunk) -> list[Item]:
    """The items of a stored chunk, numbered as the stream numbers them."""
    lines = chunk.data.split(b"\n")
    numbered = [
        (chunk.first_line + i, raw if len(raw) <= MAX_LINE else None)
        for i, raw in enumerate(lines, start=1)
    ]
    return [item for item in parse_lines(numbered) if item is not None]
