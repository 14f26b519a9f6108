"""Signed DCI messages: a client's signature checked against its registered keys, Tepat's answers
and callbacks signed with the key of /.well-known/jwks.json. Signing and checking on the test's
side is plain joserfc over the canonical JSON of header and message (docs/dci.md)."""

from __future__ import annotations

import asyncio
import base64
import fcntl
import itertools
import json
import os
from pathlib import Path
from typing import Any

import httpx
import nacl.signing
import orjson
import pytest
from joserfc import jws
from joserfc.errors import BadSignatureError
from joserfc.jwk import ECKey, KeySet, OKPKey
from sqlalchemy.ext.asyncio import AsyncEngine

from app.errors import ValidationFailed
from app.services import clients, dci, receipts, signatures
from app.services.signer import PIPE_BYTES, Signer
from tests.dci.receiver import Receiver
from tests.dci.test_dci import (
    ASYNC,
    STATUS,
    SYNC,
    _status_request,
    by_nik,
    envelope,
)
from tests.support import ALL_GROUPS, ALL_PROGRAMS, PURPOSE, auth

Key = OKPKey | ECKey


def _content(body: dict[str, Any]) -> bytes:
    """What a signature covers: header and message, keys sorted, no whitespace (made with the
    standard library's encoder, as docs/dci.md shows a client doing)."""
    content = {"header": body["header"], "message": body["message"]}
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def signed(body: dict[str, Any], key: Key, alg: str) -> dict[str, Any]:
    protected = {"alg": alg, "kid": key.thumbprint()}
    token = jws.serialize_compact(protected, _content(body), key, algorithms=[alg])
    return {"signature": jws.detach_content(token), **body}


def _ed25519() -> OKPKey:
    return OKPKey.generate_key("Ed25519")


async def _client(
    engine: AsyncEngine, *keys: Key, required: bool = False, prefix: str | None = None
) -> str:
    jwks = {"keys": [{**k.as_dict(private=False), "kid": k.thumbprint()} for k in keys]}
    async with engine.begin() as conn:
        _, api_key = await clients.create_client(
            conn,
            name="signing client",
            programs=ALL_PROGRAMS,
            field_groups=ALL_GROUPS,
            purposes=[PURPOSE],
            jwks=jwks if keys else None,
            signatures_required=required,
            callback_url_prefix=prefix,
        )
    return api_key


async def _service_keys(http: httpx.AsyncClient) -> KeySet:
    r = await http.get("/.well-known/jwks.json")
    assert r.status_code == 200
    return KeySet.import_key_set(r.json())


def _check_answer(answer: dict[str, Any], keys: KeySet) -> None:
    """The answer's signature verifies over its own header and message with the service's key
    (and not over anything else)."""
    token = jws.deserialize_compact(
        answer["signature"], keys, algorithms=["EdDSA"], payload=_content(answer)
    )
    assert token.headers()["kid"] in {k.kid for k in keys.keys}
    tampered = {**answer, "message": {**answer["message"], "transaction_id": "other"}}
    with pytest.raises(BadSignatureError):
        jws.deserialize_compact(
            answer["signature"], keys, algorithms=["EdDSA"], payload=_content(tampered)
        )


def _refused(r: httpx.Response, code: str) -> None:
    assert r.status_code == 401, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["field"] == "signature"
    assert problem["message"]["ack_status"] == "ERR"
    assert problem["message"]["error"]["code"] == code


async def test_a_signed_search_is_answered_and_the_answer_is_signed(
    http: httpx.AsyncClient, engine: AsyncEngine, release: Any
) -> None:
    nik = release[0][0]["nik"]
    ed, ec = _ed25519(), ECKey.generate_key("P-256")
    key = await _client(engine, ed, ec)
    service = await _service_keys(http)
    pairs: list[tuple[Key, str]] = [(ed, "EdDSA"), (ec, "ES256")]
    for signer, alg in pairs:
        r = await http.post(
            SYNC, json=signed(envelope([by_nik(nik)]), signer, alg), headers=auth(key)
        )
        assert r.status_code == 200, r.text
        answer = r.json()
        (result,) = answer["message"]["search_response"]
        assert result["status"] == "succ"
        _check_answer(answer, service)

    status = signed(_status_request("transaction_id", "none-such"), ed, "EdDSA")
    r = await http.post(STATUS, json=status, headers=auth(key))
    assert r.status_code == 200, r.text
    _check_answer(r.json(), service)


async def test_an_unsigned_client_gets_signed_answers_too(
    http: httpx.AsyncClient, full_key: str, release: Any
) -> None:
    r = await http.post(SYNC, json=envelope([by_nik(release[0][0]["nik"])]), headers=auth(full_key))
    assert r.status_code == 200, r.text
    _check_answer(r.json(), await _service_keys(http))


