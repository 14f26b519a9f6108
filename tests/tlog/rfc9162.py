"""RFC 9162 section 2.1, transcribed straight from its recursive definitions on lists of leaves.

Leaves are the data itself (tuples of bytes), not leaf hashes. Written apart from
app.tlog.merkle, sharing none of its code, so the tests compare two readings of the RFC: this
one follows the text line by line and is slow (O(n) per call, eased by a cache).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def k_for(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


@lru_cache(maxsize=1 << 16)
def mth(d: tuple[bytes, ...]) -> bytes:
    """MTH(D[n]) (2.1.1); cached, as the tests ask for the same subtrees many times."""
    n = len(d)
    if n == 0:
        return sha256(b"")
    if n == 1:
        return sha256(b"\x00" + d[0])
    k = k_for(n)
    return sha256(b"\x01" + mth(d[:k]) + mth(d[k:]))


def path(m: int, d: tuple[bytes, ...]) -> list[bytes]:
    """PATH(m, D[n]) (2.1.3.1)."""
    n = len(d)
    if n == 1:
        return []
    k = k_for(n)
    if m < k:
        return [*path(m, d[:k]), mth(d[k:])]
    return [*path(m - k, d[k:]), mth(d[:k])]


def proof(m: int, d: tuple[bytes, ...]) -> list[bytes]:
    """PROOF(m, D[n]) = SUBPROOF(m, D[n], true) (2.1.4.1)."""
    return subproof(m, d, True)


def subproof(m: int, d: tuple[bytes, ...], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [mth(d)]
    k = k_for(n)
    if m <= k:
        return [*subproof(m, d[:k], b), mth(d[k:])]
    return [*subproof(m - k, d[k:], False), mth(d[:k])]


def path_sides(m: int, n: int) -> list[str]:
    """The side ("L" or "R") of each sibling in PATH(m, D[n]), deepest first: the proof's shape.

    A verifier combines the proof's hashes in this order and nothing else, so a proof checks
    against another tree size exactly when that size gives the same shape (hashes do not
    commit to sizes; a signed checkpoint binds the size to the root).
    """
    if n == 1:
        return []
    k = k_for(n)
    if m < k:
        return [*path_sides(m, k), "R"]
    return [*path_sides(m - k, n - k), "L"]
