"""Deciding a range of a snapshot's families and COPYing the stored rows, a chunk at a time.

The data path of app.services.materialize, one range of No. KK at a time. The chunks are read
with COPY in a repeatable-read transaction, decided with app.eligibility.columnar (the engine's rules over arrays) and turned into COPY text by pyarrow's
compute functions: no Python code runs per person.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import date

import asyncpg
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from app.eligibility import RuleSet
from app.eligibility.columnar import NO_LEVEL, People, evaluate_people
from app.schemas.snapshots import Snapshot

Progress = Callable[[int], None]
CriterionBits = Mapping[tuple[str, str], int]  # (program, criterion id) -> its bit


# One chunk of the snapshot: the next `CHUNK_FAMILIES` families after `last` (within the run's
# range) with their members, by No. KK then NIK, in COPY's text format. The stored row's fields
# that are copied unchanged from the registry come first, in STORED's order, already in the text
# format the decisions' COPY reads, so they are passed through as they are; the two trailing
# fields are inputs of the rules only.
_CHUNK = """
SELECT {snapshot_key}, {rule_set_key}, f.no_kk, f.region_code, f.decile, f.pkh_recipient,
       f.bpnt_recipient, m.nik, m.relationship, m.pbi_recipient, m.sex, m.marital_status,
       m.school_status, m.school_level, m.disability, m.pregnant, m.chronic_illness, m.working,
       m.birth_date, m.name, f.asn_tni_polri
FROM (SELECT no_kk, region_code, decile, pkh_recipient, bpnt_recipient, asn_tni_polri
      FROM families_{k} WHERE {where} ORDER BY no_kk LIMIT {limit}) f
JOIN people_{k} m ON m.no_kk = f.no_kk
ORDER BY f.no_kk, m.nik
"""
CHUNK_FAMILIES = 20_000
STORED = (
    "snapshot_key", "rule_set_key", "no_kk", "region_code", "decile", "pkh_recipient",
    "bpnt_recipient", "nik", "relationship", "pbi_recipient", "sex", "marital_status",
    "school_status", "school_level", "disability", "pregnant", "chronic_illness", "working",
    "birth_date", "name",
)  # fmt: skip
_READ = (*STORED, "asn_tni_polri")
# What the rules decide, rendered here, then the registry's fields as read.
DECIDED = (
    "pkh_eligible", "pkh_yearly", "bpnt_eligible", "pbi_eligible", "sr_eligible", "sr_level",
    "sr_priority", "head", "criteria",
)  # fmt: skip
# The COPY's columns, in its lines' order.
COLUMNS = (*DECIDED, *STORED)
NULL = "\\N"
_PARSE = pacsv.ParseOptions(delimiter="\t", quote_char=False, escape_char=False)
_CONVERT = pacsv.ConvertOptions(
    column_types={name: pa.string() for name in _READ}, strings_can_be_null=False
)


def _ints(column: pa.Array, missing: int) -> npt.NDArray[np.int64]:
    """A column of COPY text as integers, `missing` where it is NULL."""
    present = pc.if_else(pc.equal(column, NULL), str(missing), column)
    return np.asarray(pc.cast(present, pa.int64()))


def _flags(column: pa.Array) -> npt.NDArray[np.bool_]:
    """A boolean column of COPY text; NULL as False."""
    return np.asarray(pc.equal(column, "t"))


def _bool_text(values: npt.NDArray[np.bool_]) -> pa.Array:
    return pc.if_else(pa.array(values), "t", "f")


def _int_text(values: npt.NDArray[np.int64], null: int | None = None) -> pa.Array:
    """Integers as COPY text; NULL where they equal `null`."""
    mask = None if null is None else values == null
    return pc.fill_null(pc.cast(pa.array(values, mask=mask), pa.string()), NULL)


def decide_chunk(
    raw: bytes, rule_set: RuleSet, evaluation_date: date, criteria: CriterionBits
) -> tuple[bytes, int, int]:
    """The decisions' COPY text for one chunk of `_CHUNK`'s output; its people and families.

    The rules run on every person at once (app.eligibility.columnar); the lines are assembled by
    pyarrow's compute functions, so no Python code runs per person."""
    table = pacsv.read_csv(
        pa.py_buffer(raw),
        read_options=pacsv.ReadOptions(
            column_names=list(_READ), use_threads=False, block_size=len(raw) + 1
        ),
        parse_options=_PARSE,
        convert_options=_CONVERT,
    ).combine_chunks()
    col = {name: table.column(name).chunk(0) for name in _READ}
    birth = col["birth_date"]
    if not pc.all(pc.equal(pc.utf8_length(birth), 10)).as_py():
        raise ValueError("a birth date outside the years 1000-9999: the rules cannot take it")
    people = People(
        no_kk=_ints(col["no_kk"], 0),
        nik=_ints(col["nik"], 0),
        decile=_ints(col["decile"], 0),
        asn_tni_polri=_flags(col["asn_tni_polri"]),
        relationship=_ints(col["relationship"], 0),
        birth=np.asarray(pc.cast(pc.replace_substring(birth, "-", ""), pa.int64())),
        pregnant=_flags(col["pregnant"]),
        school_status=_ints(col["school_status"], -1),
        school_level=_ints(col["school_level"], NO_LEVEL),
        disability=_ints(col["disability"], -1),
    )
    out = evaluate_people(people, rule_set, evaluation_date)
    bits = np.zeros(len(people.nik), np.int64)
    for criterion, passed in out.passed.items():
        bits |= np.where(passed, criteria[criterion], 0)
    decided = (
        _bool_text(out.pkh_eligible),
        _int_text(out.pkh_yearly),
        _bool_text(out.bpnt_eligible),
        _bool_text(out.pbi_eligible),
        _bool_text(out.sr_eligible),
        _int_text(out.sr_level, NO_LEVEL),
        _int_text(out.sr_priority, 0),
        _bool_text(out.head),
        _int_text(bits),
    )
    lines = pc.binary_join_element_wise(*decided, *(col[name] for name in STORED), "\t")
    lines = pc.binary_join_element_wise(lines, "\n", "")
    offsets = np.frombuffer(lines.buffers()[1], np.int32)[
        lines.offset : lines.offset + len(lines) + 1
    ]
    text = lines.buffers()[2][int(offsets[0]) : int(offsets[-1])].to_pybytes()
    families = int(np.count_nonzero(people.no_kk[1:] != people.no_kk[:-1])) + 1 if len(lines) else 0
    return text, len(lines), families


