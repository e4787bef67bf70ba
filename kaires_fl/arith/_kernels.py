"""Numba kernels for arithmetic modulo the Goldilocks prime p = 2^64 − 2^32 + 1.

Every kernel works on canonical ``uint64`` values (in ``[0, p)``) held in flat, C-contiguous
arrays and writes canonical values. The 64×64→128-bit product is formed from 32-bit halves
and reduced with 2^64 ≡ 2^32 − 1 and 2^96 ≡ −1 (mod p), so no floating point and no Python
integers are involved. Kernels are compiled lazily on first call and cached on disk
(``cache=True``), so importing this module does not compile anything. They release the GIL
(``nogil=True``): parties simulated on threads of one process run them in parallel.

All constants are ``np.uint64``: mixing ``uint64`` with a signed literal would make numba
promote to ``float64`` and silently lose precision.
"""

from __future__ import annotations

import numpy as np
from numba import njit

P = np.uint64(0xFFFFFFFF00000001)
EPS = np.uint64(0xFFFFFFFF)  # 2^64 − p = 2^32 − 1
M32 = np.uint64(0xFFFFFFFF)
S32 = np.uint64(32)
ZERO = np.uint64(0)
ONE = np.uint64(1)
#: Column tile of ``matmul3`` (accumulators of 2·8·MATMUL_TILE bytes).
MATMUL_TILE = 1024
#: Up to this inner dimension ``matmul3`` accumulates with addmod (about 2× faster there).
MATMUL_SMALL_K = 8


@njit(cache=True, nogil=True, inline="always")
def reduce128(hi: np.uint64, lo: np.uint64) -> np.uint64:
    """Canonical residue of hi·2^64 + lo modulo p (any hi, lo < 2^64)."""
    hh = hi >> S32
    hl = hi & M32
    t0 = lo - hh
    if lo < hh:  # borrow: t0 holds lo − hh + 2^64 ≡ lo − hh + EPS
        t0 -= EPS
    t1 = hl * EPS  # < 2^64 since both factors < 2^32
    t2 = t0 + t1
    if t2 < t1:  # carry: true value is t2 + 2^64 ≡ t2 + EPS (no second overflow possible)
        t2 += EPS
    if t2 >= P:
        t2 -= P
    return t2


@njit(cache=True, nogil=True, inline="always")
def mulmod(a: np.uint64, b: np.uint64) -> np.uint64:
    """a·b mod p for any a, b < 2^64; the result is canonical."""
    a0 = a & M32
    a1 = a >> S32
    b0 = b & M32
    b1 = b >> S32
    p00 = a0 * b0
    p01 = a0 * b1
    p10 = a1 * b0
    p11 = a1 * b1
    mid = (p00 >> S32) + (p01 & M32) + (p10 & M32)
    lo = (mid << S32) | (p00 & M32)
    hi = p11 + (p01 >> S32) + (p10 >> S32) + (mid >> S32)
    return reduce128(hi, lo)


@njit(cache=True, nogil=True, inline="always")
def addmod(a: np.uint64, b: np.uint64) -> np.uint64:
    """a + b mod p for canonical a, b."""
    s = a + b
    if s < a:  # carry: s + 2^64 − p = s + EPS
        s += EPS
    elif s >= P:
        s -= P
    return s


@njit(cache=True, nogil=True, inline="always")
def submod(a: np.uint64, b: np.uint64) -> np.uint64:
    """a − b mod p for canonical a, b."""
    d = a - b
    if a < b:  # d holds a − b + 2^64; want a − b + p = d − EPS
        d -= EPS
    return d


@njit(cache=True, nogil=True)
def powmod(x: np.uint64, e: np.uint64) -> np.uint64:
    """x^e mod p by square-and-multiply (0^0 = 1)."""
    r = ONE
    while e > ZERO:
        if e & ONE:
            r = mulmod(r, x)
        x = mulmod(x, x)
        e >>= ONE
    return r


@njit(cache=True, nogil=True, inline="always")
def combine_split(sl: np.uint64, sh: np.uint64) -> np.uint64:
    """(sh·2^32 + sl) mod p for split sums sl = Σ low halves, sh = Σ high halves.

    Summing the 32-bit halves of canonical values separately needs no carry handling (so
    the loops vectorise) and is exact for fewer than 2^32 terms.
    """
    lo = (sh << S32) + sl
    hi = sh >> S32
    if lo < sl:
        hi += ONE
    return reduce128(hi, lo)


