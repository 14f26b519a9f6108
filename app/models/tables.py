"""Table definitions. People and families are LIST-partitioned by snapshot (one partition each).

Partitions are created, loaded and indexed by the importer as standalone tables and attached
at publish (docs/architecture.md). The parents carry no index: each partition has its own,
on the bare key (no snapshot column in the index), which keeps rows small (bench/RESULTS.md).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Computed,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    Table,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

SNAPSHOT_STATUSES = ("loading", "published", "retired")

snapshots = Table(
    "snapshots",
    metadata,
    # Internal small key: the partition key of people and families (2 bytes a row).
    Column("key", SmallInteger, primary_key=True, autoincrement=True),
    # The DTSEN release id, e.g. 2026-01-23 or 2026-01-23-r2; never reused.
    Column("id", Text, nullable=False, unique=True),
    Column("label", Text, nullable=False),
    Column("cutoff_date", Date, nullable=False),
    Column("status", Text, nullable=False),
    Column("family_count", BigInteger, nullable=False, server_default="0"),
    Column("people_count", BigInteger, nullable=False, server_default="0"),
    Column("checksum", Text),
    Column("manifest", JSONB, nullable=False),
    Column("import_report", JSONB),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("published_at", DateTime(timezone=True)),
    Column("retired_at", DateTime(timezone=True)),
    CheckConstraint("status IN ('loading', 'published', 'retired')", name="status"),
    CheckConstraint("(status = 'loading') = (checksum IS NULL)", name="checksum_when_loaded"),
)

rule_sets = Table(
    "rule_sets",
    metadata,
    Column("key", SmallInteger, primary_key=True, autoincrement=True),
    Column("id", Text, nullable=False, unique=True),
    Column("effective_from", Date, nullable=False),
    Column("checksum", Text, nullable=False),
    # The canonical JSON of the rule set: reloading it gives the same checksum.
    Column("parameters", JSONB, nullable=False),
    Column("loaded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Column order here is the COPY order of the importer and of the content checksum.
families = Table(
    "families",
    metadata,
    Column("snapshot_key", SmallInteger, nullable=False),
    Column("no_kk", BigInteger, nullable=False),
    Column("region_code", BigInteger, nullable=False),
    Column("source_line", Integer, nullable=False),
    Column("floor_area_m2", Integer),
    Column("power_va", Integer),
    Column("decile", SmallInteger),
    Column("home_ownership", SmallInteger),
    Column("drinking_water", SmallInteger),
    Column("toilet", SmallInteger),
    Column("lighting", SmallInteger),
    Column("asn_tni_polri", Boolean, nullable=False),
    Column("pkh_recipient", Boolean),
    Column("bpnt_recipient", Boolean),
    postgresql_partition_by="LIST (snapshot_key)",
)

people = Table(
    "people",
    metadata,
    Column("snapshot_key", SmallInteger, nullable=False),
    Column("nik", BigInteger, nullable=False),
    Column("no_kk", BigInteger, nullable=False),
    Column("birth_date", Date, nullable=False),
    Column("source_line", Integer, nullable=False),
    Column("relationship", SmallInteger, nullable=False),
    Column("sex", SmallInteger, nullable=False),
    Column("marital_status", SmallInteger),
    Column("school_status", SmallInteger),
    # 1 SD, 2 SMP, 3 SMA, 4 PT (app.ingest.columns maps the export's codes)
    Column("school_level", SmallInteger),
    Column("disability", SmallInteger),
    Column("pregnant", Boolean),
    Column("chronic_illness", Boolean),
    Column("working", Boolean),
    Column("pbi_recipient", Boolean),
    Column("name", Text, nullable=False),
    postgresql_partition_by="LIST (snapshot_key)",
)

# Decisions of one (snapshot, rule set), computed in bulk by the engine (app/services/materialize.py)
# and stored compactly: one row a person; family-level programs are repeated on every member and
# counted once through `head`. What a plain answer needs rides along (family, relationship,
# decile, region, recipients), so a lookup without `explain` is one index probe a NIK, and the
# targeting report one scan of one partition.
# Low-cardinality columns of a stored decision packed into one integer the database keeps
# (a STORED generated column): each field as value + 1 (0 for NULL; booleans 1/2) in `bits` bits,
# the first field lowest; a field of 0 bits takes the rest. A lookup reads that one integer and
# the worker renders the fields from a memo of the few distinct codes, instead of the database
# formatting seven or ten columns a person (measured: bench/RESULTS.md).
# app.repositories.decisions decodes them; the initial migration holds a frozen copy of the SQL.
CodeField = tuple[str, int, type]
PERSON_CODE: tuple[CodeField, ...] = (
    ("marital_status", 4, int), ("school_status", 4, int), ("school_level", 4, int),
    ("disability", 4, int), ("pregnant", 2, bool), ("chronic_illness", 2, bool),
    ("working", 2, bool),
)  # fmt: skip
DECISION_CODE: tuple[CodeField, ...] = (
    ("sr_level", 4, int), ("sr_priority", 4, int), ("pkh_eligible", 2, bool),
    ("bpnt_eligible", 2, bool), ("pbi_eligible", 2, bool), ("sr_eligible", 2, bool),
    ("pkh_recipient", 2, bool), ("bpnt_recipient", 2, bool), ("pbi_recipient", 2, bool),
    ("pkh_yearly", 0, int),
)  # fmt: skip
# Each criterion's `passed` flag of a stored decision, one bit each (bit i = CRITERIA[i]), in the
# `criteria` column: what a change list (app/services/changes.py) names as the reasons a
# decision flipped, without running the engine again. Written by app/services/materialize.py
# from app.eligibility.columnar's pass flags, the engine's criteria computed over arrays.
CRITERIA: tuple[tuple[str, str], ...] = (
    ("PKH", "decile_in_range"), ("PKH", "not_excluded"), ("PKH", "has_component"),
    ("BPNT", "decile_in_range"), ("BPNT", "not_excluded"),
    ("PBI_JK", "decile_in_range"), ("PBI_JK", "not_excluded"),
    ("SEKOLAH_RAKYAT", "decile_in_range"), ("SEKOLAH_RAKYAT", "age_in_range"),
    ("SEKOLAH_RAKYAT", "school_level"),
)  # fmt: skip


def code_sql(fields: tuple[CodeField, ...], sql_type: str) -> str:
    """The generated column's expression for `fields` (see PERSON_CODE)."""
    terms, shift = [], 0
    for name, bits, _ in fields:
        cast = "::integer" if sql_type == "integer" else f"::integer::{sql_type}"
        terms.append(f"(COALESCE({name}{cast} + 1, 0) << {shift})")
        shift += bits
    return " | ".join(terms)


