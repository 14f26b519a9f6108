"""Bulk tests' setup: the API fixtures, the release's NIKs, absent NIKs and an NDJSON caller."""

from __future__ import annotations

import csv
import itertools
from collections.abc import AsyncIterable, Iterable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.support import auth

NDJSON = "application/x-ndjson"
URL = "/v1/bulk/eligibility"


@pytest.fixture(scope="session")
def release_niks(published: Path) -> list[str]:
    """Every NIK of the published release, in file order."""
    with (published / "anggota.csv").open() as f:
        return [r["nik"] for r in csv.DictReader(f)]


def absent_nik(i: int) -> str:
    """A structurally valid NIK in no release (district 99xxxx does not exist), distinct per i."""
    serial, rest = i % 9999 + 1, i // 9999
    day, rest = rest % 28 + 1, rest // 28
    month, yy = rest % 12 + 1, rest // 12 % 100
    return f"990101{day:02d}{month:02d}{yy:02d}{serial:04d}"


def ndjson(lines: Iterable[str | dict[str, Any]]) -> bytes:
    return b"".join(
        (line.encode() if isinstance(line, str) else orjson.dumps(line)) + b"\n" for line in lines
    )


def parse(body: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in body.splitlines()]


async def post_bulk(
    http: httpx.AsyncClient,
    key: str,
    body: bytes | AsyncIterable[bytes],
    *,
    headers: dict[str, str] | None = None,
    **params: Any,
) -> httpx.Response:
    return await http.post(
        URL,
        content=body,
        params=params,
        headers={**auth(key), "Content-Type": NDJSON, **(headers or {})},
    )


async def pieces(data: bytes, size: int) -> AsyncIterable[bytes]:
    """The body in pieces of `size` bytes, so lines are cut across pieces."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def found_and_absent(release: list[str], n: int, every: int = 10) -> list[str]:
    """n NIKs: every `every`-th from the release (cycling), the others absent."""
    cycle = itertools.cycle(release)
    return [next(cycle) if i % every == 0 else absent_nik(i) for i in range(n)]
