"""Threshold ElGamal as CALYPSO uses it: write a key to a committee, re-encrypt it to a reader.

Keys. The trustees hold a collective key X = x·G with x Shamir-shared (degree t, party
i at x = i + 1, threshold t + 1); party i's public share is X_i = x_i·G (from the DKG).
A reader (recipient) has a :class:`RecipientKey` (y, Y = y·G) in the same group; it can
be derived from the reader's X25519 envelope key (:meth:`RecipientKey.from_x25519`), and
trustees get Y from the X25519 public key alone (:func:`recipient_point_from_x25519`).

Write (KEM + wrap, our choice). To store a 32-byte symmetric ``key`` under X for a
``label`` (policy id, job …): pick r and a uniform point K = k·G, publish
``U = r·G``, ``C = K + r·X``, ``wrapped = key ⊕ HKDF(K, label, U, C)`` and a Schnorr
proof of knowledge of r (CALYPSO's write proof) whose context hashes the label, X, C
and ``wrapped``. So a ciphertext cannot be re-labelled or altered without the proof
failing (:func:`verify_ciphertext`), and only a party that recovers x·U learns K.

Re-encryption (CALYPSO's, with the reader recombining itself). Trustee i returns
``u_i = x_i·(U + Y)`` with a DLEQ proof that log_G X_i = log_{U+Y} u_i, bound to a
context. Anyone can check it; only the holder of y can use it: Σ λ_i u_i = x·U + y·X,
so x·U = Σ λ_i u_i − y·X and K = C − x·U. A share made for another reader (another Y)
or with another x_i fails its proof. :func:`combine` verifies every share it gets,
names the bad ones and recovers the key from t + 1 valid ones; the trustees' leader is
never trusted to combine (CALYPSO's reference code does that, unverifiably).

A trustee answering a batch of K ciphertexts for one reader sends the K values with ONE
batched DLEQ proof (:func:`reencrypt_batch` / :func:`verify_reencrypted_batch`: 2K + O(1)
scalar multiplications for the prover, 2(K − 1) + O(1) for the verifier).

The same mechanism with another base (:func:`exponent_share`, :func:`combine_exponent`)
gives plain partial decryption (base U) or a threshold VRF / common coin (base H_p(m)).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from nacl.public import PrivateKey

from kaires_fl.crypto.envelope import EnvelopeKeyPair, hkdf
from kaires_fl.crypto.group import POINT_SIZE, Point, Scalar, hash_to_scalar, multi_scalar_mult
from kaires_fl.crypto.proofs import (
    PROOF_SIZE,
    DLEQProof,
    SchnorrProof,
    dleq_batch_prove,
    dleq_batch_verify,
    dleq_prove,
    dleq_verify,
    schnorr_prove,
    schnorr_verify,
)
from kaires_fl.crypto.sign import H
from kaires_fl.crypto.vss import lagrange_coefficients
from kaires_fl.errors import EncodingError, InvalidProof, ProtocolError

KEY_SIZE = 32
CIPHERTEXT_SIZE = 2 * POINT_SIZE + KEY_SIZE + PROOF_SIZE
SHARE_SIZE = POINT_SIZE + PROOF_SIZE
_WRITE_TAG = b"kaires-fl/elgamal/write/v1"
_PAD_TAG = b"kaires-fl/elgamal/pad/v1"
_EXP_TAG = b"kaires-fl/elgamal/exponent-share/v1"
_REENC_TAG = b"kaires-fl/elgamal/reencrypt/v1"
_REENC_BATCH_TAG = b"kaires-fl/elgamal/reencrypt-batch/v1"
_FIELD_P = 2**255 - 19


# ---- keys --------------------------------------------------------------------------------
@dataclass(frozen=True)
class RecipientKey:
    """A reader's key pair in the Ed25519 group: ``public = secret · G``."""

    secret: Scalar
    public: Point

    def shared_with(self, X: Point) -> Point:
        """y·X (what a reader subtracts from Σ λ_j x_j(U + Y)); computed once per X."""
        cache: dict[Point, Point] = self.__dict__.setdefault("_shared", {})
        got = cache.get(X)
        if got is None:
            got = cache[X] = X * self.secret
        return got

    @classmethod
    def generate(cls) -> RecipientKey:
        y = Scalar.random_nonzero()
        return cls(y, Point.base() * y)

    @classmethod
    def from_seed(cls, seed: bytes) -> RecipientKey:
        """Deterministic key from 32 seed bytes (tests, key files)."""
        if len(seed) != 32:
            raise EncodingError(f"a recipient-key seed is 32 bytes, got {len(seed)}; hash it")
        y = hash_to_scalar(seed, context=b"kaires-fl/elgamal/recipient-key")
        return cls(y, Point.base() * y)

    @classmethod
    def from_x25519(cls, private: PrivateKey | EnvelopeKeyPair) -> RecipientKey:
        """The group key of an X25519 (envelope) key pair, so one key receives both.

        The X25519 secret (clamped) is a multiple of the base point on the birationally
        equivalent Edwards curve; its public point is fixed to the sign x ≥ 0 (even),
        which :func:`recipient_point_from_x25519` reproduces from the public key alone.
        """
        sk = private.private if isinstance(private, EnvelopeKeyPair) else private
        raw = bytearray(bytes(sk))
        raw[0] &= 248
        raw[31] = (raw[31] & 127) | 64
        y = Scalar(int.from_bytes(raw, "little"))
        Y = Point.base() * y
        if Y.to_bytes()[31] & 0x80:
            y, Y = -y, -Y
        return cls(y, Y)


