"""Ed25519 identities, signatures and the project's hashes (:func:`H`, SHA-256; and
:func:`bulk_hash`, BLAKE3, for megabytes).

Every signed message in Kaires-FL (ledger transactions, votes, manifests,
receipts) goes through :class:`Identity` (a private signing key) and
:func:`verify` (a public key). Messages are domain-separated by a context
string so that a signature made for one purpose never verifies for another.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from blake3 import blake3
from nacl.exceptions import BadSignatureError
from nacl.exceptions import ValueError as NaclValueError
from nacl.signing import SigningKey, VerifyKey

from kaires_fl.crypto.memo import PassedChecks
from kaires_fl.errors import EncodingError, InvalidProof

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64


def H(*parts: bytes) -> bytes:
    """SHA-256 over length-prefixed parts (unambiguous: H(a, b) != H(a + b)).

    Returns
    -------
    bytes
        32-byte digest.
    """
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.digest()


def bulk_hash(*parts: bytes) -> bytes:
    """BLAKE3-256 over length-prefixed parts, framed like :func:`H`: the hash of megabytes
    (sealed share blobs), about 5× SHA-256's speed (SIMD, one thread). Same 256-bit output
    and 128-bit collision resistance as :func:`H`; a distinct function, so its digests
    never equal H's of the same parts.

    Returns
    -------
    bytes
        32-byte digest.
    """
    h = blake3()
    for p in parts:
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.digest()


def _framed(context: bytes, message: bytes) -> bytes:
    return len(context).to_bytes(2, "little") + context + message


@dataclass(frozen=True)
class Identity:
    """An Ed25519 signing identity.

    Use :meth:`generate` for a fresh one or :meth:`from_seed` for a deterministic one
    (tests, key files). ``public`` is the 32-byte verification key that names it.
    """

    _key: SigningKey

    @classmethod
    def generate(cls) -> Identity:
        return cls(SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        """Precondition: ``seed`` is 32 bytes (e.g. ``H(b"node", b"3")``)."""
        if len(seed) != 32:
            raise EncodingError(f"an Ed25519 seed is 32 bytes, got {len(seed)}; hash it first")
        return cls(SigningKey(seed))

    @property
    def public(self) -> bytes:
        return bytes(self._key.verify_key)

    @property
    def seed(self) -> bytes:
        return bytes(self._key)

    def sign(self, context: bytes, message: bytes) -> bytes:
        """Sign ``message`` under domain ``context``; returns a 64-byte signature."""
        return self._key.sign(_framed(context, message)).signature


#: Signatures that verified, keyed by (key, context, signature, message or its SHA-256):
#: in a simulation every node checks every other node's vote (kaires_fl.crypto.memo).
_VERIFIED = PassedChecks("signature", 1 << 14)
#: Messages up to this length are kept in the key as they are; longer ones by their digest.
_KEY_MESSAGE_MAX = 128


def _verified_key(
    public: bytes, context: bytes, message: bytes, signature: bytes
) -> tuple[bytes, ...] | None:
    if not all(type(b) is bytes for b in (public, context, message, signature)):
        return None  # only immutable bytes can key a remembered check
    if len(message) <= _KEY_MESSAGE_MAX:
        return (public, context, signature, message)
    return (public, context, signature, b"sha256", hashlib.sha256(message).digest())


def verify(public: bytes, context: bytes, message: bytes, signature: bytes) -> None:
    """Check an Ed25519 signature made by :meth:`Identity.sign`.

    A signature that verified on exactly these bytes is not checked again (bounded memory,
    :mod:`kaires_fl.crypto.memo`).

    Raises
    ------
    InvalidProof
        if the key is malformed or the signature does not verify.
    """
    key = _verified_key(public, context, message, signature)
    if key is not None and _VERIFIED.passed(key):
        return
    try:
        VerifyKey(public).verify(_framed(context, message), signature)
        if key is not None:
            _VERIFIED.remember(key)
    except (BadSignatureError, NaclValueError, TypeError, ValueError) as exc:
        raise InvalidProof(
            f"Ed25519 signature under context {context!r} does not verify for key "
            f"{public.hex()[:16]}…: the message or signature was altered, or it was signed "
            "by another key"
        ) from exc


def is_valid(public: bytes, context: bytes, message: bytes, signature: bytes) -> bool:
    """Boolean form of :func:`verify`."""
    try:
        verify(public, context, message, signature)
    except InvalidProof:
        return False
    return True
