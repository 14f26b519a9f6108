"""The group-commit writer: durable records, few transactions, failures as AuditUnavailable.

These tests commit (the writer does): each uses its own client id and asserts only on its own
rows. The records they leave are valid links of the one chain, like production's.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app import db
from app.config import Settings
from app.errors import AuditUnavailable
from app.services import audit

from .conftest import HMAC_KEY, make_entry, random_nik

ROLE = "tepat_service"


@pytest.fixture
async def writer(engine: AsyncEngine) -> AsyncIterator[audit.AuditWriter]:
    async with audit.running(audit.AuditWriter(engine, HMAC_KEY, max_wait=0.005)) as w:
        yield w


async def _rows(raw: asyncpg.Connection, client_id: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await raw.fetch(
        "SELECT * FROM audit_log WHERE client_id = $1 ORDER BY seq", client_id
    )
    return rows


@pytest.mark.parametrize("path", ["locked", "one statement"])
async def test_record_is_committed_with_keyed_hashes_and_digest(
    writer: audit.AuditWriter, raw: asyncpg.Connection, path: str
) -> None:
    # A writer's first batch reads the chain's tip under its row lock; later ones are a single
    # compare-and-set statement. Both must store the same thing.
    if path == "one statement":
        await writer.record(make_entry())
    nik, no_kk = random_nik(), random_nik()
    body = b'{"results": [{"nik": "masked"}]}'
    entry = make_entry(
        subjects=[audit.nik_subject(nik), audit.no_kk_subject(no_kk), audit.nik_subject(nik)],
        found=1,
        response_digest=audit.response_digest(body),
    )
    before = dt.datetime.now(dt.UTC)
    await writer.record(entry)
    # Committed: another connection sees it as soon as record() returns.
    (row,) = await _rows(raw, entry.client_id)
    assert row["id"] == entry.id
    assert uuid.UUID(entry.id).version == 7
    assert (row["purpose"], row["operation"], row["snapshot_id"], row["rule_set_id"]) == (
        "pbi-verification",
        "people.lookup",
        "2026-01-23",
        "2026.1",
    )
    assert row["request_id"] == entry.request_id
    assert before <= row["at"] <= dt.datetime.now(dt.UTC)
    expected = [
        hmac.new(HMAC_KEY, f"nik:{nik}".encode(), hashlib.sha256).digest(),
        hmac.new(HMAC_KEY, f"kk:{no_kk}".encode(), hashlib.sha256).digest(),
    ]
    assert [bytes(h) for h in row["subject_hashes"]] == expected  # distinct, in request order
    plain = {hashlib.sha256(s.encode()).digest() for s in (nik, no_kk, f"nik:{nik}")}
    assert not plain & {bytes(h) for h in row["subject_hashes"]}
    assert (row["subject_count"], row["found_count"]) == (3, 1)
    assert bytes(row["response_digest"]) == hashlib.sha256(body).digest()
    text = str(dict(row))
    assert nik not in text
    assert no_kk not in text
    assert writer.stats.locked_batches == 1


async def test_group_commit_writes_many_records_in_few_transactions(
    engine: AsyncEngine, raw: asyncpg.Connection
) -> None:
    client_id = f"test-{uuid.uuid4().hex[:10]}"
    async with audit.running(audit.AuditWriter(engine, HMAC_KEY, max_wait=0.01)) as w:
        await asyncio.gather(*(w.record(make_entry(client_id)) for _ in range(300)))
        stats = w.stats
    assert stats.records == 300
    assert stats.batches <= 10, stats  # one transaction per batch
    assert stats.largest_batch >= 30
    rows = await _rows(raw, client_id)
    assert len(rows) == 300
    seqs = [r["seq"] for r in rows]
    assert len(set(seqs)) == 300


async def test_batch_of_one_is_one_transaction_per_record(engine: AsyncEngine) -> None:
    client_id = f"test-{uuid.uuid4().hex[:10]}"
    async with audit.running(audit.AuditWriter(engine, HMAC_KEY, max_batch=1)) as w:
        await asyncio.gather(*(w.record(make_entry(client_id)) for _ in range(20)))
        assert (w.stats.batches, w.stats.records) == (20, 20)


async def test_stop_flushes_everything_queued(engine: AsyncEngine, raw: asyncpg.Connection) -> None:
    client_id = f"test-{uuid.uuid4().hex[:10]}"
    w = audit.AuditWriter(engine, HMAC_KEY, max_wait=0.05)
    await w.start()
    tasks = [asyncio.create_task(w.record(make_entry(client_id))) for _ in range(50)]
    await asyncio.sleep(0)  # all queued, none committed yet
    await w.stop()
    await asyncio.gather(*tasks)
    assert len(await _rows(raw, client_id)) == 50
    with pytest.raises(AuditUnavailable):
        await w.record(make_entry(client_id))


async def test_chain_stays_valid_across_writers(engine: AsyncEngine) -> None:
    # Two writers (as two processes would) interleave through the audit_head lock.
    client_id = f"test-{uuid.uuid4().hex[:10]}"
    a = audit.AuditWriter(engine, HMAC_KEY, max_batch=7)
    b = audit.AuditWriter(engine, HMAC_KEY, max_batch=5)
    async with audit.running(a), audit.running(b):
        await asyncio.gather(*(w.record(make_entry(client_id)) for _ in range(40) for w in (a, b)))
    async with engine.connect() as conn:
        await conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        result = await audit.verify_chain(conn)
    assert result.ok, result


async def test_a_writer_whose_tip_moved_chains_again_under_the_lock(
    engine: AsyncEngine, raw: asyncpg.Connection
) -> None:
    """Another process appending moves the head: the writer's one-statement append must write
    nothing, and the batch goes in under the lock, after the other's records."""
    client_id = f"test-{uuid.uuid4().hex[:10]}"
    a = audit.AuditWriter(engine, HMAC_KEY)
    b = audit.AuditWriter(engine, HMAC_KEY)
    async with audit.running(a), audit.running(b):
        await a.record(make_entry(client_id))  # a: locked (first), knows the tip
        await a.record(make_entry(client_id))  # a: one statement
        await b.record(make_entry(client_id))  # b moves the head behind a's back
        await a.record(make_entry(client_id))  # a: compare-and-set fails, then locked
        assert (a.stats.batches, a.stats.locked_batches) == (3, 2)
    rows = await _rows(raw, client_id)
    assert len(rows) == 4
    seqs = sorted(r["seq"] for r in rows)
    assert len(set(seqs)) == 4
    async with engine.connect() as conn:
        await conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        result = await audit.verify_chain(conn)
    assert result.ok, result


