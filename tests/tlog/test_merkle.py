"""app.tlog.merkle against an independent transcription of RFC 9162 (tests/tlog/rfc9162.py)."""

from __future__ import annotations

import random

import pytest

from app.tlog import merkle
from app.tlog.merkle import (
    EMPTY_ROOT,
    GetNode,
    MemoryStore,
    Node,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    nodes_for_consistency,
    nodes_for_inclusion,
    nodes_for_root,
    root,
    verify_consistency,
    verify_inclusion,
)
from tests.tlog import rfc9162

N = 1000
SMALL = 64
DATA = tuple(f"audit record {i}".encode() for i in range(N))
LEAVES = [leaf_hash(d) for d in DATA]


def ref(size: int) -> tuple[bytes, ...]:
    return DATA[:size]


@pytest.fixture(scope="module")
def built() -> tuple[MemoryStore, dict[int, bytes]]:
    """All N leaves appended in random batches (some empty), with the root after each batch."""
    rng = random.Random(9162)
    store = MemoryStore()
    roots = {0: store.root()}
    while store.size < N:
        batch = rng.choice([0, 1, 1, 2, 3, 5, 8, 16, 31, 64, 100])
        store.append(LEAVES[store.size : store.size + batch])
        roots[store.size] = store.root()
    return store, roots


@pytest.fixture(scope="module")
def store(built: tuple[MemoryStore, dict[int, bytes]]) -> MemoryStore:
    return built[0]


def recording(get: GetNode) -> tuple[list[tuple[int, int]], GetNode]:
    """A `get` that notes each (level, index) it is asked for."""
    reads: list[tuple[int, int]] = []

    def recorded(level: int, index: int) -> bytes:
        reads.append((level, index))
        return get(level, index)

    return reads, recorded


def sampled_pairs(count: int, seed: int) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    pairs = []
    for _ in range(count):
        a, b = rng.randint(1, N), rng.randint(1, N)
        pairs.append((min(a, b), max(a, b)))
    # the edges: powers of two and their neighbours, and the largest tree
    for p in (1, 2, 3, 4, 7, 8, 9, 127, 128, 129, 511, 512, 513):
        pairs += [(p, N), (p, min(N, max(1, 2 * p - 1))), (p, p)]
    return pairs


# --- hashing and the reference vectors ---------------------------------------------------------

CT_DATA = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def test_hashes_are_rfc_9162s() -> None:
    assert leaf_hash(b"abc") == rfc9162.sha256(b"\x00abc")
    assert node_hash(b"l" * 32, b"r" * 32) == rfc9162.sha256(b"\x01" + b"l" * 32 + b"r" * 32)
    assert EMPTY_ROOT == rfc9162.sha256(b"") == MemoryStore().root()


def test_the_certificate_transparency_test_vectors() -> None:
    """The RFC 6962 reference tree used by the CT implementations: roots and a few proofs."""
    store = MemoryStore()
    store.append([leaf_hash(d) for d in CT_DATA])
    for size, want in enumerate(CT_ROOTS):
        assert store.root(size).hex() == want
    assert [h.hex() for h in store.inclusion_proof(0, 8)] == [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ]
    assert [h.hex() for h in store.inclusion_proof(5, 8)] == [
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ]
    assert [h.hex() for h in store.consistency_proof(2, 5)] == [
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ]


# --- the stored tree ---------------------------------------------------------------------------


def test_roots_after_each_random_batch_equal_mth(
    built: tuple[MemoryStore, dict[int, bytes]],
) -> None:
    _, roots = built
    assert len(roots) > 30
    for size, got in roots.items():
        assert got == rfc9162.mth(ref(size)), size


def test_root_at_every_size_equals_mth(store: MemoryStore) -> None:
    for size in range(N + 1):
        assert root(store.get, size) == rfc9162.mth(ref(size)), size


def test_append_stores_exactly_the_complete_subtrees(store: MemoryStore) -> None:
    want = {
        (level, i): rfc9162.mth(DATA[i << level : (i + 1) << level])
        for level in range(N.bit_length())
        for i in range(N >> level)
    }
    assert store.nodes == want


def test_append_reads_only_the_nodes_of_the_old_root() -> None:
    full = MemoryStore()
    full.append(LEAVES[:300])
    for start in (0, 1, 5, 64, 100, 255, 256, 299):
        reads, get = recording(full.get)
        new = merkle.append(get, start, LEAVES[start:300])
        assert reads == nodes_for_root(start)
        assert {(n.level, n.index): n.hash for n in new} == {
            k: v for k, v in full.nodes.items() if k not in set(full_nodes_at(start))
        }


def full_nodes_at(size: int) -> list[tuple[int, int]]:
    return [(level, i) for level in range(12) for i in range(size >> level)]


