"""API keys: generation, the offline format check, and the hash that is all the database keeps.

A key is `tepat_` + 30 random base62 characters (~178 bits) + 6 base62 characters of the CRC32
of the random part, like GitHub's tokens: a mistyped or truncated key is refused before any SQL,
and secret scanners can recognise a leaked one by its shape. Only sha256(key) is stored: with
that much entropy a slow password hash would add latency to every request and no safety.
"""

from __future__ import annotations

import hashlib
import secrets
import string
import zlib

PREFIX = "tepat_"
ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase
RANDOM_LENGTH = 30
CHECKSUM_LENGTH = 6
KEY_LENGTH = len(PREFIX) + RANDOM_LENGTH + CHECKSUM_LENGTH
# What `client list` shows: enough to tell keys apart, far too little to guess the rest.
DISPLAY_LENGTH = len(PREFIX) + 6

_ALPHABET_SET = frozenset(ALPHABET)


class MalformedKey(ValueError):
    """Not a Tepat key (wrong shape or checksum). The message never repeats the key."""


def _base62(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        chars.append(ALPHABET[digit])
    return "".join(reversed(chars))


def _checksum(random_part: str) -> str:
    # 62**6 > 2**32, so six characters hold any CRC32.
    return _base62(zlib.crc32(random_part.encode("ascii")), CHECKSUM_LENGTH)


def generate_key() -> str:
    random_part = "".join(secrets.choice(ALPHABET) for _ in range(RANDOM_LENGTH))
    return PREFIX + random_part + _checksum(random_part)


def parse_key(value: str) -> str:
    """The key if it has the right shape and checksum, else MalformedKey (no database needed)."""
    if len(value) != KEY_LENGTH or not value.startswith(PREFIX):
        raise MalformedKey("not a Tepat API key")
    body = value[len(PREFIX) :]
    if not _ALPHABET_SET.issuperset(body):
        raise MalformedKey("not a Tepat API key")
    random_part, check = body[:RANDOM_LENGTH], body[RANDOM_LENGTH:]
    if not secrets.compare_digest(_checksum(random_part), check):
        raise MalformedKey("the API key's checksum does not match (mistyped or truncated?)")
    return value


def key_hash(key: str) -> bytes:
    return hashlib.sha256(key.encode("ascii")).digest()


def key_prefix(key: str) -> str:
    return key[:DISPLAY_LENGTH]
