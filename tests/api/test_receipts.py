"""Every answer with personal data carries a receipt a client can check with a JOSE library
and the published keys alone: over the exact bytes received, naming the audit record."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from joserfc import jws
from joserfc.errors import BadSignatureError
from joserfc.jwk import KeySet
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.services import receipts
from tests.support import auth

PERSON = (
    "query P($nik: String!) { person(nik: $nik) { nik decile eligibility { program eligible } } }"
)
FAMILY = "query F($k: String!) { family(noKk: $k) { noKk decile members { nik } } }"


@pytest.fixture(scope="module")
def people(published: Path) -> list[dict[str, str]]:
    with (published / "anggota.csv").open() as f:
        return list(csv.DictReader(f))


async def _jwks(http: httpx.AsyncClient) -> dict[str, Any]:
    r = await http.get("/.well-known/jwks.json")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/jwk-set+json"
    doc: dict[str, Any] = r.json()
    return doc


async def _checked(
    http: httpx.AsyncClient, r: httpx.Response, engine: AsyncEngine
) -> dict[str, Any]:
    """Verify as a client would (joserfc and the JWKS), then hold the claims to the database."""
    assert r.status_code == 200, r.text
    token = r.headers["tepat-receipt"]
    keys = KeySet.import_key_set(await _jwks(http))  # type: ignore[arg-type]
    verified = jws.deserialize_compact(token, keys, algorithms=["EdDSA"])
    assert verified.headers()["alg"] == "EdDSA"
    assert verified.headers()["kid"] == keys.keys[0].kid
    claims: dict[str, Any] = orjson.loads(verified.payload)
    assert claims["body_sha256"] == hashlib.sha256(r.content).hexdigest()
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT seq, snapshot_id, rule_set_id FROM audit_log WHERE id = :id"),
                {"id": claims["audit_id"]},
            )
        ).one()
    assert claims["seq"] == row.seq
    assert (claims["snapshot"]["id"], claims["rule_set"]["id"]) == (
        row.snapshot_id,
        row.rule_set_id,
    )
    return claims


async def test_rest_lookups_carry_a_receipt_of_their_exact_bytes(
    http: httpx.AsyncClient, full_key: str, people: list[dict[str, str]], engine: AsyncEngine
) -> None:
    niks = [p["nik"] for p in people[:3]]
    r = await http.post("/v1/people/lookup", json={"niks": niks}, headers=auth(full_key))
    claims = await _checked(http, r, engine)
    meta = r.json()["meta"]
    assert claims["audit_id"] == meta["audit_id"]
    assert claims["snapshot"] == meta["snapshot"]
    assert claims["rule_set"] == meta["rule_set"]
    # One changed byte of the body and the receipt no longer holds.
    jwks = await _jwks(http)
    assert receipts.verify(r.headers["tepat-receipt"], r.content, jwks)["seq"] == claims["seq"]
    changed = r.content.replace(b'"found":true', b'"found":false', 1)
    assert changed != r.content
    with pytest.raises(receipts.ReceiptInvalid, match="body does not match"):
        receipts.verify(r.headers["tepat-receipt"], changed, jwks)

    no_kk = people[0]["no_kk"]
    r = await http.post("/v1/families/lookup", json={"no_kks": [no_kk]}, headers=auth(full_key))
    claims = await _checked(http, r, engine)
    assert claims["audit_id"] == r.json()["meta"]["audit_id"]


async def test_the_route_path_and_the_fast_path_both_sign(
    http: httpx.AsyncClient, full_key: str, people: list[dict[str, str]], engine: AsyncEngine
) -> None:
    nik = people[5]["nik"]
    fast = await http.post("/v1/people/lookup", json={"niks": [nik]}, headers=auth(full_key))
    # An extra whitespace-free but differently ordered body still parses on the fast path; a
    # string `explain` is refused there and handed to the route, which signs too.
    routed = await http.post(
        "/v1/people/lookup", json={"niks": [nik], "programs": ["PBI_JK"]}, headers=auth(full_key)
    )
    for r in (fast, routed):
        await _checked(http, r, engine)


async def test_graphql_receipts_cover_the_whole_response(
    app: FastAPI,
    http: httpx.AsyncClient,
    full_key: str,
    people: list[dict[str, str]],
    engine: AsyncEngine,
) -> None:
    stats = app.state.fast_graphql
    before = stats.served
    body = {"query": PERSON, "variables": {"nik": people[7]["nik"]}}
    r = await http.post("/graphql", json=body, headers=auth(full_key))
    assert stats.served == before + 1  # the compiled path answered
    claims = await _checked(http, r, engine)
    assert claims["audit_id"] == r.json()["extensions"]["meta"]["audit_id"]

    body = {"query": FAMILY, "variables": {"k": people[7]["no_kk"]}}
    r = await http.post("/graphql", json=body, headers=auth(full_key))
    assert stats.served == before + 1  # Strawberry answered this one
    claims = await _checked(http, r, engine)
    assert claims["audit_id"] == r.json()["extensions"]["meta"]["audit_id"]


async def test_answers_without_personal_data_carry_none(
    http: httpx.AsyncClient, full_key: str
) -> None:
    r = await http.post("/graphql", json={"query": "{ programs { id } }"}, headers=auth(full_key))
    assert r.status_code == 200 and "tepat-receipt" not in r.headers
    r = await http.post("/v1/people/lookup", json={"niks": ["1"]}, headers=auth(full_key))
    assert r.status_code == 422 and "tepat-receipt" not in r.headers


async def test_bulk_summary_lists_each_chunks_receipt_in_order(
    http: httpx.AsyncClient, full_key: str, people: list[dict[str, str]], engine: AsyncEngine
) -> None:
    lines = [orjson.dumps({"nik": p["nik"]}) for p in people[:2500]]
    r = await http.post(
        "/v1/bulk/eligibility",
        content=b"\n".join(lines) + b"\n",
        headers={**auth(full_key), "Content-Type": "application/x-ndjson"},
    )
    assert r.status_code == 200
    *answer, last = r.content.splitlines(keepends=True)
    summary = orjson.loads(last)["summary"]
    jwks = await _jwks(http)
    chunks = [b"".join(answer[i : i + 1000]) for i in range(0, 2500, 1000)]
    assert len(summary["receipts"]) == len(summary["audit_ids"]) == len(chunks) == 3
    for chunk, token, audit_id in zip(
        chunks, summary["receipts"], summary["audit_ids"], strict=True
    ):
        claims = receipts.verify(token, chunk, jwks)
        assert claims["audit_id"] == audit_id
    with pytest.raises(receipts.ReceiptInvalid):
        receipts.verify(summary["receipts"][0], chunks[1], jwks)


def test_a_receipt_from_another_key_does_not_verify(tmp_path: Path) -> None:
    ours = receipts.Keyring(receipts.generate(tmp_path / "a.pem"))
    theirs = receipts.Keyring(receipts.generate(tmp_path / "b.pem"))
    body = b"{}"
    token = theirs.sign({"body_sha256": hashlib.sha256(body).hexdigest()})
    with pytest.raises(receipts.ReceiptInvalid, match="signature"):
        receipts.verify(token, body, ours.document)
    # Signed with their key under our key id: the signature check itself refuses it.
    header = {"alg": "EdDSA", "kid": ours.current.kid}
    impostor = receipts.SigningKey(ours.current.kid, theirs.current.jwk, header)
    forged = impostor.sign({"body_sha256": hashlib.sha256(body).hexdigest()})
    keys = KeySet.import_key_set(ours.document)  # type: ignore[arg-type]
    with pytest.raises(BadSignatureError):
        jws.deserialize_compact(forged, keys, algorithms=["EdDSA"])
    with pytest.raises(receipts.ReceiptInvalid, match="signature"):
        receipts.verify(forged, body, ours.document)


def test_rotation_keeps_old_keys_published(tmp_path: Path) -> None:
    old = receipts.generate(tmp_path / "old.pem")
    (tmp_path / "retired.json").write_bytes(orjson.dumps({"keys": [old.public_jwk()]}))
    new = receipts.Keyring(
        receipts.generate(tmp_path / "new.pem"), receipts.retired_keys(tmp_path / "retired.json")
    )
    assert [k["kid"] for k in new.document["keys"]] == [new.current.kid, old.kid]
    body = b"[1]"
    signed_before = receipts.Keyring(old).sign({"body_sha256": hashlib.sha256(body).hexdigest()})
    assert receipts.verify(signed_before, body, new.document)["body_sha256"]
    assert oct((tmp_path / "new.pem").stat().st_mode & 0o777) == "0o600"
    with pytest.raises(FileExistsError):
        receipts.generate(tmp_path / "new.pem")  # never overwrites a key


def test_production_requires_a_signing_key() -> None:
    with pytest.raises(ValueError, match="TEPAT_AUDIT_SIGNING_KEY"):
        Settings(env="production", audit_hmac_key="a-real-secret-for-this-test-only-x")