def test_append_returns_nodes_in_order() -> None:
    assert merkle.append(MemoryStore().get, 0, LEAVES[:4]) == [
        Node(0, 0, LEAVES[0]),
        Node(0, 1, LEAVES[1]),
        Node(1, 0, node_hash(LEAVES[0], LEAVES[1])),
        Node(0, 2, LEAVES[2]),
        Node(0, 3, LEAVES[3]),
        Node(1, 1, node_hash(LEAVES[2], LEAVES[3])),
        Node(2, 0, node_hash(node_hash(LEAVES[0], LEAVES[1]), node_hash(LEAVES[2], LEAVES[3]))),
    ]


# --- inclusion ---------------------------------------------------------------------------------


def check_inclusion(store: MemoryStore, index: int, size: int) -> None:
    got = inclusion_proof(store.get, index, size)
    assert got == rfc9162.path(index, ref(size)), (index, size)
    assert verify_inclusion(LEAVES[index], index, size, got, rfc9162.mth(ref(size)))


def test_inclusion_every_index_of_every_small_size(store: MemoryStore) -> None:
    for size in range(1, SMALL + 1):
        for index in range(size):
            check_inclusion(store, index, size)


def test_inclusion_sampled_up_to_1000(store: MemoryStore) -> None:
    for index, size in sampled_pairs(400, seed=1):
        check_inclusion(store, index - 1, size)
    for size in (N, 512, 513):
        for index in (0, 1, size // 2, size - 2, size - 1):
            check_inclusion(store, index, size)


def test_inclusion_nodes_are_the_ones_read(store: MemoryStore) -> None:
    for index, size in [(0, 1), (3, 7), (6, 7), (500, 1000), (999, 1000), (0, 1000)]:
        reads, get = recording(store.get)
        inclusion_proof(get, index, size)
        assert reads == nodes_for_inclusion(index, size)
        assert len(reads) <= 2 * size.bit_length()


def test_nodes_read_are_logarithmic() -> None:
    for n in range(1, 300):
        assert len(nodes_for_root(n)) == n.bit_count()
        for m in range(n):
            assert len(nodes_for_inclusion(m, n)) <= 2 * n.bit_length(), (m, n)
            assert len(nodes_for_consistency(m + 1, n)) <= 2 * n.bit_length(), (m + 1, n)
    for m, n in sampled_pairs(300, seed=3):
        assert len(nodes_for_inclusion(m - 1, n)) <= 2 * n.bit_length(), (m, n)
        assert len(nodes_for_consistency(m, n)) <= 2 * n.bit_length(), (m, n)


def test_inclusion_fails_when_anything_changes(store: MemoryStore) -> None:
    for index, size in [(0, 1), (0, 2), (5, 8), (6, 7), (100, 1000), (999, 1000), (512, 513)]:
        leaf = LEAVES[index]
        proof = inclusion_proof(store.get, index, size)
        r = store.root(size)
        assert verify_inclusion(leaf, index, size, proof, r)
        assert not verify_inclusion(leaf_hash(b"changed"), index, size, proof, r)
        assert not verify_inclusion(LEAVES[(index + 1) % N], index, size, proof, r)
        for wrong in (index + 1, index - 1, index ^ 1, size):
            if wrong != index and wrong >= 0:
                assert not verify_inclusion(leaf, wrong, size, proof, r), wrong
        for wrong_size in (size - 2, size - 1, size + 1, size + 2, 2 * size, 2 * size + 1):
            if wrong_size <= index:
                assert not verify_inclusion(leaf, index, wrong_size, proof, r), wrong_size
            else:  # fails exactly when the size changes the proof's shape
                same = rfc9162.path_sides(index, wrong_size) == rfc9162.path_sides(index, size)
                assert verify_inclusion(leaf, index, wrong_size, proof, r) == same, wrong_size
        if proof:
            assert not verify_inclusion(leaf, index, size, proof[:-1], r)
            assert not verify_inclusion(leaf, index, size, proof[1:], r)
            bad = [*proof]
            bad[0] = bytes([bad[0][0] ^ 1]) + bad[0][1:]
            assert not verify_inclusion(leaf, index, size, bad, r)
        assert not verify_inclusion(leaf, index, size, [*proof, r], r)
        assert not verify_inclusion(
            leaf, index, size, proof, store.root(size - 1) if size > 1 else EMPTY_ROOT
        )
        assert not verify_inclusion(leaf, index, size, proof, bytes(32))
        assert not verify_inclusion(leaf, index, size, proof, r[:31])


def test_inclusion_rejects_indexes_outside_the_tree(store: MemoryStore) -> None:
    with pytest.raises(ValueError, match="outside"):
        inclusion_proof(store.get, 5, 5)
    with pytest.raises(ValueError, match="outside"):
        inclusion_proof(store.get, -1, 5)
    with pytest.raises(ValueError, match="leaves"):
        store.inclusion_proof(0, N + 1)
    assert not verify_inclusion(LEAVES[0], 0, 0, [], EMPTY_ROOT)
    assert not verify_inclusion(LEAVES[0], -1, 1, [], LEAVES[0])


# --- consistency -------------------------------------------------------------------------------


def check_consistency(store: MemoryStore, m: int, n: int) -> None:
    got = consistency_proof(store.get, m, n)
    assert got == rfc9162.proof(m, ref(n)), (m, n)
    assert verify_consistency(m, n, rfc9162.mth(ref(m)), rfc9162.mth(ref(n)), got)


def test_consistency_every_pair_of_small_sizes(store: MemoryStore) -> None:
    for n in range(1, SMALL + 1):
        for m in range(1, n + 1):
            check_consistency(store, m, n)


def test_consistency_sampled_up_to_1000(store: MemoryStore) -> None:
    for m, n in sampled_pairs(400, seed=2):
        check_consistency(store, m, n)


def test_consistency_nodes_are_the_ones_read(store: MemoryStore) -> None:
    for m, n in [(1, 2), (3, 7), (4, 8), (6, 7), (500, 1000), (999, 1000), (1, 1000)]:
        reads, get = recording(store.get)
        consistency_proof(get, m, n)
        assert reads == nodes_for_consistency(m, n)


def test_consistency_from_the_empty_tree_and_to_itself(store: MemoryStore) -> None:
    assert consistency_proof(store.get, 0, 10) == []
    assert nodes_for_consistency(0, 10) == []
    assert verify_consistency(0, 10, EMPTY_ROOT, store.root(10), [])
    assert not verify_consistency(0, 10, store.root(1), store.root(10), [])
    assert not verify_consistency(0, 10, EMPTY_ROOT, store.root(10), [store.root(10)])
    assert consistency_proof(store.get, 10, 10) == []
    assert verify_consistency(10, 10, store.root(10), store.root(10), [])
    assert not verify_consistency(10, 10, store.root(10), store.root(9), [])
    assert not verify_consistency(10, 10, store.root(10), store.root(10), [store.root(10)])
    with pytest.raises(ValueError, match="no consistency proof"):
        consistency_proof(store.get, 11, 10)
    assert not verify_consistency(11, 10, store.root(11), store.root(10), [])


def test_consistency_fails_when_anything_changes(store: MemoryStore) -> None:
    for m, n in [(1, 2), (2, 5), (3, 7), (4, 8), (6, 7), (7, 8), (100, 1000), (512, 513)]:
        old, new = store.root(m), store.root(n)
        proof = consistency_proof(store.get, m, n)
        assert verify_consistency(m, n, old, new, proof)
        assert not verify_consistency(m, n, store.root(m - 1), new, proof)
        assert not verify_consistency(m, n, old, store.root(n - 1), proof)
        assert not verify_consistency(m, n, old, bytes(32), proof)
        assert not verify_consistency(m, n, old[:31], new, proof)
        for wm, wn in [(m + 1, n), (m - 1, n), (m, n + 1), (m, n - 1), (m, 2 * n), (2 * m, n)]:
            if 0 < wm < wn and len(rfc9162.proof(wm, ref(wn))) != len(proof):
                assert not verify_consistency(wm, wn, old, new, proof), (wm, wn)
        assert not verify_consistency(m, n, old, new, proof[:-1])
        assert not verify_consistency(m, n, old, new, proof[1:])
        assert not verify_consistency(m, n, old, new, [*proof, new])
        for i in range(len(proof)):
            bad = [*proof]
            bad[i] = bytes([bad[i][0] ^ 1]) + bad[i][1:]
            assert not verify_consistency(m, n, old, new, bad), i


def test_a_rewritten_history_fails_consistency(store: MemoryStore) -> None:
    """The point of the log: change one old leaf and the new head no longer extends the old."""
    rewritten = MemoryStore()
    rewritten.append([*LEAVES[:40], leaf_hash(b"a record rewritten"), *LEAVES[41:200]])
    old = store.root(100)
    assert rewritten.root(100) != old
    proof = rewritten.consistency_proof(100, 200)
    assert not verify_consistency(100, 200, old, rewritten.root(200), proof)
    assert verify_consistency(100, 200, rewritten.root(100), rewritten.root(200), proof)


def test_a_size_is_bound_by_the_checkpoint_not_by_the_proof(store: MemoryStore) -> None:
    """Hashes do not commit to tree sizes: where two sizes give a proof the same shape, the
    proof checks for both. RFC 9162 verifiers take the size from the signed tree head, which
    binds it to the root; these are the cases the wrong-size checks above leave out."""
    proof = store.inclusion_proof(0, 3)
    assert rfc9162.path_sides(0, 3) == rfc9162.path_sides(0, 4)
    assert verify_inclusion(LEAVES[0], 0, 4, proof, store.root(3))
    proof = store.consistency_proof(2, 5)
    assert verify_consistency(2, 6, store.root(2), store.root(5), proof)
    assert store.root(5) != store.root(6)
