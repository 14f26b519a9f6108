"""Receipts signed along with their audit record, in a child process per server process.

Every receipt is checked as a client would check it: joserfc (an independent JOSE
implementation) against the published JWKS, then its claims held to the audit table. The
signer child may die or hang: answers still carry valid receipts, nothing waits forever, and
no child outlives its server process.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import hashlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import psutil
import pytest
from fastapi import FastAPI
from joserfc import jws
from joserfc.errors import BadSignatureError
from joserfc.jwk import KeySet
from sqlalchemy.ext.asyncio import AsyncEngine

from app.services import audit, receipts
from app.services.audit.writer import AuditWriter
from app.services.signer import Signer
from tests.support import auth

from .conftest import HMAC_KEY, make_entry

SNAPSHOT = ("2026-01-23", "ab" * 32)
RULE_SET = ("2026.1", "cd" * 32)


@pytest.fixture
def keyring(tmp_path: Path) -> receipts.Keyring:
    return receipts.Keyring(receipts.generate(tmp_path / "receipts.pem"))


def _claims(entry: audit.AuditEntry, body: bytes) -> dict[str, Any]:
    return receipts.claims(
        entry.id, 0, SNAPSHOT, RULE_SET, hashlib.sha256(body).digest(), int(time.time())
    )


def _verified(token: str, body: bytes, jwks: dict[str, Any]) -> dict[str, Any]:
    """As a client: the JWS checked by joserfc with the JWKS, the digest by hand."""
    keys = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
    token_ = jws.deserialize_compact(token, keys, algorithms=["EdDSA"])
    assert token_.headers()["kid"] == jwks["keys"][0]["kid"]
    claims: dict[str, Any] = orjson.loads(token_.payload)
    assert claims["body_sha256"] == hashlib.sha256(body).hexdigest()
    return claims


async def _seqs(raw: asyncpg.Connection, client_id: str) -> dict[str, int]:
    rows = await raw.fetch("SELECT id, seq FROM audit_log WHERE client_id = $1", client_id)
    return {r["id"]: r["seq"] for r in rows}


async def _sign_some(
    writers: list[AuditWriter], client_id: str, n: int
) -> list[tuple[bytes, str, str]]:
    """n entries recorded with receipts, spread over the writers: (body, receipt, audit_id)."""

    async def one(i: int) -> tuple[bytes, str, str]:
        body = orjson.dumps({"results": [i, uuid.uuid4().hex]})
        entry = make_entry(client_id, response_digest=hashlib.sha256(body).digest())
        _, token = await writers[i % len(writers)].record_signed(entry, _claims(entry, body))
        assert token is not None
        return body, token, entry.id

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def test_the_writer_signs_in_its_child_what_a_jose_library_accepts(
    engine: AsyncEngine, raw: asyncpg.Connection, keyring: receipts.Keyring
) -> None:
    client_id = f"test-{uuid.uuid4().hex[:10]}"
    async with audit.running(AuditWriter(engine, HMAC_KEY, keyring=keyring)) as writer:
        assert writer.signer is not None
        child = writer.signer.pid
        assert child is not None and psutil.Process(child).ppid() == os.getpid()
        signed = await _sign_some([writer], client_id, 60)
        assert writer.stats.batches < 60  # grouped: several receipts per batch, per round trip
        assert writer.signer.fallbacks == 0  # every one came from the child
    seqs = await _seqs(raw, client_id)
    for body, token, audit_id in signed:
        claims = _verified(token, body, keyring.document)
        assert claims["audit_id"] == audit_id
        assert claims["seq"] == seqs[audit_id]
        assert (claims["snapshot"]["id"], claims["rule_set"]["id"]) == (SNAPSHOT[0], RULE_SET[0])
        changed = body.replace(b"[", b"[ ", 1)
        with pytest.raises(receipts.ReceiptInvalid, match="body does not match"):
            receipts.verify(token, changed, keyring.document)
    # A changed byte of the receipt's own payload breaks its signature.
    header, payload, signature = signed[0][1].split(".")
    claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["seq"] += 1
    forged = f"{header}.{receipts.b64url(orjson.dumps(claims)).decode()}.{signature}"
    keys = KeySet.import_key_set(keyring.document)  # type: ignore[arg-type]
    with pytest.raises(BadSignatureError):
        jws.deserialize_compact(forged, keys, algorithms=["EdDSA"])


async def test_receipts_name_the_seq_a_moved_head_gave_their_records(
    engine: AsyncEngine, raw: asyncpg.Connection, keyring: receipts.Keyring
) -> None:
    """Two writers (two server processes) interleave: a batch signed against a tip that moved
    is chained again under the lock, and its receipts signed again with the seqs it got."""
    client_id = f"test-{uuid.uuid4().hex[:10]}"
    a = AuditWriter(engine, HMAC_KEY, keyring=keyring, max_batch=7)
    b = AuditWriter(engine, HMAC_KEY, keyring=keyring, max_batch=5)
    async with audit.running(a), audit.running(b):
        signed = await _sign_some([a, b], client_id, 80)
        assert a.stats.locked_batches + b.stats.locked_batches > 2
    seqs = await _seqs(raw, client_id)
    assert len(seqs) == 80
    for body, token, audit_id in signed:
        assert _verified(token, body, keyring.document)["seq"] == seqs[audit_id]


async def test_a_dead_signer_child_costs_no_receipt_and_is_replaced(
    engine: AsyncEngine, raw: asyncpg.Connection, keyring: receipts.Keyring
) -> None:
    client_id = f"test-{uuid.uuid4().hex[:10]}"
    writer = AuditWriter(engine, HMAC_KEY, keyring=keyring)
    writer.signer = Signer(keyring.current.seed, timeout=5.0, retry_after=0.0)
    async with audit.running(writer):
        first = writer.signer.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        # Answered within the writer's own deadline, not hung on the dead child.
        signed = await asyncio.wait_for(_sign_some([writer], client_id, 10), 60)
        assert writer.signer.fallbacks >= 1 or writer.signer.pid not in (None, first)
        signed += await _sign_some([writer], client_id, 10)
        second = writer.signer.pid
        assert second is not None and second != first  # a new child took over
        assert not psutil.pid_exists(first)  # and the dead one was reaped
    seqs = await _seqs(raw, client_id)
    for body, token, audit_id in signed:
        assert _verified(token, body, keyring.document)["seq"] == seqs[audit_id]


async def test_a_hung_signer_child_is_killed_and_the_batch_signed_here(
    engine: AsyncEngine, raw: asyncpg.Connection, keyring: receipts.Keyring
) -> None:
    client_id = f"test-{uuid.uuid4().hex[:10]}"
    writer = AuditWriter(engine, HMAC_KEY, keyring=keyring)
    writer.signer = Signer(keyring.current.seed, timeout=0.5, retry_after=3600)
    async with audit.running(writer):
        hung = writer.signer.pid
        assert hung is not None
        os.kill(hung, signal.SIGSTOP)  # alive, answering nothing
        # A lone receipt is signed in this process: no round trip, and no wait on the child.
        entry = make_entry(client_id)
        lone = await writer.record_signed(entry, _claims(entry, b"{}"))
        assert lone[1] is not None
        assert _verified(lone[1], b"{}", keyring.document)["seq"] == lone[0]
        assert writer.signer.pid == hung and writer.signer.fallbacks == 0
        signed = await asyncio.wait_for(_sign_some([writer], client_id, 5), 60)
        assert writer.signer.fallbacks >= 1
        assert not psutil.pid_exists(hung)
        assert writer.signer.pid is None  # not retried before retry_after: signed here
        signed += await _sign_some([writer], client_id, 5)
    seqs = await _seqs(raw, client_id)
    for body, token, audit_id in signed:
        assert _verified(token, body, keyring.document)["seq"] == seqs[audit_id]


async def test_stopping_the_writer_ends_its_signer_child(
    engine: AsyncEngine, keyring: receipts.Keyring
) -> None:
    writer = AuditWriter(engine, HMAC_KEY, keyring=keyring)
    async with audit.running(writer):
        assert writer.signer is not None
        child = writer.signer.pid
        assert child is not None and psutil.pid_exists(child)
    assert not psutil.pid_exists(child)
    assert writer.signer.pid is None


_PARENT = """
import asyncio, sys
from app.services.signer import Signer

