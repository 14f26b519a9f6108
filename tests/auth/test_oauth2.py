"""OAuth2 client credentials: a client signs an assertion with its registered key, gets an
access token and uses it on every face; bad assertions, expired tokens, revoked clients and
scopes are refused as RFC 6749 and RFC 6750 say."""

from __future__ import annotations

import base64
import csv
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, OKPKey
from sqlalchemy.ext.asyncio import AsyncEngine

from app.errors import ValidationFailed
from app.repositories import clients as repo
from app.services import clients as svc
from app.services.oauth2 import ASSERTION_TYPE, ISSUER, TOKEN_TYP
from tests.auth.conftest import MakeClient
from tests.support import PURPOSE

TOKEN = "/oauth2/client/token"
DCI_TOKEN = "/dci/oauth2/client/token"
BASE = "http://tepat.test"
FORM = "application/x-www-form-urlencoded"


@pytest.fixture(scope="module")
def nik(published: Path) -> str:
    with (published / "anggota.csv").open() as f:
        return next(csv.DictReader(f))["nik"]


def _jwks(key: OKPKey | ECKey) -> dict[str, Any]:
    public = key.as_dict(private=False)
    public["kid"] = key.thumbprint()
    return {"keys": [public]}


def assertion(
    key: OKPKey | ECKey,
    client_id: str,
    *,
    aud: str = BASE + TOKEN,
    exp_in: int = 120,
    jti: str | None = None,
) -> str:
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": aud,
        "iat": now,
        "exp": now + exp_in,
        "jti": jti or uuid.uuid4().hex,
    }
    alg = "EdDSA" if isinstance(key, OKPKey) else "ES256"
    return jwt.encode({"alg": alg, "kid": key.thumbprint()}, claims, key, algorithms=[alg])


def form(signed: str, **extra: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": signed,
        **extra,
    }


async def _client(make_client: MakeClient, **overrides: Any) -> tuple[str, str, OKPKey]:
    key = OKPKey.generate_key("Ed25519")
    info, api_key = await make_client(
        programs=["PKH", "PBI_JK"],
        field_groups=["decision", "decile", "identity"],
        purposes=[PURPOSE, "other-purpose"],
        jwks=_jwks(key),
        **overrides,
    )
    return info.id, api_key, key


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "X-Purpose": PURPOSE}


async def _token(http: httpx.AsyncClient, data: dict[str, str], path: str = TOKEN) -> str:
    r = await http.post(path, data=data)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["token_type"] == "Bearer" and 0 < body["expires_in"] <= 300
    token: str = body["access_token"]
    return token


