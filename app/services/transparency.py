"""The audit log as a transparency log (RFC 9162): a Merkle tree over the audit records, signed
checkpoints published where the database's administrators cannot write, and proofs.

Leaf i is the audit record of seq i + 1; its data is the record's canonical bytes (the bytes the
hash chain covers, app.services.audit.canonical_bytes). The tree is stored as the hashes of its
complete subtrees (audit_tree, app.tlog.merkle) and extended by `tepat audit checkpoint`, which
then signs a checkpoint (C2SP tlog-checkpoint, app.tlog.note) and writes it out. Whoever rewrites
the records afterwards (deletes, edits, recomputes the chain) cannot make the tree they leave
agree with a checkpoint published before: `verify_against` recomputes the tree from the records
and checks every published checkpoint.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from app.repositories import tree as repo
from app.repositories.audit import AuditRecord
from app.services.audit.records import canonical_bytes
from app.tlog import merkle, note

BATCH = 20_000  # records read, hashed and stored per step


def leaf_of(record: AuditRecord) -> bytes:
    """The leaf hash of a record (RFC 9162: SHA-256(0x00 || canonical bytes))."""
    return merkle.leaf_hash(canonical_bytes(record))


class Gap(RuntimeError):
    """The records are not numbered 1, 2, 3, ...: one is missing (deleted) where the tree
    expects it."""


async def extend(conn: asyncpg.Connection, *, up_to: int | None = None) -> int:
    """Add the records not yet in the tree (up to seq `up_to`); the tree's new size.

    One transaction per BATCH records under an advisory lock, so two extenders take turns and
    an interrupted run leaves a whole, smaller tree.
    """
    while True:
        async with conn.transaction():
            await repo.lock_tree(conn)
            size = await repo.tree_size(conn)
            limit = BATCH if up_to is None else min(BATCH, up_to - size)
            if limit <= 0:
                return size
            records = await repo.records_from(conn, size + 1, limit)
            if not records:
                return size
            for offset, r in enumerate(records):
                if r.seq != size + 1 + offset:
                    raise Gap(f"audit record seq {size + 1 + offset} is missing (found {r.seq})")
            frontier = await repo.nodes(conn, merkle.nodes_for_root(size))
            new = merkle.append(_getter(frontier), size, [leaf_of(r) for r in records])
            await repo.insert_nodes(conn, [(n.level, n.index, n.hash) for n in new])


def _getter(found: dict[tuple[int, int], bytes]) -> merkle.GetNode:
    return lambda level, index: found[(level, index)]


async def root_at(conn: asyncpg.Connection, size: int) -> bytes:
    found = await repo.nodes(conn, merkle.nodes_for_root(size))
    return merkle.root(_getter(found), size)


async def inclusion(conn: asyncpg.Connection, index: int, size: int) -> list[bytes]:
    found = await repo.nodes(conn, merkle.nodes_for_inclusion(index, size))
    return merkle.inclusion_proof(_getter(found), index, size)


async def consistency(conn: asyncpg.Connection, old: int, new: int) -> list[bytes]:
    found = await repo.nodes(conn, merkle.nodes_for_consistency(old, new))
    return merkle.consistency_proof(_getter(found), old, new)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- recomputing from the records, against published checkpoints -------------------------------


@dataclass(frozen=True, slots=True)
class Published:
    """A checkpoint as published: its file, and what it says."""

    path: Path
    size: int
    root: bytes


@dataclass(slots=True)
class Contradiction:
    checkpoint: Path
    reason: str
    first_record: int | None = None  # seq of the first record that differs, when known
    between: tuple[int, int] | None = None  # else: the differing record lies in (a, b]


@dataclass(slots=True)
class Verdict:
    records: int = 0
    checked: list[Path] = field(default_factory=list)
    contradiction: Contradiction | None = None

    @property
    def ok(self) -> bool:
        return self.contradiction is None


class _Frontier:
    """The right edge of a tree being rebuilt leaf by leaf: its root at any size reached, in
    O(log n) memory (the complete subtrees nodes_for_root names)."""

    def __init__(self) -> None:
        self.size = 0
        self.nodes: dict[tuple[int, int], bytes] = {}

    def add(self, leaves: Sequence[bytes]) -> None:
        new = merkle.append(_getter(self.nodes), self.size, leaves)
        self.nodes.update(((n.level, n.index), n.hash) for n in new)
        self.size += len(leaves)
        keep = set(merkle.nodes_for_root(self.size))
        self.nodes = {k: v for k, v in self.nodes.items() if k in keep}

    def root(self) -> bytes:
        return merkle.root(_getter(self.nodes), self.size)


async def verify_against(conn: asyncpg.Connection, published: Sequence[Published]) -> Verdict:
    """Rebuild the tree from the stored records and hold every published checkpoint to it.

    The first checkpoint (smallest size) the records contradict is named, with the first record
    that differs: found against the stored tree's leaves when they are still there, else given
    as the range between the last checkpoint that held and this one.
    """
    verdict = Verdict()
    wanted = sorted(published, key=lambda p: p.size)
    frontier = _Frontier()
    held = 0  # the largest checkpointed size that held so far
    pending = list(wanted)
    seq = 1
    while pending:
        target = pending[0].size
        if frontier.size < target:
            records = await repo.records_from(conn, seq, min(BATCH, target - frontier.size))
            contiguous = [r for i, r in enumerate(records) if r.seq == seq + i]
            if contiguous:
                frontier.add([leaf_of(r) for r in contiguous])
                seq += len(contiguous)
                verdict.records = frontier.size
            if len(contiguous) == len(records) and records:
                continue
            # The records end (or skip a seq) before the checkpoint's size.
            p = pending[0]
            reason = (
                f"the log has {frontier.size} consecutive records, fewer than this "
                f"checkpoint's {p.size}"
            )
            verdict.contradiction = await _locate(conn, p, reason, held)
            return verdict
        p = pending.pop(0)
        if frontier.root() != p.root:
            reason = (
                f"the records give root {b64(frontier.root())} at size {p.size}, "
                f"the checkpoint says {b64(p.root)}"
            )
            verdict.contradiction = await _locate(conn, p, reason, held)
            return verdict
        verdict.checked.append(p.path)
        held = p.size
    return verdict


async def _locate(conn: asyncpg.Connection, p: Published, reason: str, held: int) -> Contradiction:
    """Find the first record that differs from what the tree stored when it was extended (the
    extension ran before the rewrite); if the stored leaves are gone too, give the range."""
    stored = await repo.nodes(conn, ((0, i) for i in range(held, p.size)))
    if len(stored) == p.size - held and p.size > held:
        seq = held + 1
        while seq <= p.size:
            records = await repo.records_from(conn, seq, min(BATCH, p.size - seq + 1))
            for offset in range(min(BATCH, p.size - seq + 1)):
                want = stored[(0, seq - 1 + offset)]
                r = records[offset] if offset < len(records) else None
                if r is None or r.seq != seq + offset or leaf_of(r) != want:
                    return Contradiction(p.path, reason, first_record=seq + offset)
            seq += BATCH
    return Contradiction(p.path, reason, between=(held, p.size))


def read_published(folder: Path, open_note: Any) -> list[Published]:
    """Every checkpoint file in `folder` (named by its size), opened and signature-checked by
    `open_note(bytes) -> (size, root)`; a file that fails raises naming it."""
    out = []
    for path in sorted(folder.iterdir(), key=lambda f: (len(f.name), f.name)):
        if not path.is_file() or not path.name.isdigit():
            continue
        try:
            size, root = open_note(path.read_bytes())
        except Exception as e:
            raise ValueError(f"{path}: {e}") from None
        if size != int(path.name):
            raise ValueError(f"{path}: the file is named {path.name} but says size {size}")
        out.append(Published(path, size, root))
    return out


def proof_json(hashes: Sequence[bytes]) -> list[str]:
    return [b64(h) for h in hashes]


__all__ = [
    "Contradiction", "Gap", "Published", "Verdict", "consistency", "extend", "inclusion",
    "leaf_of", "proof_json", "read_published", "root_at", "verify_against",
]  # fmt: skip


# --- checkpoints ----------------------------------------------------------------------------


class CheckpointConflict(RuntimeError):
    """A different checkpoint of the same size is already published: never overwritten."""


@dataclass(frozen=True, slots=True)
class Made:
    size: int
    root: bytes
    path: Path
    note: bytes
    new: bool  # False: this size was already published (with the same bytes)


async def make_checkpoint(
    conn: asyncpg.Connection, origin: str, private_key: Any, out: Path
) -> Made:
    """Extend the tree to the last record, sign a checkpoint of it and write it to
    `out/<size>` (never overwriting another) and to audit_checkpoints."""
    size = await extend(conn)
    if size == 0:
        raise ValueError("the audit log is empty: nothing to checkpoint yet")
    root = await root_at(conn, size)
    signed = note.sign(note.Checkpoint(origin, size, root), origin, private_key)
    path, new = publish(out, size, signed)
    await repo.save_checkpoint(conn, size, root, signed)
    return Made(size, root, path, signed, new)


def publish(out: Path, size: int, signed: bytes) -> tuple[Path, bool]:
    """Write `out/<size>` once, durably; (path, False) when the same bytes are already there."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / str(size)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        if path.read_bytes() != signed:
            raise CheckpointConflict(
                f"{path} exists with other content; a checkpoint is never overwritten"
            ) from None
        return path, False
    with os.fdopen(fd, "wb") as f:
        f.write(signed)
        f.flush()
        os.fsync(f.fileno())
    return path, True


def opener(origin: str, public_keys: Sequence[bytes]) -> Any:
    """`open_note(bytes) -> (size, root)` for read_published: the signature must be one of
    the service's keys (current or retired), the origin this log's."""
    keys = [note.VerifierKey.of(origin, k) for k in public_keys]

    def open_one(data: bytes) -> tuple[int, bytes]:
        checkpoint = note.open_note(data, keys, origin)
        return checkpoint.size, checkpoint.root_hash

    return open_one
