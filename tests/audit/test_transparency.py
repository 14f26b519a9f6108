"""The audit log's Merkle tree and signed checkpoints catch the rewrites the hash chain cannot.

Each rewrite below is what someone holding the database's owner credentials could do: the
chain still verifies after it (so the chain alone misses it), no checkpoint means nothing to
contradict (missed again), and a checkpoint signed before the rewrite catches it, naming the
checkpoint and the first record that differs. Proofs from the stored tree equal an independent
implementation of RFC 9162's definitions (tests/tlog/rfc9162.py).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.ext.asyncio import AsyncConnection

from app.repositories import audit as audit_repo
from app.repositories import tree as repo
from app.repositories.audit import AuditRecord
from app.services import audit, transparency
from app.tlog import merkle, note
from tests.audit.conftest import HMAC_KEY, make_entry, private_chain
from tests.tlog import rfc9162

ORIGIN = "tepat.test/audit-log"
KEY = Ed25519PrivateKey.generate()
OPEN = transparency.opener(ORIGIN, [KEY.public_key().public_bytes_raw()])


async def _records(raw: asyncpg.Connection) -> list[AuditRecord]:
    return await repo.records_from(raw, 1, 1_000_000)


async def _rewrite(
    raw: asyncpg.Connection, change: Callable[[list[AuditRecord]], list[AuditRecord]]
) -> None:
    """As an attacker with the owner's credentials: replace the log by `change(records)`,
    renumbered and re-chained from the start, and move the head to its new tip."""
    kept = change(await _records(raw))
    await raw.execute("DELETE FROM audit_log")
    chained = audit.chain(0, audit.GENESIS, kept)
    if chained:
        await audit_repo.insert_many(raw, chained)
    tip = (chained[-1].seq, chained[-1].hash) if chained else (0, audit.GENESIS)
    await audit_repo.set_head(raw, *tip)


async def _truncate(raw: asyncpg.Connection, keep: int) -> None:
    """Delete the last records and move the head back to the last one kept (no re-chaining)."""
    await raw.execute("DELETE FROM audit_log WHERE seq > $1", keep)
    row = await raw.fetchrow("SELECT seq, hash FROM audit_log WHERE seq = $1", keep)
    assert row is not None
    await audit_repo.set_head(raw, row["seq"], bytes(row["hash"]))


def _without(seq: int) -> Callable[[list[AuditRecord]], list[AuditRecord]]:
    return lambda rs: [r for r in rs if r.seq != seq]


def _edited(seq: int) -> Callable[[list[AuditRecord]], list[AuditRecord]]:
    def change(rs: list[AuditRecord]) -> list[AuditRecord]:
        out = []
        for r in rs:
            if r.seq == seq:  # another client, and the subjects of someone else
                r = dataclasses.replace(r, client_id="someone-else", subject_hashes=(bytes(32),))
            out.append(r)
        return out

    return change


async def _chain_ok(conn: AsyncConnection) -> bool:
    return (await audit.verify_chain(conn)).ok


REWRITES = ["truncate and move the head", "wipe and reset", "delete and recompute",
            "edit and recompute"]  # fmt: skip


@pytest.mark.parametrize("rewrite", REWRITES)
async def test_a_rewrite_is_caught_only_against_an_earlier_checkpoint(
    conn: AsyncConnection, tmp_path: Path, rewrite: str
) -> None:
    raw, _ = await private_chain(conn, 40)
    made = await transparency.make_checkpoint(raw, ORIGIN, KEY, tmp_path)
    assert made.size == 40 and made.new and made.path == tmp_path / "40"
    published = transparency.read_published(tmp_path, OPEN)
    assert (await transparency.verify_against(raw, published)).ok  # the honest log holds

    if rewrite == "truncate and move the head":
        await _truncate(raw, 33)
        first: int | None = 34
    elif rewrite == "wipe and reset":
        await _rewrite(raw, lambda rs: [])
        first = 1
    elif rewrite == "delete and recompute":
        await _rewrite(raw, _without(10))
        first = 10
    else:
        await _rewrite(raw, _edited(10))
        first = 10

    assert await _chain_ok(conn)  # the hash chain alone misses every one of these
    assert (await transparency.verify_against(raw, [])).ok  # and so does no checkpoint
    verdict = await transparency.verify_against(raw, published)
    assert verdict.contradiction is not None
    assert verdict.contradiction.checkpoint == tmp_path / "40"
    assert verdict.contradiction.first_record == first


async def test_a_rewrite_that_also_wipes_the_tree_is_still_caught(
    conn: AsyncConnection, tmp_path: Path
) -> None:
    raw, _ = await private_chain(conn, 30)
    await transparency.make_checkpoint(raw, ORIGIN, KEY, tmp_path / "a")
    await audit.append(raw, await _fresh(raw, 10))
    await transparency.make_checkpoint(raw, ORIGIN, KEY, tmp_path / "a")
    published = transparency.read_published(tmp_path / "a", OPEN)
    assert [p.size for p in published] == [30, 40]
    await _rewrite(raw, _edited(35))
    await raw.execute("DELETE FROM audit_tree")
    verdict = await transparency.verify_against(raw, published)
    assert verdict.contradiction is not None
    assert verdict.contradiction.checkpoint == tmp_path / "a" / "40"
    assert verdict.checked == [tmp_path / "a" / "30"]  # the earlier checkpoint still holds
    assert verdict.contradiction.between == (30, 40)  # without the stored leaves: the range


async def _fresh(raw: asyncpg.Connection, n: int) -> list[AuditRecord]:
    """n more records to append, as the writer makes them."""
    now = dt.datetime.now(dt.UTC)
    return [audit.unchained_record(make_entry(), HMAC_KEY, now) for _ in range(n)]


async def test_checkpoints_are_signed_notes_and_never_overwritten(
    conn: AsyncConnection, tmp_path: Path
) -> None:
    raw, _ = await private_chain(conn, 5)
    made = await transparency.make_checkpoint(raw, ORIGIN, KEY, tmp_path)
    text = made.path.read_bytes()
    checkpoint = note.open_note(text, [note.VerifierKey.of(ORIGIN, KEY.public_key())], ORIGIN)
    assert (checkpoint.size, checkpoint.root_hash) == (5, made.root)
    assert text.startswith(f"{ORIGIN}\n5\n".encode())
    again = await transparency.make_checkpoint(raw, ORIGIN, KEY, tmp_path)
    assert not again.new and again.path.read_bytes() == text  # same size: same bytes
    assert await repo.latest_checkpoint(raw) == (5, text.decode())
    made.path.write_bytes(text.replace(b"\n5\n", b"\n6\n"))
    with pytest.raises(ValueError, match="5"):  # a changed note no longer verifies
        transparency.read_published(tmp_path, OPEN)
    other = Ed25519PrivateKey.generate()
    with pytest.raises(transparency.CheckpointConflict):
        await transparency.make_checkpoint(raw, ORIGIN, other, tmp_path)


async def test_proofs_from_the_stored_tree_match_rfc_9162(
    conn: AsyncConnection, tmp_path: Path
) -> None:
    raw, _ = await private_chain(conn, 1)
    for n in (1, 2, 5, 56, 64, 1, 70):  # checkpoints at 2, 4, 9, 65, 129, 130, 200
        await audit.append(raw, await _fresh(raw, n))
        await transparency.make_checkpoint(raw, ORIGIN, KEY, tmp_path)
    leaves = tuple(audit.canonical_bytes(r) for r in await _records(raw))
    size = len(leaves)
    assert await repo.tree_size(raw) == size == 200
    assert [p.size for p in transparency.read_published(tmp_path, OPEN)] == [
        2,
        4,
        9,
        65,
        129,
        130,
        200,
    ]
    for n in range(1, size + 1):
        assert await transparency.root_at(raw, n) == rfc9162.mth(leaves[:n])
    for n in (1, 2, 3, 7, 8, 9, 64, 65, 128, 129, 200):
        for m in range(n):
            assert await transparency.inclusion(raw, m, n) == rfc9162.path(m, leaves[:n])
    for n in (2, 9, 65, 130, 200):
        for m in range(1, n + 1):
            proof = await transparency.consistency(raw, m, n)
            assert proof == rfc9162.proof(m, leaves[:n])
            old, new = rfc9162.mth(leaves[:m]), rfc9162.mth(leaves[:n])
            assert merkle.verify_consistency(m, n, old, new, proof)


async def test_extending_refuses_a_gap_in_the_numbering(conn: AsyncConnection) -> None:
    raw, _ = await private_chain(conn, 8)
    await raw.execute("DELETE FROM audit_log WHERE seq = 5")
    with pytest.raises(transparency.Gap, match="seq 5 is missing"):
        await transparency.extend(raw)
