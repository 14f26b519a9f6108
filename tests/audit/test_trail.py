"""The data subject's trail (UU 27/2022 art. 32): exactly the accesses naming that NIK or No. KK."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncEngine

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


async def test_trail_uses_the_gin_index(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        plan = "\n".join(
            r[0]
            for r in await conn.exec_driver_sql(
                "EXPLAIN SELECT id FROM audit_log WHERE subject_hashes @> ARRAY[$1::bytea]",
                (uuid.uuid4().bytes,),
            )
        )
    assert "ix_audit_log_subject_hashes" in plan
