"""Receipts: check, with no call to Tepat, that an answer is what Tepat signed.

A receipt is a compact JWS (EdDSA, Ed25519) whose payload names the audit record, the snapshot,
the rule set and `body_sha256`, the hex SHA-256 of the exact bytes received. The service's
public keys (current and retired) are its JWKS, `GET /.well-known/jwks.json`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

ALG = "EdDSA"
CHUNK_LINES = 1_000  # answer lines per bulk chunk, each chunk with its own receipt


class ReceiptInvalid(ValueError):
    """The receipt does not vouch for these bytes: the message says which check failed."""


def verify_receipt(receipt: str, body: bytes, jwks: Mapping[str, Any]) -> dict[str, Any]:
    """The receipt's claims, if it is signed by one of the JWKS's keys and names `body`'s
    SHA-256; ReceiptInvalid otherwise. `body` must be the bytes as received, never a
    re-serialisation of parsed JSON."""
    try:
        keys = KeySet.import_key_set(dict(jwks))  # type: ignore[arg-type]
        token = jws.deserialize_compact(receipt, keys, algorithms=[ALG])
    except JoseError as e:
        raise ReceiptInvalid(f"the signature does not verify: {e.error}") from None
    except ValueError as e:
        raise ReceiptInvalid(f"not a compact JWS receipt: {e}") from None
    claims: dict[str, Any] = json.loads(token.payload)
    digest = hashlib.sha256(body).hexdigest()
    if claims.get("body_sha256") != digest:
        raise ReceiptInvalid(
            f"the body does not match: its SHA-256 is {digest}, "
            f"the receipt names {claims.get('body_sha256')}"
        )
    return claims


def answer_chunks(lines: Iterable[bytes], chunk: int = CHUNK_LINES) -> list[bytes]:
    """A bulk answer's lines (summary excluded, each with its newline) cut into the chunks the
    receipts sign: 1,000 lines each (a change list job: its status's `request.chunk`), in
    order; chunks made only of error lines are signed by no receipt and left out, as the
    summary leaves them out."""
    chunks: list[bytes] = []
    current: list[bytes] = []

    def close() -> None:
        if current and not all(_is_error(line) for line in current):
            chunks.append(b"".join(current))
        current.clear()

    for line in lines:
        current.append(line)
        if len(current) == chunk:
            close()
    close()
    return chunks


def _is_error(line: bytes) -> bool:
    item = json.loads(line)
    return isinstance(item, dict) and "error" in item and "nik" not in item


def verify_chunks(
    lines: Sequence[bytes],
    receipts: Sequence[str],
    jwks: Mapping[str, Any],
    chunk: int = CHUNK_LINES,
) -> list[dict[str, Any]]:
    """Every chunk of a bulk answer against its receipt, in order; the claims of each."""
    chunks = answer_chunks(lines, chunk)
    if len(chunks) != len(receipts):
        raise ReceiptInvalid(f"{len(chunks)} answer chunks but {len(receipts)} receipts")
    return [verify_receipt(r, c, jwks) for r, c in zip(receipts, chunks, strict=True)]
