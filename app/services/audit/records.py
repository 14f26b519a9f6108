"""Audit records and their hashes: identifiers, keyed subject hashes, the canonical bytes, the chain.

Records form a hash chain: `hash = sha256(prev_hash || canonical_bytes(record))`, the first
`prev_hash` being 32 zero bytes (GENESIS), so altering, deleting, inserting or reordering a
record breaks the chain at that record. `canonical_bytes` is the fixed encoding below (version
tag `tepat-audit-v1`); changing it needs a new tag, never a silent edit, or every existing chain
stops verifying.

Subjects are stored only as HMAC-SHA256 under `settings.audit_hmac_key`: a plain hash of a NIK
is reversible (its structure leaves ~10^12 candidates). A subject string carries its kind,
`nik:<16 digits>` or `kk:<16 digits>` (see `nik_subject`, `no_kk_subject`), because a No. KK and
an unrelated person's NIK can be the same 16 digits and a citizen's trail must not show
accesses to someone else's family.

Every record names the HMAC key its subjects were hashed with (`hmac_key_id`, derived from the
key by `hmac_key_id`, so it names the key without revealing it), so the key can be rotated:
records keep their key id, trails hash the subject under every key still configured
(`TEPAT_AUDIT_HMAC_KEY` and `TEPAT_AUDIT_HMAC_OLD_KEYS`) and match each record under its own.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import os
import struct
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from app.config import Settings
from app.repositories.audit import AuditRecord

GENESIS = bytes(32)
HASH_TAG = b"tepat-audit-v2\x00"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_NULL = 0xFFFFFFFF
SUBJECT_KINDS = ("nik:", "kk:")


# --- identifiers and hashes --------------------------------------------------------------------


def new_audit_id() -> str:
    """A time-ordered UUID (version 7 layout: 48-bit Unix ms, then 74 random bits), as text.

    The caller makes it before rendering the response, so the body can carry it; time order
    keeps the unique index on audit_log.id append-mostly.
    """
    h = f"{_uuid7_int():032x}"  # str(uuid.UUID(int=value)), without building the object
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_uuid7() -> uuid.UUID:
    """`new_audit_id`'s layout as a UUID (DCI correlation and message ids)."""
    return uuid.UUID(int=_uuid7_int())


def _uuid7_int() -> int:
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(_random_bytes(10), "big")
    value = (ms & (2**48 - 1)) << 80 | 0x7 << 76 | (rand >> 68 & 0xFFF) << 64
    return value | 0b10 << 62 | rand & (2**62 - 1)


# The random bits of identifiers, read from the OS 4 KiB at a time rather than with a system
# call each (three an answer on the DCI face). Per process: a forked child starts afresh.
_POOL = 4096
_pool = b""
_taken = _POOL
_pool_lock = threading.Lock()


def _random_bytes(n: int) -> bytes:
    global _pool, _taken
    with _pool_lock:
        if _taken + n > len(_pool):
            _pool, _taken = os.urandom(_POOL), 0
        out = _pool[_taken : _taken + n]
        _taken += n
    return out


def _forget_pool() -> None:
    global _pool, _taken
    _pool, _taken = b"", _POOL


os.register_at_fork(after_in_child=_forget_pool)


SIDES = ".."  # between the two releases (or rule sets) a record of a change list names


def two_sides(before: str, after: str) -> str:
    """How the record of an answer read from two releases names them (a change list: `from`
    then `to`), in its snapshot_id and rule_set_id: `2025-10-23..2026-01-23`. Neither a
    snapshot id nor a rule-set id holds a dot, so the pair splits back unambiguously; both are
    named even when equal, so an audit of the list can be reproduced from its records alone."""
    return f"{before}{SIDES}{after}"


def nik_subject(nik: str) -> str:
    return "nik:" + nik


def no_kk_subject(no_kk: str) -> str:
    return "kk:" + no_kk


def subject_hash(key: bytes, subject: str) -> bytes:
    """HMAC-SHA256 of a subject (`nik:...` or `kk:...`): only the key holder can test a guess."""
    inner, outer = _keyed(key)
    h = inner.copy()
    h.update(subject.encode("utf-8"))
    o = outer.copy()
    o.update(h.digest())
    digest: bytes = o.digest()
    return digest


