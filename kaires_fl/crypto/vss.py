"""Feldman and Pedersen verifiable secret sharing over Ed25519's scalar field.

Party i (0-based) holds the evaluation at x = i + 1 of a degree-t polynomial f with
f(0) = secret; any t + 1 shares recover it, t reveal nothing.

- Feldman: commitments C_j = a_j·G; share s_i is valid iff s_i·G = Σ_j x^j C_j. The
  public commitment to the secret is C_0 = secret·G and party i's public share is
  X_i = s_i·G = Σ_j x^j C_j (:func:`public_share`).
- Pedersen: a second (blinding) polynomial b with coefficients b_j, commitments
  C_j = a_j·G + b_j·H (H = :data:`H_POINT`); (s_i, r_i) is valid iff
  s_i·G + r_i·H = Σ_j x^j C_j. Hiding even against unbounded adversaries; a DKG
  (Gennaro et al.) runs it first and reveals a Feldman commitment afterwards.

:func:`verify_shares` checks many shares against one set of commitments with a single
random linear combination (t + 2 scalar multiplications) and only on failure falls
back to checking each share, naming the bad ones.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kaires_fl.crypto.group import (
    H_POINT,
    L,
    Point,
    Scalar,
    lagrange_at_zero,
    multi_scalar_mult,
)
from kaires_fl.errors import ConfigError, InvalidProof, ProtocolError


def _check_params(t: int, n: int) -> None:
    if t < 0 or n < t + 1:
        raise ConfigError(
            f"VSS needs 0 <= t and n >= t + 1 (got t={t}, n={n}); lower t or add parties"
        )


def random_polynomial(constant: Scalar, t: int) -> list[Scalar]:
    """Coefficients [constant, a_1, …, a_t] with a_j uniform (lowest degree first)."""
    return [constant] + [Scalar.random() for _ in range(t)]


def evaluate(coeffs: Sequence[Scalar], x: int) -> Scalar:
    """f(x) by Horner's rule on Python ints."""
    acc = 0
    for a in reversed(coeffs):
        acc = (acc * x + a.value) % L
    return Scalar(acc)


def commitment_at(commitments: Sequence[Point], party: int) -> Point:
    """Σ_j x^j · C_j at x = party + 1 (the value a party's share is checked against)."""
    x = party + 1
    acc = Point.identity()
    for c in reversed(commitments):
        acc = acc * x + c
    return acc


def public_share(commitments: Sequence[Point], party: int) -> Point:
    """Feldman: party's public share X_i = s_i·G, computed from the commitments."""
    return commitment_at(commitments, party)


def pedersen_commit(value: Scalar, blinding: Scalar) -> Point:
    """Pedersen commitment ``value·G + blinding·H`` (binding while log_G H is unknown)."""
    return Point.base() * value + H_POINT * blinding


def public_key(commitments: Sequence[Point]) -> Point:
    """Feldman: the public commitment to the secret, C_0 = secret·G."""
    return commitments[0]


@dataclass(frozen=True)
class FeldmanDealing:
    """Output of :func:`deal`: ``shares[i]`` is party i's (x = i + 1)."""

    shares: list[Scalar]
    commitments: list[Point]


@dataclass(frozen=True)
class PedersenDealing:
    """Output of :func:`deal_pedersen`: party i gets ``(shares[i], blindings[i])``."""

    shares: list[Scalar]
    blindings: list[Scalar]
    commitments: list[Point]


def deal(secret: Scalar, t: int, n: int) -> FeldmanDealing:
    """Feldman-share ``secret`` among n parties with threshold t + 1."""
    _check_params(t, n)
    coeffs = random_polynomial(secret, t)
    return FeldmanDealing(
        shares=[evaluate(coeffs, i + 1) for i in range(n)],
        commitments=[Point.base() * a for a in coeffs],
    )


def deal_pedersen(secret: Scalar, t: int, n: int) -> PedersenDealing:
    """Pedersen-share ``secret`` among n parties with threshold t + 1."""
    _check_params(t, n)
    coeffs = random_polynomial(secret, t)
    blind = random_polynomial(Scalar.random(), t)
    return PedersenDealing(
        shares=[evaluate(coeffs, i + 1) for i in range(n)],
        blindings=[evaluate(blind, i + 1) for i in range(n)],
        commitments=[Point.base() * a + H_POINT * b for a, b in zip(coeffs, blind, strict=True)],
    )


