"""Audit ids (and the DCI face's correlation and message ids): UUID version 7, time-ordered,
unique; their random bits, read from the OS in blocks, are never shared with a forked child."""

from __future__ import annotations

import os
import time
import uuid

from app.services.audit import records


def test_ids_are_version_7_and_unique_across_pool_refills() -> None:
    ids = [records.new_audit_id() for _ in range(5_000)]  # 50 KB of random bits: 12 refills
    assert len(set(ids)) == len(ids)
    for text in ids[:50]:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
    as_uuid = records.new_uuid7()
    assert as_uuid.version == 7
    assert as_uuid.variant == uuid.RFC_4122


def test_ids_follow_the_clock() -> None:
    first = uuid.UUID(records.new_audit_id())
    time.sleep(0.003)
    second = records.new_uuid7()
    assert first.int >> 80 < second.int >> 80  # the 48-bit millisecond prefix
    assert abs((first.int >> 80) - time.time_ns() // 1_000_000) < 5_000


def test_a_forked_child_draws_other_random_bits() -> None:
    records.new_audit_id()  # the pool holds unused bits now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id's random bits, then leave at once
        os.close(read)
        os.write(write, records.new_audit_id()[-12:].encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert child != records.new_audit_id()[-12:]
