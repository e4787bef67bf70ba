"""Sealed envelopes: HKDF, ChaCha20-Poly1305 / AES-256-GCM AEAD, and sealing to an X25519
public key.

- :func:`seal` / :func:`open_` encrypt under a 32-byte symmetric key (ChaCha20-Poly1305); the
  blob is ``nonce (12) || ciphertext || tag (16)`` with a fresh random nonce.
- :func:`seal_bulk` / :func:`open_bulk` (and :func:`open_bulk_into`, which decrypts into a
  caller's buffer) are the same with AES-256-GCM, for megabytes under a key that seals a
  handful of messages (a submission's parts): with AES-NI it runs at several times
  ChaCha20-Poly1305's speed. Same blob layout; a blob of one opens with the other never.
- :func:`seal_to` / :func:`open_sealed` encrypt to a recipient's X25519 public key:
  an ephemeral X25519 key pair, ``key = HKDF(shared, info = label || eph_pk || rcpt_pk)``
  and the AEAD with ``aad`` extended by both public keys, so the envelope is bound to
  its recipient and cannot be re-targeted. The blob is ``eph_pk (32) || seal(...)``.

Any tampering (a flipped bit, a wrong ``aad``, a wrong key) raises :class:`InvalidProof`.
Signatures on messages are :mod:`kaires_fl.crypto.sign`'s job.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from nacl import bindings as _nb
from nacl.exceptions import RuntimeError as _NaclRuntimeError
from nacl.public import PrivateKey, PublicKey

from kaires_fl.errors import EncodingError, InvalidProof

KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
X25519_SIZE = 32
_SEAL_TO_LABEL = b"kaires-fl/envelope/seal-to/v1"


def hkdf(ikm: bytes, info: bytes, length: int = 32, salt: bytes | None = None) -> bytes:
    """HKDF-SHA256 (RFC 5869) of ``ikm`` for purpose ``info``; returns ``length`` bytes."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def _check_key(key: bytes) -> None:
    if len(key) != KEY_SIZE:
        raise EncodingError(
            f"an AEAD key is {KEY_SIZE} bytes, got {len(key)}; derive it with hkdf(...)"
        )


