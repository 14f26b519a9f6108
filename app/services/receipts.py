"""Signed receipts: a compact JWS over each answer, verifiable with any JOSE library.

A receipt (RFC 7515 compact serialization, `alg` EdDSA per RFC 8037 with an Ed25519 key, `kid`
the key's RFC 7638 thumbprint) says: this audit record (`audit_id`, `seq`) was written for an
answer whose exact bytes hash to `body_sha256`, read from this snapshot and rule set (ids and
checksums), at `iat`. The service's public keys, old ones included, are at
`/.well-known/jwks.json`; a client needs nothing else to check a receipt.

Keys are held apart from the database: `tepat audit keygen --out FILE` writes an Ed25519
private key (PKCS#8 PEM, mode 0600) and the service reads it from TEPAT_AUDIT_SIGNING_KEY.
Outside production, without one, a key is made once under the data directory.

Signing is the hot path (every answer): the protected header is encoded once per key and the
compact serialization (header.payload.signature, RFC 7515 section 7.1) is assembled here around
one libsodium Ed25519 signature (PyNaCl). Verification goes through joserfc, an independent
JOSE implementation, as a client's would.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, OKPKey
from joserfc.util import json_b64encode
from nacl.signing import SigningKey as NaclSigningKey

from app.config import Settings

ALG = "EdDSA"
TYP = "tepat-receipt+jws"
HEADER = "Tepat-Receipt"
DEV_KEY_FILE = "audit-signing-key.pem"

# RFC 9864 (2025) names the fully specified "Ed25519" and deprecates the polymorphic "EdDSA";
# receipts keep "EdDSA", which every JOSE library in use by integrators verifies today.
warnings.filterwarnings("ignore", message="EdDSA is deprecated", module="joserfc")


class ReceiptInvalid(Exception):
    """A receipt that does not verify: the message says which check failed."""


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def b64url(data: bytes) -> bytes:
    """Base64url without padding (RFC 7515 section 2): base64.urlsafe_b64encode's bytes,
    without its two layers of Python calls (every answer's signature and receipt)."""
    return binascii.b2a_base64(data, newline=False).translate(_URLSAFE).rstrip(b"=")


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    jwk: OKPKey
    header: Mapping[str, str]
    private: Ed25519PrivateKey | None = None  # also signs the audit log's checkpoints
    # The encoded protected header and its dot: every signing input starts with it.
    prefix: bytes = field(init=False)
    # The raw 32-byte private key (RFC 8032 seed) and libsodium's signer made of it.
    seed: bytes = field(init=False, repr=False)
    signer: NaclSigningKey = field(init=False, repr=False)

    def __post_init__(self) -> None:
        jwk = self.jwk.as_dict(private=True)
        if "d" not in jwk:
            raise ValueError("a signing key needs its private half")
        seed = base64.urlsafe_b64decode(str(jwk["d"]) + "=" * (-len(str(jwk["d"])) % 4))
        object.__setattr__(self, "prefix", json_b64encode(dict(self.header)) + b".")
        object.__setattr__(self, "seed", seed)
        object.__setattr__(self, "signer", NaclSigningKey(seed))

    @classmethod
    def of(cls, private: Ed25519PrivateKey) -> SigningKey:
        jwk = OKPKey.import_key(private)
        kid = jwk.thumbprint()
        return cls(kid, jwk, {"alg": ALG, "typ": TYP, "kid": kid}, private)

    def public_jwk(self) -> dict[str, Any]:
        out: dict[str, Any] = self.jwk.as_dict(private=False)
        out.update(kid=self.kid, alg=ALG, use="sig")
        return out

    def signing_input(self, payload: bytes) -> bytes:
        """ASCII(BASE64URL(header) || '.' || BASE64URL(payload)): what the signature covers."""
        return self.prefix + b64url(payload)

    def sign(self, claims: Mapping[str, Any]) -> str:
        """The compact JWS of `claims`, signed in this process."""
        signing_input = self.signing_input(orjson.dumps(claims))
        return compact(signing_input, self.signer.sign(signing_input).signature)


def compact(signing_input: bytes, signature: bytes) -> str:
    """The compact serialization: the signing input, a dot, the encoded signature."""
    return (signing_input + b"." + b64url(signature)).decode("ascii")


def generate(out: Path) -> SigningKey:
    """A new Ed25519 private key written to `out` (PKCS#8 PEM, 0600, never overwriting)."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return SigningKey.of(private)


def load(path: Path) -> SigningKey:
    """The Ed25519 private key in `path` (PKCS#8 PEM); a clear error for anything else."""
    try:
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise ValueError(f"cannot read an audit signing key from {path}: {e}") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise ValueError(f"{path} holds a {type(private).__name__}; an Ed25519 key is needed")
    return SigningKey.of(private)


def dev_key(data_dir: Path) -> SigningKey:
    """Outside production: the key under the data directory, made on first use (every worker
    process of a server reads the same one)."""
    path = data_dir / DEV_KEY_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # another process made it first
            generate(path)
    return load(path)


class Keyring:
    """The key receipts are signed with, and every public key still published (rotation:
    receipts signed with a retired key stay verifiable)."""

    def __init__(self, current: SigningKey, retired: Iterable[Mapping[str, Any]] = ()) -> None:
        self.current = current
        keys = [current.public_jwk()]
        keys += [dict(k) for k in retired if k.get("kid") != current.kid]
        self.document = {"keys": keys}
        self.jwks_bytes = orjson.dumps(self.document)

    def sign(self, claims: Mapping[str, Any]) -> str:
        return self.current.sign(claims)


def open_keyring(settings: Settings) -> Keyring:
    """The receipts' signing key (TEPAT_AUDIT_SIGNING_KEY, or outside production one made under
    the data directory) and the retired public keys still published."""
    if settings.audit_signing_key is not None:
        current = load(settings.audit_signing_key)
    else:
        current = dev_key(settings.data_dir)
    return Keyring(current, retired_keys(settings.audit_public_keys))


def retired_keys(path: Path | None) -> list[dict[str, Any]]:
    """Public keys kept published after rotation: a JWKS file (`{"keys": [...]}`)."""
    if path is None:
        return []
    doc = orjson.loads(path.read_bytes())
    keys = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(keys, list) or not all(isinstance(k, dict) and "kid" in k for k in keys):
        raise ValueError(f"{path} is not a JWKS document with a `kid` on every key")
    return keys


def claims(
    audit_id: str,
    seq: int,
    snapshot: tuple[str, str | None],
    rule_set: tuple[str, str | None],
    body_digest: bytes,
    iat: int,
) -> dict[str, Any]:
    """The receipt's payload (`snapshot` and `rule_set` as (id, checksum))."""
    return {
        "audit_id": audit_id,
        "seq": seq,
        "snapshot": {"id": snapshot[0], "checksum": snapshot[1]},
        "rule_set": {"id": rule_set[0], "checksum": rule_set[1]},
        "body_sha256": body_digest.hex(),
        "iat": iat,
    }


def verify(receipt: str, body: bytes, jwks: Mapping[str, Any]) -> dict[str, Any]:
    """Check a receipt against the exact body received and a JWKS; its claims, or
    ReceiptInvalid naming the check that failed."""
    try:
        keys = KeySet.import_key_set(dict(jwks))  # type: ignore[arg-type]
        token = jws.deserialize_compact(receipt, keys, algorithms=[ALG])
    except JoseError as e:
        raise ReceiptInvalid(f"the signature does not verify: {e.error}") from None
    except ValueError as e:
        raise ReceiptInvalid(f"not a compact JWS receipt: {e}") from None
    found: dict[str, Any] = orjson.loads(token.payload)
    digest = hashlib.sha256(body).hexdigest()
    if found.get("body_sha256") != digest:
        raise ReceiptInvalid(
            f"the body does not match: its SHA-256 is {digest}, the receipt names "
            f"{found.get('body_sha256')}"
        )
    return found


def ed25519_public_keys(jwks: Mapping[str, Any]) -> list[bytes]:
    """The raw Ed25519 public keys of a JWKS (the checkpoints' verifier keys are made of them)."""
    out = []
    for key in jwks.get("keys", []):
        if key.get("kty") == "OKP" and key.get("crv") == "Ed25519" and "x" in key:
            x = str(key["x"])
            out.append(base64.urlsafe_b64decode(x + "=" * (-len(x) % 4)))
    return out
