"""Constants and helpers of the API-level tests (the fixtures are in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

RELEASE = "2026-01-23"
PURPOSE = "pbi-verification"
ALL_PROGRAMS = ["PKH", "BPNT", "PBI_JK", "SEKOLAH_RAKYAT"]
ALL_GROUPS = ["decision", "decile", "membership", "identity", "attributes", "health"]


MakeClient = Callable[..., Coroutine[Any, Any, str]]


def auth(key: str, purpose: str | None = PURPOSE) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {key}"}
    if purpose is not None:
        headers["X-Purpose"] = purpose
    return headers
