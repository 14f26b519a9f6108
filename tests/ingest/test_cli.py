"""The operator's CLI end to end (in-process: tests/cli.py): generate, import, list, verify, retire."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.synth.corrupt import corrupt_release
from tests.cli import tepat

pytestmark = pytest.mark.slow

RELEASE = "2021-03-31"


def test_generate_import_list_show_verify_retire(
    tmp_path: Path, database_url: str, engine: object
) -> None:
    folder = tmp_path / RELEASE
    out = tepat(
        "generate",
        str(folder),
        "--people",
        "1500",
        "--seed",
        "4",
        "--release",
        RELEASE,
        database_url=database_url,
    )
    assert out.returncode == 0, out.stderr
    manifest = json.loads((folder / "manifest.json").read_text())

    bad = tmp_path / "bad"
    corrupt_release(folder, bad, ["nik_date", "family_without_head"])
    refused = tepat("snapshot", "import", str(bad), "--json", database_url=database_url)
    assert refused.returncode == 1
    report = json.loads(refused.stdout)
    assert {e["rule"] for e in report["errors"]} == {"nik_date", "family_without_head"}
    assert report["published"] is False

    dry = tepat("snapshot", "import", str(folder), "--dry-run", "--json", database_url=database_url)
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["published"] is False

    done = tepat("snapshot", "import", str(folder), "--json", database_url=database_url)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["published"] is True
    assert result["counts"] == {
        "families": manifest["files"]["keluarga.csv"]["rows"],
        "people": manifest["files"]["anggota.csv"]["rows"],
    }
    try:
        listed = json.loads(tepat("snapshot", "list", "--json", database_url=database_url).stdout)
        mine = next(s for s in listed if s["id"] == RELEASE)
        assert mine["status"] == "published"
        assert mine["checksum"] == result["checksum"]
        shown = json.loads(
            tepat("snapshot", "show", RELEASE, "--json", database_url=database_url).stdout
        )
        assert shown["people_count"] == result["counts"]["people"]
        verified = tepat("snapshot", "verify", RELEASE, "--json", database_url=database_url)
        assert verified.returncode == 0
        assert json.loads(verified.stdout)["ok"] is True
        retired = tepat("snapshot", "retire", RELEASE, "--json", database_url=database_url)
        assert retired.returncode == 0, retired.stderr
        assert json.loads(retired.stdout)["status"] == "retired"
        again = tepat("snapshot", "retire", RELEASE, database_url=database_url)
        assert again.returncode == 1
        assert "retired" in again.stderr
    finally:
        import asyncpg

        from app import db
        from tests.helpers import drop_release

        async def cleanup() -> None:
            raw = await asyncpg.connect(db.asyncpg_dsn(database_url))
            try:
                await drop_release(raw, RELEASE)
            finally:
                await raw.close()

        asyncio.run(cleanup())


async def test_a_database_never_migrated_is_named_not_a_traceback(scratch: AsyncEngine) -> None:
    """The CLI against an empty database says to run `tepat db upgrade` (exit 1), no traceback."""
    url = scratch.url.render_as_string(hide_password=False)
    out = await asyncio.to_thread(tepat, "snapshot", "list", database_url=url)
    assert out.returncode == 1, out.stderr
    assert "tepat db upgrade" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout
