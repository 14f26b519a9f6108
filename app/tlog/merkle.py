"""The Merkle tree of RFC 9162 section 2.1, stored as the hashes of its complete subtrees.

Hashing (RFC 9162 2.1.1): a leaf hashes as SHA-256(0x00 || d), an interior node as
SHA-256(0x01 || left || right), and the tree of n > 1 leaves splits at k, the largest power of
two smaller than n: MTH(D[n]) = node(MTH(D[0:k]), MTH(D[k:n])). MTH of no leaves is SHA-256 of
the empty string.

Storage: for every level L, the hash of each COMPLETE subtree, node (L, i) covering the leaves
[i * 2^L, (i + 1) * 2^L). Node (0, i) is the hash of leaf i. A node never changes once written,
so the store is append-only. Every range the RFC's recursion hashes (the tree itself, the
siblings on a PATH, the subtrees of a PROOF) starts at a multiple of a power of two at least as
large as the range, so its hash is a fold of the stored complete subtrees its length's binary
digits name. A root at size n reads at most log2(n) + 1 nodes; a proof, whose ranges are all
complete but the topmost, at most 2 * (log2(n) + 1).

`get` is a callable (level, index) -> hash. The `nodes_for_*` functions list which nodes a root
or proof reads, so a database store can fetch them all in one query and hand a dict's
`__getitem__` in as `get`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

GetNode = Callable[[int, int], bytes]


@dataclass(frozen=True, slots=True)
class Node:
    """The hash of the complete subtree at `level` covering leaves [index * 2^level, ...)."""

    level: int
    index: int
    hash: bytes


# --- hashing (RFC 9162 2.1.1) ------------------------------------------------------------------


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data): the hash of one leaf (RFC 9162 2.1.1)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right): the hash of an interior node (RFC 9162 2.1.1)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """k, the largest power of two smaller than n (n > 1), where RFC 9162 2.1.1 splits."""
    return 1 << ((n - 1).bit_length() - 1)


# --- ranges and the nodes that hold them -------------------------------------------------------


def _range_nodes(start: int, end: int) -> list[tuple[int, int]]:
    """The complete subtrees whose fold is MTH(D[start:end]), left to right.

    The range must be one the RFC's recursion produces: `start` a multiple of a power of two
    at least `end - start`. Then the binary digits of the length, highest first, are the
    complete subtrees, and folding them from the right is exactly the MTH split at k.
    """
    out = []
    offset = start
    for level in range((end - start).bit_length() - 1, -1, -1):
        if (end - start) >> level & 1:
            out.append((level, offset >> level))
            offset += 1 << level
    return out


def _range_hash(get: GetNode, start: int, end: int) -> bytes:
    """MTH(D[start:end]) from stored complete subtrees (see `_range_nodes`)."""
    if start == end:
        return EMPTY_ROOT
    hashes = [get(level, index) for level, index in _range_nodes(start, end)]
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = node_hash(h, acc)
    return acc


def _inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose MTHs make PATH(index, D[size]) (RFC 9162 2.1.3.1), in proof order."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is outside a tree of size {size}")
    ranges = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:  # PATH(m, D[0:k]) : MTH(D[k:n])
            ranges.append((lo + k, hi))
            hi = lo + k
        else:  # PATH(m - k, D[k:n]) : MTH(D[0:k])
            ranges.append((lo, lo + k))
            lo += k
    ranges.reverse()  # the recursion appends on the way out: the deepest sibling comes first
    return ranges


def _consistency_ranges(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose MTHs make PROOF(m, D[n]) (RFC 9162 2.1.4.1), in proof order."""
    if not 0 <= old_size <= new_size:
        raise ValueError(f"no consistency proof from size {old_size} to size {new_size}")
    if old_size in (0, new_size):
        return []  # nothing to prove: every tree extends the empty one and itself
    ranges = []
    m, lo, hi, whole = old_size, 0, new_size, True  # SUBPROOF(m, D[lo:hi], whole)
    while True:
        if m == hi - lo:
            if not whole:  # SUBPROOF(m, D[m], false) = {MTH(D[m])}
                ranges.append((lo, hi))
            break
        k = _split(hi - lo)
        if m <= k:  # SUBPROOF(m, D[0:k], b) : MTH(D[k:n])
            ranges.append((lo + k, hi))
            hi = lo + k
        else:  # SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])
            ranges.append((lo, lo + k))
            m -= k
            lo += k
            whole = False
    ranges.reverse()
    return ranges