async def test_bad_signatures_are_refused_with_the_standard_code(
    http: httpx.AsyncClient, engine: AsyncEngine, release: Any
) -> None:
    nik = release[0][0]["nik"]
    mine, other = _ed25519(), _ed25519()
    key = await _client(engine, mine)
    body = envelope([by_nik(nik)])

    tampered = signed(body, mine, "EdDSA")
    tampered["message"]["search_request"][0]["reference_id"] = "changed"
    cases = [
        signed(body, other, "EdDSA"),  # a key not registered for the client
        tampered,  # the message changed after signing
        {**body, "signature": "not a jws"},
        {**body, "signature": 'Signature: namespace="dci", kidId="x|y|ed25519"'},
    ]
    for case in cases:
        r = await http.post(SYNC, json=case, headers=auth(key))
        _refused(r, "err.signature.invalid")
        assert nik not in r.text
    r = await http.post(SYNC, json=signed(body, mine, "EdDSA"), headers=auth(key))
    assert r.status_code == 200, r.text  # the same request, signed right

    # the txn status route checks too
    wrong = signed(_status_request("transaction_id", "t"), other, "EdDSA")
    _refused(await http.post(STATUS, json=wrong, headers=auth(key)), "err.signature.invalid")

    # a client with no registered key cannot have its signature checked: refused, not ignored
    keyless = await _client(engine)
    r = await http.post(SYNC, json=signed(body, mine, "EdDSA"), headers=auth(keyless))
    _refused(r, "err.signature.invalid")


async def test_a_client_that_must_sign_is_refused_unsigned_requests(
    http: httpx.AsyncClient, engine: AsyncEngine, release: Any
) -> None:
    nik = release[0][0]["nik"]
    mine = _ed25519()
    key = await _client(engine, mine, required=True)
    body = envelope([by_nik(nik)])
    _refused(await http.post(SYNC, json=body, headers=auth(key)), "err.signature.missing")
    _refused(
        await http.post(SYNC, json={**body, "signature": None}, headers=auth(key)),
        "err.signature.missing",
    )
    status = _status_request("transaction_id", "t")
    _refused(await http.post(STATUS, json=status, headers=auth(key)), "err.signature.missing")
    r = await http.post(SYNC, json=signed(body, mine, "EdDSA"), headers=auth(key))
    assert r.status_code == 200, r.text


async def test_callbacks_are_signed(
    worker_http: httpx.AsyncClient, engine: AsyncEngine, release: Any
) -> None:
    receiver = Receiver(fail=0)
    try:
        mine = _ed25519()
        key = await _client(engine, mine, required=True, prefix=receiver.base)
        body = envelope([by_nik(release[0][0]["nik"])], sender_uri=receiver.base + "/dci")
        unsigned = await worker_http.post(ASYNC, json=body, headers=auth(key))
        _refused(unsigned, "err.signature.missing")
        r = await worker_http.post(ASYNC, json=signed(body, mine, "EdDSA"), headers=auth(key))
        assert r.status_code == 200, r.text
        status = _status_request("transaction_id", body["message"]["transaction_id"])
        status["header"]["sender_uri"] = receiver.base + "/dci"
        r = await worker_http.post(
            "/dci/registry/txn/status", json=signed(status, mine, "EdDSA"), headers=auth(key)
        )
        assert r.status_code == 200, r.text
        got = await receiver.wait(2)
        assert sorted(path for path, _, _ in got) == ["/dci/on-search", "/dci/txn/on-status"]
        service = await _service_keys(worker_http)
        for _, callback, _ in got:
            _check_answer(orjson.loads(callback), service)
    finally:
        receiver.server.shutdown()


def test_only_public_keys_are_registered() -> None:
    private = _ed25519()
    bad: dict[str, Any]
    for bad in (
        {"keys": [private.as_dict(private=True)]},
        {"keys": [{"kty": "oct", "k": "c2VjcmV0c2VjcmV0c2VjcmV0"}]},
        {"keys": []},
        {"kid": "x"},
        {"keys": [{"kty": "OKP", "crv": "Ed25519"}]},
    ):
        with pytest.raises(ValidationFailed) as refused:
            signatures.checked_jwks(bad)
        assert refused.value.extra["field"] == "jwks"
    public = private.as_dict(private=False)
    assert signatures.checked_jwks({"keys": [public]}) == {"keys": [public]}