decisions = Table(
    "decisions",
    metadata,
    # Widest first: no alignment padding (about 8 bytes a row at 289 M rows a snapshot).
    Column("nik", BigInteger, nullable=False),
    Column("no_kk", BigInteger, nullable=False),
    Column("region_code", BigInteger, nullable=False),
    Column("pkh_yearly", Integer, nullable=False),
    Column("snapshot_key", SmallInteger, nullable=False),
    Column("rule_set_key", SmallInteger, nullable=False),
    Column("relationship", SmallInteger, nullable=False),
    Column("decile", SmallInteger),
    Column("sr_level", SmallInteger),
    Column("sr_priority", SmallInteger),
    Column("criteria", SmallInteger, nullable=False),  # passed flags, bit i = CRITERIA[i]
    Column("head", Boolean, nullable=False),
    Column("pkh_eligible", Boolean, nullable=False),
    Column("bpnt_eligible", Boolean, nullable=False),
    Column("pbi_eligible", Boolean, nullable=False),
    Column("sr_eligible", Boolean, nullable=False),
    Column("pkh_recipient", Boolean),
    Column("bpnt_recipient", Boolean),
    Column("pbi_recipient", Boolean),
    # The person's own fields a plain answer shows (identity, attributes, health), copied from
    # `people` so a lookup is one index probe, not a second probe and a join (measured:
    # bench/RESULTS.md). Ordered so no padding falls between them.
    Column("sex", SmallInteger, nullable=False),
    Column("marital_status", SmallInteger),
    Column("school_status", SmallInteger),
    Column("school_level", SmallInteger),
    Column("disability", SmallInteger),
    Column("pregnant", Boolean),
    Column("chronic_illness", Boolean),
    Column("working", Boolean),
    Column("birth_date", Date, nullable=False),
    Column("name", Text, nullable=False),
    Column("person_code", Integer, Computed(code_sql(PERSON_CODE, "integer"), persisted=True)),
    Column(
        "decision_code", BigInteger, Computed(code_sql(DECISION_CODE, "bigint"), persisted=True)
    ),
    # On the NIK alone (16-byte entries; with rule_set_key 24): a snapshot's other materialised
    # rule sets, if any, are filtered on the row the lookup reads anyway. Not unique (a
    # partitioned unique index must carry the partition key: 8 more bytes a row); one
    # materialisation per (snapshot, rule set) is enforced by the materializer's lock.
    Index("ix_decisions_nik", "nik"),
    postgresql_partition_by="LIST (snapshot_key)",
)

materializations = Table(
    "materializations",
    metadata,
    Column(
        "snapshot_key",
        SmallInteger,
        ForeignKey("snapshots.key", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("rule_set_key", SmallInteger, ForeignKey("rule_sets.key"), primary_key=True),
    Column("people", BigInteger, nullable=False),
    Column("families", BigInteger, nullable=False),
    Column("seconds", Float, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
