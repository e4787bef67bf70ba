"""Sigma proofs over Ed25519's prime-order group, made non-interactive by strong Fiat–Shamir.

- :class:`SchnorrProof`: knowledge of x with X = x·B (also a Schnorr signature of
  knowledge on the ``context`` message).
- :class:`DLEQProof` (Chaum–Pedersen): log_{B1} X1 = log_{B2} X2, without revealing it.
- Batched DLEQ (:func:`dleq_batch_prove` / :func:`dleq_batch_verify`): one proof that
  log_{B1} X1 = log_{B_k} V_k for every k of a batch, by a random linear combination of
  the bases and statements (see :func:`dleq_batch_coefficients` for why it is sound).

Strong Fiat–Shamir: the challenge hashes a proof-type tag, the caller's ``context``
(bind it to the protocol step, session, job, recipient …), **every** base, **every**
statement element and the commitments. A proof made for one context, base or
statement does not verify for another.

Proofs are stored in the compact (challenge, response) form; each serialises to 64
canonical bytes (two scalars < L). Commitment nonces are hedged: derived from the
witness, the statement and fresh randomness, so a bad RNG alone does not leak x.

A proof that verified on exactly these bytes (proof, statements, bases, context) is not
verified again; a failed one is re-checked every time (:mod:`kaires_fl.crypto.memo`).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Self

from kaires_fl.crypto.group import (
    SCALAR_SIZE,
    Point,
    Scalar,
    _frame,
    hash_to_scalar,
    multi_scalar_mult,
)
from kaires_fl.crypto.memo import PassedChecks
from kaires_fl.errors import EncodingError, InvalidProof

PROOF_SIZE = 2 * SCALAR_SIZE
_SCHNORR_TAG = b"kaires-fl/proofs/schnorr/v1"
_DLEQ_TAG = b"kaires-fl/proofs/dleq/v1"
#: v2: the first coefficient is 1 (v1 hashed all K; proofs of one version do not verify in
#: the other).
_DLEQ_BATCH_TAG = b"kaires-fl/proofs/dleq-batch/v2"
#: Bits of each batch coefficient: a batch with a wrong statement passes with
#: probability at most 2^-BATCH_COEFF_BITS per hash query (see dleq_batch_coefficients).
BATCH_COEFF_BITS = 128


#: Proofs that verified, keyed by the proof, statement, bases and context bytes: in a
#: simulation every ledger node checks every write's proof (kaires_fl.crypto.memo).
_PASSED = PassedChecks("sigma proof", 1 << 14)


def _nonce(tag: bytes, witness: Scalar, *statement: Point) -> Scalar:
    return hash_to_scalar(witness, secrets.token_bytes(32), *statement, context=tag + b"/nonce")


def _decode_pair(data: bytes, what: str) -> tuple[Scalar, Scalar]:
    if len(data) != PROOF_SIZE:
        raise EncodingError(f"a {what} is {PROOF_SIZE} bytes, got {len(data)}")
    return Scalar.from_bytes(data[:SCALAR_SIZE]), Scalar.from_bytes(data[SCALAR_SIZE:])


def _require_base(base: Point, what: str) -> None:
    if base.is_identity():
        raise InvalidProof(
            f"{what}: the base is the identity, so the statement is trivially true and proves "
            "nothing; reject the request that used it"
        )


@dataclass(frozen=True)
class _SigmaProof:
    """A Fiat–Shamir sigma proof as (challenge, response): 64 canonical bytes."""

    challenge: Scalar
    response: Scalar
    NAME: ClassVar[str] = "proof"

    def to_bytes(self) -> bytes:
        return self.challenge.to_bytes() + self.response.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Raises EncodingError on a wrong length or a non-canonical scalar."""
        return cls(*_decode_pair(data, cls.NAME))


@dataclass(frozen=True)
class SchnorrProof(_SigmaProof):
    """Proof of knowledge of x with ``statement = x · base``."""

    NAME: ClassVar[str] = "Schnorr proof"


def _schnorr_challenge(context: bytes, base: Point, statement: Point, commit: Point) -> Scalar:
    return hash_to_scalar(context, base, statement, commit, context=_SCHNORR_TAG)


def schnorr_prove(
    secret: Scalar, context: bytes, base: Point | None = None, statement: Point | None = None
) -> SchnorrProof:
    """Prove knowledge of ``secret`` for ``statement = secret · base`` (base defaults to G).

    ``statement`` may be passed to save one scalar multiplication; it must equal
    ``secret · base`` (otherwise the proof will not verify).
    """
    base = Point.base() if base is None else base
    statement = base * secret if statement is None else statement
    w = _nonce(_SCHNORR_TAG, secret, base, statement)
    c = _schnorr_challenge(context, base, statement, base * w)
    return SchnorrProof(c, w - c * secret)


