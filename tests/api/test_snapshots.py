"""Pinning: a retired snapshot answers 410, an unknown one 404, and meta names what was used."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from app import db
from app.config import Settings
from app.ingest.importer import import_release
from app.synth.generate import generate_release
from tests.helpers import drop_release
from tests.support import RELEASE, auth

OLD = "2025-10-31"


@pytest.fixture
async def retired(settings: Settings, tmp_path: Path, published: Path) -> AsyncIterator[str]:
    folder = tmp_path / OLD
    generate_release(folder, people=300, seed=5, release=OLD)
    raw = await db.connect_raw(settings)
    try:
        assert (await import_release(raw, folder)).published
        await raw.execute(
            "UPDATE snapshots SET status = 'retired', retired_at = now() WHERE id = $1", OLD
        )
        yield OLD
    finally:
        await drop_release(raw, OLD)
        await raw.close()


async def test_retired_snapshot_is_a_clear_410(
    http: httpx.AsyncClient, full_key: str, retired: str
) -> None:
    r = await http.post(
        "/v1/people/lookup",
        json={"niks": ["3201014501900001"], "snapshot": retired},
        headers=auth(full_key),
    )
    assert r.status_code == 410
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "snapshot_retired"
    listed = (await http.get("/v1/snapshots")).json()
    assert {s["id"]: s["status"] for s in listed}[retired] == "retired"
    # The default stays the current published snapshot.
    r = await http.post(
        "/v1/people/lookup", json={"niks": ["3201014501900001"]}, headers=auth(full_key)
    )
    assert r.json()["meta"]["snapshot"]["id"] == RELEASE
