"""Signed DCI messages (docs/dci.md): the envelope's `signature` over its header and message.

The DCI standard carries a `signature` beside `header` and `message` without fixing how it is
made, so Tepat uses a detached JWS (RFC 7515 appendix F): a compact JWS whose payload, left out
of the token (`header..signature`), is the canonical JSON of `{"header": ..., "message": ...}`:
object keys sorted, no insignificant whitespace, UTF-8, as parsed from the body received.

A client's signature is checked against the public keys registered for it
(`tepat client create ... --jwks FILE`); Tepat signs its answers and callbacks with the key that
signs its receipts (app.services.receipts), published at `/.well-known/jwks.json`. All JOSE work
is joserfc's.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import orjson
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.util import json_b64encode

from app.auth.principal import Principal
from app.errors import SignatureInvalid, ValidationFailed
from app.services.receipts import ALG, Keyring, b64url
from app.services.signer import Signer

TYP = "dci-message+jws"
# Asymmetric algorithms only: a client signs with a private key Tepat never holds.
CLIENT_ALGORITHMS = ("EdDSA", "Ed25519", "ES256", "ES384", "PS256", "RS256")
MISSING = "err.signature.missing"
INVALID = "err.signature.invalid"


def signed_content(header: Any, message: Any) -> bytes:
    """What a message signature covers: the canonical JSON of its header and message."""
    return orjson.dumps({"header": header, "message": message}, option=orjson.OPT_SORT_KEYS)


def sign(keyring: Keyring | None, header: Mapping[str, Any], message: Mapping[str, Any]) -> bytes:
    """The envelope `{signature, header, message}` as sent, signed with the service's key
    (without a keyring, unsigned)."""
    if keyring is None:
        return orjson.dumps({"header": header, "message": message})
    # The envelope is the signed content itself with the signature put in front: one
    # serialization of the message, not two (`{"header":...,"message":...}`, keys sorted; the
    # token is base64url and dots, nothing to escape).
    content = signed_content(header, message)
    return b'{"signature":"' + detached(keyring, content).encode("ascii") + b'",' + content[1:]


async def sign_batched(
    keyring: Keyring | None,
    signer: Signer | None,
    header: Mapping[str, Any],
    message: Mapping[str, Any],
) -> bytes:
    """`sign`, the signature made by `signer` (the audit writer's receipt signer, holding the
    keyring's current key) together with the other answers signed in the same turn of the event
    loop: under load, in its child process. The same bytes as `sign` (Ed25519 is
    deterministic)."""
    if keyring is None or signer is None:
        return sign(keyring, header, message)
    content = signed_content(header, message)
    protected = _protected(keyring.current.kid)
    signature = await signer.sign_one(protected + b"." + b64url(content))
    token = protected + b".." + b64url(signature)
    return b'{"signature":"' + token + b'",' + content[1:]


@functools.lru_cache(maxsize=8)
def _protected(kid: str) -> bytes:
    return json_b64encode({"alg": ALG, "typ": TYP, "kid": kid})


def detached(keyring: Keyring, content: bytes) -> str:
    """The detached compact JWS (`header..signature`) of `content` with the service's key: the
    token joserfc's `serialize_compact` + `detach_content` make, byte for byte
    (tests/dci/test_signatures.py), signed with libsodium as receipts are: about half the CPU
    of the library's path on every DCI answer."""
    key = keyring.current
    protected = _protected(key.kid)
    signature = key.signer.sign(protected + b"." + b64url(content)).signature
    return (protected + b".." + b64url(signature)).decode("ascii")


def check_request(principal: Principal, body: bytes) -> None:
    """Refuse a request whose signature does not verify against the client's registered keys,
    or that carries none when the client must sign (SignatureInvalid, with the standard's code).
    `body` is the request as received; an unsigned request of another client passes."""
    if not principal.signatures_required and b'"signature"' not in body:
        return  # the common case, without parsing the body again
    envelope = orjson.loads(body)
    signature = envelope.get("signature") if isinstance(envelope, dict) else None
    if signature is None:
        if principal.signatures_required:
            raise SignatureInvalid(
                "this client must sign its requests: `signature` is missing",
                field="signature",
                dci_code=MISSING,
            )
        return
    if principal.jwks is None:
        raise SignatureInvalid(
            "`signature` cannot be verified: no public key is registered for this client",
            field="signature",
            dci_code=INVALID,
        )
    content = signed_content(envelope.get("header"), envelope.get("message"))
    try:
        keys = KeySet.import_key_set(dict(principal.jwks))  # type: ignore[arg-type]
        jws.deserialize_compact(str(signature), keys, algorithms=CLIENT_ALGORITHMS, payload=content)
    except (JoseError, ValueError, TypeError):
        raise SignatureInvalid(
            "`signature` does not verify over the header and message with this client's keys "
            "(its JWS header names the key's `kid` when several are registered)",
            field="signature",
            dci_code=INVALID,
        ) from None


def verify(signature: str, header: Any, message: Any, jwks: Mapping[str, Any]) -> dict[str, Any]:
    """Check a message signature (a client's check of Tepat's answers); its protected header,
    or SignatureInvalid."""
    try:
        keys = KeySet.import_key_set(dict(jwks))  # type: ignore[arg-type]
        token = jws.deserialize_compact(
            signature, keys, algorithms=[ALG], payload=signed_content(header, message)
        )
    except (JoseError, ValueError, TypeError) as e:
        raise SignatureInvalid(f"the signature does not verify: {e}", dci_code=INVALID) from None
    return dict(token.headers())


def checked_jwks(document: Mapping[str, Any] | Any) -> dict[str, Any]:
    """A client's JWKS as registered: public keys only, each usable to verify signatures."""
    keys = document.get("keys") if isinstance(document, Mapping) else None
    if not isinstance(keys, list) or not keys:
        raise ValidationFailed('jwks must be a JWKS document: {"keys": [...]}', field="jwks")
    try:
        imported = KeySet.import_key_set({"keys": keys})
    except (JoseError, ValueError, TypeError, KeyError) as e:
        raise ValidationFailed(f"jwks holds a key that cannot be read: {e}", field="jwks") from None
    for key in imported.keys:
        if key.is_private or key.key_type == "oct":
            raise ValidationFailed(
                "jwks must hold public keys only (never a private or shared secret key)",
                field="jwks",
            )
    return {"keys": [dict(k) for k in keys]}