async def main():
    signer = Signer(bytes(32))
    await signer.start()
    print(signer.pid, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def test_a_signer_child_ends_with_its_parent() -> None:
    """A server process killed outright (no shutdown): its child sees its stdin end and exits."""
    parent = subprocess.Popen([sys.executable, "-c", _PARENT], stdout=subprocess.PIPE)
    try:
        assert parent.stdout is not None
        child = psutil.Process(int(parent.stdout.readline()))
        assert child.ppid() == parent.pid
    finally:
        parent.kill()
        parent.wait()
    child.wait(timeout=30)  # raises psutil.TimeoutExpired if it outlived its parent
    assert not child.is_running()


def test_the_compact_jws_is_the_one_joserfc_would_make(keyring: receipts.Keyring) -> None:
    """Assembled here around libsodium's signature, byte for byte what joserfc serializes."""
    key = keyring.current
    claims = receipts.claims("01ABC", 7, SNAPSHOT, RULE_SET, hashlib.sha256(b"x").digest(), 1)
    ours = key.sign(claims)
    assert ours == jws.serialize_compact(
        dict(key.header), orjson.dumps(claims), key.jwk, algorithms=["EdDSA"]
    )
    signer_input = key.signing_input(orjson.dumps(claims))
    assert ours.startswith(signer_input.decode() + ".")


async def test_service_answers_carry_child_signed_receipts(
    app: FastAPI, http: httpx.AsyncClient, full_key: str, published: Path, raw: asyncpg.Connection
) -> None:
    writer: AuditWriter = app.state.tepat.audit
    assert writer.signer is not None and writer.signer.pid is not None
    fallbacks = writer.signer.fallbacks
    jwks = (await http.get("/.well-known/jwks.json")).json()
    with (published / "anggota.csv").open() as f:
        niks = [p["nik"] for _, p in zip(range(2), csv.DictReader(f), strict=False)]
    r = await http.post("/v1/people/lookup", json={"niks": niks}, headers=auth(full_key))
    assert r.status_code == 200
    claims = _verified(r.headers["tepat-receipt"], r.content, jwks)
    seq = await raw.fetchval("SELECT seq FROM audit_log WHERE id = $1", claims["audit_id"])
    assert claims["seq"] == seq
    assert claims["audit_id"] == r.json()["meta"]["audit_id"]
    assert writer.signer.fallbacks == fallbacks  # signed by the child, not in the server