# ---------------------------------------------------------------- elementwise kernels
# Scalars are passed as 1-element arrays: numba dispatches arrays faster than numpy scalars.


@njit(cache=True, nogil=True)
def add_vv(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    for i in range(a.shape[0]):
        out[i] = addmod(a[i], b[i])


@njit(cache=True, nogil=True)
def add_vs(a: np.ndarray, b1: np.ndarray, out: np.ndarray) -> None:
    b = b1[0]
    for i in range(a.shape[0]):
        out[i] = addmod(a[i], b)


@njit(cache=True, nogil=True)
def sub_vv(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    for i in range(a.shape[0]):
        out[i] = submod(a[i], b[i])


@njit(cache=True, nogil=True)
def sub_vs(a: np.ndarray, b1: np.ndarray, out: np.ndarray) -> None:
    b = b1[0]
    for i in range(a.shape[0]):
        out[i] = submod(a[i], b)


@njit(cache=True, nogil=True)
def sub_sv(a1: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    a = a1[0]
    for i in range(b.shape[0]):
        out[i] = submod(a, b[i])


@njit(cache=True, nogil=True)
def neg_v(a: np.ndarray, out: np.ndarray) -> None:
    for i in range(a.shape[0]):
        out[i] = submod(ZERO, a[i])


@njit(cache=True, nogil=True)
def mul_vv(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    for i in range(a.shape[0]):
        out[i] = mulmod(a[i], b[i])


@njit(cache=True, nogil=True)
def mul_vs(a: np.ndarray, b1: np.ndarray, out: np.ndarray) -> None:
    b = b1[0]
    for i in range(a.shape[0]):
        out[i] = mulmod(a[i], b)


@njit(cache=True, nogil=True)
def pow_vs(a: np.ndarray, e1: np.ndarray, out: np.ndarray) -> None:
    e = e1[0]
    for i in range(a.shape[0]):
        out[i] = powmod(a[i], e)


@njit(cache=True, nogil=True)
def reduce_v(a: np.ndarray, out: np.ndarray) -> None:
    """Canonical residues of arbitrary uint64 values."""
    for i in range(a.shape[0]):
        x = a[i]
        out[i] = x - P if x >= P else x


@njit(cache=True, nogil=True)
def inv_batch(a: np.ndarray, out: np.ndarray) -> None:
    """Montgomery batch inversion: 3 multiplications per element and one exponentiation.

    Pre: no element of ``a`` is 0 (checked by the caller).
    """
    n = a.shape[0]
    acc = ONE
    for i in range(n):
        out[i] = acc  # product of a[0..i-1]
        acc = mulmod(acc, a[i])
    inv = powmod(acc, P - np.uint64(2))
    for i in range(n - 1, -1, -1):
        t = mulmod(out[i], inv)
        inv = mulmod(inv, a[i])
        out[i] = t


# ---------------------------------------------------------------- reductions


@njit(cache=True, nogil=True)
def sum_rows(a: np.ndarray, out: np.ndarray) -> None:
    """out[r] = Σ_j a[r, j] mod p, exactly (split 32-bit half sums, one reduction)."""
    m, n = a.shape
    for r in range(m):
        sl = ZERO
        sh = ZERO
        for j in range(n):
            x = a[r, j]
            sl += x & M32
            sh += x >> S32
        out[r] = combine_split(sl, sh)


@njit(cache=True, nogil=True)
def prod_rows(a: np.ndarray, out: np.ndarray) -> None:
    """out[r] = Π_j a[r, j] mod p."""
    m, n = a.shape
    for r in range(m):
        acc = ONE
        for j in range(n):
            acc = mulmod(acc, a[r, j])
        out[r] = acc


def matmul3(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """out[s] = a[s] @ b[s] mod p for stacks a (S, M, K), b (S, K, N), out (S, M, N).

    Each shape takes its own kernel (compiled on first use only: a process that never
    multiplies wide matrices never compiles the tiled one).
    """
    n = b.shape[2]
    k = a.shape[2]
    if n <= 4:
        matmul_dots(a, b, out)
    elif 1 <= k <= MATMUL_SMALL_K:
        matmul_few_terms(a, b, out)
    else:
        matmul_tiled(a, b, out)


@njit(cache=True, nogil=True)
def matmul_dots(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """``matmul3`` for few columns (matrix-vector): one dot product per output entry; the
    products' 32-bit halves are accumulated separately (exact for K < 2^32), reduced once."""
    s_, m, k = a.shape
    n = b.shape[2]
    for s in range(s_):
        for i in range(m):
            for j in range(n):
                sl = ZERO
                sh = ZERO
                for t in range(k):
                    c = mulmod(a[s, i, t], b[s, t, j])
                    sl += c & M32
                    sh += c >> S32
                out[s, i, j] = combine_split(sl, sh)


@njit(cache=True, nogil=True)
def matmul_few_terms(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """``matmul3`` for few terms (Shamir sharing and reconstruction: K = t + 1): accumulate
    with addmod straight into the output rows — vectorises, no split accumulators."""
    s_, m, k = a.shape
    n = b.shape[2]
    for s in range(s_):
        for i in range(m):
            o = out[s, i]
            x = a[s, i, 0]
            b0 = b[s, 0]
            if x == ONE:  # Vandermonde rows start with 1: a copy
                for j in range(n):  # (a loop: o[:] = b0 would compile numba's
                    o[j] = b0[j]  # shape-mismatch error formatting, ~1.4 s cold)
            else:
                for j in range(n):
                    o[j] = mulmod(x, b0[j])
            for t in range(1, k):
                x = a[s, i, t]
                bt = b[s, t]
                if x == ONE:
                    for j in range(n):
                        o[j] = addmod(o[j], bt[j])
                else:
                    for j in range(n):
                        o[j] = addmod(o[j], mulmod(x, bt[j]))


@njit(cache=True, nogil=True)
def matmul_tiled(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """``matmul3`` in column tiles: the accumulators and the tile of b stay in L1 even for
    very wide b (Shamir sharing multiplies a small Vandermonde matrix by ~10^6 columns)."""
    s_, m, k = a.shape
    n = b.shape[2]
    tile = min(n, MATMUL_TILE)
    acc_l = np.empty(tile, dtype=np.uint64)
    acc_h = np.empty(tile, dtype=np.uint64)
    for s in range(s_):
        for j0 in range(0, n, tile):
            w = min(tile, n - j0)
            for i in range(m):
                acc_l[:w] = ZERO
                acc_h[:w] = ZERO
                for t in range(k):
                    x = a[s, i, t]
                    if x == ZERO:
                        continue
                    for j in range(w):
                        c = mulmod(x, b[s, t, j0 + j])
                        acc_l[j] += c & M32
                        acc_h[j] += c >> S32
                for j in range(w):
                    out[s, i, j0 + j] = combine_split(acc_l[j], acc_h[j])


# ---------------------------------------------------------------- polynomials


@njit(cache=True, nogil=True)
def ntt_rows(a: np.ndarray, tw: np.ndarray, rev: np.ndarray) -> None:
    """In-place iterative radix-2 NTT of every row of ``a`` (m, n).

    ``tw[k] = w^k`` for k < n/2 with w a principal n-th root of unity and ``rev`` the
    bit-reversal permutation of range(n). Post: a[r, k] = Σ_j a_old[r, j]·w^(jk).
    """
    m, n = a.shape
    for r in range(m):
        for i in range(n):
            j = rev[i]
            if i < j:
                t = a[r, i]
                a[r, i] = a[r, j]
                a[r, j] = t
        h = 1
        while h < n:
            step = n // (2 * h)
            for start in range(0, n, 2 * h):
                for k in range(h):
                    w = tw[k * step]
                    u = a[r, start + k]
                    v = mulmod(a[r, start + k + h], w)
                    a[r, start + k] = addmod(u, v)
                    a[r, start + k + h] = submod(u, v)
            h *= 2


@njit(cache=True, nogil=True)
def horner_rows(c: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    """out[r] = Σ_i c[r, i]·x[r]^i (Horner) for c (m, d+1), x (m,)."""
    m, d1 = c.shape
    for r in range(m):
        acc = ZERO
        xr = x[r]
        for i in range(d1 - 1, -1, -1):
            acc = addmod(mulmod(acc, xr), c[r, i])
        out[r] = acc


@njit(cache=True, nogil=True)
def horner_one(c: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    """out[r] = Σ_i c[i]·x[r]^i for one polynomial c (d+1,) at many points x (m,)."""
    d1 = c.shape[0]
    for r in range(x.shape[0]):
        acc = ZERO
        xr = x[r]
        for i in range(d1 - 1, -1, -1):
            acc = addmod(mulmod(acc, xr), c[i])
        out[r] = acc