def schnorr_verify(
    proof: SchnorrProof, statement: Point, context: bytes, base: Point | None = None
) -> None:
    """Check a :func:`schnorr_prove` proof.

    Raises
    ------
    InvalidProof
        if the proof does not verify for this statement, base and context.
    """
    base = Point.base() if base is None else base
    _require_base(base, "Schnorr proof")
    key = (b"schnorr", proof.to_bytes(), statement.to_bytes(), base.to_bytes(), bytes(context))
    if _PASSED.passed(key):
        return
    commit = base * proof.response + statement * proof.challenge
    if _schnorr_challenge(context, base, statement, commit) == proof.challenge:
        _PASSED.remember(key)
    else:
        raise InvalidProof(
            f"Schnorr proof under context {context!r} does not verify for statement "
            f"{statement!r}: it was forged, altered, or made for another statement/context; "
            "reject the message that carried it"
        )


@dataclass(frozen=True)
class DLEQProof(_SigmaProof):
    """Chaum–Pedersen proof that log_{base1} X1 = log_{base2} X2."""

    NAME: ClassVar[str] = "DLEQ proof"


def _dleq_challenge(
    context: bytes, b1: Point, x1: Point, b2: Point, x2: Point, a1: Point, a2: Point
) -> Scalar:
    return hash_to_scalar(context, b1, x1, b2, x2, a1, a2, context=_DLEQ_TAG)


def dleq_prove(
    secret: Scalar,
    base1: Point,
    base2: Point,
    context: bytes,
    statement1: Point | None = None,
    statement2: Point | None = None,
) -> DLEQProof:
    """Prove ``statement1 = secret·base1`` and ``statement2 = secret·base2`` (same secret).

    Statements may be passed to save scalar multiplications; they must be correct.
    """
    x1 = base1 * secret if statement1 is None else statement1
    x2 = base2 * secret if statement2 is None else statement2
    w = _nonce(_DLEQ_TAG, secret, base1, x1, base2, x2)
    c = _dleq_challenge(context, base1, x1, base2, x2, base1 * w, base2 * w)
    return DLEQProof(c, w - c * secret)


def dleq_verify(
    proof: DLEQProof,
    base1: Point,
    statement1: Point,
    base2: Point,
    statement2: Point,
    context: bytes,
) -> None:
    """Check a :func:`dleq_prove` proof.

    Raises
    ------
    InvalidProof
        if it does not verify for these bases, statements and context.
    """
    _require_base(base1, "DLEQ proof")
    _require_base(base2, "DLEQ proof")
    key = (b"dleq", proof.to_bytes(), *(p.to_bytes() for p in (base1, statement1, base2)))
    key = (*key, statement2.to_bytes(), bytes(context))
    if _PASSED.passed(key):
        return
    c, s = proof.challenge, proof.response
    a1 = base1 * s + statement1 * c
    a2 = base2 * s + statement2 * c
    if _dleq_challenge(context, base1, statement1, base2, statement2, a1, a2) == c:
        _PASSED.remember(key)
    else:
        raise InvalidProof(
            f"DLEQ proof under context {context!r} does not verify: the two values do not "
            "share one discrete logarithm, or the proof was forged/altered or made for other "
            "bases, statements or context; reject the share that carried it"
        )


def is_valid_dleq(
    proof: DLEQProof,
    base1: Point,
    statement1: Point,
    base2: Point,
    statement2: Point,
    context: bytes,
) -> bool:
    """Boolean form of :func:`dleq_verify`."""
    try:
        dleq_verify(proof, base1, statement1, base2, statement2, context)
    except InvalidProof:
        return False
    return True


