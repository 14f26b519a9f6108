"""Rule sets stored in the database: immutable under their id, and the one in force per snapshot."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from app.eligibility import RuleSet, load_rule_set, shipped_rule_sets
from app.errors import NoRuleSetInForce, RuleSetConflict, RuleSetNotFound
from app.schemas.snapshots import Snapshot
from app.services import rule_sets


def _snapshot(cutoff: str) -> Snapshot:
    now = dt.datetime.now(dt.UTC)
    return Snapshot(
        id=cutoff,
        label="test",
        cutoff_date=dt.date.fromisoformat(cutoff),
        status="published",
        family_count=0,
        people_count=0,
        checksum="sha256:x",
        created_at=now,
        published_at=now,
        retired_at=None,
        key=0,
    )


def _variant(base: RuleSet, **changes: object) -> RuleSet:
    return RuleSet.model_validate({**base.model_dump(mode="json"), **changes})


@pytest.fixture
async def loaded(conn: AsyncConnection) -> AsyncIterator[RuleSet]:
    rule_sets.forget_cached()
    await rule_sets.ensure_shipped(conn)
    yield load_rule_set(shipped_rule_sets()[0])
    rule_sets.forget_cached()  # what this test stored is rolled back: so is the cache


async def test_loading_the_same_file_twice_is_a_no_op(
    conn: AsyncConnection, loaded: RuleSet
) -> None:
    rule_set, new = await rule_sets.load_file(conn, shipped_rule_sets()[0])
    assert not new
    assert rule_set.checksum == loaded.checksum


async def test_a_changed_file_under_a_loaded_id_is_refused(
    conn: AsyncConnection, loaded: RuleSet, tmp_path: Path
) -> None:
    text = (
        shipped_rule_sets()[0]
        .read_text()
        .replace("monthly_rupiah = 42_000", "monthly_rupiah = 42_500")
    )
    assert "42_500" in text
    changed = tmp_path / "changed.toml"
    changed.write_text(text)
    with pytest.raises(RuleSetConflict):
        await rule_sets.load_file(conn, changed)


async def test_default_is_the_latest_in_force_on_the_cutoff_never_the_newest(
    conn: AsyncConnection, loaded: RuleSet
) -> None:
    later = _variant(loaded, id="kepmensos-test-2026", effective_from="2026-03-01")
    assert await rule_sets.load(conn, later)
    rule_sets.forget_cached()
    # A January 2026 release keeps the 2025 rule set; an April one gets the 2026 one.
    assert (await rule_sets.resolve(conn, _snapshot("2026-01-23"), None)).id == loaded.id
    assert (await rule_sets.resolve(conn, _snapshot("2026-04-23"), None)).id == later.id
    # Effective on the cut-off day itself counts.
    assert (await rule_sets.resolve(conn, _snapshot("2026-03-01"), None)).id == later.id
    # A named rule set is used as named, even for an older release.
    assert (await rule_sets.resolve(conn, _snapshot("2026-01-23"), later.id)).id == later.id


async def test_no_rule_set_in_force_is_a_clear_error(
    conn: AsyncConnection, loaded: RuleSet
) -> None:
    with pytest.raises(NoRuleSetInForce, match="2024-12-31"):
        await rule_sets.resolve(conn, _snapshot("2024-12-31"), None)
    with pytest.raises(RuleSetNotFound):
        await rule_sets.resolve(conn, _snapshot("2026-01-23"), "no-such-rules")
