"""Publishing and retiring under load: one snapshot per answer, the new one served at once."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pytest

from app.ingest.importer import import_release
from app.services import snapshots
from tests.faults.conftest import R1, R2, Server, World, auth
from tests.faults.load import Sample, hammer

pytestmark = pytest.mark.slow


def _snapshot_of(s: Sample, only_r1: set[str], only_r2: set[str]) -> str:
    """The snapshot the answer names, after checking every result agrees with it."""
    assert s.body is not None
    snap: str = s.body["meta"]["snapshot"]["id"]
    assert snap in (R1, R2)
    for r in s.body["results"]:
        if r["nik"] in only_r1:
            assert r["found"] is (snap == R1), (snap, "a NIK only in R1")
        elif r["nik"] in only_r2:
            assert r["found"] is (snap == R2), (snap, "a NIK only in R2")
        else:
            assert r["found"] is True
    return snap


async def test_publish_and_retire_under_load_pin_each_answer(
    world: World, main_server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    r1, r2 = set(world.r1_niks), set(world.r2_niks)
    only_r1, only_r2, common = sorted(r1 - r2), sorted(r2 - r1), sorted(r1 & r2)
    assert only_r1 and only_r2 and common  # deaths and births in the quarter

    def body(i: int) -> dict[str, Any]:
        picks = (only_r1[i % len(only_r1)], only_r2[i % len(only_r2)], common[i % len(common)])
        return {"niks": list(picks)}

    key = await world.client_key("publish")
    stop = asyncio.Event()
    load = asyncio.create_task(
        hammer(main_server.base_url, auth(key), body, workers=6, stop=stop, max_seconds=60)
    )
    await asyncio.sleep(1.0)
    importing = time.monotonic()
    raw = await world.raw()
    try:
        result = await import_release(raw, world.r2)
    finally:
        await raw.close()
    assert result.published, result.report.to_dict()
    published = time.monotonic()
    await asyncio.sleep(1.5)
    retiring = time.monotonic()
    async with world.engine.begin() as conn:
        await snapshots.retire(conn, R2)
    retired = time.monotonic()
    await asyncio.sleep(1.5)
    stop.set()
    samples = await load

    assert Counter(s.status for s in samples) == Counter({200: len(samples)})
    pinned = [(s, _snapshot_of(s, set(only_r1), set(only_r2))) for s in samples]
    before = [snap for s, snap in pinned if s.ended < importing]
    between = [snap for s, snap in pinned if published < s.started and s.ended < retiring]
    after = [snap for s, snap in pinned if s.started > retired]
    first_r2 = min(s.ended for s, snap in pinned if snap == R2) - published
    with capsys.disabled():
        print(
            f"\n[publish] {len(samples)} answers, all 200; import took "
            f"{published - importing:.2f} s under load; {R2} served "
            f"{first_r2 * 1000:.0f} ms after its publish; {R1} again after the retire "
            f"({len(after)} answers)"
        )
    assert before and set(before) == {R1}
    assert between and set(between) == {R2}
    assert after and set(after) == {R1}