async def test_one_statement_append_refuses_a_moved_head(raw: asyncpg.Connection) -> None:
    from app.repositories import audit as repo

    seq, tip = await repo.lock_head(raw)  # outside a transaction: just reads it
    records = audit.chain(
        seq + 1,
        bytes(32),
        [audit.unchained_record(make_entry(), HMAC_KEY, dt.datetime.now(dt.UTC))],
    )
    assert not await repo.append_if_head(raw, records)  # the head is at seq, not seq + 1
    # The right seq but another hash: refused too.
    wrong = audit.chain(seq, bytes(32) if tip != bytes(32) else b"\x01" * 32, records)
    assert not await repo.append_if_head(raw, wrong)
    assert await repo.lock_head(raw) == (seq, tip)
    assert await raw.fetchval("SELECT count(*) FROM audit_log WHERE id = $1", records[0].id) == 0


async def test_database_unreachable_raises_audit_unavailable(settings: Settings) -> None:
    dead = db.create_engine(settings, url="postgresql://postgres@127.0.0.1:1/none")
    try:
        async with audit.running(audit.AuditWriter(dead, HMAC_KEY, timeout=3)) as w:
            started = time.monotonic()
            with pytest.raises(AuditUnavailable):
                await w.record(make_entry())
            assert time.monotonic() - started < 3
            # The writer lives on: the next record is tried (and fails) again.
            with pytest.raises(AuditUnavailable):
                await w.record(make_entry())
            assert w.stats.failed_batches == 2
    finally:
        await dead.dispose()


async def test_a_failed_batch_fails_its_callers_and_the_next_batch_succeeds(
    writer: audit.AuditWriter, raw: asyncpg.Connection
) -> None:
    first = make_entry()
    await writer.record(first)
    with pytest.raises(AuditUnavailable):
        await writer.record(make_entry(id=first.id))  # unique id violated: the batch fails
    second = make_entry()
    await writer.record(second)
    assert len(await _rows(raw, second.client_id)) == 1


async def test_the_writer_keeps_its_connection_and_replaces_one_the_server_closed(
    writer: audit.AuditWriter, raw: asyncpg.Connection
) -> None:
    async def writer_pid(entry: audit.AuditEntry) -> int:
        kept = writer._conn  # white box: the connection the writer keeps
        assert kept is not None, f"no connection kept after {entry.id}"
        driver = (await kept.get_raw_connection()).driver_connection
        assert isinstance(driver, asyncpg.Connection)
        pid: int = driver.get_server_pid()
        return pid

    first = make_entry()
    await writer.record(first)
    pid = await writer_pid(first)
    second = make_entry()
    await writer.record(second)
    assert await writer_pid(second) == pid  # one connection, kept between batches
    await raw.execute("SELECT pg_terminate_backend($1)", pid)
    await asyncio.sleep(0.2)  # the writer's loop reads the server's goodbye
    third = make_entry()
    await writer.record(third)  # written on a new connection, not failed
    assert await writer_pid(third) != pid
    assert len(await _rows(raw, third.client_id)) == 1