async def test_signatures_required_needs_keys(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        with pytest.raises(ValidationFailed, match="jwks"):
            await clients.create_client(
                conn,
                name="x",
                programs=ALL_PROGRAMS,
                field_groups=ALL_GROUPS,
                purposes=[PURPOSE],
                signatures_required=True,
            )


def test_the_services_signature_is_joserfcs_token_byte_for_byte(tmp_path: Path) -> None:
    """Answers are signed with libsodium on a cached protected header; the detached token is
    the one the JOSE library makes of the same content, and it verifies with the library."""
    keyring = receipts.Keyring(receipts.generate(tmp_path / "service.pem"))
    key = keyring.current
    header = {"message_id": "m-1", "action": "on-search", "sender_id": "tepat"}
    message = {"transaction_id": "t-1", "search_response": [{"reference_id": "r-1"}]}
    content = signatures.signed_content(header, message)
    protected = {"alg": receipts.ALG, "typ": signatures.TYP, "kid": key.kid}
    by_library = jws.detach_content(
        jws.serialize_compact(protected, content, key.jwk, algorithms=[receipts.ALG])
    )
    assert signatures.detached(keyring, content) == by_library
    envelope = orjson.loads(signatures.sign(keyring, header, message))
    assert envelope["signature"] == by_library
    keys = KeySet.import_key_set(keyring.document)  # type: ignore[arg-type]
    jws.deserialize_compact(envelope["signature"], keys, algorithms=[receipts.ALG], payload=content)


async def test_answers_signed_together_in_the_child_are_the_same_bytes(tmp_path: Path) -> None:
    """Concurrent answers are signed as one batch, in the signer child when there are more than
    its inline few: each envelope is byte for byte the one signed alone in this process."""
    keyring = receipts.Keyring(receipts.generate(tmp_path / "service.pem"))
    signer = Signer(keyring.current.seed, inline_up_to=2)
    messages = [
        ({"message_id": f"m-{i}", "action": "on-search"}, {"transaction_id": f"t-{i}"})
        for i in range(9)
    ]
    try:
        await signer.start()
        assert signer.pid is not None
        signed = await asyncio.gather(
            *(signatures.sign_batched(keyring, signer, h, m) for h, m in messages)
        )
        assert signer.fallbacks == 0  # signed by the child, not here
    finally:
        await signer.stop()
    assert list(signed) == [signatures.sign(keyring, h, m) for h, m in messages]
    # Alone (a batch of one) it is signed here; without a signer, as before.
    assert await signatures.sign_batched(keyring, signer, *messages[0]) == signed[0]
    assert await signatures.sign_batched(keyring, None, *messages[0]) == signed[0]


async def test_answers_ride_along_with_a_receipt_batch(tmp_path: Path) -> None:
    """Answers asked while a batch of receipts waits for the child go in that batch's round
    trip, each signature still its own input's."""
    keyring = receipts.Keyring(receipts.generate(tmp_path / "service.pem"))
    signer = Signer(keyring.current.seed, inline_up_to=2)
    verify = nacl.signing.VerifyKey(keyring.current.signer.verify_key.encode())
    try:
        await signer.start()
        before = signer.round_trips
        # Asked: gathered for the end of this turn of the loop, when a batch sent in this
        # turn has taken them along.
        answers = [signer.sign_one(b"answer-%d" % i) for i in range(3)]
        receipts_signed = await signer.sign_many([b"receipt-%d" % i for i in range(4)])
        answered = await asyncio.gather(*answers)
        assert signer.round_trips == before + 1  # one trip for the seven
        assert signer.fallbacks == 0
    finally:
        await signer.stop()
    for i, signature in enumerate(receipts_signed):
        verify.verify(b"receipt-%d" % i, signature)
    for i, signature in enumerate(answered):
        verify.verify(b"answer-%d" % i, signature)


async def test_a_failed_batch_fails_each_of_its_answers(tmp_path: Path) -> None:
    keyring = receipts.Keyring(receipts.generate(tmp_path / "service.pem"))
    signer = Signer(keyring.current.seed)

    async def broken(inputs: Any) -> list[bytes]:
        raise OSError("the signer is gone")

    signer.sign_many = broken  # type: ignore[method-assign]
    results = await asyncio.gather(
        *(signer.sign_one(b"x%d" % i) for i in range(4)), return_exceptions=True
    )
    assert all(isinstance(r, OSError) for r in results)


def test_correlation_ids_are_time_ordered() -> None:
    """Rows keyed by them are appended to their index, not scattered over it."""
    ids = [dci.new_correlation_id() for _ in range(200)]
    assert all(a.int >> 80 <= b.int >> 80 for a, b in itertools.pairwise(ids))
    assert len(set(ids)) == len(ids)
    assert all(i.version == 7 for i in ids)


def test_b64url_is_base64url_without_padding() -> None:
    for n in range(0, 200):
        data = os.urandom(n)
        assert receipts.b64url(data) == base64.urlsafe_b64encode(data).rstrip(b"=")


async def test_the_signer_child_is_fed_through_a_wide_pipe(tmp_path: Path) -> None:
    """A batch of answers fits the child's stdin in one write."""
    keyring = receipts.Keyring(receipts.generate(tmp_path / "service.pem"))
    signer = Signer(keyring.current.seed)
    try:
        await signer.start()
        proc = signer._proc
        assert proc is not None and proc.stdin is not None
        pipe = proc.stdin.get_extra_info("pipe")
        assert fcntl.fcntl(pipe.fileno(), fcntl.F_GETPIPE_SZ) == PIPE_BYTES
    finally:
        await signer.stop()