def recipient_point_from_x25519(public: bytes, *, subgroup_check: bool = True) -> Point:
    """The Ed25519-group recipient key Y of an X25519 public key (see RecipientKey.from_x25519).

    ``subgroup_check=False``: see :meth:`Point.from_bytes` (only for a Y that is used
    in a base multiplied right away, as a trustee does).

    Raises
    ------
    EncodingError
        if ``public`` is not 32 bytes, non-canonical, of small order or not in the
        prime-order subgroup (ask the recipient for a properly generated key).
    """
    if len(public) != 32:
        raise EncodingError(f"an X25519 public key is 32 bytes, got {len(public)}")
    u = int.from_bytes(public, "little")
    if u >= _FIELD_P or u == _FIELD_P - 1:
        raise EncodingError(
            "X25519 public key is non-canonical or has no Edwards equivalent; ask the "
            "recipient for a properly generated key"
        )
    y = (u - 1) * pow(u + 1, -1, _FIELD_P) % _FIELD_P
    return Point.from_bytes(
        y.to_bytes(32, "little"), allow_identity=False, subgroup_check=subgroup_check
    )


def recipient_matches_x25519(recipient: Point, public: bytes) -> bool:
    """Whether ``recipient`` is the group key of X25519 key ``public`` (no point decoding).

    Same answer as ``recipient == recipient_point_from_x25519(public)`` for a valid
    ``recipient``, at the cost of one field inversion instead of a subgroup check: the
    map fixes the sign bit to 0 and u = (1 + y)/(1 − y).
    """
    enc = recipient.to_bytes()
    if len(public) != 32 or enc[31] & 0x80:
        return False
    y = int.from_bytes(enc, "little")
    if (1 - y) % _FIELD_P == 0:
        return False
    u = (1 + y) * pow(1 - y, -1, _FIELD_P) % _FIELD_P
    return u.to_bytes(32, "little") == bytes(public)


