"""Programs and rule sets as the API shows them."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, Field

from app.eligibility import RuleSet


class ProgramInfo(BaseModel):
    id: Literal["PKH", "BPNT", "PBI_JK", "SEKOLAH_RAKYAT"]
    name: str
    unit: Literal["family", "person"]
    benefit: str
    criteria: list[str] = Field(
        description="The criteria in words; the numbers come from the rule set"
    )


class RuleSetInfo(BaseModel):
    id: str = Field(examples=["kepmensos-79-2025"])
    effective_from: dt.date
    title: str
    source: str
    checksum: str = Field(description="sha256 of the canonical parameters")
    parameters: dict[str, Any] = Field(description="pkh, bpnt, pbi, sekolah_rakyat")

    @classmethod
    def of(cls, r: RuleSet) -> RuleSetInfo:
        dumped = r.model_dump(mode="json")
        return cls(
            id=r.id,
            effective_from=r.effective_from,
            title=r.title,
            source=r.source,
            checksum=r.checksum,
            parameters={k: dumped[k] for k in ("pkh", "bpnt", "pbi", "sekolah_rakyat")},
        )
