"""Stored decisions equal the engine's on every person of a 50,000-person release; the report
counts what the engine decides, set-based."""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app import db
from app.config import Settings
from app.eligibility import (
    PROGRAM_ORDER,
    Program,
    evaluate_family,
    load_rule_set,
    shipped_rule_sets,
)
from app.errors import SnapshotStateError
from app.models.tables import DECISION_CODE, PERSON_CODE
from app.repositories import decisions as decisions_repo
from app.services import eligibility, materialize, pinning, report
from tests.api.test_lookup import _engine_family
from tests.helpers import imported_release

RELEASE = "2025-12-31"
PEOPLE = 50_000

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
async def release(
    engine: AsyncEngine, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Path]:
    folder = tmp_path_factory.mktemp("mat") / RELEASE
    async with imported_release(settings, engine, folder, RELEASE, people=PEOPLE, seed=31):
        yield folder


async def _materialize(settings: Settings, engine: AsyncEngine) -> materialize.Materialized:
    async with engine.connect() as conn:
        pinned = await pinning.pin(conn, RELEASE, None)
    reader, writer = await db.connect_raw(settings), await db.connect_raw(settings)
    try:
        return await materialize.materialize(reader, writer, pinned.snapshot, pinned.rule_set)
    finally:
        await reader.close()
        await writer.close()


async def _first_niks(conn: AsyncConnection, n: int) -> list[str]:
    """The release's first n NIKs in NIK order."""
    found = await conn.scalars(
        text(
            "SELECT p.nik FROM people p JOIN snapshots s ON s.key = p.snapshot_key "
            "WHERE s.id = :id ORDER BY p.nik LIMIT :n"
        ),
        {"id": RELEASE, "n": n},
    )
    return [f"{nik:016d}" for nik in found]


async def test_report_refuses_before_decisions_are_stored(
    engine: AsyncEngine, release: Path
) -> None:
    async with engine.connect() as conn:
        pinned = await pinning.pin(conn, RELEASE, None)
        with pytest.raises(SnapshotStateError):
            await report.targeting_report(conn, pinned, "national")


async def test_stored_decisions_equal_the_engine_for_every_person(
    engine: AsyncEngine, settings: Settings, release: Path
) -> None:
    first = await _materialize(settings, engine)
    assert first.created
    assert first.people == PEOPLE
    again = await _materialize(settings, engine)
    assert not again.created  # immutable inputs: stored once

    raw = await db.connect_raw(settings)
    try:
        stored = {
            r["nik"]: r
            for r in await raw.fetch(
                "SELECT d.* FROM decisions d JOIN snapshots s ON s.key = d.snapshot_key "
                "WHERE s.id = $1",
                RELEASE,
            )
        }
    finally:
        await raw.close()
    assert len(stored) == PEOPLE
    niks = [f"{n:016d}" for n in stored]
    view = eligibility.View(PROGRAM_ORDER, eligibility.ALL_GROUPS)
    checked = 0
    async with engine.connect() as conn:
        pinned = await pinning.pin(conn, RELEASE, None)
        key = await eligibility.stored_rule_set_key(conn, pinned.snapshot.key, pinned.rule_set.id)
        assert key is not None
        for i in range(0, len(niks), 1000):
            chunk = [*niks[i : i + 1000], "3201014501990007"]  # and one not found
            live, live_found = await eligibility.people_live(
                conn, pinned.snapshot, pinned.rule_set, chunk, view
            )
            fast = await eligibility.people(conn, pinned.snapshot, pinned.rule_set, chunk, view)
            # The whole answer as served (rendered bytes), field by field: decisions, decile,
            # membership, identity...
            assert [orjson.loads(p) for p in fast.parts] == live
            assert fast.found == live_found == len(chunk) - 1
            assert not fast.disclosed
            checked += fast.found
    assert checked == PEOPLE


async def test_codes_decode_to_the_stored_columns_for_every_person(
    engine: AsyncEngine, settings: Settings, release: Path
) -> None:
    """person_code and decision_code (computed by the database) unpack, by the worker's
    decoder, to exactly the columns they were computed from, on every stored row."""
    await _materialize(settings, engine)
    person = [name for name, _, _ in PERSON_CODE]
    decision = [name for name, _, _ in DECISION_CODE]
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    f"SELECT person_code, decision_code, {', '.join(person + decision)} "
                    "FROM decisions d JOIN snapshots s ON s.key = d.snapshot_key WHERE s.id = :id"
                ),
                {"id": RELEASE},
            )
        ).mappings()
        checked = 0
        seen: set[tuple[object, ...]] = set()
        for r in rows:
            assert decisions_repo.decode(r["person_code"], PERSON_CODE) == {n: r[n] for n in person}
            assert decisions_repo.decode(r["decision_code"], DECISION_CODE) == {
                n: r[n] for n in decision
            }
            seen.add(tuple(r[n] for n in person))
            checked += 1
    assert checked == PEOPLE
    assert len(seen) > 100  # the generator's release exercises NULLs and every code, not one


