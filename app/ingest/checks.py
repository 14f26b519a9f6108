"""The rules that need the whole release (uniqueness and family structure), run in SQL over the
release's partitions once both files are loaded, and reported with their first examples."""

from __future__ import annotations

import asyncpg

from app.identifiers import as_str, mask
from app.ingest.validate import Report
from app.repositories import imports as repo
from app.repositories.imports import Found


async def set_checks(
    conn: asyncpg.Connection, key: int, report: Report, files: dict[str, str]
) -> None:
    """Index the partitions and report what breaks the set rules. `files` maps the export's
    names (keluarga, anggota) to the file names the examples cite."""
    kfile, afile = files["keluarga"], files["anggota"]
    await repo.set_check_memory(conn)
    if not await repo.unique_index(conn, "families", key, "no_kk"):
        found = await repo.duplicates(conn, "families", key, "no_kk")
        _report(report, "duplicate_no_kk", kfile, "no_kk", found)
        await repo.plain_index(conn, "families", key, "no_kk")
    if not await repo.unique_index(conn, "people", key, "nik"):
        found = await repo.duplicates(conn, "people", key, "nik")
        _report(report, "duplicate_nik", afile, "nik", found)
    await repo.plain_index(conn, "people", key, "no_kk")
    await repo.count_members(conn, key)
    found = await repo.members_of_unknown_families(conn, key)
    _report(report, "unknown_family", afile, "no_kk", found)
    found = await repo.families_without_members(conn, key)
    _report(report, "family_without_members", kfile, "no_kk", found)
    found = await repo.families_without_head(conn, key)
    _report(report, "family_without_head", kfile, "no_kk", found)
    # Several heads: the examples are the head rows themselves (what the operator must fix).
    found = await repo.heads_of_families_with_several(conn, key)
    _report(report, "family_multiple_heads", afile, "hubungan_kk", found)


def _report(report: Report, rule: str, file: str, column: str, found: Found) -> None:
    """The examples, values masked; the first carries the whole count."""
    for i, (line, value) in enumerate(found.examples):
        report.add(
            rule,
            file=file,
            line=line,
            column=column,
            value=mask(as_str(value)),
            count=found.total if i == 0 else 0,
        )