# ---- write --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Ciphertext:
    """A key written to the collective key X (see the module docstring)."""

    U: Point
    C: Point
    wrapped: bytes
    proof: SchnorrProof

    def to_bytes(self) -> bytes:
        return self.U.to_bytes() + self.C.to_bytes() + self.wrapped + self.proof.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes, *, check_U: bool = True) -> Ciphertext:
        """Raises EncodingError on a wrong length, an invalid point or a non-canonical scalar.

        ``check_U=False`` leaves U's subgroup check to :func:`verify_ciphertext`, whose
        scalar multiplication of U refuses any point outside the prime-order group (see
        :meth:`Point.from_bytes`): only for a ciphertext verified right away.
        """
        if len(data) != CIPHERTEXT_SIZE:
            raise EncodingError(
                f"an ElGamal ciphertext is {CIPHERTEXT_SIZE} bytes, got {len(data)}"
            )
        return cls(
            U=Point.from_bytes(data[:32], allow_identity=False, subgroup_check=check_U),
            C=Point.from_bytes(data[32:64]),
            wrapped=data[64:96],
            proof=SchnorrProof.from_bytes(data[96:]),
        )


def _pad(K: Point, label: bytes, U: Point, C: Point) -> bytes:
    return hkdf(K.to_bytes(), H(_PAD_TAG, label, U.to_bytes(), C.to_bytes()))


def _write_context(label: bytes, X: Point, C: Point, wrapped: bytes) -> bytes:
    return H(_WRITE_TAG, label, X.to_bytes(), C.to_bytes(), wrapped)


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(p ^ q for p, q in zip(a, b, strict=True))


def encrypt(X: Point, key: bytes, label: bytes) -> Ciphertext:
    """Write the 32-byte ``key`` to the collective key ``X``, bound to ``label``."""
    if len(key) != KEY_SIZE:
        raise EncodingError(f"encrypt wraps a {KEY_SIZE}-byte key, got {len(key)}")
    if X.is_identity():
        raise EncodingError("the collective key X is the identity; run the DKG again")
    r = Scalar.random_nonzero()
    U = Point.base() * r
    K = Point.base() * Scalar.random()
    C = K + X * r
    wrapped = _xor(key, _pad(K, label, U, C))
    proof = schnorr_prove(r, _write_context(label, X, C, wrapped), statement=U)
    return Ciphertext(U, C, wrapped, proof)


def encapsulate(X: Point, label: bytes) -> tuple[Ciphertext, bytes]:
    """A fresh uniformly random 32-byte key and its ciphertext under ``X``."""
    key = secrets.token_bytes(KEY_SIZE)
    return encrypt(X, key, label), key


def verify_ciphertext(ct: Ciphertext, X: Point, label: bytes) -> None:
    """Check the write proof: raises InvalidProof if ``ct`` was altered or is for another label."""
    if ct.U.is_identity():
        raise InvalidProof("ciphertext has U = identity; reject the write")
    if not ct.proof.challenge:
        # (negligible for an honest proof) a zero challenge would skip the multiplication
        # of U, which is what checks U's subgroup when it was decoded with check_U=False.
        raise InvalidProof("write proof with a zero challenge; reject the write")
    try:
        schnorr_verify(ct.proof, ct.U, _write_context(label, X, ct.C, ct.wrapped))
    except InvalidProof as exc:
        raise InvalidProof(
            f"write proof of the ciphertext does not verify for label {label!r}: the ciphertext "
            "was altered, or written for another label or collective key; reject the write"
        ) from exc


def recover_key(ct: Ciphertext, xU: Point, label: bytes) -> bytes:
    """Unwrap the key from ``x·U`` (however it was obtained: threshold or direct)."""
    return _xor(ct.wrapped, _pad(ct.C - xU, label, ct.U, ct.C))


def decrypt(ct: Ciphertext, x: Scalar, X: Point, label: bytes) -> bytes:
    """Decrypt with the whole secret x (reference / tests; trustees never hold x)."""
    verify_ciphertext(ct, X, label)
    return recover_key(ct, ct.U * x, label)


# ---- exponent shares (generic) ---------------------------------------------------------------
@dataclass(frozen=True)
class ExponentShare:
    """Trustee i's ``value = x_i · base`` with a DLEQ proof against X_i = x_i · G."""

    value: Point
    proof: DLEQProof

    def to_bytes(self) -> bytes:
        return self.value.to_bytes() + self.proof.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> ExponentShare:
        if len(data) != SHARE_SIZE:
            raise EncodingError(f"an exponent share is {SHARE_SIZE} bytes, got {len(data)}")
        return cls(Point.from_bytes(data[:32]), DLEQProof.from_bytes(data[32:]))


