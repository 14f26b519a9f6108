"""The audit trail (UU 27/2022 art. 31-32): group-committed, hash-chained records, verify, trail.

Every access to personal data writes one record before the response leaves. One module a job:

- `records`: identifiers, keyed subject hashes, the canonical bytes and the hash chain;
- `writer`: the group-commit writer (`AuditWriter`, `running`, `append`);
- `verify`: walking the chain (`verify_chain`);
- `trails`: a subject's trail and the subject index behind it (`trail`, `index_subjects`).

The SQL they run is in app.repositories.audit. The names below are re-exported so that
`from app.services.audit import ...` keeps working.
"""

from __future__ import annotations

from app.repositories.audit import AuditRecord
from app.services.audit.records import (
    _EPOCH as _EPOCH,  # tests build records at the epoch
)
from app.services.audit.records import (
    GENESIS,
    HASH_TAG,
    SUBJECT_KINDS,
    AuditEntry,
    canonical_bytes,
    chain,
    hmac_key_id,
    new_audit_id,
    nik_subject,
    no_kk_subject,
    record_hash,
    response_digest,
    subject_hash,
    subject_keys,
    unchained_record,
)
from app.services.audit.trails import Indexed, TrailEntry, index_subjects, trail
from app.services.audit.verify import Problem, VerifyResult, verify_chain
from app.services.audit.writer import AuditWriter, WriterStats, append, running

__all__ = [
    "GENESIS",
    "HASH_TAG",
    "SUBJECT_KINDS",
    "AuditEntry",
    "AuditRecord",
    "AuditWriter",
    "Indexed",
    "Problem",
    "TrailEntry",
    "VerifyResult",
    "WriterStats",
    "append",
    "canonical_bytes",
    "chain",
    "hmac_key_id",
    "index_subjects",
    "new_audit_id",
    "nik_subject",
    "no_kk_subject",
    "record_hash",
    "response_digest",
    "running",
    "subject_hash",
    "subject_keys",
    "trail",
    "unchained_record",
    "verify_chain",
]
