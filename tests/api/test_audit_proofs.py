"""A client proves its own answers are in the published audit log, and nobody else's."""

from __future__ import annotations

import base64
import csv
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app import db
from app.config import Settings
from app.services import audit, transparency
from app.tlog import merkle
from tests.support import MakeClient, auth
from tests.tlog import rfc9162

ORIGIN = "tepat.test/audit-log"


@pytest.fixture(scope="module")
def niks(published: Path) -> list[str]:
    with (published / "anggota.csv").open() as f:
        return [r["nik"] for r in csv.DictReader(f)][:20]


async def _lookup(http: httpx.AsyncClient, key: str, nik: str) -> str:
    r = await http.post("/v1/people/lookup", json={"niks": [nik]}, headers=auth(key))
    assert r.status_code == 200
    audit_id: str = r.json()["meta"]["audit_id"]
    return audit_id


async def _checkpoint(settings: Settings, folder: Path) -> transparency.Made:
    raw = await db.connect_raw(settings)
    try:
        return await transparency.make_checkpoint(raw, ORIGIN, Ed25519PrivateKey.generate(), folder)
    finally:
        await raw.close()


async def _leaves(settings: Settings, size: int) -> tuple[bytes, ...]:
    raw = await db.connect_raw(settings)
    try:
        from app.repositories import tree

        return tuple(audit.canonical_bytes(r) for r in await tree.records_from(raw, 1, size))
    finally:
        await raw.close()


def _b(text: str) -> bytes:
    return base64.b64decode(text)


async def test_a_client_proves_its_record_is_in_a_checkpoint(
    http: httpx.AsyncClient,
    make_client: MakeClient,
    niks: list[str],
    settings: Settings,
    tmp_path: Path,
) -> None:
    mine, theirs = await make_client(), await make_client()
    audit_id = await _lookup(http, mine, niks[0])
    other_id = await _lookup(http, theirs, niks[1])
    first = await _checkpoint(settings, tmp_path)
    await _lookup(http, mine, niks[2])
    second = await _checkpoint(settings, tmp_path)

    r = await http.post(
        "/v1/audit/proof", json={"audit_id": audit_id, "tree_size": first.size}, headers=auth(mine)
    )
    assert r.status_code == 200, r.text
    p = r.json()
    leaf = _b(p["leaf"])
    assert audit_id.encode() in leaf  # the leaf is that record's canonical bytes
    assert _b(p["leaf_hash"]) == merkle.leaf_hash(leaf)
    assert _b(p["root_hash"]) == first.root  # the root the checkpoint signed
    path = [_b(h) for h in p["inclusion_proof"]]
    assert merkle.verify_inclusion(
        merkle.leaf_hash(leaf), p["leaf_index"], first.size, path, first.root
    )
    leaves = await _leaves(settings, second.size)
    assert path == rfc9162.path(p["leaf_index"], leaves[: first.size])  # an independent PATH
    assert rfc9162.mth(leaves[: first.size]) == first.root

    # Consistency between the two checkpoints, checked against both signed roots.
    r = await http.get(
        "/v1/audit/consistency", params={"from": first.size, "to": second.size}, headers=auth(mine)
    )
    assert r.status_code == 200, r.text
    c = r.json()
    proof = [_b(h) for h in c["consistency_proof"]]
    assert proof == rfc9162.proof(first.size, leaves[: second.size])
    assert merkle.verify_consistency(first.size, second.size, first.root, second.root, proof)

    # Another client's record is refused exactly like an unknown id: nothing leaks.
    for asked in (other_id, "no-such-id"):
        r = await http.post(
            "/v1/audit/proof", json={"audit_id": asked, "tree_size": first.size}, headers=auth(mine)
        )
        assert r.status_code == 404
        assert r.json()["code"] == "audit_record_not_found"
        assert asked not in r.text or asked == "no-such-id"


async def test_proof_requests_are_checked(
    http: httpx.AsyncClient,
    make_client: MakeClient,
    niks: list[str],
    settings: Settings,
    tmp_path: Path,
) -> None:
    key = await make_client()
    audit_id = await _lookup(http, key, niks[3])
    made = await _checkpoint(settings, tmp_path)
    r = await http.post("/v1/audit/proof", json={"audit_id": audit_id, "tree_size": made.size})
    assert r.status_code == 401
    for body, field in (
        ({"audit_id": audit_id, "tree_size": made.size + 10**6}, "tree_size"),
        ({"audit_id": audit_id, "tree_size": 1}, "tree_size"),
        ({"audit_id": audit_id, "tree_size": "7"}, "tree_size"),
        ({"audit_id": audit_id}, "tree_size"),
    ):
        r = await http.post("/v1/audit/proof", json=body, headers=auth(key))
        assert r.status_code == 422, body
        assert r.json()["field"] == field
    r = await http.get("/v1/audit/consistency", params={"from": 5, "to": 4}, headers=auth(key))
    assert r.status_code == 422
    r = await http.get("/v1/audit/checkpoint")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert r.text.startswith(ORIGIN + "\n")
