"""The change list's request: two snapshots and what to list (app.services.changes)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.identifiers import RULE_SET_ID_PATTERN, SNAPSHOT_ID_PATTERN
from app.schemas.lookup import ProgramName

ChangeKind = Literal["gained", "lost", "benefit_changed", "level_changed"]


class ChangesRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_snapshot: str = Field(
        alias="from",
        pattern=SNAPSHOT_ID_PATTERN,
        description="The earlier release (its stored decisions)",
        examples=["2025-10-23"],
    )
    to_snapshot: str = Field(
        alias="to",
        pattern=SNAPSHOT_ID_PATTERN,
        description="The later release; must differ from `from`",
        examples=["2026-01-23"],
    )
    rule_set: str | None = Field(
        None,
        pattern=RULE_SET_ID_PATTERN,
        description="Judge both releases under this rule set. Default: each release under the "
        "rule set in force on its own cut-off date.",
    )
    programs: list[ProgramName] | None = Field(
        None,
        min_length=1,
        description="Only these programs (each must be granted). Default: all granted.",
    )
    kinds: list[ChangeKind] | None = Field(
        None,
        min_length=1,
        description="Only these kinds of change: gained (eligible in `to`, not eligible or "
        "absent in `from`), lost (the other way), benefit_changed (eligible in both, another "
        "benefit), level_changed (Sekolah Rakyat, eligible in both, another level). Default: "
        "all four.",
    )
    kode_wilayah: str | None = Field(
        None,
        description="Only people whose region (in either release) starts with this prefix: "
        "2 to 10 digits (province 2, regency 4, district 6, village 10).",
        examples=["6308"],
    )
