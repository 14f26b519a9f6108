"""`tepat audit verify|index|trail`, run as an operator would (in-process: tests/cli.py)."""

from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.services import audit
from tests.cli import tepat

from .conftest import make_entry, random_nik


@pytest.fixture
async def recorded(settings: Settings, engine: AsyncEngine) -> tuple[str, audit.AuditEntry]:
    """One committed record about a fresh NIK, hashed with the settings' key as the CLI does."""
    nik = random_nik()
    entry = make_entry(f"test-{uuid.uuid4().hex[:10]}", [audit.nik_subject(nik)])
    key = settings.audit_hmac_key.get_secret_value().encode()
    async with audit.running(audit.AuditWriter(engine, key)) as w:
        await w.record(entry)
    return nik, entry


async def test_trail_lists_the_accesses(recorded: tuple[str, audit.AuditEntry]) -> None:
    nik, entry = recorded
    found = await asyncio.to_thread(tepat, "audit", "trail", "--nik", nik, "--json")
    assert found.returncode == 0, found.stderr
    assert [e["audit_id"] for e in json.loads(found.stdout)] == [entry.id]
    table = await asyncio.to_thread(tepat, "audit", "trail", "--nik", nik)
    assert entry.id in table.stdout
    assert nik not in table.stdout
    family = await asyncio.to_thread(tepat, "audit", "trail", "--no-kk", nik, "--json")
    assert json.loads(family.stdout) == []


async def test_index_catches_up_and_the_trail_still_answers(
    recorded: tuple[str, audit.AuditEntry],
) -> None:
    nik, entry = recorded
    done = await asyncio.to_thread(tepat, "audit", "index", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["records"] >= 1 and result["entries"] >= 1
    assert result["indexed_upto"] >= 1
    again = await asyncio.to_thread(tepat, "audit", "index", "--json")
    assert (
        json.loads(again.stdout)["records"] == 0
        or json.loads(again.stdout)["indexed_upto"] > (result["indexed_upto"])
    )  # only what other tests wrote since
    found = await asyncio.to_thread(tepat, "audit", "trail", "--nik", nik, "--json")
    assert [e["audit_id"] for e in json.loads(found.stdout)] == [entry.id]
    assert nik not in done.stdout + done.stderr


async def test_trail_refuses_a_bad_nik_without_echoing_it() -> None:
    bad = await asyncio.to_thread(tepat, "audit", "trail", "--nik", "3201019913900001")
    assert bad.returncode == 2
    assert "3201019913900001" not in bad.stdout + bad.stderr
    both = await asyncio.to_thread(tepat, "audit", "trail", "--nik", "1", "--no-kk", "2")
    assert both.returncode == 2


async def test_verify_exit_codes(
    recorded: tuple[str, audit.AuditEntry], raw: asyncpg.Connection
) -> None:
    _, entry = recorded
    ok = await asyncio.to_thread(tepat, "audit", "verify", "--json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert json.loads(ok.stdout)["ok"] is True

    async def set_purpose(purpose: str) -> None:
        # As a superuser would: the trigger off for one committed statement.
        async with raw.transaction():
            await raw.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_delete")
            await raw.execute("UPDATE audit_log SET purpose = $1 WHERE id = $2", purpose, entry.id)
            await raw.execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update_delete")

    await set_purpose("marketing")
    try:
        broken = await asyncio.to_thread(tepat, "audit", "verify")
        assert broken.returncode == 1
        assert entry.id in broken.stdout
        assert "altered" in broken.stdout
    finally:
        await set_purpose(entry.purpose)
    again = await asyncio.to_thread(tepat, "audit", "verify")
    assert again.returncode == 0, again.stdout


async def test_trail_after_a_key_rotation_needs_the_old_key_kept(
    settings: Settings, recorded: tuple[str, audit.AuditEntry], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rotating TEPAT_AUDIT_HMAC_KEY: with the old key in TEPAT_AUDIT_HMAC_OLD_KEYS (a JSON
    list) the trail still shows the earlier access; without it, it cannot."""
    nik, entry = recorded
    old = settings.audit_hmac_key.get_secret_value()
    monkeypatch.setenv("TEPAT_AUDIT_HMAC_KEY", "rotated-" + uuid.uuid4().hex)
    monkeypatch.delenv("TEPAT_AUDIT_HMAC_OLD_KEYS", raising=False)
    lost = await asyncio.to_thread(tepat, "audit", "trail", "--nik", nik, "--json")
    assert lost.returncode == 0, lost.stderr
    assert json.loads(lost.stdout) == []
    monkeypatch.setenv("TEPAT_AUDIT_HMAC_OLD_KEYS", json.dumps([old]))
    kept = await asyncio.to_thread(tepat, "audit", "trail", "--nik", nik, "--json")
    assert kept.returncode == 0, kept.stderr
    assert [e["audit_id"] for e in json.loads(kept.stdout)] == [entry.id]
