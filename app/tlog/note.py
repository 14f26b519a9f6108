"""Checkpoints (C2SP tlog-checkpoint) in signed notes (C2SP signed-note), signed with Ed25519.

A checkpoint's note text is the log's origin, the tree size in decimal and the base64 root hash
(RFC 9162 2.1.1 MTH), one per line, then any extension lines; every line ends in a newline:

    example.gov/tepat-audit
    20852163
    CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=

    — example.gov/tepat-audit Az3grlgt...

A signed note is that text, a blank line, and one line per signature: an em dash (U+2014), a
space, the key name, a space, and base64(4-byte key hash || Ed25519 signature over the text).
The key hash is SHA-256(name || 0x0A || 0x01 || 32-byte public key)[:4]. A verifier key is
written `name+hash+base64(0x01 || public key)` with the hash as 8 hex digits, as Go's
golang.org/x/mod/sumdb/note writes it, so the same notes verify there.

Base64 is the standard alphabet with padding (RFC 4648 section 4). Ed25519 is `cryptography`'s.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ALG_ED25519 = 0x01
HASH_SIZE = 32
MAX_SIGNATURES = 100  # the signed-note spec asks verifiers to accept at least 16
SIG_PREFIX = "— "  # em dash U+2014, space

_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


class InvalidKey(ValueError):
    """A key name or verifier key that is not in the signed-note format, or inconsistent."""


class NoteError(ValueError):
    """A note or checkpoint that is not accepted; the message says which check failed."""


class MalformedNote(NoteError):
    """Not a signed note, or its text not a checkpoint (format, size, base64, hash length)."""


class UnknownKey(NoteError):
    """No signature on the note is from a known key (name and key hash both match)."""


class BadSignature(NoteError):
    """A signature from a known key does not verify: the note was changed or forged."""


class WrongOrigin(NoteError):
    """The checkpoint is validly signed, but for another log than the one expected."""


# --- keys --------------------------------------------------------------------------------------


def _raw(public_key: Ed25519PublicKey | bytes) -> bytes:
    if isinstance(public_key, bytes):
        if len(public_key) != 32:
            raise InvalidKey(f"an Ed25519 public key is 32 bytes, not {len(public_key)}")
        return public_key
    return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _valid_name(name: str) -> bool:
    """Key names are non-empty, without Unicode spaces or plus (C2SP signed-note, Format)."""
    return bool(name) and "+" not in name and not any(c.isspace() or c < " " for c in name)


def _check_name(name: str) -> None:
    if not _valid_name(name):
        raise InvalidKey(f"invalid key name {name!r}: non-empty, no spaces, no '+'")


def key_hash(name: str, public_key: Ed25519PublicKey | bytes) -> bytes:
    """The 4-byte key ID: SHA-256(name || 0x0A || 0x01 || public key)[:4] (signed-note)."""
    _check_name(name)
    data = name.encode() + b"\n" + bytes([ALG_ED25519]) + _raw(public_key)
    return hashlib.sha256(data).digest()[:4]


@dataclass(frozen=True, slots=True)
class VerifierKey:
    """A known signer: its name, 4-byte key hash and Ed25519 public key."""

    name: str
    key_hash: bytes
    public_key: Ed25519PublicKey

    @classmethod
    def of(cls, name: str, public_key: Ed25519PublicKey | bytes) -> VerifierKey:
        raw = _raw(public_key)
        return cls(name, key_hash(name, raw), Ed25519PublicKey.from_public_bytes(raw))

    def __str__(self) -> str:
        return verifier_key(self.name, self.public_key)


def verifier_key(name: str, public_key: Ed25519PublicKey | bytes) -> str:
    """The text form `name+hash+base64(0x01 || public key)`, hash in 8 hex digits."""
    raw = _raw(public_key)
    encoded = base64.b64encode(bytes([ALG_ED25519]) + raw).decode()
    return f"{name}+{key_hash(name, raw).hex()}+{encoded}"


def parse_verifier_key(text: str) -> VerifierKey:
    """Parse `name+hash+base64(0x01 || public key)`, checking the hash against name and key."""
    parts = text.split("+")
    # base64 may itself hold '+': the name has none, the hash none, the rest is the key
    if len(parts) < 3:
        raise InvalidKey("a verifier key is name+hash+key")
    name, hash_hex, encoded = parts[0], parts[1], "+".join(parts[2:])
    _check_name(name)
    if not re.fullmatch(r"[0-9a-f]{8}", hash_hex):
        raise InvalidKey(f"verifier key hash {hash_hex!r} is not 8 lowercase hex digits")
    blob = _b64decode(encoded, "verifier key", InvalidKey)
    if len(blob) != 33 or blob[0] != ALG_ED25519:
        raise InvalidKey("verifier key is not 0x01 followed by a 32-byte Ed25519 public key")
    key = VerifierKey.of(name, blob[1:])
    if key.key_hash.hex() != hash_hex:
        raise InvalidKey(f"verifier key hash {hash_hex} does not match its name and key")
    return key


def _b64decode(text: str, what: str, error: type[ValueError] = MalformedNote) -> bytes:
    """Standard base64 with padding (RFC 4648 section 4), nothing else accepted."""
    if not _BASE64.fullmatch(text) or len(text) % 4:
        raise error(f"{what} is not standard base64")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as e:
        raise error(f"{what} is not standard base64") from e


# --- checkpoints -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A log's signed statement of its tree: origin, size and root hash (C2SP tlog-checkpoint)."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for line in (self.origin, *self.extensions):
            if not line or any(c < " " for c in line):
                raise ValueError(f"checkpoint line {line!r}: non-empty, no control characters")
        if self.size < 0:
            raise ValueError(f"negative tree size {self.size}")
        if len(self.root_hash) != HASH_SIZE:
            raise ValueError(f"a root hash is {HASH_SIZE} bytes, not {len(self.root_hash)}")

    def body(self) -> bytes:
        """The note text: origin, size, root and extension lines, each ending in a newline."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root_hash).decode()]
        return "".join(line + "\n" for line in [*lines, *self.extensions]).encode()

    @classmethod
    def parse(cls, text: bytes) -> Checkpoint:
        """Read a checkpoint's note text (the part a signature covers), strictly."""
        try:
            decoded = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise MalformedNote("checkpoint is not UTF-8") from e
        if not decoded.endswith("\n"):
            raise MalformedNote("checkpoint text does not end in a newline")
        lines = decoded[:-1].split("\n")
        if len(lines) < 3:
            raise MalformedNote("checkpoint has fewer than three lines (origin, size, root)")
        if any(not line for line in lines):
            raise MalformedNote("checkpoint has an empty line")
        origin, size, root, *extensions = lines
        if not _DECIMAL.fullmatch(size):
            raise MalformedNote(f"checkpoint tree size {size!r} is not a decimal number")
        root_hash = _b64decode(root, "checkpoint root hash")
        if len(root_hash) != HASH_SIZE:
            raise MalformedNote(f"checkpoint root hash is {len(root_hash)} bytes, not 32")
        try:
            return cls(origin, int(size), root_hash, tuple(extensions))
        except ValueError as e:
            raise MalformedNote(str(e)) from e


