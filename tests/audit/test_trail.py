"""The data subject's trail (UU 27/2022 art. 32): exactly the accesses naming that NIK or No. KK."""

from __future__ import annotations

import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.repositories import audit as repo
from app.services import audit

from .conftest import HMAC_KEY, make_entry, random_nik


async def test_trail_finds_exactly_the_records_naming_the_subject(
    engine: AsyncEngine, make_client_row: str
) -> None:
    nik1, nik2, other = random_nik(), random_nik(), random_nik()
    a = make_entry(make_client_row, [audit.nik_subject(nik1), audit.nik_subject(nik2)])
    b = make_entry(make_client_row, [audit.nik_subject(nik2)], operation="graphql")
    # A family whose No. KK has the same 16 digits as nik1: not nik1's access.
    c = make_entry(make_client_row, [audit.no_kk_subject(nik1)], operation="families.lookup")
    d = make_entry(make_client_row, [audit.nik_subject(other)])
    async with audit.running(audit.AuditWriter(engine, HMAC_KEY)) as w:
        for entry in (a, b, c, d):
            await w.record(entry)

    async with engine.connect() as conn:
        trail1 = await audit.trail(conn, HMAC_KEY, audit.nik_subject(nik1))
        trail2 = await audit.trail(conn, HMAC_KEY, audit.nik_subject(nik2))
        family = await audit.trail(conn, HMAC_KEY, audit.no_kk_subject(nik1))
        wrong_key = await audit.trail(conn, b"another key", audit.nik_subject(nik1))
        nobody = await audit.trail(conn, HMAC_KEY, audit.nik_subject(random_nik()))

    assert [t.audit_id for t in trail1] == [a.id]
    assert [t.audit_id for t in trail2] == [a.id, b.id]  # oldest first
    assert [t.audit_id for t in family] == [c.id]
    assert wrong_key == []
    assert nobody == []
    first = trail1[0]
    assert (first.client_id, first.client_name, first.purpose, first.operation) == (
        make_client_row,
        "Trail test client",
        "pbi-verification",
        "people.lookup",
    )
    assert (first.snapshot_id, first.rule_set_id) == ("2026-01-23", "2026.1")


async def test_trail_is_complete_before_and_after_indexing(
    engine: AsyncEngine, make_client_row: str
) -> None:
    nik = random_nik()
    subject = audit.nik_subject(nik)
    first = [make_entry(make_client_row, [subject, audit.nik_subject(random_nik())]) for _ in "ab"]
    later = make_entry(make_client_row, [audit.nik_subject(random_nik()), subject])
    async with audit.running(audit.AuditWriter(engine, HMAC_KEY)) as w:
        for entry in first:
            await w.record(entry)
        async with engine.connect() as conn:  # nothing indexed yet: found by the tail scan
            assert [t.audit_id for t in await audit.trail(conn, HMAC_KEY, subject)] == [
                e.id for e in first
            ]
        done = await audit.index_subjects(engine, batch=1)
        assert done.records >= 2 and done.indexed_upto == done.head
        await w.record(later)  # after the index: found by the tail scan, the rest by the index
    async with engine.connect() as conn:
        trail = await audit.trail(conn, HMAC_KEY, subject)
        key = repo.subject_key(audit.subject_hash(HMAC_KEY, subject))
        indexed = await conn.execute(
            text("SELECT count(*) FROM audit_subjects WHERE subject = :k"), {"k": key}
        )
    assert [t.audit_id for t in trail] == [first[0].id, first[1].id, later.id]
    assert indexed.scalar() == 2  # the two indexed records, one entry each

    again = await audit.index_subjects(engine)
    assert again.records >= 1  # `later`
    assert (await audit.index_subjects(engine)).records == 0  # nothing left: idempotent
    async with engine.connect() as conn:
        assert [t.audit_id for t in await audit.trail(conn, HMAC_KEY, subject)] == [
            e.id for e in (*first, later)
        ]


async def test_an_index_entry_is_confirmed_against_the_full_hash(
    engine: AsyncEngine, make_client_row: str
) -> None:
    """Index keys are 8-byte prefixes: a record whose key matches but whose hash does not (a
    prefix collision, forged here) is not in the trail."""
    subject = audit.nik_subject(random_nik())
    other = make_entry(make_client_row, [audit.nik_subject(random_nik())])
    async with audit.running(audit.AuditWriter(engine, HMAC_KEY)) as w:
        await w.record(other)
    await audit.index_subjects(engine)
    key = repo.subject_key(audit.subject_hash(HMAC_KEY, subject))
    async with engine.begin() as conn:
        seq = (
            await conn.execute(text("SELECT seq FROM audit_log WHERE id = :i"), {"i": other.id})
        ).scalar_one()
        await conn.execute(
            text("INSERT INTO audit_subjects (subject, seq) VALUES (:k, :s)"), {"k": key, "s": seq}
        )
    async with engine.connect() as conn:
        assert await audit.trail(conn, HMAC_KEY, subject) == []