async def test_stalled_writes_time_out_then_recover(
    engine: AsyncEngine, raw: asyncpg.Connection
) -> None:
    client_id = f"test-{uuid.uuid4().hex[:10]}"
    async with audit.running(audit.AuditWriter(engine, HMAC_KEY, timeout=0.5)) as w:
        tx = raw.transaction()
        await tx.start()
        await raw.execute("SELECT 1 FROM audit_head FOR UPDATE")  # another process holds the head
        try:
            started = time.monotonic()
            with pytest.raises(AuditUnavailable):
                await w.record(make_entry(client_id))
            assert time.monotonic() - started < 1.5
        finally:
            await tx.rollback()
        await w.record(make_entry(client_id))
    # The timed-out batch may or may not have committed; the later one certainly did.
    assert len(await _rows(raw, client_id)) >= 1


async def test_a_full_queue_fails_fast(engine: AsyncEngine, raw: asyncpg.Connection) -> None:
    w = audit.AuditWriter(engine, HMAC_KEY, max_batch=1, queue_size=2, timeout=10)
    async with audit.running(w):
        tx = raw.transaction()
        await tx.start()
        await raw.execute("SELECT 1 FROM audit_head FOR UPDATE")
        try:
            waiting = [asyncio.create_task(w.record(make_entry()))]
            await asyncio.sleep(0.2)  # its batch is blocked on the lock
            waiting += [asyncio.create_task(w.record(make_entry())) for _ in range(2)]
            await asyncio.sleep(0.05)  # two more entries fill the queue
            started = time.monotonic()
            with pytest.raises(AuditUnavailable, match="saturated"):
                await w.record(make_entry())
            assert time.monotonic() - started < 0.1
        finally:
            await tx.rollback()
        await asyncio.gather(*waiting)  # released: the queued ones commit


async def test_entries_must_name_the_subject_kind(writer: audit.AuditWriter) -> None:
    with pytest.raises(ValueError, match="nik_subject"):
        await writer.record(make_entry(subjects=[random_nik()]))


# --- the service role --------------------------------------------------------------------------


@pytest.fixture
async def service_engine(database_url: str, engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    """The app's connections as the lead wires them: SET ROLE tepat_service at connect."""
    e = create_async_engine(
        db.sqlalchemy_url(database_url),
        connect_args={"server_settings": {"role": ROLE}, "timeout": 5},
    )
    yield e
    await e.dispose()


async def test_writer_works_under_the_service_role(
    service_engine: AsyncEngine, raw: asyncpg.Connection
) -> None:
    client_id = f"test-{uuid.uuid4().hex[:10]}"
    async with service_engine.connect() as c:
        assert (await c.exec_driver_sql("SELECT current_user")).scalar() == ROLE
    async with audit.running(audit.AuditWriter(service_engine, HMAC_KEY)) as w:
        await asyncio.gather(*(w.record(make_entry(client_id)) for _ in range(10)))
        assert w.stats.failed_batches == 0
    assert len(await _rows(raw, client_id)) == 10


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_log SET purpose = 'x'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
        "INSERT INTO api_clients (id, name, programs, field_groups, purposes, key_hash, key_prefix)"
        " VALUES ('x', 'x', '{}', '{}', '{}', '\\x00', 'x')",
        "UPDATE api_clients SET revoked_at = NULL",
        # The trail's subject index is operator work (tepat audit index), not the service's.
        "INSERT INTO audit_subjects (subject, seq) VALUES (1, 1)",
        "DELETE FROM audit_subjects",
        "UPDATE audit_index SET indexed_upto = indexed_upto + 1000",
    ],
)
async def test_service_role_cannot_change_the_record(
    database_url: str, engine: AsyncEngine, statement: str
) -> None:
    raw = await asyncpg.connect(db.asyncpg_dsn(database_url), server_settings={"role": ROLE})
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
            await raw.execute(statement)
    finally:
        await raw.close()


async def test_service_role_reads_the_data_tables(database_url: str, engine: AsyncEngine) -> None:
    raw = await asyncpg.connect(db.asyncpg_dsn(database_url), server_settings={"role": ROLE})
    try:
        for table in ("snapshots", "rule_sets", "people", "families", "api_clients", "audit_log"):
            await raw.fetchval(f"SELECT count(*) FROM {table}")
    finally:
        await raw.close()


async def test_trigger_refuses_update_and_delete_even_for_the_owner(
    raw: asyncpg.Connection, writer: audit.AuditWriter
) -> None:
    await writer.record(make_entry())
    for statement in ("UPDATE audit_log SET purpose = 'x'", "DELETE FROM audit_log"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await raw.execute(statement)