def _oauth_error(r: httpx.Response, status: int, error: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == error, body
    description: str = body["error_description"]
    return description


async def test_a_token_from_a_signed_assertion_works_on_every_face(
    http: httpx.AsyncClient, make_client: MakeClient, nik: str, app: FastAPI
) -> None:
    client_id, _, key = await _client(make_client, bulk=True)
    token = await _token(http, form(assertion(key, client_id)))

    # The token is a JWT signed with the service's published key, naming the client and grant.
    jwks = (await http.get("/.well-known/jwks.json")).json()
    decoded = jwt.decode(token, KeySet.import_key_set(jwks), algorithms=["EdDSA"])
    assert decoded.header["typ"] == TOKEN_TYP
    assert decoded.header["kid"] == app.state.tepat.keyring.current.kid
    claims = decoded.claims
    assert claims["iss"] == ISSUER and claims["sub"] == client_id
    assert claims["scope"] == "PKH PBI_JK decision decile identity"
    assert sorted(claims["purposes"]) == ["other-purpose", PURPOSE]
    assert claims["exp"] - claims["iat"] <= 300 and claims["jti"]

    rest = await http.post("/v1/people/lookup", json={"niks": [nik]}, headers=bearer(token))
    assert rest.status_code == 200, rest.text
    (person,) = rest.json()["results"]
    assert person["found"] and person["nik"] == nik

    query = "query($nik: String!) { person(nik: $nik) { nik found } }"
    gql = await http.post(
        "/graphql", json={"query": query, "variables": {"nik": nik}}, headers=bearer(token)
    )
    assert gql.status_code == 200, gql.text
    assert gql.json()["data"]["person"] == {"nik": nik, "found": True}

    envelope = {
        "header": {
            "version": "1.0.0",
            "message_id": uuid.uuid4().hex,
            "message_ts": "2026-03-01T09:30:00+07:00",
            "action": "search",
            "sender_id": "spmis.test",
            "total_count": 1,
        },
        "message": {
            "transaction_id": uuid.uuid4().hex,
            "search_request": [
                {
                    "reference_id": "r1",
                    "timestamp": "2026-03-01T09:30:00+07:00",
                    "search_criteria": {
                        "query_type": "idtype-value",
                        "query": {"type": "NIK", "value": nik},
                    },
                }
            ],
        },
    }
    dci = await http.post("/dci/registry/sync/search", json=envelope, headers=bearer(token))
    assert dci.status_code == 200, dci.text
    (result,) = dci.json()["message"]["search_response"]
    (record,) = result["data"]["reg_records"]
    assert record["identifier"]["identifier_value"] == nik

    bulk = await http.post(
        "/v1/bulk/eligibility",
        content=orjson.dumps({"nik": nik}) + b"\n",
        headers={**bearer(token), "Content-Type": "application/x-ndjson"},
    )
    assert bulk.status_code == 200, bulk.text
    first = orjson.loads(bulk.content.splitlines()[0])
    assert first["nik"] == nik and first["found"]


async def test_the_dci_path_issues_tokens_too(
    http: httpx.AsyncClient, make_client: MakeClient, nik: str
) -> None:
    client_id, _, key = await _client(make_client)
    signed = assertion(key, client_id, aud=BASE + DCI_TOKEN)
    token = await _token(http, form(signed), DCI_TOKEN)
    r = await http.post("/v1/people/lookup", json={"niks": [nik]}, headers=bearer(token))
    assert r.status_code == 200, r.text


async def test_the_api_key_works_as_client_secret(
    http: httpx.AsyncClient, make_client: MakeClient, nik: str
) -> None:
    client_id, api_key, _ = await _client(make_client)
    posted = {"grant_type": "client_credentials", "client_id": client_id}
    token = await _token(http, {**posted, "client_secret": api_key})
    r = await http.post("/v1/people/lookup", json={"niks": [nik]}, headers=bearer(token))
    assert r.status_code == 200, r.text
    basic = base64.b64encode(f"{client_id}:{api_key}".encode()).decode()
    r = await http.post(
        TOKEN,
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert r.status_code == 200, r.text
    _, other_key, _ = await _client(make_client)
    r = await http.post(TOKEN, data={**posted, "client_secret": other_key})  # another's key
    _oauth_error(r, 401, "invalid_client")


async def test_bad_assertions_are_invalid_client(
    http: httpx.AsyncClient, make_client: MakeClient
) -> None:
    client_id, _, key = await _client(make_client)
    stranger = OKPKey.generate_key("Ed25519")
    why = _oauth_error(
        await http.post(TOKEN, data=form(assertion(stranger, client_id))), 401, "invalid_client"
    )
    assert "signature" in why
    other_alg = ECKey.generate_key("P-256")
    r = await http.post(TOKEN, data=form(assertion(other_alg, client_id)))
    _oauth_error(r, 401, "invalid_client")
    r = await http.post(TOKEN, data=form(assertion(key, client_id, exp_in=-60)))
    assert "exp" in _oauth_error(r, 401, "invalid_client")
    r = await http.post(TOKEN, data=form(assertion(key, client_id, exp_in=3600)))
    assert "ahead" in _oauth_error(r, 401, "invalid_client")
    r = await http.post(TOKEN, data=form(assertion(key, client_id, aud=BASE + "/elsewhere")))
    assert "aud" in _oauth_error(r, 401, "invalid_client")
    once = assertion(key, client_id)
    await _token(http, form(once))
    r = await http.post(TOKEN, data=form(once))
    assert "jti" in _oauth_error(r, 401, "invalid_client")
    r = await http.post(TOKEN, data=form(assertion(key, "no-such-client")))
    _oauth_error(r, 401, "invalid_client")
    r = await http.post(TOKEN, data=form(assertion(key, client_id), client_id="someone-else"))
    _oauth_error(r, 401, "invalid_client")
    r = await http.post(TOKEN, data=form("not.a-jwt"))
    _oauth_error(r, 401, "invalid_client")
    # a client registered without a key cannot use private_key_jwt
    bare, _ = await make_client()
    r = await http.post(TOKEN, data=form(assertion(key, bare.id)))
    assert "public key" in _oauth_error(r, 401, "invalid_client")


async def test_request_errors(http: httpx.AsyncClient, make_client: MakeClient) -> None:
    client_id, _, key = await _client(make_client)
    r = await http.post(TOKEN, data={**form(assertion(key, client_id)), "grant_type": "password"})
    _oauth_error(r, 400, "unsupported_grant_type")
    r = await http.post(TOKEN, data={"scope": "PKH"})
    assert "grant_type" in _oauth_error(r, 400, "invalid_request")
    r = await http.post(TOKEN, json=form(assertion(key, client_id)))
    _oauth_error(r, 400, "invalid_request")
    r = await http.post(TOKEN, data={"grant_type": "client_credentials"})
    _oauth_error(r, 401, "invalid_client")
    twice = "grant_type=client_credentials&scope=PKH&scope=BPNT"
    r = await http.post(TOKEN, content=twice, headers={"Content-Type": FORM})
    assert "scope" in _oauth_error(r, 400, "invalid_request")
    # unknown parameters are ignored (RFC 6749 3.1), repeated or not
    signed = assertion(key, client_id)
    extra = httpx.QueryParams({**form(signed)}).add("x-extra", "1").add("x-extra", "2")
    r = await http.post(TOKEN, content=str(extra), headers={"Content-Type": FORM})
    assert r.status_code == 200, r.text


async def test_scope_narrows_the_token(
    http: httpx.AsyncClient, make_client: MakeClient, nik: str
) -> None:
    client_id, _, key = await _client(make_client)
    scoped = form(assertion(key, client_id), scope="PKH decision purpose:" + PURPOSE)
    r = await http.post(TOKEN, data=scoped)
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == "PKH decision"
    token = r.json()["access_token"]
    ok = await http.post("/v1/people/lookup", json={"niks": [nik]}, headers=bearer(token))
    assert ok.status_code == 200, ok.text
    (person,) = ok.json()["results"]
    assert [d["program"] for d in person["decisions"]] == ["PKH"]
    assert person.get("decile") is None  # decile was not in the scope
    r = await http.post(
        "/v1/people/lookup",
        json={"niks": [nik], "programs": ["PBI_JK"]},
        headers=bearer(token),
    )
    assert r.status_code == 403, r.text
    other = {**bearer(token), "X-Purpose": "other-purpose"}
    r = await http.post("/v1/people/lookup", json={"niks": [nik]}, headers=other)
    assert r.status_code == 403, r.text
    r = await http.post(TOKEN, data=form(assertion(key, client_id), scope="BPNT"))
    assert "not granted" in _oauth_error(r, 400, "invalid_scope")
    r = await http.post(TOKEN, data=form(assertion(key, client_id), scope="everything"))
    _oauth_error(r, 400, "invalid_scope")


async def test_an_expired_or_forged_token_is_401_invalid_token(
    http: httpx.AsyncClient, make_client: MakeClient, nik: str, app: FastAPI
) -> None:
    client_id, _, _ = await _client(make_client)
    signing = app.state.tepat.keyring.current
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": client_id,
        "aud": "tepat",
        "iat": now - 600,
        "exp": now - 300,
        "jti": "x",
        "scope": "PKH decision",
        "purposes": [PURPOSE],
    }
    header = {"alg": "EdDSA", "kid": signing.kid, "typ": TOKEN_TYP}
    expired = jwt.encode(header, claims, signing.jwk, algorithms=["EdDSA"])
    forger = OKPKey.generate_key("Ed25519")
    forged = jwt.encode(header, {**claims, "exp": now + 300}, forger, algorithms=["EdDSA"])
    for token in (expired, forged):
        r = await http.post("/v1/people/lookup", json={"niks": [nik]}, headers=bearer(token))
        assert r.status_code == 401, r.text
        assert 'error="invalid_token"' in r.headers["www-authenticate"]
        assert token not in r.text
        query = "query($nik: String!) { person(nik: $nik) { nik } }"
        r = await http.post(
            "/graphql", json={"query": query, "variables": {"nik": nik}}, headers=bearer(token)
        )
        assert r.status_code == 401, r.text
        assert 'error="invalid_token"' in r.headers["www-authenticate"]


async def test_a_revoked_or_suspended_clients_token_is_refused(
    http: httpx.AsyncClient, make_client: MakeClient, nik: str, app: FastAPI, engine: AsyncEngine
) -> None:
    client_id, _, key = await _client(make_client)
    token = await _token(http, form(assertion(key, client_id)))
    r = await http.post("/v1/people/lookup", json={"niks": [nik]}, headers=bearer(token))
    assert r.status_code == 200, r.text
    async with engine.begin() as conn:
        await svc.revoke_client(conn, client_id)
    app.state.tepat.authenticator.forget()  # as for keys: else within the cache's TTL (30 s)
    r = await http.post("/v1/people/lookup", json={"niks": [nik]}, headers=bearer(token))
    assert r.status_code == 401, r.text
    r = await http.post(TOKEN, data=form(assertion(key, client_id)))
    _oauth_error(r, 401, "invalid_client")  # and it gets no new token

    other_id, _, other_key = await _client(make_client)
    token = await _token(http, form(assertion(other_key, other_id)))
    async with engine.begin() as conn:
        await repo.mark_suspended(conn, other_id, "test")
    app.state.tepat.authenticator.forget()
    r = await http.post("/v1/people/lookup", json={"niks": [nik]}, headers=bearer(token))
    assert r.status_code == 403, r.text
    r = await http.post(TOKEN, data=form(assertion(other_key, other_id)))
    _oauth_error(r, 401, "invalid_client")


async def test_a_registered_jwks_must_be_public_keys(make_client: MakeClient) -> None:
    private = OKPKey.generate_key("Ed25519").as_dict(private=True)
    with pytest.raises(ValidationFailed, match="public keys only"):
        await make_client(jwks={"keys": [private]})
    with pytest.raises(ValidationFailed, match="JWKS"):
        await make_client(jwks={"kty": "OKP"})
    with pytest.raises(ValidationFailed, match="never a private or shared secret key"):
        await make_client(jwks={"keys": [{"kty": "oct", "k": "c2VjcmV0"}]})