def _exp_context(context: bytes) -> bytes:
    return H(_EXP_TAG, context)


def exponent_share(
    secret_share: Scalar, base: Point, context: bytes, public_share: Point | None = None
) -> ExponentShare:
    """Trustee step: ``x_i · base`` with a DLEQ proof.

    ``public_share`` (X_i) may be passed to save one scalar multiplication.
    """
    if base.is_identity():
        raise ProtocolError("exponent_share: the base is the identity; refuse this request")
    value = base * secret_share
    proof = dleq_prove(secret_share, Point.base(), base, _exp_context(context), public_share, value)
    return ExponentShare(value, proof)


def verify_exponent_share(
    share: ExponentShare, base: Point, public_share: Point, context: bytes
) -> None:
    """Raises InvalidProof unless ``share.value = x_i · base`` for X_i = ``public_share``."""
    dleq_verify(share.proof, Point.base(), public_share, base, share.value, _exp_context(context))


def combine_exponent(
    shares: Mapping[int, ExponentShare | bytes | None],
    base: Point,
    public_shares: Mapping[int, Point],
    t: int,
    context: bytes,
) -> tuple[Point, list[int]]:
    """x · base from any t + 1 valid shares; returns (x·base, bad parties).

    ``shares`` maps the 0-based party that sent it to its share (an object, its bytes,
    or None for a missing reply). Every share is verified; undecodable, unproven or
    unknown-party shares are dropped and named in ``bad`` (sorted). None is missing,
    not bad.

    Raises
    ------
    ProtocolError
        if fewer than t + 1 shares are valid.
    """
    valid: dict[int, Point] = {}
    bad: list[int] = []
    for party in sorted(shares):
        raw = shares[party]
        if raw is None:
            continue
        if party not in public_shares:
            bad.append(party)
            continue
        try:
            share = ExponentShare.from_bytes(raw) if isinstance(raw, bytes | bytearray) else raw
            verify_exponent_share(share, base, public_shares[party], context)
        except (EncodingError, InvalidProof):
            bad.append(party)
            continue
        valid[party] = share.value
    if len(valid) < t + 1:
        raise ProtocolError(
            f"threshold combine needs t + 1 = {t + 1} valid shares, got {len(valid)} "
            f"(invalid: parties {bad}); ask more trustees for their shares"
        )
    chosen = sorted(valid)[: t + 1]
    value = multi_scalar_mult(lagrange_coefficients(chosen), [valid[i] for i in chosen])
    return value, bad


# ---- re-encryption to a reader -------------------------------------------------------------
def _reenc_base(U: Point, recipient: Point) -> Point:
    if U.is_identity() or recipient.is_identity():
        raise ProtocolError("re-encryption: U and the recipient key must not be the identity")
    base = U + recipient
    if base.is_identity():
        raise ProtocolError(
            "re-encryption: U = -recipient (a crafted ciphertext); refuse to re-encrypt"
        )
    return base


def _reenc_context(recipient: Point, context: bytes) -> bytes:
    return H(_REENC_TAG, recipient.to_bytes(), context)


def reencryption_context(recipient: Point, context: bytes) -> bytes:
    """The proof context of a single re-encrypted share (for :func:`verify_exponent_share`
    with a precomputed base ``U + recipient``; same check as :func:`verify_reencrypted_share`).
    """
    return _reenc_context(recipient, context)


def reencrypt_share(
    secret_share: Scalar,
    U: Point,
    recipient: Point,
    context: bytes = b"",
    public_share: Point | None = None,
) -> ExponentShare:
    """Trustee i re-encrypts its share of ``ct.U`` to ``recipient``: x_i·(U + Y) with a DLEQ proof.

    Precondition: the trustee checked that the access is authorised (ledger proof).
    ``context`` should name the job/ciphertext so a share cannot be replayed elsewhere.
    """
    base = _reenc_base(U, recipient)
    return exponent_share(secret_share, base, _reenc_context(recipient, context), public_share)