def seal(key: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
    """ChaCha20-Poly1305 encryption under ``key`` with a random nonce; ``aad`` is authenticated.

    Returns ``nonce || ciphertext || tag`` (len(plaintext) + 28 bytes).
    """
    return _seal_with(ChaCha20Poly1305, key, plaintext, aad)


def _seal_with(
    aead: type[ChaCha20Poly1305] | type[AESGCM],
    key: bytes,
    plaintext: bytes | memoryview,
    aad: bytes,
) -> bytes:
    _check_key(key)
    nonce = secrets.token_bytes(NONCE_SIZE)
    return nonce + aead(key).encrypt(nonce, plaintext, aad)


def open_(key: bytes, blob: bytes, aad: bytes = b"") -> bytes:
    """Inverse of :func:`seal`.

    Raises
    ------
    InvalidProof
        if the blob was altered, truncated, sealed under another key or with another aad.
    """
    _check_key(key)
    _check_blob(blob)
    try:
        return ChaCha20Poly1305(key).decrypt(blob[:NONCE_SIZE], blob[NONCE_SIZE:], aad)
    except InvalidTag as exc:
        raise _tampered() from exc


def _check_blob(blob: bytes) -> None:
    if len(blob) < NONCE_SIZE + TAG_SIZE:
        raise InvalidProof(
            f"sealed blob too short ({len(blob)} bytes < {NONCE_SIZE + TAG_SIZE}): it was "
            "truncated in transit; ask the sender to resend it"
        )


def _tampered() -> InvalidProof:
    return InvalidProof(
        "AEAD authentication failed: the envelope was tampered with, or opened with the "
        "wrong key or associated data; discard it and ask the sender to resend"
    )


def seal_bulk(key: bytes, plaintext: bytes | memoryview, aad: bytes = b"") -> bytes:
    """AES-256-GCM encryption under ``key`` with a random 96-bit nonce; ``aad`` is
    authenticated. Returns ``nonce || ciphertext || tag`` (len(plaintext) + 28 bytes).

    Nonce discipline: a GCM nonce must never repeat under one key. Random 96-bit nonces
    keep the collision probability below q²/2^97 for q messages; a caller seals at most a
    few messages per key (a fresh key per submission seals its 2–3 parts), never 2^32.
    """
    return _seal_with(AESGCM, key, plaintext, aad)


def open_bulk(key: bytes, blob: bytes, aad: bytes = b"") -> bytes:
    """Inverse of :func:`seal_bulk`.

    Raises
    ------
    InvalidProof
        if the blob was altered, truncated, sealed under another key, with another aad or
        by :func:`seal`.
    """
    out = bytearray(max(len(blob) - NONCE_SIZE - TAG_SIZE, 0))
    open_bulk_into(key, blob, aad, memoryview(out))
    return bytes(out)


def open_bulk_into(key: bytes, blob: bytes, aad: bytes, buf: memoryview) -> None:
    """:func:`open_bulk` writing the plaintext into ``buf`` (writable, exactly
    ``len(blob) − 28`` bytes: a view into an aligned array decodes without a copy).

    Raises
    ------
    InvalidProof
        as :func:`open_bulk`; ``buf`` is then all zeros (the unauthenticated plaintext
        the cipher wrote before its tag check failed is wiped).
    EncodingError
        if ``buf`` does not have the plaintext's length (the caller's error).
    """
    _check_key(key)
    _check_blob(blob)
    if len(buf) != len(blob) - NONCE_SIZE - TAG_SIZE:
        raise EncodingError(
            f"the plaintext of a {len(blob)}-byte blob has {len(blob) - NONCE_SIZE - TAG_SIZE} "
            f"bytes; the buffer has {len(buf)}"
        )
    try:
        AESGCM(key).decrypt_into(blob[:NONCE_SIZE], memoryview(blob)[NONCE_SIZE:], aad, buf)
    except InvalidTag as exc:
        # decrypt_into has written the unauthenticated plaintext by the time the tag fails:
        # wipe it, so a caller that keeps its buffer never reads attacker-malleable bytes.
        wipe = memoryview(buf).cast("B")
        wipe[:] = bytes(len(wipe))
        raise _tampered() from exc


@dataclass(frozen=True)
class EnvelopeKeyPair:
    """An X25519 key pair for receiving sealed envelopes (``public`` is 32 bytes)."""

    private: PrivateKey

    @classmethod
    def generate(cls) -> EnvelopeKeyPair:
        return cls(PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> EnvelopeKeyPair:
        """Deterministic key pair from a 32-byte seed (tests, key files)."""
        if len(seed) != 32:
            raise EncodingError(f"an X25519 seed is 32 bytes, got {len(seed)}; hash it first")
        return cls(PrivateKey.from_seed(seed))

    @property
    def public(self) -> bytes:
        return bytes(self.private.public_key)


def _public_bytes(public: PublicKey | bytes) -> bytes:
    raw = bytes(public)
    if len(raw) != X25519_SIZE:
        raise EncodingError(f"an X25519 public key is 32 bytes, got {len(raw)}")
    return raw


def _derive(secret: bytes, other_pk: bytes, eph_pk: bytes, rcpt_pk: bytes) -> bytes:
    try:
        shared = _nb.crypto_scalarmult(secret, other_pk)
    except _NaclRuntimeError:
        shared = b"\x00" * 32  # libsodium refuses an all-zero result
    if shared == b"\x00" * 32:
        raise InvalidProof(
            "X25519 shared secret is zero: a low-order public key was used; reject this "
            "key / envelope and ask for a valid one"
        )
    return hkdf(shared, _SEAL_TO_LABEL + eph_pk + rcpt_pk)


def seal_to(public: PublicKey | bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
    """Encrypt to the holder of the X25519 private key for ``public``.

    Returns ``eph_pk (32) || nonce (12) || ciphertext || tag (16)``.
    """
    rcpt = _public_bytes(public)
    eph = PrivateKey.generate()
    eph_pk = bytes(eph.public_key)
    key = _derive(bytes(eph), rcpt, eph_pk, rcpt)
    return eph_pk + seal(key, plaintext, aad + eph_pk + rcpt)


def open_sealed(private: PrivateKey | EnvelopeKeyPair, blob: bytes, aad: bytes = b"") -> bytes:
    """Inverse of :func:`seal_to`.

    Raises
    ------
    InvalidProof
        if the envelope was altered, is for another recipient, or ``aad`` differs.
    """
    sk = private.private if isinstance(private, EnvelopeKeyPair) else private
    if len(blob) < X25519_SIZE + NONCE_SIZE + TAG_SIZE:
        raise InvalidProof(
            f"sealed envelope too short ({len(blob)} bytes): truncated in transit; ask the "
            "sender to resend it"
        )
    eph_pk, rest = blob[:X25519_SIZE], blob[X25519_SIZE:]
    rcpt = bytes(sk.public_key)
    key = _derive(bytes(sk), eph_pk, eph_pk, rcpt)
    return open_(key, rest, aad + eph_pk + rcpt)
