"""API keys: shape, checksum, and a typo refused before any SQL."""

from __future__ import annotations

import re

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from app.auth import keys
from app.errors import Unauthenticated
from app.services.clients import Authenticator


def test_generated_key_has_the_documented_shape() -> None:
    key = keys.generate_key()
    assert re.fullmatch(r"tepat_[0-9A-Za-z]{36}", key)
    assert keys.parse_key(key) == key
    assert keys.key_prefix(key) == key[:12]
    assert len({keys.generate_key() for _ in range(1000)}) == 1000


def test_every_single_character_typo_is_refused() -> None:
    key = keys.generate_key()
    body_start = len(keys.PREFIX)
    for i in range(body_start, len(key)):
        for c in "0aZ":
            if key[i] == c:
                continue
            typo = key[:i] + c + key[i + 1 :]
            with pytest.raises(keys.MalformedKey):
                keys.parse_key(typo)


def test_transposed_truncated_and_foreign_keys_are_refused() -> None:
    key = keys.generate_key()
    swapped = key[:10] + key[11] + key[10] + key[12:]
    bad = [
        key[:-1],
        key + "x",
        "ghp_" + key[6:],
        key.replace("tepat_", "Tepat_"),
        key[:20] + "-" + key[21:],
        "",
    ]
    if swapped != key:
        bad.append(swapped)
    for value in bad:
        with pytest.raises(keys.MalformedKey) as caught:
            keys.parse_key(value)
        assert key not in str(caught.value)


def test_hash_is_sha256_of_the_whole_key() -> None:
    import hashlib

    key = keys.generate_key()
    assert keys.key_hash(key) == hashlib.sha256(key.encode()).digest()


async def test_a_mistyped_key_is_refused_without_touching_the_database() -> None:
    # Nothing listens on port 1: any SQL would fail with 503 (Unavailable), not 401.
    dead = create_async_engine("postgresql+asyncpg://postgres@127.0.0.1:1/none")
    try:
        auth = Authenticator(dead)
        key = keys.generate_key()
        typo = key[:-1] + ("0" if key[-1] != "0" else "1")
        with pytest.raises(Unauthenticated, match="checksum"):
            await auth.authenticate(f"Bearer {typo}")
    finally:
        await dead.dispose()
