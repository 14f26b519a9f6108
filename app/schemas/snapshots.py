"""Snapshot DTOs."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Snapshot(BaseModel):
    """A loaded DTSEN release. Published snapshots never change; retired ones are not served."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(
        description="The DTSEN release id (cut-off date, `-rN` for a reissue)",
        examples=["2026-01-23"],
    )
    label: str = Field(examples=["DTSEN per 23 Januari 2026"])
    cutoff_date: dt.date = Field(description="Evaluation date of every decision on this snapshot")
    status: Literal["loading", "published", "retired"]
    family_count: int
    people_count: int
    checksum: str | None = Field(description="sha256 of the snapshot's content (order-independent)")
    created_at: dt.datetime
    published_at: dt.datetime | None
    retired_at: dt.datetime | None
    key: int = Field(exclude=True, description="internal partition key")