# --- signed notes ------------------------------------------------------------------------------


def sign_note(text: bytes, name: str, private_key: Ed25519PrivateKey) -> bytes:
    """The signed note: `text`, a blank line, and one Ed25519 signature line (signed-note)."""
    if not text.endswith(b"\n"):
        raise ValueError("note text must end in a newline")
    _check_name(name)
    kh = key_hash(name, private_key.public_key())
    sig = base64.b64encode(kh + private_key.sign(text)).decode()
    return text + b"\n" + f"{SIG_PREFIX}{name} {sig}\n".encode()


def sign(checkpoint: Checkpoint, name: str, private_key: Ed25519PrivateKey) -> bytes:
    """The checkpoint as a note signed by the key `name` (which should be the origin)."""
    return sign_note(checkpoint.body(), name, private_key)


def verify_note(data: bytes, verifier_keys: Iterable[VerifierKey]) -> bytes:
    """The text of a signed note once a known key's signature on it verifies.

    Follows C2SP signed-note: signatures from unknown keys (name and key hash not both those
    of a known key) are ignored; any signature from a known key that fails rejects the note
    (`BadSignature`); a note without a good signature from a known key is rejected
    (`UnknownKey`); anything not in the format is `MalformedNote`.
    """
    known: dict[tuple[str, bytes], VerifierKey] = {}
    for k in verifier_keys:
        other = known.setdefault((k.name, k.key_hash), k)
        if _raw(other.public_key) != _raw(k.public_key):
            raise InvalidKey(f"two verifier keys are both {k.name}+{k.key_hash.hex()}")
    try:
        decoded = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MalformedNote("note is not UTF-8") from e
    if any(c < " " and c != "\n" for c in decoded):
        raise MalformedNote("note contains a control character")
    split = decoded.rfind("\n\n")
    if split < 0:
        raise MalformedNote("note has no blank line before its signatures")
    text, block = decoded[: split + 1], decoded[split + 2 :]
    if not block.endswith("\n"):
        raise MalformedNote("note does not end in a signature line and a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise MalformedNote(f"note has more than {MAX_SIGNATURES} signatures")
    verified = 0
    seen = []
    for line in lines:
        if not line.startswith(SIG_PREFIX):
            raise MalformedNote(f"signature line does not start with an em dash: {line[:40]!r}")
        name, sep, encoded = line[len(SIG_PREFIX) :].partition(" ")
        if not sep or not _valid_name(name) or " " in encoded:
            raise MalformedNote(f"signature line is not '— name signature': {line[:40]!r}")
        blob = _b64decode(encoded, f"signature of {name}")
        if len(blob) < 5:
            raise MalformedNote(f"signature of {name} is too short")
        kh, sig = blob[:4], blob[4:]
        seen.append(f"{name}+{kh.hex()}")
        key = known.get((name, kh))
        if key is None:
            continue
        try:
            key.public_key.verify(sig, text.encode())
        except InvalidSignature:
            raise BadSignature(f"signature of {name}+{kh.hex()} does not verify") from None
        verified += 1
    if not verified:
        raise UnknownKey(f"note is signed by no known key (signed by {', '.join(seen)})")
    return text.encode()


def open_note(
    data: bytes, verifier_keys: Iterable[VerifierKey], origin: str | None = None
) -> Checkpoint:
    """The checkpoint in a signed note, once verified (`verify_note`) and parsed strictly.

    With `origin`, a checkpoint of another log is refused (`WrongOrigin`).
    """
    checkpoint = Checkpoint.parse(verify_note(data, verifier_keys))
    if origin is not None and checkpoint.origin != origin:
        raise WrongOrigin(f"checkpoint is for {checkpoint.origin!r}, not {origin!r}")
    return checkpoint