def verify_reencrypted_share(
    share: ExponentShare,
    U: Point,
    recipient: Point,
    public_share: Point,
    context: bytes = b"",
) -> None:
    """Raises InvalidProof unless ``share`` is trustee i's re-encryption for ``recipient``."""
    base = _reenc_base(U, recipient)
    verify_exponent_share(share, base, public_share, _reenc_context(recipient, context))


def reencryption_bases(Us: Sequence[Point], recipient: Point) -> list[Point]:
    """The bases U_k + Y of a batch (ProtocolError if one is degenerate)."""
    return [_reenc_base(U, recipient) for U in Us]


def _reenc_batch_context(recipient: Point, contexts: Sequence[bytes]) -> bytes:
    if not contexts:
        raise ProtocolError("re-encryption batch: no ciphertexts")
    return H(_REENC_BATCH_TAG, recipient.to_bytes(), *contexts)


def reencrypt_batch(
    secret_share: Scalar,
    bases: Sequence[Point],
    recipient: Point,
    contexts: Sequence[bytes],
    public_share: Point | None = None,
) -> tuple[list[Point], DLEQProof]:
    """Trustee i re-encrypts a batch: values x_i·B_k and ONE batched DLEQ proof.

    ``bases`` are :func:`reencryption_bases` (U_k + Y) and ``contexts[k]`` names the k-th
    ciphertext (as for :func:`reencrypt_share`); the proof binds the recipient, every
    context, base and value in order (:func:`kaires_fl.crypto.proofs.dleq_batch_prove`).
    Precondition: the access is authorised (ledger proof).
    """
    if len(bases) != len(contexts):
        raise ProtocolError(f"re-encryption batch: {len(bases)} bases, {len(contexts)} contexts")
    return dleq_batch_prove(
        secret_share,
        Point.base(),
        bases,
        _reenc_batch_context(recipient, contexts),
        statement1=public_share,
    )


def verify_reencrypted_batch(
    values: Sequence[Point],
    proof: DLEQProof,
    bases: Sequence[Point],
    recipient: Point,
    public_share: Point,
    contexts: Sequence[bytes],
) -> None:
    """Raises InvalidProof unless every ``values[k]`` = x_i·``bases[k]`` for X_i = public_share.

    A failure does not locate the wrong value: compare each against the interpolation
    of values already known to be right (see ``combine_release``).
    """
    if not (len(values) == len(bases) == len(contexts)):
        raise InvalidProof(
            f"re-encryption batch: {len(values)} values for {len(bases)} ciphertexts"
        )
    dleq_batch_verify(
        proof,
        Point.base(),
        public_share,
        bases,
        values,
        _reenc_batch_context(recipient, contexts),
    )


def combine(
    ct: Ciphertext,
    shares: Mapping[int, ExponentShare | bytes | None],
    public_shares: Mapping[int, Point],
    X: Point,
    recipient: RecipientKey,
    t: int,
    label: bytes,
    context: bytes = b"",
) -> tuple[bytes, list[int]]:
    """The reader recovers the written key from any t + 1 valid re-encrypted shares.

    Verifies the write proof, then every share (see :func:`combine_exponent`), and
    returns ``(key, bad)`` with ``bad`` the sorted 0-based trustees whose shares were
    invalid (bad encoding, bad proof, made for another reader or with another key).
    Precondition: ``public_shares`` are the DKG's X_i, consistent with ``X`` (then every
    valid share is correct and the key is the written one).

    Raises
    ------
    InvalidProof
        if the ciphertext's write proof fails for ``X`` and ``label``.
    ProtocolError
        if fewer than t + 1 shares are valid.
    """
    verify_ciphertext(ct, X, label)
    base = _reenc_base(ct.U, recipient.public)
    xb, bad = combine_exponent(
        shares, base, public_shares, t, _reenc_context(recipient.public, context)
    )
    return recover_key(ct, xb - X * recipient.secret, label), bad
