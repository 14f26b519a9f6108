"""The audit log's commands: keygen, the service role, checkpoints, verification, receipts."""

from __future__ import annotations

import asyncio
import csv
import json
import os
from pathlib import Path

import asyncpg
import httpx

from app import db
from app.config import Settings
from tests.cli import tepat
from tests.support import auth


def test_keygen_writes_a_private_key_once_and_prints_its_public_jwk(tmp_path: Path) -> None:
    key = tmp_path / "signing.pem"
    ran = tepat("audit", "keygen", "--out", str(key))
    assert ran.returncode == 0, ran.stderr
    jwk = json.loads(ran.stdout)
    assert jwk["kty"] == "OKP" and jwk["crv"] == "Ed25519" and "d" not in jwk
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    again = tepat("audit", "keygen", "--out", str(key))
    assert again.returncode == 1 and "never overwritten" in again.stderr


async def test_service_role_command(database_url: str) -> None:
    name = f"tepat_cli_role_{os.getpid()}"
    ran = await asyncio.to_thread(tepat, "db", "service-role", name)
    admin = await asyncpg.connect(db.asyncpg_dsn(database_url))
    try:
        assert ran.returncode == 0, ran.stderr
        groups = await admin.fetch(
            "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
            "JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = $1",
            name,
        )
        assert [g["rolname"] for g in groups] == ["tepat_service"]
        bad = await asyncio.to_thread(tepat, "db", "service-role", "postgres")
        assert bad.returncode == 1 and "error" in bad.stderr
    finally:
        await admin.execute(f"DROP ROLE IF EXISTS {name}")
        await admin.close()


async def test_checkpoint_then_verify_and_a_forged_checkpoint_is_named(
    http: httpx.AsyncClient, full_key: str, published: Path, settings: Settings, tmp_path: Path
) -> None:
    with (published / "anggota.csv").open() as f:
        nik = next(csv.DictReader(f))["nik"]
    r = await http.post("/v1/people/lookup", json={"niks": [nik]}, headers=auth(full_key))
    assert r.status_code == 200
    folder = tmp_path / "checkpoints"
    made = await asyncio.to_thread(tepat, "audit", "checkpoint", "--out", str(folder), "--json")
    assert made.returncode == 0, made.stderr
    size = json.loads(made.stdout)["size"]
    assert (folder / str(size)).exists()
    ok = await asyncio.to_thread(tepat, "audit", "verify", "--checkpoints", str(folder))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "1 checkpoint(s) hold" in ok.stdout
    text = (folder / str(size)).read_text()
    (folder / str(size + 1)).write_text(text.replace(f"\n{size}\n", f"\n{size + 1}\n"))
    bad = await asyncio.to_thread(tepat, "audit", "verify", "--checkpoints", str(folder))
    assert bad.returncode == 1
    assert str(size + 1) in bad.stderr  # the forged file is named

    # The receipt of that answer verifies from the command line with a saved JWKS.
    (tmp_path / "body").write_bytes(r.content)
    (tmp_path / "jwks.json").write_bytes((await http.get("/.well-known/jwks.json")).content)
    args = [
        "receipt",
        "verify",
        "--body",
        str(tmp_path / "body"),
        "--jwks",
        str(tmp_path / "jwks.json"),
    ]
    good = await asyncio.to_thread(tepat, *args, "--receipt", r.headers["tepat-receipt"])
    assert good.returncode == 0, good.stderr
    assert "valid" in good.stdout
    (tmp_path / "body").write_bytes(r.content + b" ")
    changed = await asyncio.to_thread(tepat, *args, "--receipt", r.headers["tepat-receipt"])
    assert changed.returncode == 1 and "body does not match" in changed.stderr
