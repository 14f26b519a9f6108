"""Tables of bulk jobs: the job, its input and its answers, stored in chunks (0001_initial).

PostgreSQL is the only storage every server process and worker shares, so an upload and its
answers live here, in chunks of the bulk stream's 1,000 lines (`app.services.bulk.CHUNK`): the
input as the lines of one chunk (a job's chunk k is answered from input chunk k), the answers
as that chunk's exact bytes, with the audit record and receipt that cover them.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    Table,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY

from app.models.tables import metadata

JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
INPUT_FORMATS = ("ndjson", "csv", "json")  # json: a change list's request (0003)
KINDS = ("bulk", "changes")  # a bulk lookup of an upload, or a change list (0003_change_jobs)

bulk_jobs = Table(
    "bulk_jobs",
    metadata,
    Column("id", Uuid, primary_key=True),  # uuid4: random, never guessable
    Column("client_id", Text, ForeignKey("api_clients.id", ondelete="CASCADE"), nullable=False),
    # What the job was asked under, fixed at submission: purpose, request id, the pinned
    # snapshot and rule set, the programs and field groups of its view.
    Column("purpose", Text, nullable=False),
    Column("request_id", Text, nullable=False),
    Column("snapshot_id", Text, nullable=False),
    Column("rule_set_id", Text, nullable=False),
    Column("programs", ARRAY(Text), nullable=False),
    Column("field_groups", ARRAY(Text), nullable=False),
    Column("explain", Boolean, nullable=False),
    # The pin as the summary names it (snapshot and rule set with their checksums, evaluation
    # date, request id): JSON, fixed at submission.
    Column("meta", Text, nullable=False),
    Column("input_format", Text, nullable=False),
    Column("input_sha256", LargeBinary, nullable=False),
    Column("input_bytes", BigInteger, nullable=False),
    Column("lines", BigInteger, nullable=False),  # non-blank lines read: one answer each
    Column("blank", BigInteger, nullable=False),
    Column("chunks", Integer, nullable=False),
    Column("status", Text, nullable=False),
    # Committed progress: chunks 0 .. chunks_done-1 are answered, stored and audited.
    Column("chunks_done", Integer, nullable=False, server_default=text("0")),
    Column("answered", BigInteger, nullable=False, server_default=text("0")),
    Column("found", BigInteger, nullable=False, server_default=text("0")),
    Column("not_found", BigInteger, nullable=False, server_default=text("0")),
    Column("errors", BigInteger, nullable=False, server_default=text("0")),
    Column("result_bytes", BigInteger, nullable=False, server_default=text("0")),
    Column("error_code", Text),
    Column("error_message", Text),
    # The worker that holds the job: a chunk commits only under its own lease.
    Column("worker", Uuid),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("expires_at", DateTime(timezone=True)),  # set when it ends: purged after it
    # 0003_change_jobs: what the job is. A change list's request as pinned at submission (JSON:
    # both snapshots and rule sets, kinds, region prefix), the NIK of the last person of its
    # committed chunks (the keyset cursor it resumes after) and its summary's counts so far.
    Column("kind", Text, nullable=False, server_default=text("'bulk'")),
    Column("request", Text),
    Column("after_nik", BigInteger),
    Column("tally", Text),
    # How its answers (bulk_job_results.data) are stored: "zstd" (compressed by the worker), or
    # "identity" (as answered: jobs submitted before 0003).
    Column("results_coding", Text, nullable=False, server_default=text("'identity'")),
    CheckConstraint(
        "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')", name="status"
    ),
    CheckConstraint("input_format IN ('ndjson', 'csv', 'json')", name="input_format"),
    CheckConstraint("kind IN ('bulk', 'changes')", name="kind"),
    CheckConstraint("results_coding IN ('identity', 'zstd')", name="results_coding"),
    CheckConstraint("octet_length(input_sha256) = 32", name="input_sha256"),
    CheckConstraint("chunks_done >= 0 AND chunks_done <= chunks", name="progress"),
)

bulk_job_input = Table(
    "bulk_job_input",
    metadata,
    Column("job_id", Uuid, ForeignKey("bulk_jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("chunk", Integer, primary_key=True, autoincrement=False),
    Column("first_line", BigInteger, nullable=False),  # the number of the line before it
    Column("data", LargeBinary, nullable=False),  # its lines, blank ones too, "\n"-separated
)

bulk_job_results = Table(
    "bulk_job_results",
    metadata,
    Column("job_id", Uuid, ForeignKey("bulk_jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("chunk", Integer, primary_key=True, autoincrement=False),
    Column("start", BigInteger, nullable=False),  # byte offset in the NDJSON answer
    # Exactly the bytes the receipt covers (lz4-compressed in TOAST: migration 0002).
    # (zstd-compressed by the worker when the job's results_coding says so: 0003).
    Column("data", LargeBinary, nullable=False),
    # NULL for a chunk of only malformed lines: it discloses nothing, so has no record.
    Column("audit_id", Text),
    Column("receipt", Text),
)
