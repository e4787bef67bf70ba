"""Sigma proofs over Ed25519's prime-order group, made non-interactive by strong Fiat–Shamir.

- :class:`SchnorrProof`: knowledge of x with X = x·B (also a Schnorr signature of
  knowledge on the ``context`` message).
- :class:`DLEQProof` (Chaum–Pedersen): log_{B1} X1 = log_{B2} X2, without revealing it.

Strong Fiat–Shamir: the challenge hashes a proof-type tag, the caller's ``context``
(bind it to the protocol step, session, job, recipient …), **every** base, **every**
statement element and the commitments. A proof made for one context, base or
statement does not verify for another.

Proofs are stored in the compact (challenge, response) form; each serialises to 64
canonical bytes (two scalars < L). Commitment nonces are hedged: derived from the
witness, the statement and fresh randomness, so a bad RNG alone does not leak x.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from kaires_fl.crypto.group import SCALAR_SIZE, Point, Scalar, hash_to_scalar
from kaires_fl.errors import EncodingError, InvalidProof

PROOF_SIZE = 2 * SCALAR_SIZE
_SCHNORR_TAG = b"kaires-fl/proofs/schnorr/v1"
_DLEQ_TAG = b"kaires-fl/proofs/dleq/v1"


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
class SchnorrProof:
    """Proof of knowledge of x with ``statement = x · base``."""

    challenge: Scalar
    response: Scalar

    def to_bytes(self) -> bytes:
        return self.challenge.to_bytes() + self.response.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> SchnorrProof:
        """Raises EncodingError on a wrong length or a non-canonical scalar."""
        return cls(*_decode_pair(data, "Schnorr proof"))


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
    commit = base * proof.response + statement * proof.challenge
    if _schnorr_challenge(context, base, statement, commit) != proof.challenge:
        raise InvalidProof(
            f"Schnorr proof under context {context!r} does not verify for statement "
            f"{statement!r}: it was forged, altered, or made for another statement/context; "
            "reject the message that carried it"
        )


@dataclass(frozen=True)
class DLEQProof:
    """Chaum–Pedersen proof that log_{base1} X1 = log_{base2} X2."""

    challenge: Scalar
    response: Scalar

    def to_bytes(self) -> bytes:
        return self.challenge.to_bytes() + self.response.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> DLEQProof:
        """Raises EncodingError on a wrong length or a non-canonical scalar."""
        return cls(*_decode_pair(data, "DLEQ proof"))


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
    c, s = proof.challenge, proof.response
    a1 = base1 * s + statement1 * c
    a2 = base2 * s + statement2 * c
    if _dleq_challenge(context, base1, statement1, base2, statement2, a1, a2) != c:
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