def _nodes(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    return [node for start, end in ranges for node in _range_nodes(start, end)]


def nodes_for_root(size: int) -> list[tuple[int, int]]:
    """The (level, index) nodes `root(get, size)` reads: one per set bit of `size`."""
    if size < 0:
        raise ValueError(f"negative tree size {size}")
    return _range_nodes(0, size)


def nodes_for_inclusion(index: int, size: int) -> list[tuple[int, int]]:
    """The (level, index) nodes `inclusion_proof(get, index, size)` reads."""
    return _nodes(_inclusion_ranges(index, size))


def nodes_for_consistency(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """The (level, index) nodes `consistency_proof(get, old_size, new_size)` reads."""
    return _nodes(_consistency_ranges(old_size, new_size))


# --- building ----------------------------------------------------------------------------------


def append(get: GetNode, start_size: int, leaf_hashes: Sequence[bytes]) -> list[Node]:
    """The new complete-subtree nodes after appending `leaf_hashes` to a tree of `start_size`.

    Reads only `nodes_for_root(start_size)`, the complete subtrees a new leaf can merge with.
    Each appended leaf yields its own node (0, i) and one node per level it completes.
    """
    if start_size < 0:
        raise ValueError(f"negative tree size {start_size}")
    frontier = [(level, get(level, index)) for level, index in nodes_for_root(start_size)]
    out: list[Node] = []
    size = start_size
    for h in leaf_hashes:
        if len(h) != HASH_SIZE:
            raise ValueError(f"a leaf hash is {HASH_SIZE} bytes, not {len(h)}")
        level = 0
        out.append(Node(0, size, h))
        while frontier and frontier[-1][0] == level:
            h = node_hash(frontier.pop()[1], h)
            level += 1
            out.append(Node(level, size >> level, h))
        frontier.append((level, h))
        size += 1
    return out


def root(get: GetNode, size: int) -> bytes:
    """MTH(D[size]) (RFC 9162 2.1.1), folded from `nodes_for_root(size)`."""
    if size < 0:
        raise ValueError(f"negative tree size {size}")
    return _range_hash(get, 0, size)


def inclusion_proof(get: GetNode, index: int, size: int) -> list[bytes]:
    """PATH(index, D[size]) (RFC 9162 2.1.3.1): the audit path of leaf `index`."""
    return [_range_hash(get, a, b) for a, b in _inclusion_ranges(index, size)]


def consistency_proof(get: GetNode, old_size: int, new_size: int) -> list[bytes]:
    """PROOF(old_size, D[new_size]) (RFC 9162 2.1.4.1); empty when old_size is 0 or new_size."""
    return [_range_hash(get, a, b) for a, b in _consistency_ranges(old_size, new_size)]


# --- verifying ---------------------------------------------------------------------------------


def _hashes_ok(*hashes: bytes) -> bool:
    return all(len(h) == HASH_SIZE for h in hashes)


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root_hash: bytes
) -> bool:
    """Whether `proof` shows leaf hash `leaf` at `index` in the tree of `size` with `root_hash`.

    The algorithm of RFC 9162 2.1.3.2, step by step.
    """
    if not _hashes_ok(leaf, root_hash, *proof):
        return False
    if not 0 <= index < size:  # 1.
        return False
    fn, sn = index, size - 1  # 2.
    r = leaf  # 3.
    for p in proof:  # 4.
        if sn == 0:  # a.
            return False
        if fn & 1 or fn == sn:  # b.
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1  # c.
        sn >>= 1
    return sn == 0 and r == root_hash  # 5.


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Whether `proof` shows the tree (`new_size`, `new_root`) extends (`old_size`, `old_root`).

    RFC 9162 2.1.4.2 states the algorithm for 0 < old_size < new_size; for equal sizes the
    proof is empty and the roots must be equal, and the empty tree (root SHA-256 of nothing)
    is extended by every tree, with an empty proof.
    """
    if not _hashes_ok(old_root, new_root, *proof):
        return False
    if not 0 <= old_size <= new_size:
        return False
    if old_size == 0:
        return not proof and old_root == EMPTY_ROOT
    if old_size == new_size:
        return not proof and old_root == new_root
    path = list(proof)
    if not path:  # 1.
        return False
    if old_size & (old_size - 1) == 0:  # 2. an exact power of two
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1  # 3.
    while fn & 1:  # 4.
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]  # 5.
    for c in path[1:]:  # 6.
        if sn == 0:  # a.
            return False
        if fn & 1 or fn == sn:  # b.
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1  # c.
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0  # 7.


# --- in memory ---------------------------------------------------------------------------------


class MemoryStore:
    """A tree held in a dict of complete-subtree nodes: for tests and small tools."""

    def __init__(self) -> None:
        self.nodes: dict[tuple[int, int], bytes] = {}
        self.size = 0

    def get(self, level: int, index: int) -> bytes:
        return self.nodes[level, index]

    def append(self, leaf_hashes: Sequence[bytes]) -> list[Node]:
        """Append leaf hashes; returns the nodes stored."""
        new = append(self.get, self.size, leaf_hashes)
        for node in new:
            self.nodes[node.level, node.index] = node.hash
        self.size += len(leaf_hashes)
        return new

    def _size(self, size: int | None) -> int:
        if size is None:
            return self.size
        if size > self.size:
            raise ValueError(f"the tree has {self.size} leaves, not {size}")
        return size

    def root(self, size: int | None = None) -> bytes:
        return root(self.get, self._size(size))

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        return inclusion_proof(self.get, index, self._size(size))

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        return consistency_proof(self.get, old_size, self._size(new_size))
