"""Slow Python-int reference of Shamir sharing's polynomials (for the sharing tests)."""

from __future__ import annotations


def ref_eval(coeffs: list[int], x: int, p: int) -> int:
    """Σ_k coeffs[k]·x^k mod p."""
    return sum(c * pow(x, k, p) for k, c in enumerate(coeffs)) % p


def ref_interpolate_at(points: list[tuple[int, int]], at: int, p: int) -> int:
    """Lagrange interpolation through ``points`` evaluated at ``at``, Python ints mod p
    (p prime, the points' x distinct mod p)."""
    total = 0
    for i, (xi, yi) in enumerate(points):
        num, den = 1, 1
        for j, (xj, _) in enumerate(points):
            if j != i:
                num = num * (at - xj) % p
                den = den * (xi - xj) % p
        total = (total + yi * num * pow(den, -1, p)) % p
    return total
