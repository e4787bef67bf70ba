"""numpy twins of the numba kernels, for small calls of a kernel that is not compiled yet.

Compiling a kernel costs 0.1–1 s of numba's front end; a short process that only ever calls
it on a few thousand elements (``kaires demo``, a CLI command) spends far more on the
compilation than on the work. Each twin here computes exactly what its kernel computes
(same arguments, same ``out`` written, same canonical residues modulo the Goldilocks prime
p = 2^64 − 2^32 + 1) with whole-array numpy operations on ``uint64``; which one runs is
decided by :class:`kaires_fl.arith._kernels.Tiered`.

The arithmetic mirrors the LLVM builders of :mod:`kaires_fl.arith._kernels` operation by
operation: the 64×64→128-bit product from 32-bit halves, the reduction with
2^64 ≡ 2^32 − 1 and 2^96 ≡ −1, carries and borrows as selects (``np.where``). numpy's
``uint64`` array arithmetic wraps modulo 2^64 like the machine's, silently. Every operand is
kept an array of at least one dimension: numpy *scalar* arithmetic would warn on the wraps.
Pre-conditions are the kernels' (canonical inputs where they require them).
"""

from __future__ import annotations

import numpy as np

P = np.uint64(0xFFFFFFFF00000001)
EPS = np.uint64(0xFFFFFFFF)  # 2^64 − p = 2^32 − 1
M32 = np.uint64(0xFFFFFFFF)
S32 = np.uint64(32)
_U64 = np.uint64
#: Largest product array ``matmul`` forms at once (beyond: one term of the inner axis at a time).
_MATMUL_BLOCK = 1 << 20


# ---------------------------------------------------------------- scalar arithmetic, vectorised