@functools.lru_cache(maxsize=8)
def _keyed(key: bytes) -> tuple[Any, Any]:
    """HMAC-SHA256 (RFC 2104) with the key's inner and outer pads hashed once: each subject then
    costs two copies and two short hashes, in C (a bulk chunk hashes 1,000 NIKs: ~0.5 us each,
    against ~0.85 through hmac.HMAC.copy). tests/audit checks it equals hmac.new."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
    return inner, outer


_BLOCK = 64  # SHA-256's block size


def hmac_key_id(key: bytes) -> str:
    """The id a record names its subject key by: `hk-` and 16 hex digits of
    HMAC-SHA256(key, "tepat audit subject key id"). It changes with the key and, the key being a
    secret of at least 32 bytes in production, tells nothing about it."""
    return "hk-" + hmac.new(key, b"tepat audit subject key id", "sha256").hexdigest()[:16]


def subject_keys(settings: Settings) -> list[bytes]:
    """The keys a trail searches under: the current `TEPAT_AUDIT_HMAC_KEY` first, then the
    rotated ones still kept for trails (`TEPAT_AUDIT_HMAC_OLD_KEYS`)."""
    keys = [settings.audit_hmac_key, *settings.audit_hmac_old_keys]
    return list(dict.fromkeys(k.get_secret_value().encode() for k in keys))


def response_digest(body: bytes) -> bytes:
    return hashlib.sha256(body).digest()


def _str(value: str | None) -> bytes:
    if value is None:
        return struct.pack(">I", _NULL)
    data = value.encode("utf-8")
    return struct.pack(">I", len(data)) + data


def _bytes(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


_LEN32 = struct.pack(">I", 32)


def _hashes(hashes: Sequence[bytes]) -> bytes:
    """Each hash as bytes (u32 length + the bytes), concatenated; in one join when all are 32
    bytes long, as every hash the writer makes is (a stored record may not be: verify)."""
    if set(map(len, hashes)) <= {32}:
        return _LEN32 + _LEN32.join(hashes) if hashes else b""
    return b"".join(_bytes(h) for h in hashes)


def canonical_bytes(r: AuditRecord, seq: int | None = None) -> bytes:
    """Every field but prev_hash and hash, in one fixed, unambiguous encoding.

    In order: HASH_TAG; seq as u64; id as str; at as i64 microseconds since 1970-01-01 UTC;
    client_id, purpose, operation as str; snapshot_id, rule_set_id as nullable str; the number of
    subject hashes as u32, then each as bytes; subject_count and found_count as i64;
    response_digest as bytes; request_id as str; hmac_key_id as str. All integers big-endian; str is u32 length +
    UTF-8 (length 0xFFFFFFFF for NULL); bytes is u32 length + the bytes. `seq` overrides the
    record's own (the writer hashes a record before placing it).
    """
    micros = (r.at - _EPOCH) // dt.timedelta(microseconds=1)
    parts = [
        HASH_TAG,
        struct.pack(">Q", r.seq if seq is None else seq),
        _str(r.id),
        struct.pack(">q", micros),
        _str(r.client_id),
        _str(r.purpose),
        _str(r.operation),
        _str(r.snapshot_id),
        _str(r.rule_set_id),
        struct.pack(">I", len(r.subject_hashes)),
        _hashes(r.subject_hashes),
        struct.pack(">qq", r.subject_count, r.found_count),
        _bytes(r.response_digest),
        _str(r.request_id),
        _str(r.hmac_key_id),
    ]
    return b"".join(parts)


def record_hash(prev_hash: bytes, r: AuditRecord) -> bytes:
    return hashlib.sha256(prev_hash + canonical_bytes(r)).digest()


# --- entries and the chain ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """What a request reports about one access. `subjects` use nik_subject / no_kk_subject."""

    id: str
    client_id: str
    purpose: str
    operation: str
    snapshot_id: str | None
    rule_set_id: str | None
    subjects: Sequence[str]
    found: int
    response_digest: bytes
    request_id: str


def unchained_record(
    entry: AuditEntry, hmac_key: bytes, at: dt.datetime, key_id: str | None = None
) -> AuditRecord:
    """The record an entry becomes, before the writer gives it a place in the chain. `key_id`
    is `hmac_key_id(hmac_key)`, passed by a caller that computed it once."""
    for text in (entry.id, entry.client_id, entry.purpose, entry.operation, entry.request_id):
        if not text or "\x00" in text:
            raise ValueError("audit entry text fields must be non-empty and without NUL")
    if len(entry.response_digest) != 32:
        raise ValueError("response_digest must be a sha256 digest (32 bytes)")
    if entry.found < 0:
        raise ValueError("found must not be negative")
    hashes: dict[bytes, None] = {}  # distinct, in request order
    inner, outer = _keyed(hmac_key)
    for subject in entry.subjects:
        if not subject.startswith(SUBJECT_KINDS):
            raise ValueError("audit subjects must be nik_subject(...) or no_kk_subject(...)")
        h = inner.copy()
        h.update(subject.encode())
        o = outer.copy()
        o.update(h.digest())
        hashes[o.digest()] = None
    return AuditRecord(
        seq=0,
        id=entry.id,
        at=at,
        client_id=entry.client_id,
        purpose=entry.purpose,
        operation=entry.operation,
        snapshot_id=entry.snapshot_id,
        rule_set_id=entry.rule_set_id,
        subject_hashes=tuple(hashes),
        subject_count=len(entry.subjects),
        found_count=entry.found,
        response_digest=entry.response_digest,
        request_id=entry.request_id,
        hmac_key_id=hmac_key_id(hmac_key) if key_id is None else key_id,
        prev_hash=b"",
        hash=b"",
    )


def chain(seq: int, prev: bytes, records: Sequence[AuditRecord]) -> list[AuditRecord]:
    """`records` placed after the chain's tip (seq, hash): numbered, linked and hashed."""
    chained = []
    for r in records:
        seq += 1
        h = hashlib.sha256(prev + canonical_bytes(r, seq)).digest()
        placed = AuditRecord(
            seq, r.id, r.at, r.client_id, r.purpose, r.operation, r.snapshot_id,
            r.rule_set_id, r.subject_hashes, r.subject_count, r.found_count,
            r.response_digest, r.request_id, r.hmac_key_id, prev, h,
        )  # fmt: skip
        chained.append(placed)
        prev = h
    return chained
