"""app.tlog.note: C2SP checkpoints in signed notes, against the Go sumdb/note test vectors."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.tlog.merkle import MemoryStore, leaf_hash
from app.tlog.note import (
    BadSignature,
    Checkpoint,
    InvalidKey,
    MalformedNote,
    NoteError,
    UnknownKey,
    VerifierKey,
    WrongOrigin,
    key_hash,
    open_note,
    parse_verifier_key,
    sign,
    sign_note,
    verifier_key,
    verify_note,
)

# The vectors of golang.org/x/mod/sumdb/note (note_test.go): a signer key (0x01 || seed), the
# matching verifier key, a text and its signed note, and a second signer's signature.
PETER_SIGNER = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = (
    b"If you think cryptography is the answer to your problem,\n"
    b"then you don't know what your problem is.\n"
)
PETER_SIG = (
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
).encode()
ENOCH_SIG = (
    "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"
).encode()

ORIGIN = "tepat.example.go.id/audit-log"
SIG_DASH = "— ".encode()  # em dash U+2014 and a space


def peter_private() -> Ed25519PrivateKey:
    blob = base64.b64decode(PETER_SIGNER.split("+", 4)[4])
    assert blob[0] == 0x01
    return Ed25519PrivateKey.from_private_bytes(blob[1:])


@pytest.fixture(scope="module")
def log_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def log_verifier(log_key: Ed25519PrivateKey) -> VerifierKey:
    return VerifierKey.of(ORIGIN, log_key.public_key())


def checkpoint(size: int = 3) -> Checkpoint:
    store = MemoryStore()
    store.append([leaf_hash(i.to_bytes(4, "big")) for i in range(size)])
    return Checkpoint(ORIGIN, size, store.root())


# --- keys --------------------------------------------------------------------------------------


def test_key_hash_and_verifier_key_match_the_go_vectors() -> None:
    public = peter_private().public_key()
    assert key_hash("PeterNeumann", public).hex() == "c74f20a3"
    assert verifier_key("PeterNeumann", public) == PETER
    key = parse_verifier_key(PETER)
    assert (key.name, key.key_hash.hex()) == ("PeterNeumann", "c74f20a3")
    assert str(key) == PETER
    enoch = parse_verifier_key(ENOCH)
    assert (enoch.name, enoch.key_hash.hex()) == ("EnochRoot", "af0cfe78")
    assert str(enoch) == ENOCH


def test_mangled_verifier_keys_are_refused() -> None:
    """As the Go tests do: every proper substring and every one-byte change fails."""
    for i in range(len(PETER)):
        for j in range(i + 1, len(PETER) + 1):
            if (i, j) != (0, len(PETER)):
                with pytest.raises(InvalidKey):
                    parse_verifier_key(PETER[i:j])
    for i in range(len(PETER)):
        with pytest.raises(InvalidKey):
            parse_verifier_key(PETER[:i] + chr(ord(PETER[i]) + 1) + PETER[i + 1 :])
    # a wrong-length key and an unknown algorithm, each with its hash adjusted (Go's vectors)
    with pytest.raises(InvalidKey):
        parse_verifier_key(
            "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY=="
        )
    with pytest.raises(InvalidKey):
        parse_verifier_key("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")


def test_key_names_are_checked() -> None:
    public = peter_private().public_key()
    for bad in ("", "a+b", "a b", "a\tb", "a\u2003b"):
        with pytest.raises(InvalidKey, match="key name"):
            key_hash(bad, public)
        with pytest.raises(InvalidKey, match="key name"):
            sign_note(TEXT, bad, peter_private())


# --- signed notes ------------------------------------------------------------------------------


def test_sign_note_is_byte_exact_with_go() -> None:
    assert sign_note(TEXT, "PeterNeumann", peter_private()) == TEXT + b"\n" + PETER_SIG


def test_verify_note_with_the_go_vectors() -> None:
    peter, enoch = parse_verifier_key(PETER), parse_verifier_key(ENOCH)
    both = TEXT + b"\n" + PETER_SIG + ENOCH_SIG
    assert verify_note(both, [peter]) == TEXT
    assert verify_note(both, [enoch]) == TEXT
    assert verify_note(both, [peter, enoch]) == TEXT
    with pytest.raises(UnknownKey, match="PeterNeumann\\+c74f20a3, EnochRoot\\+af0cfe78"):
        verify_note(both, [])
    # a known key's bad signature rejects the note, even beside a good one
    corrupt = PETER_SIG[:60] + b"ABCD" + PETER_SIG[60:]
    with pytest.raises(BadSignature, match="PeterNeumann\\+c74f20a3"):
        verify_note(TEXT + b"\n" + corrupt, [peter])
    with pytest.raises(BadSignature):
        verify_note(TEXT + b"\n" + ENOCH_SIG + corrupt, [peter, enoch])
    # the same name with another key hash is another key: ignored
    other = PETER_SIG.replace(b"x08g", b"xxxx")
    with pytest.raises(UnknownKey):
        verify_note(TEXT + b"\n" + other, [peter])


def test_malformed_notes_are_refused() -> None:
    peter = parse_verifier_key(PETER)
    bad = [
        TEXT,
        TEXT + b"\n",
        TEXT + b"\n" + PETER_SIG[:-1],
        b"\x01" + TEXT + b"\n" + PETER_SIG,
        b"\xff" + TEXT + b"\n" + PETER_SIG,
        TEXT
        + b"\n"
        + "— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n".encode(),
        TEXT + b"\n" + PETER_SIG + b"Unexpected line.\n",
        TEXT + b"\n" + PETER_SIG.replace("—".encode(), b"-"),
        TEXT + b"\n" + PETER_SIG.replace(b"=\n", b"\n"),
        TEXT + b"\n" + PETER_SIG.replace(b"x08go", b"x08g!"),
        TEXT + b"\n" + "— PeterNeumann AAAA\n".encode(),
        TEXT + b"\n" + PETER_SIG * 101,
    ]
    for data in bad:
        with pytest.raises(MalformedNote):
            verify_note(data, [peter])


# Go's checksum database: its published verifier key and a tree head it signed (a C2SP
# checkpoint with origin "go.sum database tree"), as quoted in the sigsum project's notes.
GO_SUMDB = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"
GO_SUMDB_NOTE = (
    "go.sum database tree\n49189689\nftjbAOzaupaIvaPo/G+Dk63nxOZ2s1OPOKIaPtXs7S4=\n\n"
    "— sum.golang.org Az3grlKZssqRoMNPpZfKt0TphbbcF+pzXqElURJKRNFKfaUAgqeI5k2AORH0QAhg/ebRwyIqD/OqP4oLtLnNumvOBAM=\n"
).encode()


def test_a_real_checkpoint_of_the_go_checksum_database_opens() -> None:
    key = parse_verifier_key(GO_SUMDB)  # its base64 holds '+' signs
    assert str(key) == GO_SUMDB
    cp = open_note(GO_SUMDB_NOTE, [key], origin="go.sum database tree")
    assert cp.size == 49189689
    assert base64.b64encode(cp.root_hash) == b"ftjbAOzaupaIvaPo/G+Dk63nxOZ2s1OPOKIaPtXs7S4="
    assert cp.body() + b"\n" == GO_SUMDB_NOTE.split("—".encode())[0]
    with pytest.raises(BadSignature):
        open_note(GO_SUMDB_NOTE.replace(b"49189689", b"49189690"), [key])


# --- checkpoints -------------------------------------------------------------------------------


def test_checkpoint_body_is_byte_exact() -> None:
    root = bytes(range(32))
    cp = Checkpoint("example.com/log", 20852163, root)
    b64 = base64.b64encode(root)
    assert cp.body() == b"example.com/log\n20852163\n" + b64 + b"\n"
    ext = Checkpoint("example.com/log", 0, root, ("ext one", "ext two"))
    assert ext.body() == b"example.com/log\n0\n" + b64 + b"\next one\next two\n"
    assert Checkpoint.parse(cp.body()) == cp
    assert Checkpoint.parse(ext.body()) == ext


def test_signed_checkpoint_format(log_key: Ed25519PrivateKey) -> None:
    cp = checkpoint()
    note = sign(cp, ORIGIN, log_key)
    body, sig_line = note.split(b"\n\n")
    assert body + b"\n" == cp.body()
    assert note.endswith(b"\n")
    assert note.count(b"\n") == 5  # three lines, the blank line, one signature line
    assert SIG_DASH == b"\xe2\x80\x94 "
    assert sig_line.startswith(SIG_DASH + ORIGIN.encode() + b" ")
    assert sig_line.endswith(b"\n")
    assert sig_line.count(b"\n") == 1
    blob = base64.b64decode(sig_line.removesuffix(b"\n").split(b" ")[2], validate=True)
    assert blob[:4] == key_hash(ORIGIN, log_key.public_key())
    assert len(blob) == 4 + 64
    log_key.public_key().verify(blob[4:], cp.body())


def test_sign_and_open_round_trip(log_key: Ed25519PrivateKey, log_verifier: VerifierKey) -> None:
    for cp in (checkpoint(0), checkpoint(1), checkpoint(1000)):
        note = sign(cp, ORIGIN, log_key)
        assert open_note(note, [log_verifier]) == cp
        assert open_note(note, [parse_verifier_key(str(log_verifier))], origin=ORIGIN) == cp
    ext = Checkpoint(ORIGIN, 7, bytes(32), ("extra",))
    assert open_note(sign(ext, ORIGIN, log_key), [log_verifier]) == ext


def test_any_changed_byte_in_the_body_fails(
    log_key: Ed25519PrivateKey, log_verifier: VerifierKey
) -> None:
    note = sign(checkpoint(), ORIGIN, log_key)
    body_len = len(checkpoint().body())
    for i in range(body_len):
        changed = note[:i] + bytes([note[i] ^ 0x01]) + note[i + 1 :]
        with pytest.raises(NoteError):
            open_note(changed, [log_verifier])
    # a well-formed changed size or root is a bad signature, not a parse error
    other = note.replace(b"\n3\n", b"\n4\n", 1)
    with pytest.raises(BadSignature):
        open_note(other, [log_verifier])


def test_a_changed_signature_fails(log_key: Ed25519PrivateKey, log_verifier: VerifierKey) -> None:
    note = sign(checkpoint(), ORIGIN, log_key)
    body, sig_line = note.rsplit(b" ", 1)
    blob = bytearray(base64.b64decode(sig_line))
    blob[10] ^= 0x01
    with pytest.raises(BadSignature):
        open_note(body + b" " + base64.b64encode(bytes(blob)) + b"\n", [log_verifier])


def test_a_wrong_key_fails(log_key: Ed25519PrivateKey, log_verifier: VerifierKey) -> None:
    other = Ed25519PrivateKey.generate()
    note = sign(checkpoint(), ORIGIN, other)
    with pytest.raises(UnknownKey, match="signed by no known key"):
        open_note(note, [log_verifier])
    # the log's own name and key hash on another key's signature: a bad signature
    signature = other.sign(checkpoint().body())
    line = base64.b64encode(log_verifier.key_hash + signature)
    forged = checkpoint().body() + b"\n" + SIG_DASH + ORIGIN.encode() + b" " + line + b"\n"
    with pytest.raises(BadSignature):
        open_note(forged, [log_verifier])
    with pytest.raises(UnknownKey):
        open_note(note, [])


def test_cosigned_note_verifies_with_either_key(
    log_key: Ed25519PrivateKey, log_verifier: VerifierKey
) -> None:
    witness = Ed25519PrivateKey.generate()
    note = sign(checkpoint(), ORIGIN, log_key)
    witness_line = sign_note(checkpoint().body(), "witness.example", witness).split(b"\n\n")[1]
    cosigned = note + witness_line
    w = VerifierKey.of("witness.example", witness.public_key())
    assert open_note(cosigned, [log_verifier]) == checkpoint()
    assert open_note(cosigned, [w]) == checkpoint()
    assert open_note(cosigned, [log_verifier, w]) == checkpoint()


def test_wrong_origin_is_refused(log_key: Ed25519PrivateKey, log_verifier: VerifierKey) -> None:
    note = sign(checkpoint(), ORIGIN, log_key)
    with pytest.raises(WrongOrigin, match=r"not 'another\.example/log'"):
        open_note(note, [log_verifier], origin="another.example/log")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"origin\n01\n{root}\n", "tree size '01' is not a decimal"),
        (b"origin\n-1\n{root}\n", "tree size '-1' is not a decimal"),
        (b"origin\n+1\n{root}\n", "tree size '\\+1' is not a decimal"),
        (b"origin\n1e3\n{root}\n", "tree size '1e3' is not a decimal"),
        (b"origin\n 1\n{root}\n", "tree size ' 1' is not a decimal"),
        ("origin\n１\n{root}\n".encode(), "tree size '１' is not a decimal"),
        (b"origin\n1\n!!!!\n", "root hash is not standard base64"),
        (b"origin\n1\nAAAA\n", "root hash is 3 bytes"),
        (b"origin\n1\n{unpadded}\n", "root hash is not standard base64"),
        (b"origin\n1\n{urlsafe}\n", "root hash is not standard base64"),
        (b"origin\n1\n", "fewer than three lines"),
        (b"\n1\n{root}\n", "empty line"),
        (b"origin\n1\n{root}\n\next\n", None),  # the last blank line splits off "ext": malformed
    ],
)
def test_malformed_checkpoints_are_refused_after_the_signature_checks(
    text: bytes, message: str | None, log_key: Ed25519PrivateKey, log_verifier: VerifierKey
) -> None:
    root = bytes([0xFB] * 32)
    text = (
        text.replace(b"{root}", base64.b64encode(root))
        .replace(b"{unpadded}", base64.b64encode(root).rstrip(b"="))
        .replace(b"{urlsafe}", base64.urlsafe_b64encode(root))
    )
    with pytest.raises(MalformedNote, match=message):
        open_note(sign_note(text, ORIGIN, log_key), [log_verifier])


@pytest.mark.parametrize(
    ("origin", "size", "root", "extensions", "message"),
    [
        ("", 1, bytes(32), (), "non-empty"),
        ("a\nb", 1, bytes(32), (), "no control characters"),
        ("o", -1, bytes(32), (), "negative tree size"),
        ("o", 1, bytes(31), (), "32 bytes, not 31"),
        ("o", 1, bytes(32), ("",), "non-empty"),
        ("o", 1, bytes(32), ("a\nb",), "no control characters"),
    ],
)
def test_checkpoint_fields_are_checked(
    origin: str, size: int, root: bytes, extensions: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Checkpoint(origin, size, root, extensions)


def test_a_note_text_ends_in_a_newline() -> None:
    with pytest.raises(ValueError, match="newline"):
        sign_note(b"no newline", ORIGIN, peter_private())
