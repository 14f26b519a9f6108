"""Health, snapshots, programs and rule sets: metadata without personal data."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlalchemy import text
from starlette.responses import Response

from app.api.deps import State
from app.api.openapi import problems
from app.db import read_connection
from app.errors import NoSnapshotPublished, RuleSetNotFound, SnapshotNotFound
from app.schemas.meta import ProgramInfo, RuleSetInfo
from app.schemas.snapshots import Snapshot
from app.services import programs as programs_svc
from app.services import rule_sets, snapshots

health = APIRouter(tags=["health"])
router = APIRouter(tags=["metadata"])


class Liveness(BaseModel):
    status: Literal["ok"]


class ReadNode(BaseModel):
    """One database server reads can run on (docs/architecture.md#read-replicas)."""

    name: str = Field(
        description="`primary`, or `replica N`: the Nth URL of TEPAT_DATABASE_REPLICA_URLS "
        "(no host names or credentials: anyone may call /readyz)",
        examples=["replica 1"],
    )
    role: Literal["primary", "replica"] = Field(description="What the node is")
    status: Literal["up", "down"] = Field(
        description="`down`: out of rotation (unreachable, not a standby, or lagging past "
        "TEPAT_REPLICA_MAX_LAG); its reads go to the other nodes"
    )
    lag_seconds: float | None = Field(
        None, description="A replica: seconds behind what the primary had written", examples=[0.0]
    )
    error: str | None = Field(None, description="Why the node is out of rotation")


class Readiness(BaseModel):
    status: Literal["ready"]
    snapshot: str = Field(description="The current snapshot's id", examples=["2026-01-23"])
    nodes: list[ReadNode] = Field(
        description="The primary (checked by this request) and each read replica (as last "
        "checked, every TEPAT_REPLICA_CHECK_INTERVAL seconds). Ready while the primary answers."
    )


@health.get("/healthz", summary="Liveness: the process answers (no database call)")
async def check_liveness() -> Liveness:
    return Liveness(status="ok")


@health.get(
    "/readyz",
    summary="Readiness: the database answers and a snapshot is published",
    responses=problems(NoSnapshotPublished),
)
async def check_readiness(state: State) -> Readiness:
    async with read_connection(state.engine) as conn:
        await conn.execute(text("SELECT 1"))
        current = await snapshots.resolve(conn, None)
    nodes = [ReadNode.model_validate(n) for n in state.reads.nodes.report()]
    nodes[0].status, nodes[0].error = "up", None  # it just answered
    return Readiness(status="ready", snapshot=current.id, nodes=nodes)


@health.get(
    "/.well-known/jwks.json",
    summary="The public keys audit receipts and checkpoints are signed with (JWKS, RFC 7517)",
    description="Every key still valid for verification, the current one first: after a "
    "rotation the retired keys stay here, so receipts signed with them keep verifying. A "
    "receipt's JWS header names its key (`kid`, the RFC 7638 thumbprint). See docs/receipts.md.",
    tags=["audit"],
    response_class=Response,
    responses={
        200: {
            "content": {
                "application/jwk-set+json": {
                    "example": {
                        "keys": [
                            {
                                "kty": "OKP",
                                "crv": "Ed25519",
                                "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
                                "kid": "kGvGY2ICvHHfTl0RPttM_EaNlLxNWOW2rv4PoELGHco",
                                "alg": "EdDSA",
                                "use": "sig",
                            }
                        ]
                    }
                }
            }
        }
    },
)
async def get_jwks(state: State) -> Response:
    return Response(
        state.keyring.jwks_bytes,
        media_type="application/jwk-set+json",
        headers={"Cache-Control": "public, max-age=300"},
    )


@router.get("/snapshots", summary="Loaded DTSEN releases, newest cut-off first")
async def list_snapshots(state: State) -> list[Snapshot]:
    async with read_connection(state.engine) as conn:
        return await snapshots.list_snapshots(conn)


@router.get(
    "/snapshots/{snapshot_id}",
    summary="One DTSEN release",
    description="Any id that names no loaded snapshot, well-formed or not, is 404.",
    responses=problems(SnapshotNotFound),
)
async def get_snapshot(snapshot_id: str, state: State) -> Snapshot:
    async with read_connection(state.engine) as conn:
        return await snapshots.get_snapshot(conn, snapshot_id)


@router.get("/programs", summary="The four programs, their unit and criteria in words")
async def list_programs() -> list[ProgramInfo]:
    return programs_svc.PROGRAMS


@router.get("/rule-sets", summary="Loaded rule sets: effective date, parameters, checksum")
async def list_rule_sets(state: State) -> list[RuleSetInfo]:
    async with read_connection(state.engine) as conn:
        return [RuleSetInfo.of(r) for r in await rule_sets.list_rule_sets(conn)]


@router.get(
    "/rule-sets/{rule_set_id}",
    summary="One rule set",
    description="Any id that names no loaded rule set, well-formed or not, is 404.",
    responses=problems(RuleSetNotFound),
)
async def get_rule_set(rule_set_id: str, state: State) -> RuleSetInfo:
    async with read_connection(state.engine) as conn:
        return RuleSetInfo.of(await rule_sets.get_rule_set(conn, rule_set_id))
