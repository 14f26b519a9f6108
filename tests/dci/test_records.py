"""DCI Person records rendered from the stored decisions (the database renders the record, the
worker puts the coded items in front) equal, byte for byte, the engine's answer converted by
`person_record` and serialised with sorted keys, for every person of a release and for views
that grant each field group alone and together."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.eligibility import PROGRAM_ORDER, Program
from app.services import dci, eligibility, pinning
from tests.helpers import imported_release, materialized

RELEASE = "2025-11-30"
PEOPLE = 6_000

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
async def release(
    engine: AsyncEngine, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Path]:
    folder = tmp_path_factory.mktemp("dci-records") / RELEASE
    async with imported_release(settings, engine, folder, RELEASE, people=PEOPLE, seed=47):
        await materialized(settings, engine, RELEASE)
        yield folder


@pytest.mark.parametrize(
    ("groups", "programs"),
    [
        (eligibility.ALL_GROUPS, PROGRAM_ORDER),
        (frozenset({"decision"}), PROGRAM_ORDER),
        (frozenset({"decile"}), ()),
        (frozenset({"membership"}), ()),
        (frozenset({"identity"}), ()),
        (frozenset({"attributes"}), ()),
        (frozenset({"health", "decision"}), (Program.PBI_JK,)),
        (frozenset({"attributes", "health", "identity"}), ()),
        (frozenset({"decision"}), ()),  # granted, no program: an empty list, still an item
        (frozenset(), ()),
    ],
)
async def test_stored_person_records_equal_the_engines(
    engine: AsyncEngine,
    release: Path,
    groups: frozenset[str],
    programs: tuple[Program, ...],
) -> None:
    view = eligibility.View(programs, groups)
    async with engine.connect() as conn:
        pinned = await pinning.pin(conn, RELEASE, None)
        assert await eligibility.plain_stored_key(conn, pinned.snapshot, pinned.rule_set, view)
        niks = [
            f"{n:016d}"
            for n in await conn.scalars(
                text(
                    "SELECT p.nik FROM people p JOIN snapshots s ON s.key = p.snapshot_key "
                    "WHERE s.id = :id ORDER BY p.nik"
                ),
                {"id": RELEASE},
            )
        ]
        asked = [*niks, "3201014501990007"]  # and one not found
        live, live_found = await eligibility.people_live(
            conn, pinned.snapshot, pinned.rule_set, asked, view
        )
        stored = await eligibility.people(
            conn, pinned.snapshot, pinned.rule_set, asked, view, dci.PERSON_SHAPE
        )
    expected = [
        orjson.dumps(dci.person_record(r), option=orjson.OPT_SORT_KEYS) if r["found"] else b""
        for r in live
    ]
    assert stored.parts == expected
    assert stored.found == live_found == len(niks) == PEOPLE
    records = [orjson.loads(p) for p in stored.parts[:-1]]
    # What the release exercises, so the equality above covers it.
    if "decile" in groups:
        assert any("poverty_score" not in r for r in records)  # an unknown decile left out
        assert any("poverty_score" in r for r in records)
    if "identity" in groups:
        assert {r["sex"] for r in records} == {"male", "female"}
    if groups & {"attributes", "health", "decision"}:
        assert all("additional_attributes" in r for r in records)
    else:
        assert not any("additional_attributes" in r for r in records)


async def test_person_records_keep_what_the_view_does_not_grant_out(
    engine: AsyncEngine, release: Path
) -> None:
    """A decision-only client's records name the person and nothing of family, identity,
    attributes or health, on the stored path as on the engine's."""
    view = eligibility.View(PROGRAM_ORDER, frozenset({"decision"}))
    async with engine.connect() as conn:
        pinned = await pinning.pin(conn, RELEASE, None)
        nik = await conn.scalar(
            text(
                "SELECT lpad(p.nik::text, 16, '0') FROM people p "
                "JOIN snapshots s ON s.key = p.snapshot_key WHERE s.id = :id LIMIT 1"
            ),
            {"id": RELEASE},
        )
        stored = await eligibility.people(
            conn, pinned.snapshot, pinned.rule_set, [nik], view, dci.PERSON_SHAPE
        )
    record = orjson.loads(stored.parts[0])
    assert set(record) == {"@type", "identifier", "additional_attributes"}
    assert [a["name"] for a in record["additional_attributes"]] == ["decisions"]