# ---- batched DLEQ ----------------------------------------------------------------------------
def dleq_batch_coefficients(
    context: bytes,
    base1: Point,
    statement1: Point,
    bases2: Sequence[Point],
    statements2: Sequence[Point],
) -> tuple[bytes, list[int]]:
    """The batch digest d and the coefficients r_k of a batched DLEQ statement.

    d = SHA-512 over the tag, ``context``, base1, statement1 and every (B_k, V_k) in order;
    r_1 = 1 and r_2, …, r_K are consecutive 128-bit blocks of SHAKE-256(d) (a batch of one
    is the plain Chaum–Pedersen statement). With r_1 = 1 the fold costs K − 1 scalar
    multiplications, not K (:func:`~kaires_fl.crypto.group.multi_scalar_mult` adds B_1).

    Soundness. Let x = log_{base1} statement1 and write V_k = x·B_k + E_k (all points in
    the prime-order group, so E_k is well defined). The folded statement
    V* = Σ r_k V_k = x·B* + Σ r_k E_k with B* = Σ r_k B_k, and the (sound) DLEQ proof on
    (base1, statement1, B*, V*) can only verify if Σ r_k E_k = 0. If only E_1 ≠ 0 the sum
    is E_1 ≠ 0. Otherwise some E_m ≠ 0 with m ≥ 2, and the sum vanishes only for
    r_m = −(Σ_{k≠m} r_k e_k)/e_m mod L (e_k = log_G E_k): one value out of 2^128, and r_m
    is a random-oracle output on d, which commits to every B_k, V_k (hence every E_k)
    before r is known. So a prover making q hash queries gets a batch with any wrong V_k
    accepted with probability at most q·2^-128 (plus the DLEQ's own soundness error).
    """
    if len(bases2) != len(statements2) or not bases2:
        raise InvalidProof(
            f"a batched DLEQ statement needs one statement per base (got {len(bases2)} "
            f"bases, {len(statements2)} statements) and at least one; reject the batch"
        )
    h = hashlib.sha512(_frame(_DLEQ_BATCH_TAG, [context, base1, statement1]))
    h.update(len(bases2).to_bytes(8, "little"))
    for b, v in zip(bases2, statements2, strict=True):
        h.update(b.to_bytes())
        h.update(v.to_bytes())
    d = h.digest()
    if len(bases2) == 1:
        return d, [1]
    size = BATCH_COEFF_BITS // 8
    stream = hashlib.shake_256(d).digest(size * (len(bases2) - 1))
    rest = [int.from_bytes(stream[i : i + size], "little") for i in range(0, len(stream), size)]
    return d, [1, *rest]


def _fold(coeffs: Sequence[int], points: Sequence[Point]) -> Point:
    if len(points) == 1:
        return points[0]
    return multi_scalar_mult([Scalar(r) for r in coeffs], points)


def dleq_batch_prove(
    secret: Scalar,
    base1: Point,
    bases2: Sequence[Point],
    context: bytes,
    statement1: Point | None = None,
    statements2: Sequence[Point] | None = None,
) -> tuple[list[Point], DLEQProof]:
    """Prove ``statement1 = secret·base1`` and ``V_k = secret·B_k`` for every k, in one proof.

    Returns the statements V_k (computed unless given; given ones must be correct) and the
    proof. Cost: K + O(1) scalar multiplications for the V_k plus K − 1 for the folded base
    (against 2K + K fixed-base ones for K separate proofs).
    """
    x1 = base1 * secret if statement1 is None else statement1
    vs = [b * secret for b in bases2] if statements2 is None else list(statements2)
    d, r = dleq_batch_coefficients(context, base1, x1, bases2, vs)
    b_star = _fold(r, bases2)
    v_star = vs[0] if len(vs) == 1 else b_star * secret
    proof = dleq_prove(secret, base1, b_star, d, x1, v_star)
    return vs, proof


def dleq_batch_verify(
    proof: DLEQProof,
    base1: Point,
    statement1: Point,
    bases2: Sequence[Point],
    statements2: Sequence[Point],
    context: bytes,
) -> None:
    """Check a :func:`dleq_batch_prove` proof (2(K − 1) + O(1) scalar multiplications).

    Raises
    ------
    InvalidProof
        if some V_k ≠ x·B_k for x = log_{base1} statement1 (except with probability
        ≤ 2^-128 per hash query), the proof was forged or altered, or was made for other
        bases, statements, order or context. It does not say *which* V_k is wrong:
        check them one by one against values known to be right to locate it.
    """
    d, r = dleq_batch_coefficients(context, base1, statement1, bases2, statements2)
    b_star, v_star = _fold(r, bases2), _fold(r, statements2)
    try:
        dleq_verify(proof, base1, statement1, b_star, v_star, d)
    except InvalidProof as exc:
        raise InvalidProof(
            f"batched DLEQ proof over {len(bases2)} statements under context {context!r} "
            "does not verify: at least one value does not share the discrete logarithm, "
            "or the proof was forged/altered or made for another batch; reject the batch"
        ) from exc