async def _chunks(
    reader: asyncpg.Connection,
    key: int,
    rule_set_key: int,
    lo: int | None,
    hi: int | None,
) -> AsyncIterator[bytes]:
    """`_CHUNK`'s output for each successive chunk of the families `lo <= no_kk < hi`."""
    last: int | None = None
    while True:
        bounds = [f"no_kk >= {int(lo)}" if lo is not None else "TRUE"]
        if hi is not None:
            bounds.append(f"no_kk < {int(hi)}")
        if last is not None:
            bounds.append(f"no_kk > {int(last)}")
        query = _CHUNK.format(
            snapshot_key=int(key),
            rule_set_key=int(rule_set_key),
            k=int(key),
            where=" AND ".join(bounds),
            limit=CHUNK_FAMILIES,
        )
        parts: list[bytes] = []

        async def sink(data: bytes, parts: list[bytes] = parts) -> None:
            parts.append(data)

        await reader.copy_from_query(query, output=sink, format="text")
        raw = b"".join(parts)
        if not raw:
            return
        yield raw
        last = int(raw[raw.rindex(b"\n", 0, len(raw) - 1) + 1 :].split(b"\t", 3)[2])


async def copy_source(
    reader: asyncpg.Connection,
    snapshot: Snapshot,
    rule_set: RuleSet,
    rule_set_key: int,
    criteria: CriterionBits,
    counts: dict[str, int],
    progress: Progress | None,
    lo: int | None = None,
    hi: int | None = None,
) -> AsyncIterator[bytes]:
    """COPY text of the decisions of the families `lo <= no_kk < hi`, a chunk at a time. The
    next chunk is read while this one is decided (in a thread: numpy and pyarrow release the
    GIL), so the reading backend and the rules run side by side."""
    async with reader.transaction(isolation="repeatable_read", readonly=True):
        # Dates in the COPY text as the decisions' COPY reads them, whatever the server's default.
        await reader.execute("SET LOCAL DateStyle = 'ISO, YMD'")
        chunks = _chunks(reader, snapshot.key, rule_set_key, lo, hi)
        raw = await anext(chunks, None)
        while raw is not None:
            decided, raw = await asyncio.gather(
                asyncio.to_thread(decide_chunk, raw, rule_set, snapshot.cutoff_date, criteria),
                anext(chunks, None),
            )
            text, people, families = decided
            counts["people"] += people
            counts["families"] += families
            if progress:
                progress(people)
            yield text
