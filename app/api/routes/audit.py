"""The audit log as a transparency log: the latest signed checkpoint, and proofs a client
checks against checkpoints it holds (docs/audit.md). No personal data: a proof is hashes."""

from __future__ import annotations

from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from app.api.deps import ClientDep, State
from app.api.openapi import problems
from app.db import read_connection
from app.errors import AuditRecordNotFound, NoCheckpoint, ValidationFailed
from app.repositories import tree as repo
from app.services import transparency
from app.services.audit import canonical_bytes
from app.tlog import merkle

router = APIRouter(prefix="/audit", tags=["audit"])

NOTE = "text/plain; charset=utf-8"


class ProofRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    audit_id: str = Field(
        min_length=1, max_length=64, description="`meta.audit_id` of an answer (or a receipt's)."
    )
    tree_size: int = Field(
        ge=1, description="The size of the tree to prove inclusion in: a checkpoint's size."
    )


class InclusionProof(BaseModel):
    audit_id: str
    seq: int = Field(description="The record's place in the log; its leaf index is seq - 1.")
    leaf_index: int
    tree_size: int
    leaf: str = Field(description="The record's canonical bytes (base64): the leaf's data.")
    leaf_hash: str = Field(description="SHA-256(0x00 || leaf), base64 (RFC 9162 2.1.1).")
    root_hash: str = Field(description="The root of the tree of `tree_size` leaves, base64.")
    inclusion_proof: list[str] = Field(description="The audit path (RFC 9162 2.1.3), base64.")


class ConsistencyProof(BaseModel):
    from_size: int = Field(alias="from")
    to_size: int = Field(alias="to")
    from_root: str
    to_root: str
    consistency_proof: list[str] = Field(description="RFC 9162 2.1.4, base64 hashes.")

    model_config = ConfigDict(populate_by_name=True)


async def _raw(conn: Any) -> asyncpg.Connection:
    raw = (await conn.get_raw_connection()).driver_connection
    assert isinstance(raw, asyncpg.Connection)
    return raw


@router.get(
    "/checkpoint",
    summary="The latest signed checkpoint of the audit log (C2SP tlog-checkpoint)",
    description="A signed note: the log's origin, its size and its root hash (base64), then a "
    "blank line and the signature lines. Checkpoints are also published where the service's "
    "database administrators cannot write; compare them, and ask for a consistency proof "
    "between two of them. No key needed.",
    response_class=Response,
    responses={
        200: {"content": {NOTE: {"example": "tepat.example/audit\n1024\nq1Zz...=\n\n— tepat..."}}},
        **problems(NoCheckpoint),
    },
)
async def get_checkpoint(state: State) -> Response:
    async with read_connection(state.engine) as conn:
        latest = await repo.latest_checkpoint(await _raw(conn))
    if latest is None:
        raise NoCheckpoint("no checkpoint has been signed yet (`tepat audit checkpoint`)")
    return Response(latest[1], media_type=NOTE)


@router.post(
    "/proof",
    summary="Proof that one of the client's audit records is in the log of a given size",
    description="For a record of the calling client only (another client's, or an unknown "
    "id, is 404 alike). Check it: the leaf hash is SHA-256(0x00 || leaf); the audit path "
    "leads from it to the root of a checkpoint of `tree_size` (RFC 9162 2.1.3.2).",
    response_model=InclusionProof,
    responses=problems(AuditRecordNotFound),
)
async def prove_inclusion(body: ProofRequest, state: State, client: ClientDep) -> InclusionProof:
    async with read_connection(state.engine) as conn:
        raw = await _raw(conn)
        record = await repo.record_by_id(raw, body.audit_id)
        if record is None or record.client_id != client.client_id:
            raise AuditRecordNotFound(
                "no audit record of this client has that id", field="audit_id"
            )
        size = await repo.tree_size(raw)
        if not record.seq <= body.tree_size <= size:
            raise ValidationFailed(
                f"tree_size must be from {record.seq} (the record's seq) to {size} (the "
                "tree's size so far)",
                field="tree_size",
            )
        path = await transparency.inclusion(raw, record.seq - 1, body.tree_size)
        root = await transparency.root_at(raw, body.tree_size)
    leaf = canonical_bytes(record)
    return InclusionProof(
        audit_id=record.id,
        seq=record.seq,
        leaf_index=record.seq - 1,
        tree_size=body.tree_size,
        leaf=transparency.b64(leaf),
        leaf_hash=transparency.b64(merkle.leaf_hash(leaf)),
        root_hash=transparency.b64(root),
        inclusion_proof=transparency.proof_json(path),
    )


@router.get(
    "/consistency",
    summary="Proof that the log of one size is a prefix of the log of a larger size",
    description="RFC 9162 2.1.4: given the roots of two checkpoints, the proof shows the "
    "larger tree extends the smaller one, so no record before it was changed or removed.",
    response_model=ConsistencyProof,
)
async def prove_consistency(
    state: State,
    _client: ClientDep,
    from_size: Annotated[int, Query(alias="from", ge=1)],
    to_size: Annotated[int, Query(alias="to", ge=1)],
) -> ConsistencyProof:
    async with read_connection(state.engine) as conn:
        raw = await _raw(conn)
        size = await repo.tree_size(raw)
        if not from_size <= to_size <= size:
            raise ValidationFailed(
                f"need 1 <= from <= to <= {size} (the tree's size so far)", field="to"
            )
        path = await transparency.consistency(raw, from_size, to_size)
        old = await transparency.root_at(raw, from_size)
        new = await transparency.root_at(raw, to_size)
    return ConsistencyProof(
        from_size=from_size,
        to_size=to_size,
        from_root=transparency.b64(old),
        to_root=transparency.b64(new),
        consistency_proof=transparency.proof_json(path),
    )