def _fail(kind: str, party: int) -> InvalidProof:
    return InvalidProof(
        f"{kind} share of party {party} does not match the dealer's commitments: the dealer "
        "(or the channel) is faulty; file a complaint against the dealer"
    )


def verify_share(commitments: Sequence[Point], party: int, share: Scalar) -> None:
    """Feldman check ``share·G == Σ x^j C_j``; raises InvalidProof if it fails."""
    if Point.base() * share != commitment_at(commitments, party):
        raise _fail("Feldman", party)


def verify_pedersen_share(
    commitments: Sequence[Point], party: int, share: Scalar, blinding: Scalar
) -> None:
    """Pedersen check ``share·G + blinding·H == Σ x^j C_j``; raises InvalidProof if it fails."""
    if pedersen_commit(share, blinding) != commitment_at(commitments, party):
        raise _fail("Pedersen", party)


def verify_shares(
    commitments: Sequence[Point],
    shares: Mapping[int, Scalar],
    blindings: Mapping[int, Scalar] | None = None,
) -> list[int]:
    """Check many shares of one dealing at once; returns the sorted parties whose shares fail.

    Feldman when ``blindings`` is None, Pedersen otherwise (same keys as ``shares``).
    One random linear combination Σ r_i·(share check) costs t + 2 scalar
    multiplications; a false batch pass happens with probability ≤ 1/L.
    """
    parties = sorted(shares)
    if not parties:
        return []
    if blindings is not None and set(blindings) != set(parties):
        raise ProtocolError("verify_shares: blindings must be given for exactly the shares")
    r = {i: int.from_bytes(secrets.token_bytes(32), "little") % L for i in parties}
    s_sum = sum(r[i] * shares[i].value for i in parties) % L
    lhs = Point.base() * Scalar(s_sum)
    if blindings is not None:
        b_sum = sum(r[i] * blindings[i].value for i in parties) % L
        lhs = lhs + H_POINT * Scalar(b_sum)
    # Σ_i r_i Σ_j x_i^j C_j = Σ_j (Σ_i r_i x_i^j) C_j
    weights = [
        Scalar(sum(r[i] * pow(i + 1, j, L) for i in parties)) for j in range(len(commitments))
    ]
    if lhs == multi_scalar_mult(weights, list(commitments)):
        return []
    bad = []
    for i in parties:
        try:
            if blindings is None:
                verify_share(commitments, i, shares[i])
            else:
                verify_pedersen_share(commitments, i, shares[i], blindings[i])
        except InvalidProof:
            bad.append(i)
    return bad


def lagrange_coefficients(parties: Sequence[int]) -> list[Scalar]:
    """λ_i at 0 for 0-based ``parties`` (points x = i + 1), in the given order."""
    return lagrange_at_zero([i + 1 for i in parties])


def _pick(parties: Sequence[int], t: int, what: str) -> list[int]:
    chosen = sorted(set(parties))
    if len(chosen) < t + 1:
        raise ProtocolError(
            f"{what} needs t + 1 = {t + 1} shares, got {len(chosen)}; collect more shares"
        )
    return chosen[: t + 1]


def recover_secret(shares: Mapping[int, Scalar], t: int) -> Scalar:
    """The secret f(0) from any t + 1 (valid) shares; uses the t + 1 lowest parties given.

    Raises ProtocolError with fewer than t + 1 shares. Verify shares first: this
    interpolates blindly.
    """
    chosen = _pick(list(shares), t, "recover_secret")
    lam = lagrange_coefficients(chosen)
    return Scalar(sum(la.value * shares[i].value for la, i in zip(lam, chosen, strict=True)))


def recover_public(public_shares: Mapping[int, Point], t: int) -> Point:
    """f(0)·G from any t + 1 public shares X_i = f(i+1)·G (Lagrange in the exponent)."""
    chosen = _pick(list(public_shares), t, "recover_public")
    return multi_scalar_mult(lagrange_coefficients(chosen), [public_shares[i] for i in chosen])
