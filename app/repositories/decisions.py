"""SQL over the materialised decisions: what is stored, and the targeting report's aggregate."""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

Level = Literal["national", "province", "regency"]
_DIVISOR = {"national": None, "province": 100_000_000, "regency": 1_000_000}

# One scan of one partition; family programs count the head's row only (one per family).
_REPORT = """
SELECT {region} AS region,
  count(*) FILTER (WHERE head) AS families,
  count(*) AS people,
  count(*) FILTER (WHERE head AND pkh_eligible) AS pkh_eligible,
  count(*) FILTER (WHERE head AND pkh_recipient) AS pkh_recipients,
  count(*) FILTER (WHERE head AND pkh_eligible AND pkh_recipient) AS pkh_both,
  count(*) FILTER (WHERE head AND bpnt_eligible) AS bpnt_eligible,
  count(*) FILTER (WHERE head AND bpnt_recipient) AS bpnt_recipients,
  count(*) FILTER (WHERE head AND bpnt_eligible AND bpnt_recipient) AS bpnt_both,
  count(*) FILTER (WHERE pbi_eligible) AS pbi_eligible,
  count(*) FILTER (WHERE pbi_recipient) AS pbi_recipients,
  count(*) FILTER (WHERE pbi_eligible AND pbi_recipient) AS pbi_both,
  count(*) FILTER (WHERE sr_eligible) AS sr_eligible,
  count(*) FILTER (WHERE sr_eligible AND sr_priority = 1) AS sr_priority_1
FROM decisions
WHERE snapshot_key = :snapshot AND rule_set_key = (SELECT key FROM rule_sets WHERE id = :rule_set)
GROUP BY {group}
ORDER BY 1 NULLS FIRST
"""


async def is_materialized(conn: AsyncConnection, snapshot_key: int, rule_set_id: str) -> bool:
    found = await conn.scalar(
        text(
            "SELECT 1 FROM materializations m JOIN rule_sets r ON r.key = m.rule_set_key "
            "WHERE m.snapshot_key = :s AND r.id = :r"
        ),
        {"s": snapshot_key, "r": rule_set_id},
    )
    return found is not None


async def targeting_counts(
    conn: AsyncConnection, snapshot_key: int, rule_set_id: str, level: Level
) -> list[dict[str, Any]]:
    """Counts per region (and a national row with region None), from the stored decisions."""
    divisor = _DIVISOR[level]
    if divisor is None:
        sql = _REPORT.format(region="NULL::bigint", group="()")
    else:
        sql = _REPORT.format(region=f"region_code / {divisor}", group="ROLLUP (1)")
    rows = await conn.execute(text(sql), {"snapshot": snapshot_key, "rule_set": rule_set_id})
    return [dict(r) for r in rows.mappings()]
