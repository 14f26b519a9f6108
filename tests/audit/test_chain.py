"""The hash chain: verify passes on an intact log and names the first tampered record."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.services import audit

from .conftest import HMAC_KEY, make_entry, private_chain


async def test_intact_chain_verifies(conn: AsyncConnection) -> None:
    _, records = await private_chain(conn, 10)
    result = await audit.verify_chain(conn)
    assert result.ok, result
    assert result.checked == 10
    assert result.head_seq == 10
    assert result.head_hash == records[-1].hash.hex()
    assert records[0].prev_hash == audit.GENESIS
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(records))


async def test_empty_chain_verifies(conn: AsyncConnection) -> None:
    await private_chain(conn, 0)
    result = await audit.verify_chain(conn)
    assert result.ok
    assert result.checked == 0


async def test_hash_covers_every_field() -> None:
    record = audit.unchained_record(make_entry(), HMAC_KEY, audit._EPOCH)
    base = audit.record_hash(audit.GENESIS, record)
    changes: dict[str, Any] = {
        "seq": 7,
        "id": "x",
        "at": audit._EPOCH.replace(microsecond=1),
        "client_id": "x",
        "purpose": "x",
        "operation": "x",
        "snapshot_id": None,
        "rule_set_id": "",
        "subject_hashes": (),
        "subject_count": 2,
        "found_count": 0,
        "response_digest": bytes(32),
        "request_id": "x",
        "hmac_key_id": "hk-0000000000000000",
    }
    assert set(changes) | {"prev_hash", "hash"} == {f.name for f in dataclasses.fields(record)}
    for name, value in changes.items():
        assert (
            audit.record_hash(audit.GENESIS, dataclasses.replace(record, **{name: value})) != base
        ), name
    assert audit.record_hash(bytes([1]) * 32, record) != base


async def test_altered_record_is_named(conn: AsyncConnection) -> None:
    _, records = await private_chain(conn, 10)
    await conn.execute(text("UPDATE audit_log SET purpose = 'marketing' WHERE seq = 5"))
    result = await audit.verify_chain(conn)
    assert (result.ok, result.problem, result.seq, result.audit_id) == (
        False,
        "altered",
        5,
        records[4].id,
    )
    assert result.checked == 4


async def test_altered_and_rehashed_record_is_named(conn: AsyncConnection) -> None:
    raw, records = await private_chain(conn, 10)
    forged = dataclasses.replace(records[4], found_count=0)
    await raw.execute(
        "UPDATE audit_log SET found_count = 0, hash = $1 WHERE seq = 5",
        audit.record_hash(forged.prev_hash, forged),
    )
    result = await audit.verify_chain(conn)
    assert (result.problem, result.seq, result.audit_id) == ("altered", 5, records[4].id)


async def test_rehashed_last_record_disagrees_with_the_head(conn: AsyncConnection) -> None:
    raw, records = await private_chain(conn, 10)
    forged = dataclasses.replace(records[9], client_id="someone-else")
    await raw.execute(
        "UPDATE audit_log SET client_id = 'someone-else', hash = $1 WHERE seq = 10",
        audit.record_hash(forged.prev_hash, forged),
    )
    result = await audit.verify_chain(conn)
    assert (result.problem, result.seq, result.audit_id) == ("altered", 10, records[9].id)


async def test_deleted_record_is_detected(conn: AsyncConnection) -> None:
    _, records = await private_chain(conn, 10)
    await conn.execute(text("DELETE FROM audit_log WHERE seq = 5"))
    result = await audit.verify_chain(conn)
    assert (result.problem, result.seq, result.audit_id) == ("deleted", 6, records[5].id)
    assert "5..5" in (result.reason or "")


async def test_deleted_tail_is_detected_by_the_head(conn: AsyncConnection) -> None:
    await private_chain(conn, 10)
    await conn.execute(text("DELETE FROM audit_log WHERE seq >= 9"))
    result = await audit.verify_chain(conn)
    assert (result.ok, result.problem, result.seq) == (False, "deleted", 9)


async def test_inserted_record_is_named(conn: AsyncConnection) -> None:
    # The attacker makes room after seq 5, forges a record chained to 5 and moves the head.
    raw, records = await private_chain(conn, 10)
    await raw.execute("UPDATE audit_log SET seq = seq + 1000 WHERE seq > 5")
    await raw.execute("UPDATE audit_log SET seq = seq - 999 WHERE seq > 1000")
    fake = audit.unchained_record(make_entry(), HMAC_KEY, records[4].at)
    fake = dataclasses.replace(fake, seq=6, prev_hash=records[4].hash)
    fake = dataclasses.replace(fake, hash=audit.record_hash(fake.prev_hash, fake))
    from app.repositories import audit as repo

    await repo.insert_many(raw, [fake])
    await repo.set_head(raw, 11, records[9].hash)
    result = await audit.verify_chain(conn)
    assert (result.problem, result.seq, result.audit_id) == ("inserted", 6, fake.id)


async def test_record_appended_past_the_head_is_inserted(conn: AsyncConnection) -> None:
    raw, records = await private_chain(conn, 10)
    fake = audit.unchained_record(make_entry(), HMAC_KEY, records[9].at)
    fake = dataclasses.replace(fake, seq=11, prev_hash=records[9].hash)
    fake = dataclasses.replace(fake, hash=audit.record_hash(fake.prev_hash, fake))
    from app.repositories import audit as repo

    await repo.insert_many(raw, [fake])  # head not moved: no writer appended it
    result = await audit.verify_chain(conn)
    assert (result.problem, result.seq, result.audit_id) == ("inserted", 11, fake.id)


async def test_swapped_records_are_reordered(conn: AsyncConnection) -> None:
    _, records = await private_chain(conn, 10)
    await conn.execute(text("UPDATE audit_log SET seq = 1000 WHERE seq = 4"))
    await conn.execute(text("UPDATE audit_log SET seq = 4 WHERE seq = 5"))
    await conn.execute(text("UPDATE audit_log SET seq = 5 WHERE seq = 1000"))
    result = await audit.verify_chain(conn)
    assert (result.problem, result.seq, result.audit_id) == ("reordered", 4, records[4].id)


async def test_first_bad_record_wins(conn: AsyncConnection) -> None:
    _, records = await private_chain(conn, 10)
    await conn.execute(text("UPDATE audit_log SET operation = 'x' WHERE seq IN (3, 8)"))
    await conn.execute(text("DELETE FROM audit_log WHERE seq = 9"))
    result = await audit.verify_chain(conn)
    assert (result.problem, result.seq, result.audit_id) == ("altered", 3, records[2].id)


def test_subject_hash_is_hmac_sha256_for_any_key_length() -> None:
    """The precomputed-pad HMAC equals the standard library's for short, block-size and long keys."""
    import hashlib
    import hmac

    for key in (b"k", b"x" * 63, b"y" * 64, b"z" * 65, bytes(range(256)) * 2):
        for subject in ("nik:3201010101900001", "kk:3201010101900002", "nik:"):
            expected = hmac.new(key, subject.encode(), hashlib.sha256).digest()
            assert audit.subject_hash(key, subject) == expected
        entry = make_entry()
        record = audit.unchained_record(entry, key, audit._EPOCH)
        assert (
            record.subject_hashes[0]
            == hmac.new(key, entry.subjects[0].encode(), hashlib.sha256).digest()
        )


def test_canonical_encoding_of_hashes_of_any_length() -> None:
    """Hashes are u32 length + bytes each, whether all are 32 bytes (one join) or not (a stored
    record altered to odd lengths must still encode unambiguously)."""
    import struct

    record = audit.unchained_record(make_entry(), HMAC_KEY, audit._EPOCH)

    def spelled(hashes: tuple[bytes, ...]) -> bytes:
        return b"".join(struct.pack(">I", len(h)) + h for h in hashes)

    for hashes in ((bytes(32), bytes([1]) * 32), (bytes(31), bytes(33)), (), (bytes(32),)):
        changed = dataclasses.replace(record, subject_hashes=hashes)
        encoded = audit.canonical_bytes(changed)
        assert struct.pack(">I", len(hashes)) + spelled(hashes) in encoded
    odd = dataclasses.replace(record, subject_hashes=(bytes(31), bytes(33)))
    even = dataclasses.replace(record, subject_hashes=(bytes(32), bytes(32)))
    assert audit.record_hash(audit.GENESIS, odd) != audit.record_hash(audit.GENESIS, even)
