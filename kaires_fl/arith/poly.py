"""Polynomials over the fields of :mod:`kaires_fl.arith.field`.

Coefficients lie on the last axis, lowest degree first; leading axes are batch axes. The NTT
of a length-n vector a is A[k] = Σ_j a[j]·w^(jk) with w = ``F.root_of_unity(n)``, i.e. the
evaluations of the polynomial a at the powers of w; :func:`intt` is its inverse.
Field64 runs numba kernels; other fields use a generic vectorised path over ``F``'s ops.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from kaires_fl.arith import _kernels as kern
from kaires_fl.arith.field import Field64, PrimeField
from kaires_fl.errors import ConfigError

Field = type[PrimeField]

#: Below this length poly_mul uses schoolbook multiplication.
_NTT_MUL_MIN = 64


def _check_pow2(F: Field, n: int) -> None:
    if n < 1 or n & (n - 1) or n > F.GEN_ORDER:
        raise ConfigError(
            f"NTT length {n} must be a power of two ≤ {F.GEN_ORDER}; pad with zeros first"
        )


@lru_cache(maxsize=64)
def _bitrev(n: int) -> np.ndarray:
    bits = n.bit_length() - 1
    idx = np.arange(n, dtype=np.int64)
    rev = np.zeros(n, dtype=np.int64)
    for b in range(bits):
        rev |= ((idx >> b) & 1) << (bits - 1 - b)
    return rev


_TWIDDLES: dict[tuple[Field, int, bool], np.ndarray] = {}


def _twiddles(F: Field, n: int, inverse: bool) -> np.ndarray:
    """w^k for k < n/2, w the principal n-th root (inverted for the inverse NTT); cached."""
    key = (F, n, inverse)
    tw = _TWIDDLES.get(key)
    if tw is None:
        tw = _TWIDDLES[key] = _compute_twiddles(F, n, inverse)
    return tw


def _compute_twiddles(F: Field, n: int, inverse: bool) -> np.ndarray:
    w = F.root_of_unity(n)
    if inverse:
        w = F.inv(w)
    half = max(n // 2, 1)
    if half == 1:
        return F.ones((1,))
    # Doubling: powers [0, m) then times w^m gives [m, 2m).
    tw = F.ones((1,))
    wm = w
    while tw.shape[0] < half:
        tw = np.concatenate([tw, F.mul(tw, wm)])
        wm = F.mul(wm, wm)
    return tw[:half]


def _transform(F: Field, a: Any, inverse: bool) -> np.ndarray:
    a = F._arr(a)
    n = a.shape[-1]
    _check_pow2(F, n)
    tw = _twiddles(F, n, inverse)
    rev = _bitrev(n)
    if F is Field64:
        rows = np.array(a, dtype=np.uint64, order="C").reshape(-1, n)
        kern.ntt_rows(rows, tw, rev)
        out = rows.reshape(a.shape)
    else:
        out = _ntt_generic(F, a[..., rev], tw)
    if inverse:
        out = F.mul(out, F.inv(F.elements(n)))
    return out


def _ntt_generic(F: Field, x: np.ndarray, tw: np.ndarray) -> np.ndarray:
    """Radix-2 DIT butterflies on bit-reversed input, vectorised over blocks and batch."""
    n = x.shape[-1]
    batch = x.shape[:-1]
    h = 1
    while h < n:
        blocks = x.reshape(*batch, n // (2 * h), 2, h)
        w = tw[:: n // (2 * h)][:h]
        u = blocks[..., 0, :]
        v = F.mul(blocks[..., 1, :], w)
        x = np.stack([F.add(u, v), F.sub(u, v)], axis=-2).reshape(*batch, n)
        h *= 2
    return x


def ntt(F: Field, a: Any) -> np.ndarray:
    """Evaluations of the polynomials a (last axis, length n a power of two) at w^0..w^(n−1)."""
    return _transform(F, a, inverse=False)


def intt(F: Field, a: Any) -> np.ndarray:
    """Inverse of :func:`ntt`: coefficients from evaluations at the powers of w."""
    return _transform(F, a, inverse=True)


def poly_eval(F: Field, coeffs: Any, x: Any) -> np.ndarray:
    """Σ_i coeffs[..., i]·x^i; x broadcasts against the batch axes coeffs.shape[:-1].

    Result shape: ``np.broadcast_shapes(coeffs.shape[:-1], x.shape)``.
    """
    c = F._arr(coeffs)
    x = F._arr(x)
    if c.shape[-1] == 0:
        return F.zeros(np.broadcast_shapes(c.shape[:-1], x.shape))
    if F is Field64:
        if c.ndim == 1:
            out = np.empty(x.shape, np.uint64)
            kern.horner_one(c, np.ascontiguousarray(x).reshape(-1), out.reshape(-1))
            return out
        shape = np.broadcast_shapes(c.shape[:-1], x.shape)
        d1 = c.shape[-1]
        c2 = np.ascontiguousarray(np.broadcast_to(c, (*shape, d1))).reshape(-1, d1)
        x2 = np.ascontiguousarray(np.broadcast_to(x, shape)).reshape(-1)
        out = np.empty(shape, np.uint64)
        kern.horner_rows(c2, x2, out.reshape(-1))
        return out
    acc = F.mul(F.zeros(()), x)
    acc = F.add(acc, c[..., -1])
    for i in range(c.shape[-1] - 2, -1, -1):
        acc = F.add(F.mul(acc, x), c[..., i])
    return acc


def _master(F: Field, xs: np.ndarray) -> np.ndarray:
    """Coefficients of Π_j (X − xs[j]) (length len(xs) + 1, monic)."""
    m = F.ones((1,))
    for xj in xs:
        # (X − xj)·m: shift up, subtract xj·m.
        up = np.concatenate([F.zeros((1,)), m])
        down = np.concatenate([F.mul(m, xj), F.zeros((1,))])
        m = F.sub(up, down)
    return m


def _lagrange_basis(F: Field, xs: np.ndarray) -> np.ndarray:
    """Matrix L (n, n): row i holds the coefficients of the Lagrange basis polynomial of x_i."""
    n = xs.shape[0]
    M = _master(F, xs)
    # Synthetic division of M by (X − x_i) for all i at once.
    Q = F.zeros((n, n))
    q = F.zeros((n,))
    for k in range(n, 0, -1):
        q = F.add(M[k], F.mul(q, xs))
        Q[:, k - 1] = q
    den = poly_eval(F, Q, xs)  # Π_{j≠i} (x_i − x_j)
    try:
        inv = F.inv(den)
    except ZeroDivisionError:
        raise ConfigError("interpolation points must be distinct") from None
    return F.mul(Q, inv[:, None])


def poly_interp(F: Field, xs: Any, ys: Any) -> np.ndarray:
    """Coefficients (last axis, length n) of the unique polynomial of degree < n through
    (xs[i], ys[..., i]); xs are n distinct points. O(n^2) setup plus one matmul.

    For the powers of a root of unity use :func:`intt` instead (O(n log n)).
    """
    xs = F._arr(xs).reshape(-1)
    ys = F._arr(ys)
    if ys.shape[-1] != xs.shape[0]:
        raise ConfigError(f"poly_interp: {xs.shape[0]} points but {ys.shape[-1]} values")
    L = _lagrange_basis(F, xs)
    return F.matmul(ys, L)


def poly_mul(F: Field, a: Any, b: Any) -> np.ndarray:
    """Product of polynomials a and b (last axis; batch axes broadcast); length la + lb − 1."""
    a = F._arr(a)
    b = F._arr(b)
    la, lb = a.shape[-1], b.shape[-1]
    batch = np.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    if la == 0 or lb == 0:
        return F.zeros((*batch, 0))
    lc = la + lb - 1
    if min(la, lb) < _NTT_MUL_MIN:
        if la < lb:
            a, b, la, lb = b, a, lb, la
        out = F.zeros((*batch, lc))
        for j in range(lb):
            out[..., j : j + la] = F.add(out[..., j : j + la], F.mul(a, b[..., j : j + 1]))
        return out
    n = 1 << (lc - 1).bit_length()
    pa = F.zeros((*a.shape[:-1], n))
    pa[..., :la] = a
    pb = F.zeros((*b.shape[:-1], n))
    pb[..., :lb] = b
    return intt(F, F.mul(ntt(F, pa), ntt(F, pb)))[..., :lc]


def lagrange_coefficients(F: Field, xs: Any, at: Any) -> np.ndarray:
    """Weights w (shape at.shape + (n,)) with f(at) = Σ_i w[..., i]·f(xs[i]) for every
    polynomial f of degree < n; xs are n distinct points.
    """
    xs = F._arr(xs).reshape(-1)
    at = F._arr(at)
    n = xs.shape[0]
    diff = F.sub(xs[:, None], xs[None, :])
    diff[np.arange(n), np.arange(n)] = F.ones((n,))
    try:
        den_inv = F.inv(F.prod(diff, axis=1))
    except ZeroDivisionError:
        raise ConfigError("interpolation points must be distinct") from None
    d = F.sub(at[..., None], xs)  # (..., n): at − x_j
    # Π_{j≠i} (at − x_j) from prefix and suffix products (exact also when at = x_i).
    pre = F.ones((*at.shape, n))
    suf = F.ones((*at.shape, n))
    for i in range(1, n):
        pre[..., i] = F.mul(pre[..., i - 1], d[..., i - 1])
        suf[..., n - 1 - i] = F.mul(suf[..., n - i], d[..., n - i])
    return F.mul(F.mul(pre, suf), den_inv)


__all__ = ["intt", "lagrange_coefficients", "ntt", "poly_eval", "poly_interp", "poly_mul"]