def test_subject_key_is_the_sql_key() -> None:
    """The Python key and the SQL key of the indexer agree (sign included)."""
    assert repo.subject_key(bytes.fromhex("8000000000000001") + bytes(24)) == -(2**63) + 1
    assert repo.subject_key(bytes.fromhex("7fffffffffffffff") + bytes(24)) == 2**63 - 1


async def test_subject_key_matches_the_indexer_expression(engine: AsyncEngine) -> None:
    hashes = [
        bytes.fromhex(h) + bytes(24)
        for h in ("8000000000000001", "ffffffffffffffff", "00000000000000ff")
    ]
    async with engine.connect() as conn:
        keys = (
            (
                await conn.execute(
                    text(
                        "SELECT ('x' || encode(substr(h, 1, 8), 'hex'))::bit(64)::bigint "
                        "FROM unnest(CAST(:hs AS bytea[])) WITH ORDINALITY u(h, i) ORDER BY i"
                    ),
                    {"hs": hashes},
                )
            )
            .scalars()
            .all()
        )
    assert keys == [repo.subject_key(h) for h in hashes]


async def test_trail_reads_the_index_and_only_the_unindexed_tail(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        plan = "\n".join(
            r[0]
            for r in await conn.execute(
                text("EXPLAIN " + repo._TRAIL),
                {"keys": [1, 2], "key_ids": ["hk-a", "hk-b"], "hashes": [b"a", b"b"]},
            )
        )
    assert "pk_audit_subjects" in plan
    assert "Index Cond: (seq > " in plan  # the tail: a range of the primary key (any version)


async def test_trail_answers_across_a_key_rotation(
    engine: AsyncEngine, make_client_row: str
) -> None:
    """Records name the subject key they were hashed with; after TEPAT_AUDIT_HMAC_KEY is
    rotated, a trail given the old key too still finds the accesses made before the rotation,
    and one without it finds only the later ones (indexed or not)."""
    old_key, new_key = b"rotation-old-" + uuid.uuid4().bytes, b"rotation-new-" + uuid.uuid4().bytes
    subject = audit.nik_subject(random_nik())
    before = make_entry(make_client_row, [subject])
    after = make_entry(make_client_row, [subject, audit.nik_subject(random_nik())])
    async with audit.running(audit.AuditWriter(engine, old_key)) as w:
        await w.record(before)
    await audit.index_subjects(engine)  # `before` indexed, `after` found by the tail scan
    async with audit.running(audit.AuditWriter(engine, new_key)) as w:
        await w.record(after)

    async with engine.connect() as conn:
        ids: dict[str, str] = dict(
            (
                await conn.execute(
                    text("SELECT id, hmac_key_id FROM audit_log WHERE id = ANY(:ids)"),
                    {"ids": [before.id, after.id]},
                )
            ).all()
        )
        both = await audit.trail(conn, [new_key, old_key], subject)
        only_new = await audit.trail(conn, new_key, subject)
        only_old = await audit.trail(conn, [old_key], subject)
    assert ids == {before.id: audit.hmac_key_id(old_key), after.id: audit.hmac_key_id(new_key)}
    assert audit.hmac_key_id(old_key) != audit.hmac_key_id(new_key)
    assert [t.audit_id for t in both] == [before.id, after.id]
    assert [t.audit_id for t in only_new] == [after.id]
    assert [t.audit_id for t in only_old] == [before.id]


async def test_a_hash_under_another_key_than_the_record_names_is_not_a_match(
    engine: AsyncEngine, make_client_row: str
) -> None:
    """A record matches only under the key it names: its subject hash, computed under key A,
    is not taken for a hash under key B (the trail compares (key id, hash) pairs)."""
    key_a, key_b = b"pair-a-" + uuid.uuid4().bytes, b"pair-b-" + uuid.uuid4().bytes
    subject = audit.nik_subject(random_nik())
    entry = make_entry(make_client_row, [subject])
    async with audit.running(audit.AuditWriter(engine, key_a)) as w:
        await w.record(entry)
    async with engine.connect() as conn:
        rows = await repo.trail(
            conn, [(audit.hmac_key_id(key_b), audit.subject_hash(key_a, subject))]
        )
        assert rows == []
        rows = await repo.trail(
            conn, [(audit.hmac_key_id(key_a), audit.subject_hash(key_a, subject))]
        )
        assert [r.audit_id for r in rows] == [entry.id]


def test_subject_keys_put_the_current_key_first() -> None:
    from pydantic import SecretStr

    from app.config import Settings

    settings = Settings(
        audit_hmac_key=SecretStr("current-key-current-key-current-key"),
        audit_hmac_old_keys=[SecretStr("old-1"), SecretStr("current-key-current-key-current-key")],
    )
    assert audit.subject_keys(settings) == [b"current-key-current-key-current-key", b"old-1"]