async def test_stored_answers_do_not_depend_on_the_sessions_datestyle(
    engine: AsyncEngine, settings: Settings, release: Path
) -> None:
    await _materialize(settings, engine)
    view = eligibility.View(PROGRAM_ORDER, frozenset({"identity"}))
    async with engine.connect() as conn:
        pinned = await pinning.pin(conn, RELEASE, None)
        niks = await _first_niks(conn, 50)
        live, _ = await eligibility.people_live(conn, pinned.snapshot, pinned.rule_set, niks, view)
        await conn.exec_driver_sql("SET DateStyle = 'German, DMY'")  # dd.mm.yyyy as text
        fast = await eligibility.people(conn, pinned.snapshot, pinned.rule_set, niks, view)
        await conn.exec_driver_sql("RESET DateStyle")
    assert [orjson.loads(p) for p in fast.parts] == live
    assert live[0]["identity"]["birth_date"][4] == "-"


@pytest.mark.parametrize(
    ("groups", "programs"),
    [
        ({"decision"}, PROGRAM_ORDER),
        ({"decile", "membership"}, PROGRAM_ORDER),
        ({"identity", "health", "decision"}, (Program.PBI_JK,)),
        ({"attributes", "decision"}, (Program.PKH, Program.SEKOLAH_RAKYAT)),  # PROGRAMS order
        (set(), ()),
    ],
)
async def test_stored_answers_leave_out_what_the_view_does_not_grant(
    engine: AsyncEngine,
    settings: Settings,
    release: Path,
    groups: set[str],
    programs: tuple[Program, ...],
) -> None:
    await _materialize(settings, engine)
    view = eligibility.View(programs, frozenset(groups))
    async with engine.connect() as conn:
        pinned = await pinning.pin(conn, RELEASE, None)
        niks = await _first_niks(conn, 2000)
        live, _ = await eligibility.people_live(conn, pinned.snapshot, pinned.rule_set, niks, view)
        fast = await eligibility.people(conn, pinned.snapshot, pinned.rule_set, niks, view)
    assert [orjson.loads(p) for p in fast.parts] == live
    assert fast.found == len(niks)


async def test_report_matches_an_independent_count_from_the_source_files(
    engine: AsyncEngine, settings: Settings, release: Path
) -> None:
    await _materialize(settings, engine)
    async with engine.connect() as conn:
        pinned = await pinning.pin(conn, RELEASE, None)
        national = await report.targeting_report(conn, pinned, "national")
        provinces = await report.targeting_report(conn, pinned, "province")

    # Independent: the engine over the CSV files, counted in Python.
    rule_set = load_rule_set(shipped_rule_sets()[0])
    with (release / "keluarga.csv").open() as f:
        families = {r["no_kk"]: r for r in csv.DictReader(f)}
    members: dict[str, list[dict[str, str]]] = {}
    with (release / "anggota.csv").open() as f:
        for r in csv.DictReader(f):
            members.setdefault(r["no_kk"], []).append(r)
    counts: dict[str, list[int]] = {"pkh": [0, 0, 0], "bpnt": [0, 0, 0], "pbi": [0, 0, 0]}
    sr_eligible = 0
    cutoff = dt.date.fromisoformat(RELEASE)
    for kk, fam in families.items():
        ev = evaluate_family(_engine_family(fam, members[kk]), rule_set, cutoff)
        decided = {d.program: d for d in ev.family}
        for key, prog, flag in (
            ("pkh", Program.PKH, "penerima_pkh"),
            ("bpnt", Program.BPNT, "penerima_bpnt"),
        ):
            eligible, recipient = decided[prog].eligible, fam[flag] == "1"
            counts[key][0] += eligible
            counts[key][1] += recipient
            counts[key][2] += eligible and recipient
        for m in members[kk]:
            pbi, sr = ev.people[m["nik"]]
            counts["pbi"][0] += pbi.eligible
            counts["pbi"][1] += m["penerima_pbi"] == "1"
            counts["pbi"][2] += pbi.eligible and m["penerima_pbi"] == "1"
            sr_eligible += sr.eligible
    got = national["national"]["programs"]
    for key, name in (("pkh", "PKH"), ("bpnt", "BPNT"), ("pbi", "PBI_JK")):
        p = got[name]
        assert [p["eligible"], p["recipients"], p["eligible_and_recipient"]] == counts[key]
        assert p["inclusion_error"] == p["recipients"] - p["eligible_and_recipient"]
    assert got["SEKOLAH_RAKYAT"]["eligible"] == sr_eligible
    # Regions add up to the nation.
    assert sum(r["programs"]["PKH"]["eligible"] for r in provinces["regions"]) == counts["pkh"][0]
    assert national["national"]["people"] == PEOPLE