def reduce128(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """Canonical residue of hi·2^64 + lo (``_kernels._ir_reduce128``)."""
    hh = hi >> S32
    hl = hi & M32
    t0 = lo - hh
    t0 = np.where(lo < hh, t0 - EPS, t0)
    t1 = hl * EPS
    t2 = t0 + t1
    t2 = np.where(t2 < t1, t2 + EPS, t2)
    return np.where(t2 >= P, t2 - P, t2)


def mulmod(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """x·y mod p for any x, y < 2^64, broadcast (``_kernels._ir_mulmod``)."""
    x0, x1 = x & M32, x >> S32
    y0, y1 = y & M32, y >> S32
    p00, p01, p10, p11 = x0 * y0, x0 * y1, x1 * y0, x1 * y1
    mid = (p00 >> S32) + (p01 & M32) + (p10 & M32)
    lo = (mid << S32) | (p00 & M32)
    hi = p11 + (p01 >> S32) + (p10 >> S32) + (mid >> S32)
    return reduce128(hi, lo)


def addmod(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """x + y mod p for canonical x, y (``_kernels._ir_addmod``)."""
    s = x + y
    reduced = np.where(s >= P, s - P, s)
    return np.where(s < x, s + EPS, reduced)


def submod(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """x − y mod p for canonical x, y (``_kernels._ir_submod``)."""
    d = x - y
    return np.where(x < y, d - EPS, d)


def combine_split(sl: np.ndarray, sh: np.ndarray) -> np.ndarray:
    """(sh·2^32 + sl) mod p (``_kernels._ir_combine_split``)."""
    lo = (sh << S32) + sl
    carry = (lo < sl).astype(_U64)
    return reduce128((sh >> S32) + carry, lo)


def split_sum(c: np.ndarray, axis: int) -> np.ndarray:
    """Σ c along ``axis`` mod p: the 32-bit halves summed apart (exact below 2^32 terms)."""
    sl = np.sum(c & M32, axis=axis, dtype=_U64)
    sh = np.sum(c >> S32, axis=axis, dtype=_U64)
    return combine_split(np.atleast_1d(sl), np.atleast_1d(sh)).reshape(np.shape(sl))


#: Up to this many elements ``powmod`` runs Python's three-argument pow per element (~1 µs
#: each) rather than ~100 whole-array products (tens of µs each, whatever the size).
_POW_SCALAR_MAX = 256


def powmod(x: np.ndarray, e: int) -> np.ndarray:
    """x^e mod p elementwise by square-and-multiply (0^0 = 1)."""
    if x.size <= _POW_SCALAR_MAX:
        p = int(P)
        vals = [pow(v, e, p) for v in x.reshape(-1).tolist()]
        return np.array(vals, _U64).reshape(x.shape)
    r = np.ones(x.shape, _U64)
    while e > 0:
        if e & 1:
            r = mulmod(r, x)
        x = mulmod(x, x)
        e >>= 1
    return r


# ---------------------------------------------------------------- twins of _kernels


def add_vv(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    out[:] = addmod(a, b)


def add_vs(a: np.ndarray, b1: np.ndarray, out: np.ndarray) -> None:
    out[:] = addmod(a, b1[:1])


def sub_vv(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    out[:] = submod(a, b)


def sub_vs(a: np.ndarray, b1: np.ndarray, out: np.ndarray) -> None:
    out[:] = submod(a, b1[:1])


def sub_sv(a1: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    out[:] = submod(a1[:1], b)


def neg_v(a: np.ndarray, out: np.ndarray) -> None:
    out[:] = submod(np.zeros(a.shape, _U64), a)


def mul_vv(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    out[:] = mulmod(a, b)


def mul_vs(a: np.ndarray, b1: np.ndarray, out: np.ndarray) -> None:
    out[:] = mulmod(a, b1[:1])


def pow_vs(a: np.ndarray, e1: np.ndarray, out: np.ndarray) -> None:
    out[:] = powmod(a, int(e1[0]))


def reduce_v(a: np.ndarray, out: np.ndarray) -> None:
    out[:] = np.where(a >= P, a - P, a)


def inv_batch(a: np.ndarray, out: np.ndarray) -> None:
    """a^(p−2) (Fermat); pre: no element is 0."""
    out[:] = powmod(a, int(P) - 2)


def sum_rows(a: np.ndarray, out: np.ndarray) -> None:
    out[:] = split_sum(a, axis=1)


def prod_rows(a: np.ndarray, out: np.ndarray) -> None:
    """Row products by a pairwise tree (log2 n whole-array products)."""
    x = a
    while x.shape[1] > 1:
        if x.shape[1] % 2:
            x = np.concatenate([x, np.ones((x.shape[0], 1), _U64)], axis=1)
        x = mulmod(x[:, 0::2], x[:, 1::2])
    out[:] = x[:, 0] if x.shape[1] else np.ones(x.shape[0], _U64)


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """out[s] = a[s] @ b[s] mod p (twin of every ``matmul3`` kernel)."""
    s_, m, k = a.shape
    n = b.shape[2]
    if s_ * m * k * n <= _MATMUL_BLOCK:
        out[:] = split_sum(mulmod(a[:, :, :, None], b[:, None, :, :]), axis=2)
        return
    sl = np.zeros((s_, m, n), _U64)
    sh = np.zeros((s_, m, n), _U64)
    for t in range(k):
        c = mulmod(a[:, :, t, None], b[:, None, t, :])
        sl += c & M32
        sh += c >> S32
    out[:] = combine_split(sl, sh)


def ntt_rows(a: np.ndarray, tw: np.ndarray, rev: np.ndarray) -> None:
    """In place, every row: bit-reversal permutation, then radix-2 butterflies stage by stage
    over all blocks at once (``_kernels.ntt_rows``)."""
    m, n = a.shape
    x = a[:, rev]
    h = 1
    while h < n:
        step = n // (2 * h)
        w = tw[: h * step : step]  # tw[k·step] for k < h
        blocks = x.reshape(m, n // (2 * h), 2, h)
        u = blocks[:, :, 0, :]
        v = mulmod(blocks[:, :, 1, :], w)
        x = np.stack([addmod(u, v), submod(u, v)], axis=2).reshape(m, n)
        h *= 2
    a[:] = x


def open_shares(ys: tuple[np.ndarray, ...], W: np.ndarray, out: np.ndarray) -> bool:
    """out = Σ_k W[0, k]·ys[k]; whether Σ_k W[i, k]·ys[k] = ys[T − 1 + i] for all i ≥ 1
    (``_kernels.open_shares``; ``out`` is unspecified when False)."""
    T = W.shape[1]
    Y = np.stack(ys[:T])  # (T, n)
    ok = True
    for i in range(W.shape[0]):
        v = split_sum(mulmod(W[i][:, None], Y), axis=0)
        if i == 0:
            out[:] = v
        elif ok and not np.array_equal(v, ys[T - 1 + i]):
            ok = False
    return ok


# ---------------------------------------------------------------- twins of flp's kernels


def _rows(x: np.ndarray, n: int) -> np.ndarray:
    """Rows 0..n−1 of x, or its one shared row."""
    return x if x.shape[0] == 1 else x[:n]


def k_dot_rows(
    a: np.ndarray, a0: int, w: np.ndarray, w0: int, K: int, group: int, out: np.ndarray
) -> None:
    R = a.shape[0]
    wv = w[:, w0 : w0 + K] if w.shape[0] == 1 else w[np.arange(R) // group, w0 : w0 + K]
    out[:] = split_sum(mulmod(a[:, a0 : a0 + K], wv), axis=1)


def k_mul_rows(a: np.ndarray, w: np.ndarray, out: np.ndarray) -> None:
    out[:] = mulmod(a, _rows(w, a.shape[0]))


def k_sum_cols(a: np.ndarray, out: np.ndarray) -> None:
    out[:] = split_sum(a, axis=0)


def k_from_bits(a: np.ndarray, a0: int, K: int, out: np.ndarray) -> None:
    """out[r, g] = Σ_k a[r, a0 + g·K + k]·2^k mod p (2^k reduced for k ≥ 64)."""
    R, G = out.shape
    win = a[:, a0 : a0 + G * K].reshape(R, G, K)
    pow2 = np.array([pow(2, k, int(P)) for k in range(K)], _U64)
    out[:] = split_sum(mulmod(win, pow2), axis=2)


def k_dot_groups(a: np.ndarray, a0: int, w: np.ndarray, out: np.ndarray) -> None:
    R, G = out.shape
    K = w.shape[0]
    out[:] = split_sum(mulmod(a[:, a0 : a0 + G * K].reshape(R, G, K), w), axis=2)


def k_fill_pairs_run(
    out: np.ndarray,
    off: int,
    a: np.ndarray,
    a0: int,
    w: np.ndarray,
    w0: int,
    use_w: bool,
    b: np.ndarray,
    b0: int,
    bc: np.uint64,
    n: int,
) -> None:
    """Pair off + k ← (a[r, a0 + k]·w[r, w0 + k], b[r, b0 + k] − bc) at out[r, i // chunk,
    ·, i % chunk], i = off + k."""
    B, chunk = out.shape[0], out.shape[3]
    i = off + np.arange(n)
    m, j = i // chunk, i % chunk
    left = _rows(a, B)[:, a0 : a0 + n]
    if use_w:
        left = mulmod(left, _rows(w, B)[:, w0 : w0 + n])
    right = submod(_rows(b, B)[:, b0 : b0 + n], np.array([bc], _U64))
    out[:, m, 0, j] = np.broadcast_to(left, (B, n))
    out[:, m, 1, j] = np.broadcast_to(right, (B, n))


def _slot_sums(t: np.ndarray, off: int, chunk: int) -> np.ndarray:
    """(B, chunk): Σ t[:, k] mod p over the k with (off + k) % chunk = j."""
    B, n = t.shape
    j0 = off % chunk
    span = -(-(j0 + n) // chunk) * chunk
    buf = np.zeros((B, span), _U64)
    buf[:, j0 : j0 + n] = t
    return split_sum(buf.reshape(B, span // chunk, chunk), axis=1)


def k_pairs_at(
    acc: np.ndarray,
    off: int,
    chunk: int,
    a: np.ndarray,
    a0: int,
    ai: np.ndarray,
    b: np.ndarray,
    b0: int,
    bi: np.ndarray,
    bc: np.uint64,
    vw: np.ndarray,
    vl: np.ndarray,
) -> None:
    """acc[r, j] += Σ a[r|0, ia_k]·vw[r|0, k], acc[r, chunk + j] += Σ (b[r|0, ib_k] − bc)·
    vl[r|0, k] over the pairs k in slot j = (off + k) % chunk (``flp._k_pairs_at``)."""
    B = acc.shape[0]
    n = vl.shape[1]
    if n == 0:
        return
    ga = _rows(a, B)[:, ai] if ai.shape[0] else _rows(a, B)[:, a0 : a0 + n]
    gb = _rows(b, B)[:, bi] if bi.shape[0] else _rows(b, B)[:, b0 : b0 + n]
    ta = np.broadcast_to(mulmod(ga, _rows(vw, B)), (B, n))
    tb = np.broadcast_to(mulmod(submod(gb, np.array([bc], _U64)), _rows(vl, B)), (B, n))
    acc[:, :chunk] = addmod(acc[:, :chunk], _slot_sums(ta, off, chunk))
    acc[:, chunk : 2 * chunk] = addmod(acc[:, chunk : 2 * chunk], _slot_sums(tb, off, chunk))


def k_pairs_cols(
    lo: np.ndarray,
    hi: np.ndarray,
    off: int,
    chunk: int,
    a: np.ndarray,
    ai: np.ndarray,
    b: np.ndarray,
    bi: np.ndarray,
    bc: np.uint64,
    vw: np.ndarray,
    vl: np.ndarray,
) -> None:
    """lo/hi[j, r] += 32-bit halves of a[ai_k, r]·vw[k], lo/hi[chunk + j, r] += those of
    (b[bi_k, r] − bc)·vl[k], j = (off + k) % chunk (``flp._k_pairs_cols``)."""
    n = ai.shape[0]
    if n == 0:
        return
    j = (off + np.arange(n)) % chunk
    ta = mulmod(a[ai], vw[:, None])
    tb = mulmod(submod(b[bi], np.array([bc], _U64)), vl[:, None])
    for side, t in ((0, ta), (chunk, tb)):
        np.add.at(lo, side + j, t & M32)  # unbuffered: repeated slots add up
        np.add.at(hi, side + j, t >> S32)


def k_add_split_cols(acc: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
    """acc[r, l] += (hi[l, r]·2^32 + lo[l, r]) mod p (``flp._k_add_split_cols``)."""
    acc[:] = addmod(acc, combine_split(lo, hi).T)


def k_powers(x: np.ndarray, out: np.ndarray) -> None:
    """out[r, k] = x[r]^k by doubling: out[:, m:2m] = out[:, :m]·x^m."""
    n = out.shape[1]
    if n == 0:
        return
    out[:, 0] = 1
    xm = x[:, None]
    m = 1
    while m < n:
        e = min(2 * m, n)
        out[:, m:e] = mulmod(out[:, : e - m], xm)
        xm = mulmod(xm, xm)
        m = e


def k_psmul_eval(inp: np.ndarray, out: np.ndarray) -> None:
    c = inp.shape[1] // 2
    out[:] = split_sum(mulmod(inp[:, :c], inp[:, c : 2 * c]), axis=1)


def k_prove_psmul(
    inp: np.ndarray,
    seeds: np.ndarray,
    outs: np.ndarray,
    itw: np.ndarray,
    tw: np.ndarray,
    rev: np.ndarray,
    shift: np.ndarray,
    itw2: np.ndarray,
    rev2: np.ndarray,
    inv2: np.ndarray,
    group: int,
    out: np.ndarray,
) -> None:
    """Gadget polynomial of ParallelSum(Mul, c) (``flp._k_prove_psmul``), all records at
    once: wires on the P-th roots (seed, inputs, zeros) → coefficients (times P) → scaled by
    ω^m/P → values on the coset ω·α^k; g on the 2P-th roots (even points: the seeds' pair
    product and the outputs; odd: the pair products on the coset) → coefficients."""
    B, M, A = inp.shape
    c = A // 2
    P_, N = rev.shape[0], rev2.shape[0]
    W = np.zeros((B, A, P_), _U64)
    W[:, :, 0] = seeds
    W[:, :, 1 : M + 1] = np.swapaxes(inp, 1, 2)
    rows = W.reshape(B * A, P_)
    ntt_rows(rows, itw, rev)
    rows = mulmod(rows, shift[:P_])
    ntt_rows(rows, tw, rev)
    W = rows.reshape(B, A, P_)
    g = np.zeros((B, N), _U64)
    g[:, 0] = split_sum(mulmod(seeds[:, :c], seeds[:, c : 2 * c]), axis=1)
    g[:, 2 : 2 * M + 1 : 2] = outs
    g[:, 1::2] = split_sum(mulmod(W[:, :c, :], W[:, c : 2 * c, :]), axis=1)
    ntt_rows(g, itw2, rev2)
    out[:] = mulmod(g[:, : out.shape[1]], inv2[:1])


# ---------------------------------------------------------------- twin of the seeded sharing


def complete_rows(
    w: np.ndarray,
    secret: np.ndarray,
    rows: np.ndarray,
    col0: int,
    src: np.ndarray,
    dst: np.ndarray,
) -> None:
    """rows[dst[r], cols] = w[r, 0]·secret + Σ_k w[r, k + 1]·rows[src[k], cols] with cols =
    col0 .. col0 + len(secret) (``_kernels.complete_rows``)."""
    cols = slice(col0, col0 + secret.shape[0])
    Y = np.concatenate([secret[None, :], rows[src, cols]])  # (t + 1, L)
    for r in range(dst.shape[0]):
        rows[dst[r], cols] = split_sum(mulmod(w[r][:, None], Y), axis=0)
