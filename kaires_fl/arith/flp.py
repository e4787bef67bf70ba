"""Fully linear proofs (FLP) of Boneh–Boneh–Corrigan-Gibbs–Gilboa–Ishai (CRYPTO'19, Thm 4.3).

This is the proof system Prio3 uses (draft-irtf-cfrg-vdaf, ``FlpBBCGGI19``), rebuilt for
batches and for **Shamir** sharing:

* every array has leading batch axes: measurements ``(..., MEAS_LEN)``, proofs
  ``(..., PROOF_LEN)``, verifiers ``(..., VERIFIER_LEN)``; a batch is proved and queried
  with whole-array field operations, never one record at a time;
* ``query`` is affine in ``(meas, proof)`` and adds every constant **in full** (the
  ``num_shares = 1`` semantics of the reference). Run on a Shamir share of
  ``(meas, proof)`` it therefore returns a Shamir share (same degree, same point) of the
  verifier, which the aggregators open robustly before ``decide`` (see ``verify.py``);
* joint and query randomness are inputs, either one vector for the whole batch (shape
  ``(LEN,)``) or one per record (``(..., LEN)``);
* soundness is amplified by ``proofs`` independent repetitions (Prio3's ``PROOFS``), each
  with its own joint and query randomness; the default is the least count that brings the
  soundness error to at most 2^-64 (see :meth:`FlpBBCGGI19.soundness_error_log2` and
  ``docs/proofs.md``).

A validity circuit (:class:`Valid`) calls its gadgets on batched inputs of shape
``(B, k, ARITY)`` (k calls at once, in call order). The prover records the inputs of every
call on *wire* polynomials over the P-th roots of unity (P = next power of two above
calls + 1, the point α^0 holding a random *wire seed* for zero knowledge) and sends the
*gadget polynomial* G(wire_1(x), …, wire_L(x)). The verifier replaces gadget outputs by
evaluations of the gadget polynomial at α^1..α^M, interpolates the wires from the
(shared) inputs and evaluates everything at a random point t outside the domain; ``decide``
checks the circuit output is zero and G(wire(t)) equals the gadget polynomial at t.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from numba import njit

from kaires_fl.arith import _kernels as kern
from kaires_fl.arith import _twins, poly
from kaires_fl.arith.field import Field64
from kaires_fl.errors import ConfigError, EncodingError, ProtocolError

#: Target soundness error (log2) used to choose the default number of proofs.
TARGET_SOUNDNESS_LOG2 = -64.0
#: log2 of the hash evaluations a provider may spend grinding its joint randomness offline.
OFFLINE_QUERIES_LOG2 = 64.0
#: Most repetitions :func:`choose_proofs` tries before it gives up.
MAX_PROOFS = 16


def next_power_of_2(n: int) -> int:
    """Least power of two ≥ n (n ≥ 1)."""
    return 1 << max(0, (n - 1).bit_length())


# ------------------------------------------------------- Field64 kernels of the hot path
# Contractions against a vector shared by a group of rows, so the batch never has to be
# broadcast into a temporary (F.dot/F.mul would copy it). Products are reduced, summed in a
# 128-bit accumulator and reduced once per output.


#: Σ c reduced mod p, from hi32 = Σ (c >> 32) and lo32 = Σ (c & (2^32 − 1)): summing the
#: 32-bit halves separately keeps the accumulation branch-free (so the loops vectorise)
#: and exact for fewer than 2^32 terms. (A numba intrinsic, like the field operations.)
_acc_reduce = kern.reduce_split_sums


@njit(cache=True, nogil=True)
def _k_dot_rows(
    a: np.ndarray, a0: int, w: np.ndarray, w0: int, K: int, group: int, out: np.ndarray
) -> None:
    """out[r] = Σ_{k<K} a[r, a0 + k]·w[g(r), w0 + k], g(r) = r // group (w: 1 row = shared)."""
    R = a.shape[0]
    shared = w.shape[0] == 1
    for r in range(R):
        x = a[r, a0 : a0 + K]  # contiguous views: the loop vectorises (2-D indexing with
        y = w[0 if shared else r // group, w0 : w0 + K]  # offsets did not, 3× slower)
        lo = kern.ZERO
        hi = kern.ZERO
        for k in range(K):
            c = kern.mulmod(x[k], y[k])
            lo += c & kern.M32
            hi += c >> kern.S32
        out[r] = _acc_reduce(hi, lo)


@njit(cache=True, nogil=True)
def _k_sum_cols(a: np.ndarray, out: np.ndarray) -> None:
    """out[k] = Σ_r a[r, k] (reduced): rows added in turn as split sums, every loop along
    a row (contiguous, vectorised; the sum over axis 0 without a transposed copy)."""
    R, K = a.shape
    lo = np.zeros(K, dtype=np.uint64)
    hi = np.zeros(K, dtype=np.uint64)
    for r in range(R):
        x = a[r]
        for k in range(K):
            lo[k] += x[k] & kern.M32
            hi[k] += x[k] >> kern.S32
    for k in range(K):
        out[k] = _acc_reduce(hi[k], lo[k])


@njit(cache=True, nogil=True)
def _k_mul_rows(a: np.ndarray, w: np.ndarray, out: np.ndarray) -> None:
    """out[r, k] = a[r, k]·w[r|0, k] (w one row shared by all, or one row per row of a)."""
    R, K = a.shape
    shared = w.shape[0] == 1
    for r in range(R):
        wr = 0 if shared else r
        for k in range(K):
            out[r, k] = kern.mulmod(a[r, k], w[wr, k])


@njit(cache=True, nogil=True)
def _k_dot_groups(a: np.ndarray, a0: int, w: np.ndarray, out: np.ndarray) -> None:
    """out[r, g] = Σ_k a[r, a0 + g·K + k]·w[k] for w (K,), out (R, G)."""
    R, G = out.shape
    K = w.shape[0]
    for r in range(R):
        for g in range(G):
            lo = kern.ZERO
            hi = kern.ZERO
            base = a0 + g * K
            for k in range(K):
                c = kern.mulmod(a[r, base + k], w[k])
                lo += c & kern.M32
                hi += c >> kern.S32
            out[r, g] = _acc_reduce(hi, lo)


#: Most bits ``_k_from_bits`` sums with shifted 32-bit halves: Σ_k (2^32 − 1)·2^k < 2^64.
FROM_BITS_SPLIT_MAX = 31


@njit(cache=True, nogil=True)
def _k_from_bits(a: np.ndarray, a0: int, K: int, out: np.ndarray) -> None:
    """out[r, g] = Σ_k a[r, a0 + g·K + k]·2^k, additions and shifts only.

    For K ≤ FROM_BITS_SPLIT_MAX the 32-bit halves of the terms, shifted by k, are summed
    separately (exact: each sum < 2^(32+K) ≤ 2^63) and reduced once: branch-free, so
    shares — uniformly random, whose modular additions would mispredict every other
    carry branch — cost a few cycles a term. Larger K: Horner doubling with addmod.
    """
    R, G = out.shape
    for r in range(R):
        for g in range(G):
            x = a[r, a0 + g * K : a0 + (g + 1) * K]  # a 1-D view: the loop vectorises
            if K <= FROM_BITS_SPLIT_MAX:
                lo = kern.ZERO
                hi = kern.ZERO
                for k in range(K):
                    sk = np.uint64(k)
                    lo += (x[k] & kern.M32) << sk
                    hi += (x[k] >> kern.S32) << sk
                out[r, g] = _acc_reduce(hi, lo)
            else:
                acc = kern.ZERO
                for k in range(K - 1, -1, -1):
                    acc = kern.addmod(kern.addmod(acc, acc), x[k])
                out[r, g] = acc


@njit(cache=True, nogil=True)
def _scatter_pairs(o: np.ndarray, off: int, chunk: int, ta: np.ndarray, tb: np.ndarray) -> None:
    """Pairs off + k ← (ta[k], tb[k]) in one record's flat pair buffer ``o`` (calls·2·chunk):
    pair i at [i // chunk, ·, i % chunk]. Copies by runs through 1-D views (indexing ``o``
    with computed offsets kept every copy scalar)."""
    n = ta.shape[0]
    k = 0
    while k < n:
        i = off + k
        m = i // chunk
        j0 = i - m * chunk
        run = min(chunk - j0, n - k)
        pa = m * 2 * chunk + j0
        da = o[pa : pa + run]
        db = o[pa + chunk : pa + chunk + run]
        sa = ta[k : k + run]
        sb = tb[k : k + run]
        for j in range(run):
            da[j] = sa[j]
        for j in range(run):
            db[j] = sb[j]
        k += run


@njit(cache=True, nogil=True)
def _k_fill_pairs(
    out: np.ndarray,
    off: int,
    a: np.ndarray,
    ai: np.ndarray,
    w: np.ndarray,
    w0: int,
    use_w: bool,
    b: np.ndarray,
    bi: np.ndarray,
    bc: np.uint64,
) -> None:
    """Pair off + k (k < len(ai)) ← (a[r, ai[k]]·w[r|0, k], b[r, bi[k]] − bc); out is
    (B, calls, 2, chunk) and pair i lives at [i // chunk, ·, i % chunk]."""
    B, calls, _, chunk = out.shape
    n = ai.shape[0]
    wshared = w.shape[0] == 1
    ashared = a.shape[0] == 1
    bshared = b.shape[0] == 1
    ta = np.empty(n, dtype=np.uint64)
    tb = np.empty(n, dtype=np.uint64)
    for r in range(B):
        ar = a[0 if ashared else r]
        br = b[0 if bshared else r]
        for k in range(n):  # gather first: the arithmetic below then vectorises
            ta[k] = ar[ai[k]]
            tb[k] = br[bi[k]]
        if use_w:
            wr = w[0 if wshared else r, w0 : w0 + n]
            for k in range(n):
                ta[k] = kern.mulmod(ta[k], wr[k])
        for k in range(n):
            tb[k] = kern.submod(tb[k], bc)
        _scatter_pairs(out[r].reshape(calls * 2 * chunk), off, chunk, ta, tb)


@njit(cache=True, nogil=True)
def _k_fill_pairs_run(
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
    """``_k_fill_pairs`` for contiguous index runs a0 + k, b0 + k: each side computed over
    the whole run (long vectorised loops), then scattered into the calls."""
    B, calls, _, chunk = out.shape
    wshared = w.shape[0] == 1
    ashared = a.shape[0] == 1
    bshared = b.shape[0] == 1
    ta = np.empty(n, dtype=np.uint64)
    tb = np.empty(n, dtype=np.uint64)
    for r in range(B):
        ar = a[0 if ashared else r, a0 : a0 + n]
        br = b[0 if bshared else r, b0 : b0 + n]
        if use_w:
            wr = w[0 if wshared else r, w0 : w0 + n]
            for k in range(n):
                ta[k] = kern.mulmod(ar[k], wr[k])
        else:
            for k in range(n):
                ta[k] = ar[k]
        for k in range(n):
            tb[k] = kern.submod(br[k], bc)
        _scatter_pairs(out[r].reshape(calls * 2 * chunk), off, chunk, ta, tb)


@njit(cache=True, nogil=True)
def _acc_run(lo: np.ndarray, hi: np.ndarray, t: np.ndarray, off: int, chunk: int) -> None:
    """lo/hi[j] += 32-bit halves of Σ t[k] over the k with (off + k) % chunk = j."""
    n = t.shape[0]
    k = 0
    while k < n:
        j0 = (off + k) % chunk
        run = min(chunk - j0, n - k)
        dl = lo[j0 : j0 + run]
        dh = hi[j0 : j0 + run]
        src = t[k : k + run]
        for j in range(run):
            dl[j] += src[j] & kern.M32
            dh[j] += src[j] >> kern.S32
        k += run


@njit(cache=True, nogil=True)
def _k_pairs_at(
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
    """Wire values at t of pairs off + k (k < n = len(vl[0])) of ParallelSum(Mul, chunk),
    added into acc (B, 2·chunk): acc[r, j] += Σ a[r|0, ia_k]·vw[r|0, k] and
    acc[r, chunk + j] += Σ (b[r|0, ib_k] − bc)·vl[r|0, k] over the pairs k in slot
    j = (off + k) % chunk, where ia_k = ai[k] if ai is non-empty else a0 + k (likewise ib).
    ``_k_fill_pairs`` and ``_k_wire_eval`` fused (vw = weight·L_(m+1)(t), vl = L_(m+1)(t)
    for the pair's call m): no pair buffer, one product per factor."""
    B = acc.shape[0]
    n = vl.shape[1]
    loa = np.zeros(chunk, dtype=np.uint64)
    hia = np.zeros(chunk, dtype=np.uint64)
    lob = np.zeros(chunk, dtype=np.uint64)
    hib = np.zeros(chunk, dtype=np.uint64)
    ta = np.empty(n, dtype=np.uint64)
    tb = np.empty(n, dtype=np.uint64)
    ga = np.empty(n, dtype=np.uint64)
    ashared = a.shape[0] == 1
    bshared = b.shape[0] == 1
    wshared = vw.shape[0] == 1
    lshared = vl.shape[0] == 1
    gather_a = ai.shape[0] > 0
    gather_b = bi.shape[0] > 0
    for r in range(B):
        ar = a[0 if ashared else r]
        br = b[0 if bshared else r]
        wr = vw[0 if wshared else r]
        lr = vl[0 if lshared else r]
        if gather_a:
            for k in range(n):
                ga[k] = ar[ai[k]]
            for k in range(n):
                ta[k] = kern.mulmod(ga[k], wr[k])
        else:
            src = ar[a0 : a0 + n]
            for k in range(n):
                ta[k] = kern.mulmod(src[k], wr[k])
        if gather_b:
            for k in range(n):
                ga[k] = br[bi[k]]
            for k in range(n):
                tb[k] = kern.mulmod(kern.submod(ga[k], bc), lr[k])
        else:
            src = br[b0 : b0 + n]
            for k in range(n):
                tb[k] = kern.mulmod(kern.submod(src[k], bc), lr[k])
        _acc_run(loa, hia, ta, off, chunk)
        _acc_run(lob, hib, tb, off, chunk)
        for j in range(chunk):
            if loa[j] != kern.ZERO or hia[j] != kern.ZERO:
                acc[r, j] = kern.addmod(acc[r, j], _acc_reduce(hia[j], loa[j]))
                loa[j] = kern.ZERO
                hia[j] = kern.ZERO
            if lob[j] != kern.ZERO or hib[j] != kern.ZERO:
                acc[r, chunk + j] = kern.addmod(acc[r, chunk + j], _acc_reduce(hib[j], lob[j]))
                lob[j] = kern.ZERO
                hib[j] = kern.ZERO


@njit(cache=True, nogil=True)
def _k_pairs_cols(
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
    """``_k_pairs_at`` with the records along the columns and weights shared by them.

    a, b ``(·, R)``: the inputs transposed (column r = record r); pair k (k < n = len(ai))
    reads row ai[k] of a and bi[k] of b. With j = (off + k) % chunk, the 32-bit halves of
    a[ai[k], r]·vw[k] are added into lo/hi[j, r] and those of (b[bi[k], r] − bc)·vl[k] into
    lo/hi[chunk + j, r] (``lo``/``hi`` ``(2·chunk, R)``: split sums, exact below 2^32
    terms). Every inner loop runs over the R records of one row: long, contiguous, one
    weight broadcast — it vectorises fully (slot runs of one record, ``chunk`` long, did
    not).
    """
    n = ai.shape[0]
    for k in range(n):
        j = (off + k) % chunk
        x = a[ai[k]]
        w = vw[k]
        dl = lo[j]
        dh = hi[j]
        for r in range(x.shape[0]):
            c = kern.mulmod(x[r], w)
            dl[r] += c & kern.M32
            dh[r] += c >> kern.S32
        y = b[bi[k]]
        v = vl[k]
        el = lo[chunk + j]
        eh = hi[chunk + j]
        for r in range(y.shape[0]):
            c = kern.mulmod(kern.submod(y[r], bc), v)
            el[r] += c & kern.M32
            eh[r] += c >> kern.S32


@njit(cache=True, nogil=True)
def _k_add_split_cols(acc: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
    """acc[r, l] += (hi[l, r]·2^32 + lo[l, r]) mod p: split column sums (``_k_pairs_cols``)
    reduced and added to the row-major accumulator."""
    L, R = lo.shape
    t = np.empty(R, dtype=np.uint64)
    for l in range(L):
        x = lo[l]
        y = hi[l]
        for r in range(R):  # the reductions along a row: vectorised
            t[r] = _acc_reduce(y[r], x[r])
        for r in range(R):
            acc[r, l] = kern.addmod(acc[r, l], t[r])


@njit(cache=True, nogil=True)
def _k_wire_eval(inp: np.ndarray, seeds: np.ndarray, w: np.ndarray, out: np.ndarray) -> None:
    """Wire polynomials at t from their values: out[b, l] = seeds[b, l]·w[0] + Σ_k
    inp[b, k, l]·w[k+1], with w[b'] the Lagrange weights at t (one row, or one per record)."""
    B, M, L = inp.shape
    shared = w.shape[0] == 1
    lo = np.empty(L, dtype=np.uint64)
    hi = np.empty(L, dtype=np.uint64)
    for b in range(B):
        wb = 0 if shared else b
        w0 = w[wb, 0]
        for l in range(L):
            c = kern.mulmod(seeds[b, l], w0)
            lo[l] = c & kern.M32
            hi[l] = c >> kern.S32
        for k in range(M):
            wk = w[wb, k + 1]
            for l in range(L):
                c = kern.mulmod(inp[b, k, l], wk)
                lo[l] += c & kern.M32
                hi[l] += c >> kern.S32
        for l in range(L):
            out[b, l] = _acc_reduce(hi[l], lo[l])


@njit(cache=True, nogil=True)
def _k_powers(x: np.ndarray, out: np.ndarray) -> None:
    """out[r, k] = x[r]^k.

    Eight independent chains (x^j·(x^8)^i for j < 8) instead of one: a serial chain is
    bound by the multiply's latency, eight keep the multiplier busy.
    """
    R, n = out.shape
    W = 8
    for r in range(R):
        xr = x[r]
        head = min(W, n)
        acc = kern.ONE
        for k in range(head):
            out[r, k] = acc
            acc = kern.mulmod(acc, xr)
        if n <= W:
            continue
        step = acc  # x^8
        for k in range(W, n):
            out[r, k] = kern.mulmod(out[r, k - W], step)


@njit(cache=True, nogil=True)
def _k_psmul_eval(inp: np.ndarray, out: np.ndarray) -> None:
    """ParallelSum(Mul, c): out[r] = Σ_j inp[r, j]·inp[r, c + j] for inp (R, 2c)."""
    R, A = inp.shape
    c = A // 2
    for r in range(R):
        out[r] = _pair_dot(inp[r], c)


@njit(cache=True, nogil=True)
def _butterflies_rows(W: np.ndarray, tw: np.ndarray) -> None:
    """Radix-2 NTT along axis 0 of W (n, A) whose rows are in bit-reversed order; every
    butterfly runs over whole rows, so the inner loops vectorise. (A call, not inlined: the
    prover runs it three times and each inlined copy cost a second of cold compilation.)"""
    n, A = W.shape
    h = 1
    while h < n:
        step = n // (2 * h)
        for start in range(0, n, 2 * h):
            u = W[start]  # k = 0: twiddle 1, no product (half the butterflies of a small NTT)
            v = W[start + h]
            for col in range(A):
                x = u[col]
                y = v[col]
                u[col] = kern.addmod(x, y)
                v[col] = kern.submod(x, y)
            for k in range(1, h):
                w = tw[k * step]
                u = W[start + k]
                v = W[start + k + h]
                for col in range(A):
                    x = u[col]
                    y = kern.mulmod(v[col], w)
                    u[col] = kern.addmod(x, y)
                    v[col] = kern.submod(x, y)
        h *= 2


@njit(cache=True, nogil=True, inline="always")
def _pair_dot(row: np.ndarray, c: int) -> np.uint64:
    """Σ_j row[j]·row[c + j] (reduced)."""
    x = row[:c]  # 1-D views: the loop vectorises
    y = row[c : 2 * c]
    lo = kern.ZERO
    hi = kern.ZERO
    for j in range(c):
        t = kern.mulmod(x[j], y[j])
        lo += t & kern.M32
        hi += t >> kern.S32
    return _acc_reduce(hi, lo)


@njit(cache=True, nogil=True, inline="always")
def _split_sum(t: np.ndarray) -> np.uint64:
    """Σ t (reduced)."""
    lo = kern.ZERO
    hi = kern.ZERO
    for j in range(t.shape[0]):
        lo += t[j] & kern.M32
        hi += t[j] >> kern.S32
    return _acc_reduce(hi, lo)


#: Records the prover kernel transforms side by side (wider rows amortise the butterflies).
_PROVE_GROUP = 8


@njit(cache=True, nogil=True)
def _k_prove_psmul(
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
    """Gadget polynomial of ParallelSum(Mul, c), ``group`` records at a time, in cache.

    inp (B, M, 2c) call inputs, seeds (B, 2c) wire seeds, outs (B, M) the gadget outputs
    → out (B, 2P − 1) coefficients of g(x) = Σ_j a_j(x)·b_j(x), a_j/b_j the wires through
    the seed (at α^0) and the inputs (at α^1..α^M) over the P-th roots α^k. g is
    evaluated on the 2P-th roots ω^i: at even i = 2k from the wire values (the seeds'
    product, the outputs, then zeros), at odd i = 2k + 1 from the wires moved to the coset
    ω·α^k (iNTT, scale by shift[m] = ω^m/P, NTT — the 2c wires of ``group`` records side
    by side, row-wise: all their left wires, then all their right wires, so the products
    at a point are one vectorised loop); one iNTT of size 2P per record (side by side too,
    scaled by inv2[0]) gives the coefficients. itw/tw/rev: size-P inverse/forward twiddles and bit
    reversal; itw2/rev2: size 2P.
    """
    B, M, A = inp.shape
    c = A // 2
    P = rev.shape[0]
    N = rev2.shape[0]
    for r0 in range(0, B, group):
        gs = min(group, B - r0)
        if r0 == 0 or gs < group:
            W1 = np.empty((P, gs * A), dtype=np.uint64)
            W2 = np.empty((P, gs * A), dtype=np.uint64)
            g = np.empty((N, gs), dtype=np.uint64)
            prod = np.empty(gs * c, dtype=np.uint64)
        for k in range(M + 1, P):
            W1[rev[k]] = kern.ZERO  # padding calls: zero wires
        h = gs * c  # a row: the left wires of the group's records, then their right wires
        for q in range(gs):
            r = r0 + q
            at = q * c
            row = W1[rev[0]]
            src = seeds[r]
            for j in range(c):
                row[at + j] = src[j]
                row[h + at + j] = src[c + j]
            for k in range(M):
                row = W1[rev[k + 1]]
                src = inp[r, k]
                for j in range(c):
                    row[at + j] = src[j]
                    row[h + at + j] = src[c + j]
            g[rev2[0], q] = _pair_dot(seeds[r], c)
            for k in range(1, P):
                g[rev2[2 * k], q] = outs[r, k - 1] if k <= M else kern.ZERO
        _butterflies_rows(W1, itw)  # coefficients (times P), natural order
        for m in range(P):
            dst = W2[rev[m]]
            src = W1[m]
            sm = shift[m]
            for col in range(gs * A):
                dst[col] = kern.mulmod(src[col], sm)
        _butterflies_rows(W2, tw)  # wire values at ω·α^k, natural order
        for k in range(P):
            row = W2[k]
            left = row[:h]
            right = row[h : 2 * h]
            for i in range(h):  # every record's products in one vectorised loop
                prod[i] = kern.mulmod(left[i], right[i])
            for q in range(gs):
                g[rev2[2 * k + 1], q] = _split_sum(prod[q * c : (q + 1) * c])
        _butterflies_rows(g, itw2)
        for q in range(gs):
            for k in range(out.shape[1]):
                out[r0 + q, k] = kern.mulmod(g[k, q], inv2[0])


# Cold kernels run their numpy twins on small calls (see ``_kernels.Tiered``). No kernel
# calls these names (the helpers they call, _acc_run, _butterflies_rows, stay plain).
kern.tier(
    globals(),
    {
        "_k_dot_rows": _twins.k_dot_rows,
        "_k_mul_rows": _twins.k_mul_rows,
        "_k_sum_cols": _twins.k_sum_cols,
        "_k_dot_groups": _twins.k_dot_groups,
        "_k_from_bits": _twins.k_from_bits,
        "_k_fill_pairs_run": _twins.k_fill_pairs_run,
        "_k_pairs_at": _twins.k_pairs_at,
        "_k_pairs_cols": _twins.k_pairs_cols,
        "_k_add_split_cols": _twins.k_add_split_cols,
        "_k_powers": _twins.k_powers,
        "_k_psmul_eval": _twins.k_psmul_eval,
        "_k_prove_psmul": _twins.k_prove_psmul,
    },
)


def _is_psmul(gadget: Gadget) -> bool:
    """Mul or ParallelSum(Mul, c): inputs [a_0..a_(c−1), b_0..b_(c−1)], output Σ a_j·b_j."""
    return isinstance(gadget, Mul) or (
        isinstance(gadget, ParallelSum) and isinstance(gadget.sub, Mul)
    )


@lru_cache(maxsize=32)
def _psmul_tables(P: int) -> tuple[np.ndarray, ...]:
    """Twiddles, bit reversals and scalings of ``_k_prove_psmul`` for wire domain P."""
    F = Field64
    shift = F.mul(powers(F, F.root_of_unity(2 * P), P), F.inv(F.elements(P)))
    return (
        poly._twiddles(F, P, True),
        poly._twiddles(F, P, False),
        poly._bitrev(P),
        np.ascontiguousarray(shift),
        poly._twiddles(F, 2 * P, True),
        poly._bitrev(2 * P),
        F.inv(F.elements([2 * P])),
    )


def _is64(F: Any) -> bool:
    return F is Field64


def _c(a: np.ndarray) -> np.ndarray:
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def zeros(F: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Zero elements without a reduction pass (Field64) — ``F.zeros`` otherwise."""
    return np.zeros(shape, dtype=np.uint64) if _is64(F) else F.zeros(shape)


def dot_rows(
    F: Any, a: np.ndarray, w: np.ndarray, start: int = 0, w_start: int = 0, n: int | None = None
) -> np.ndarray:
    """Σ_{k<n} a[b, ..., start + k]·w[b, w_start + k] for w ``(1|B, ·)`` → ``(B, ...)``.

    ``a`` is ``(B, ..., ≥ start + n)``; n defaults to the rest of w. Reading column windows
    through ``start``/``w_start`` (instead of slicing) keeps the kernel on contiguous rows.
    """
    K = w.shape[-1] - w_start if n is None else n
    if _is64(F):
        a2 = _c(a).reshape(-1, a.shape[-1])
        out = np.empty(a2.shape[0], dtype=np.uint64)
        group = max(1, a2.shape[0] // max(a.shape[0], 1))
        _k_dot_rows(a2, start, _c(w), w_start, K, group, out)
        return out.reshape(a.shape[:-1])
    wv = w[:, w_start : w_start + K]
    wb = wv.reshape(wv.shape[0], *([1] * (a.ndim - 2)), K)
    return F.sum(F.mul(a[..., start : start + K], wb), axis=-1)


def dot_groups(F: Any, a: np.ndarray, w: np.ndarray, groups: int, start: int = 0) -> np.ndarray:
    """Σ_k a[..., start + g·K + k]·w[k] for g < groups → ``(..., groups)``.

    E.g. integers from their little-endian bits (w = powers of two).
    """
    K = w.shape[0]
    if a.shape[-1] < start + groups * K:
        raise ConfigError(f"dot_groups: last axis {a.shape[-1]} < {start} + {groups}·{K}")
    if _is64(F):
        a2 = _c(a).reshape(-1, a.shape[-1])
        out = np.empty((a2.shape[0], groups), dtype=np.uint64)
        if K < 64 and np.array_equal(w, np.left_shift(np.uint64(1), np.arange(K, dtype=np.uint64))):
            _k_from_bits(a2, start, K, out)  # integers from bits: doublings, no products
        else:
            _k_dot_groups(a2, start, _c(w), out)
        return out.reshape(*a.shape[:-1], groups)
    win = a[..., start : start + groups * K]
    return F.dot(win.reshape(*a.shape[:-1], groups, K), w)


#: Most rows ``sum_records`` adds as split sums at once (each half sum stays below 2^64).
SUM_COLS_MAX_ROWS = 1 << 31


def sum_records(F: Any, a: np.ndarray) -> np.ndarray:
    """Σ over the leading axis of ``a`` ``(R, K)`` → ``(K,)`` (``F.sum(a, axis=0)``; Field64
    without the transposed copy)."""
    if _is64(F) and a.ndim == 2 and a.shape[0] < SUM_COLS_MAX_ROWS:
        out = np.empty(a.shape[1], dtype=np.uint64)
        _k_sum_cols(_c(a), out)
        return out
    return F.sum(a, axis=0)


def mul_rows(F: Any, a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """a[b, k]·w[b, k] for a ``(B, K)`` and w ``(1|B, K)`` (w broadcast without copies)."""
    if _is64(F) and a.ndim == 2 and w.ndim == 2 and a.shape[0] >= w.shape[0]:
        out = np.empty(a.shape, dtype=np.uint64)
        _k_mul_rows(_c(a), _c(w), out)
        return out
    return F.mul(a, w)


def pair_buffer(F: Any, batch: int, pairs: int, chunk: int) -> np.ndarray:
    """Zeroed inputs ``(B, calls, 2, chunk)`` of ParallelSum(Mul, chunk) for ``pairs`` pairs.

    Pair i sits in call i // chunk, slot i % chunk (side 0 = left factor, 1 = right).
    Fill with :func:`fill_pairs`; hand ``as_calls(buf)`` to the gadget. Unfilled pairs stay
    (0, 0) and add nothing.
    """
    calls = -(-pairs // chunk)
    return zeros(F, (batch, calls, 2, chunk))


def as_calls(buf: np.ndarray, chunk: int | None = None) -> np.ndarray:
    """Pair buffer ``(B, calls, 2, chunk)`` → gadget inputs ``(B, calls, 2·chunk)``."""
    return buf.reshape(buf.shape[0], buf.shape[1], -1)


def _check_pair_sources(
    room: int,
    off: int,
    n: int,
    a: np.ndarray,
    b: np.ndarray,
    w: np.ndarray | None,
    a_start: int,
    b_start: int,
    a_index: np.ndarray | None,
    b_index: np.ndarray | None,
    w_start: int,
) -> None:
    """Raise ``ConfigError`` unless pairs off..off+n−1 fit in ``room`` and every column the
    kernels read exists (they do not check bounds)."""
    if off < 0 or n < 0 or off + n > room:
        raise ConfigError(f"pairs {off}..{off + n} outside the {room} available")
    for name, arr, start, idx in (("a", a, a_start, a_index), ("b", b, b_start, b_index)):
        if arr.ndim != 2:
            raise ConfigError(f"fill: {name} must be (1|B, ·)")
        if idx is None:
            if start < 0 or start + n > arr.shape[1]:
                raise ConfigError(f"fill: {name}[{start}:{start + n}] outside {arr.shape}")
        else:
            ix = np.asarray(idx)
            if ix.shape != (n,) or (n and (ix.min() < 0 or ix.max() >= arr.shape[1])):
                raise ConfigError(f"fill: {name} index array must be n indices into {arr.shape}")
    if w is not None and (w.ndim != 2 or w_start < 0 or w_start + n > w.shape[1]):
        raise ConfigError(f"fill: w[:, {w_start}:{w_start + n}] outside {w.shape}")


def fill_pairs(
    F: Any,
    buf: np.ndarray,
    off: int,
    n: int,
    a: np.ndarray,
    b: np.ndarray,
    w: np.ndarray | None = None,
    b_const: int = 0,
    a_start: int = 0,
    b_start: int = 0,
    a_index: np.ndarray | None = None,
    b_index: np.ndarray | None = None,
    w_start: int = 0,
) -> None:
    """Write pairs ``(a[:, ia_k]·w[:, w_start + k], b[:, ib_k] − b_const)`` for k < n as
    pairs ``off + k`` of ``buf``, where ia_k = a_index[k] (default a_start + k), likewise ib_k.

    a, b, w are ``(1|B, ...)`` (rows broadcast); w is optional. Gathering through the index
    arrays avoids materialising permuted copies of a and b.
    """
    _check_pair_sources(
        buf.shape[1] * buf.shape[3], off, n, a, b, w, a_start, b_start, a_index, b_index, w_start
    )
    if _is64(F) and a_index is None and b_index is None:
        use_w = w is not None
        wa = _c(w) if w is not None else np.ones((1, 1), dtype=np.uint64)
        bc = kern.ZERO if b_const == 0 else np.uint64(F.elements(b_const)[()])
        _k_fill_pairs_run(buf, off, _c(a), a_start, wa, w_start, use_w, _c(b), b_start, bc, n)
        return
    ai = np.arange(a_start, a_start + n) if a_index is None else np.asarray(a_index, np.int64)
    bi = np.arange(b_start, b_start + n) if b_index is None else np.asarray(b_index, np.int64)
    if _is64(F):
        use_w = w is not None
        wa = _c(w) if w is not None else np.ones((1, 1), dtype=np.uint64)
        bc = kern.ZERO if b_const == 0 else np.uint64(F.elements(b_const)[()])
        if a_index is None and b_index is None:
            _k_fill_pairs_run(buf, off, _c(a), a_start, wa, w_start, use_w, _c(b), b_start, bc, n)
        else:
            _k_fill_pairs(buf, off, _c(a), ai, wa, w_start, use_w, _c(b), bi, bc)
        return
    calls, chunk = buf.shape[1], buf.shape[3]
    flat = np.swapaxes(buf, 1, 2).reshape(buf.shape[0], 2, calls * chunk)  # a copy
    av = a[:, ai]
    flat[:, 0, off : off + n] = F.mul(av, w[:, w_start : w_start + n]) if w is not None else av
    bv = b[:, bi]
    flat[:, 1, off : off + n] = F.sub(bv, F.elements(b_const)) if b_const else bv
    buf[...] = np.swapaxes(flat.reshape(buf.shape[0], 2, calls, chunk), 1, 2)


def powers(F: Any, x: np.ndarray, n: int) -> np.ndarray:
    """``[x^0, x^1, …, x^(n-1)]`` along a new last axis; x has shape ``(...)``.

    Vectorised by doubling: log2(n) whole-array multiplications.
    """
    x = np.asarray(x, dtype=F.DTYPE)
    if _is64(F):
        flat = np.ascontiguousarray(x).reshape(-1)
        res = np.empty((flat.shape[0], n), dtype=np.uint64)
        _k_powers(flat, res)
        return res.reshape(*x.shape, n)
    out = F.zeros((*x.shape, n))
    if n == 0:
        return out
    out[..., 0] = F.ones(x.shape)
    m = 1
    xm = x  # x^m
    while m < n:
        k = min(m, n - m)
        out[..., m : m + k] = F.mul(out[..., :k], xm[..., None])
        xm = F.mul(xm, xm)
        m *= 2
    return out


# ---------------------------------------------------------------------------- gadgets


class Gadget:
    """An arithmetic gadget: a low-degree polynomial map of ``ARITY`` inputs to one output.

    ``eval`` takes inputs with the arity on the last axis, ``(..., ARITY)``, and returns
    ``(...)``; it must be vectorised over the leading axes (the prover evaluates it on
    whole polynomial-evaluation grids).
    """

    ARITY: int
    DEGREE: int

    def eval(self, F: Any, inp: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Mul(Gadget):
    """x·y (arity 2, degree 2)."""

    ARITY = 2
    DEGREE = 2

    def eval(self, F: Any, inp: np.ndarray) -> np.ndarray:
        return F.mul(inp[..., 0], inp[..., 1])


class PolyEval(Gadget):
    """p(x) for a fixed public polynomial p (coefficients lowest degree first)."""

    ARITY = 1

    def __init__(self, coeffs: Sequence[int]) -> None:
        c = [int(v) for v in coeffs]
        while len(c) > 1 and c[-1] == 0:
            c.pop()
        if len(c) < 2:
            raise ConfigError("PolyEval needs a polynomial of degree ≥ 1; pass its coefficients")
        self.coeffs = c
        self.DEGREE = len(c) - 1

    def eval(self, F: Any, inp: np.ndarray) -> np.ndarray:
        x = inp[..., 0]
        cs = F.elements(self.coeffs)
        acc = np.broadcast_to(cs[-1], x.shape).copy()
        for c in cs[-2::-1]:
            acc = F.add(F.mul(acc, x), c)
        return acc

    def __repr__(self) -> str:
        return f"PolyEval({self.coeffs})"


class ParallelSum(Gadget):
    """Σ_j sub(x_0[j], …, x_{A-1}[j]) over ``count`` blocks j.

    Inputs are laid out sub-input-major, ``[x_0[0..count), x_1[0..count), …]`` (the VDAF
    reference interleaves blocks instead; this order lets circuits write each side of a
    product as one contiguous run, see :func:`fill_pairs`).
    """

    def __init__(self, sub: Gadget, count: int) -> None:
        if count < 1:
            raise ConfigError("ParallelSum needs count ≥ 1")
        self.sub = sub
        self.count = count
        self.ARITY = sub.ARITY * count
        self.DEGREE = sub.DEGREE

    def eval(self, F: Any, inp: np.ndarray) -> np.ndarray:
        if _is64(F) and isinstance(self.sub, Mul) and inp.shape[-1] == self.ARITY:
            flat = _c(inp).reshape(-1, self.ARITY)
            out = np.empty(flat.shape[0], dtype=np.uint64)
            _k_psmul_eval(flat, out)
            return out.reshape(inp.shape[:-1])
        sides = inp.reshape(*inp.shape[:-1], self.sub.ARITY, self.count)
        return F.sum(self.sub.eval(F, np.swapaxes(sides, -1, -2)), axis=-1)

    def __repr__(self) -> str:
        return f"ParallelSum({self.sub!r}, {self.count})"


# ------------------------------------------------------------------ validity circuits


class PairInputs:
    """Inputs of ParallelSum(Mul, chunk) built pair by pair (see :meth:`GadgetCall.pairs`).

    ``fill`` takes the arguments of :func:`fill_pairs`. This one holds the pair buffer
    ``(B, calls, 2, chunk)``; the verifier's variant never materialises it.
    """

    def __init__(self, F: Any, batch: int, pairs: int, chunk: int) -> None:
        self.F = F
        self.pairs = pairs
        self.chunk = chunk
        self.calls = -(-pairs // chunk)
        self.buf = pair_buffer(F, batch, pairs, chunk)

    def fill(self, off: int, n: int, a: np.ndarray, b: np.ndarray, **kw: Any) -> None:
        """Pairs off..off+n−1 ← (a·w, b − b_const), as :func:`fill_pairs`."""
        if off < 0 or off + n > self.pairs:
            raise ConfigError(f"pairs {off}..{off + n} outside the {self.pairs} declared")
        fill_pairs(self.F, self.buf, off, n, a, b, **kw)


class _PairsAtT(PairInputs):
    """Verifier's pair inputs: each ``fill`` adds the pairs' contribution to the wire
    polynomials at the query point straight into the call's accumulators (Field64): as
    split column sums when the weights are shared by the block's records
    (``_k_pairs_cols``, the protocol's case), else record by record (``_k_pairs_at``)."""

    def __init__(self, call: _QueryCall, pairs: int, chunk: int) -> None:
        self.F = call.F
        self.pairs = pairs
        self.chunk = chunk
        self.calls = -(-pairs // chunk)
        self.call = call
        self.start = call.calls  # index of this block's first gadget call
        self.batch = call.batch
        if 1 + self.start + self.calls > call.weights.shape[1]:
            raise ConfigError(f"gadget {call.gadget!r} called more often than declared")

    def fill(
        self,
        off: int,
        n: int,
        a: np.ndarray,
        b: np.ndarray,
        w: np.ndarray | None = None,
        b_const: int = 0,
        a_start: int = 0,
        b_start: int = 0,
        a_index: np.ndarray | None = None,
        b_index: np.ndarray | None = None,
        w_start: int = 0,
        **kw: Any,
    ) -> None:
        if kw:  # the base signature takes **kw; this filler knows only the ones above
            raise TypeError(f"unexpected pair-fill arguments {sorted(kw)}")
        _check_pair_sources(
            self.pairs, off, n, a, b, w, a_start, b_start, a_index, b_index, w_start
        )
        F = self.F
        none = np.empty(0, dtype=np.int64)
        ai = none if a_index is None else np.asarray(a_index, np.int64)
        bi = none if b_index is None else np.asarray(b_index, np.int64)
        calls_of = self.start + 1 + (off + np.arange(n)) // self.chunk  # α-index of each pair
        vl = np.ascontiguousarray(self.call.weights[:, calls_of])  # L_(m+1)(t): (1|B, n)
        vw = vl if w is None else mul_rows(F, _c(w[:, w_start : w_start + n]), vl)
        bc = np.uint64(0) if b_const == 0 else np.uint64(F.elements(b_const)[()])
        if vw.shape[0] == 1 and vl.shape[0] == 1:  # weights shared by the block's records
            cols = self.call.cols
            lo, hi = self.call.split_sums()
            ia = np.arange(a_start, a_start + n, dtype=np.int64) if a_index is None else ai
            ib = np.arange(b_start, b_start + n, dtype=np.int64) if b_index is None else bi
            at = cols.of(a)
            bt = at if b is a else cols.of(b)
            _k_pairs_cols(lo, hi, off, self.chunk, at, ia, bt, ib, bc, vw[0], vl[0])
            return
        _k_pairs_at(
            self.call.acc, off, self.chunk, _c(a), a_start, ai, _c(b), b_start, bi, bc, _c(vw), vl
        )


class _Columns:
    """Column-major copies ``(·, B)`` of the pair sources of one query block.

    The verifier's pair kernel reads the records along the columns; the block's
    measurement, read by every repetition, is transposed once and shared. Any other
    source (a circuit's own temporary, which it might reuse) is transposed at each use.
    """

    def __init__(self, meas: np.ndarray) -> None:
        self.meas = meas
        self.batch = meas.shape[0]
        self._meas_t: np.ndarray | None = None

    def of(self, a: np.ndarray) -> np.ndarray:
        """``a`` ``(1|B, ·)`` transposed to ``(·, B)`` (C-contiguous)."""
        if a is self.meas:
            if self._meas_t is None:
                self._meas_t = np.ascontiguousarray(a.T)
            return self._meas_t
        if a.shape[0] != self.batch:
            a = np.broadcast_to(a, (self.batch, a.shape[1]))
        return np.ascontiguousarray(a.T)


class GadgetCall:
    """What a circuit calls: ``call(inp (B, k, ARITY)) -> (B, k)`` for k calls at once.

    ParallelSum(Mul) inputs can also be built pair by pair: ``buf = call.pairs(n, chunk)``,
    ``buf.fill(...)``, ``out = call.call_pairs(buf)`` or ``total = call.sum_pairs(buf)``
    (the verifier then skips the buffer).
    """

    def __init__(self, F: Any, gadget: Gadget, batch: int) -> None:
        self.F = F
        self.gadget = gadget
        self.batch = batch
        self.inputs: list[np.ndarray] = []
        self.results: list[np.ndarray] = []  # gadget outputs (B, k) per call of __call__
        self.calls = 0

    def record(self, inp: np.ndarray) -> np.ndarray:
        if inp.ndim != 3 or inp.shape[-1] != self.gadget.ARITY:
            raise ConfigError(
                f"gadget {self.gadget!r} called with inputs of shape {inp.shape}; "
                f"expected (B, k, {self.gadget.ARITY})"
            )
        if inp.shape[0] != self.batch:
            inp = np.broadcast_to(inp, (self.batch, inp.shape[1], inp.shape[2]))
        self.inputs.append(inp)
        k = inp.shape[1]
        self.calls += k
        return inp

    def __call__(self, inp: np.ndarray) -> np.ndarray:
        out = self.gadget.eval(self.F, self.record(inp))
        self.results.append(out)
        return out

    def pairs(self, pairs: int, chunk: int) -> PairInputs:
        """Empty inputs for ⌈pairs/chunk⌉ calls of this ParallelSum(Mul, chunk) gadget."""
        if not (isinstance(self.gadget, ParallelSum) and isinstance(self.gadget.sub, Mul)):
            raise ConfigError(f"pairs() needs a ParallelSum(Mul, ·) gadget, not {self.gadget!r}")
        if self.gadget.count != chunk:
            raise ConfigError(f"pairs(): chunk {chunk} ≠ the gadget's {self.gadget.count}")
        return PairInputs(self.F, self.batch, pairs, chunk)

    def call_pairs(self, inputs: PairInputs) -> np.ndarray:
        """Call the gadget on every call of ``inputs``: outputs ``(B, calls)``."""
        return self(as_calls(inputs.buf))

    def sum_pairs(self, inputs: PairInputs) -> np.ndarray:
        """``call_pairs`` summed over the calls: ``(B,)`` (all the circuits need; the
        verifier computes it without the individual outputs)."""
        return self.F.sum(self.call_pairs(inputs), axis=-1)


class _QueryCall(GadgetCall):
    """Gadget outputs replaced by the gadget polynomial at α^1, α^2, … (call order); the
    inputs are folded into the wire polynomials at the query point as they arrive
    (``acc`` = Σ_k inputs of call k · L_(k+1)(t), ``weights`` the Lagrange weights at t).

    ``outputs``: the gadget polynomial's values at α^0..α^(P−1) ``(B|1, P)``, or None with
    ``gpoly`` (its coefficients ``(B, ·)``): then the values are computed only if a circuit
    asks for single outputs (``sum_pairs`` needs a dot product with the coefficients only).
    ``cols``: the block's column-major sources (pair inputs with shared weights then
    accumulate as split sums in ``lo``/``hi`` ``(ARITY, B)``, see :meth:`wires_acc`).
    """

    def __init__(
        self,
        F: Any,
        gadget: Gadget,
        batch: int,
        outputs: np.ndarray | None,
        weights: np.ndarray,
        gpoly: np.ndarray | None = None,
        cols: _Columns | None = None,
    ) -> None:
        super().__init__(F, gadget, batch)
        if outputs is None and gpoly is None:
            raise ConfigError("a query call needs the gadget polynomial or its values")
        self._values = outputs
        self.gpoly = gpoly
        self.P = weights.shape[1]
        self.weights = weights  # (B or 1, P) Lagrange weights at t
        self.acc = zeros(F, (batch, gadget.ARITY))
        self.cols = cols if cols is not None else _Columns(np.empty((batch, 0), np.uint64))
        self.lo: np.ndarray | None = None
        self.hi: np.ndarray | None = None

    @property
    def outputs(self) -> np.ndarray:
        """The gadget polynomial at α^0..α^(P−1) ``(B|1, P)``: fold mod x^P − 1, one NTT."""
        if self._values is None:
            assert self.gpoly is not None
            self._values = poly.ntt(self.F, _fold(self.F, self.gpoly, self.P))
        return self._values

    def split_sums(self) -> tuple[np.ndarray, np.ndarray]:
        """The split column sums ``(lo, hi)`` of the shared-weight pair inputs."""
        if self.lo is None or self.hi is None:
            self.lo = np.zeros((self.gadget.ARITY, self.batch), dtype=np.uint64)
            self.hi = np.zeros((self.gadget.ARITY, self.batch), dtype=np.uint64)
        return self.lo, self.hi

    def wires_acc(self) -> np.ndarray:
        """``acc`` with the split sums added (once): the wires at t without the seeds."""
        if self.lo is not None and self.hi is not None:
            _k_add_split_cols(self.acc, self.lo, self.hi)
            self.lo = self.hi = None
        return self.acc

    def _outputs(self, start: int, k: int) -> np.ndarray:
        out = self.outputs[:, 1 + start : 1 + start + k]
        if out.shape[1] != k:
            raise ConfigError(f"gadget {self.gadget!r} called more often than declared")
        return np.broadcast_to(out, (self.batch, k))

    def __call__(self, inp: np.ndarray) -> np.ndarray:
        start = self.calls
        inp = self.record(inp)
        k = inp.shape[1]
        out = self._outputs(start, k)
        self.inputs.clear()  # folded into acc below: nothing is kept
        F = self.F
        w = self.weights[:, start : start + 1 + k]  # w[:, 0] multiplies the zero seeds
        if _is64(F):
            part = np.empty(self.acc.shape, dtype=np.uint64)
            seeds0 = np.zeros(self.acc.shape, dtype=np.uint64)
            _k_wire_eval(_c(inp), seeds0, np.ascontiguousarray(w), part)
        else:
            part = F.sum(F.mul(inp, w[:, 1:, None]), axis=1)
        self.acc = F.add(self.acc, part)
        return out

    def pairs(self, pairs: int, chunk: int) -> PairInputs:
        base = super().pairs(pairs, chunk)
        return _PairsAtT(self, pairs, chunk) if _is64(self.F) else base

    def call_pairs(self, inputs: PairInputs) -> np.ndarray:
        if isinstance(inputs, _PairsAtT):
            if inputs.call is not self or inputs.start != self.calls:
                raise ConfigError("call_pairs: inputs built for another call of the gadget")
            out = self._outputs(self.calls, inputs.calls)
            self.calls += inputs.calls
            return out
        return super().call_pairs(inputs)

    def sum_pairs(self, inputs: PairInputs) -> np.ndarray:
        """Σ_{k=s+1}^{s+calls} G(α^k) = Σ_i c_i·Σ_k α^(k·i): one dot product of the gadget
        polynomial's coefficients c with a weight row fixed by the calls' positions."""
        if not (isinstance(inputs, _PairsAtT) and self.gpoly is not None):
            return super().sum_pairs(inputs)
        if inputs.call is not self or inputs.start != self.calls:
            raise ConfigError("sum_pairs: inputs built for another call of the gadget")
        start, k = self.calls, inputs.calls
        if 1 + start + k > self.P:
            raise ConfigError(f"gadget {self.gadget!r} called more often than declared")
        self.calls += k
        return dot_rows(self.F, self.gpoly, _sum_weights(self.P, self.gpoly.shape[1], start, k))


class Valid:
    """A validity circuit: ``eval`` is zero on every entry iff the measurement is valid.

    Subclasses set ``field``, ``MEAS_LEN``, ``JOINT_RAND_LEN``, ``EVAL_OUTPUT_LEN``,
    ``OUTPUT_LEN``, ``GADGETS`` and ``GADGET_CALLS``, and implement

    * ``eval(meas (B, MEAS_LEN), joint_rand (B|1, JOINT_RAND_LEN), gadgets) ->
      (B, EVAL_OUTPUT_LEN)``: calls ``gadgets[i](inp (B, k, ARITY))`` exactly
      ``GADGET_CALLS[i]`` times in total; everything outside gadgets must be affine in
      ``meas`` and in the gadget outputs, with constants added in full; ``meas`` is read
      only (the verifier keeps a transposed copy of it across the repetitions);
    * ``encode`` / ``truncate`` / ``decode`` (batched over leading axes; ``truncate`` is
      affine, constants in full);
    * ``joint_rand_degree()``: for any fixed invalid measurement, the total degree of the
      circuit output as a polynomial in the joint randomness (0 without joint
      randomness). By Schwartz–Zippel a uniform joint randomness makes every output of an
      invalid measurement vanish with probability at most that degree over |F|; this is
      the part of the soundness error a prover can grind offline (:func:`soundness_bound`).
    """

    field: Any
    MEAS_LEN: int
    JOINT_RAND_LEN: int = 0
    EVAL_OUTPUT_LEN: int = 1
    OUTPUT_LEN: int
    GADGETS: list[Gadget]
    GADGET_CALLS: list[int]
    #: Elements the prover computes from the measurement and the joint randomness and sends
    #: at the head of the proof (once, shared by the repetitions); ``eval`` then receives
    #: ``(B, MEAS_LEN + WITNESS_LEN)``: the measurement followed by the witness.
    WITNESS_LEN: int = 0
    #: The last SHARED_JOINT_RAND_LEN elements of each repetition's joint randomness are
    #: drawn once for all repetitions (stage 1: what ``witness`` may depend on); with a
    #: witness, the others are stage 2, drawn after it is committed.
    SHARED_JOINT_RAND_LEN: int = 0

    def eval(
        self, meas: np.ndarray, joint_rand: np.ndarray, gadgets: list[GadgetCall]
    ) -> np.ndarray:
        raise NotImplementedError

    def forget_inputs(self) -> None:
        """Drop whatever this circuit kept of its last inputs (nothing by default). Called
        after a proof, so a provider's measurement does not outlive it in a circuit object
        that lives on (and, in simulation, is shared with the aggregators)."""

    def encode(self, measurement: Any) -> np.ndarray:
        raise NotImplementedError

    def truncate(self, meas: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def decode(self, output: np.ndarray, num_measurements: int) -> Any:
        raise NotImplementedError

    def joint_rand_degree(self) -> int:
        """Degree of the output in the joint randomness (see the class docstring)."""
        return 0

    def witness(self, meas: np.ndarray, joint_rand: np.ndarray) -> np.ndarray:
        """The prover's witness ``(B, WITNESS_LEN)`` for ``meas`` ``(B, MEAS_LEN)`` and the
        joint randomness ``(1|B, JOINT_RAND_LEN)``; only its shared tail (stage 1) may
        matter.

        The joint randomness comes in two stages (:meth:`FlpBBCGGI19.derive_joint_rand_staged`):
        the shared tail from a commitment to the measurement, the repetitions' own elements
        from a commitment to the measurement *and the witness*. So ``eval`` may weight the
        witness's checks by the own elements only (see ``docs/proofs.md`` § PINE).
        """
        raise NotImplementedError

    def eval_reps(
        self,
        meas: np.ndarray,
        joint_rands: list[np.ndarray],
        gadget_lists: list[list[GadgetCall]],
    ) -> list[np.ndarray]:
        """``eval`` for each repetition (same measurement); circuits override it to share
        work that does not depend on the joint randomness."""
        return [self.eval(meas, jr, g) for jr, g in zip(joint_rands, gadget_lists, strict=True)]

    def check_layout(self) -> None:
        """Raise ``ConfigError`` if the declared sizes contradict what
        :meth:`joint_rand_degree` assumes (called by :class:`FlpBBCGGI19`)."""

    def check(self, meas: np.ndarray, joint_rand: np.ndarray | None = None) -> np.ndarray:
        """Evaluate the circuit directly (no proof): True where every output is zero.

        The reference that ``prove``/``query``/``decide`` must agree with; for tests.
        """
        F = self.field
        meas2, bshape = _batch(self, meas, self.MEAS_LEN, "measurement")
        jr = _rand(F, joint_rand, self.JOINT_RAND_LEN, bshape, "joint_rand")
        calls = [GadgetCall(F, g, meas2.shape[0]) for g in self.GADGETS]
        if self.WITNESS_LEN:
            meas2 = np.concatenate([meas2, self.witness(meas2, jr)], axis=1)
        out = self.eval(meas2, jr, calls)
        return np.all(out == 0, axis=-1).reshape(bshape)


def _batch(obj: Any, a: Any, length: int, what: str) -> tuple[np.ndarray, tuple[int, ...]]:
    """Flatten leading axes: ``(..., length)`` → ``((B, length), batch_shape)``."""
    arr = np.asarray(a)
    if arr.ndim == 0 or arr.shape[-1] != length:
        raise EncodingError(f"{what} must have shape (..., {length}) for {obj!r}; got {arr.shape}")
    if arr.dtype != obj.field.DTYPE:
        raise EncodingError(
            f"{what} must be field elements ({obj.field.__name__}.elements); got {arr.dtype}"
        )
    bshape = arr.shape[:-1]
    return np.ascontiguousarray(arr.reshape(-1, length)), bshape


def _rand(F: Any, r: Any, length: int, bshape: tuple[int, ...], what: str) -> np.ndarray:
    """Randomness as ``(1, length)`` (shared by the batch) or ``(B, length)`` (per record)."""
    if length == 0:
        return F.zeros((1, 0))
    if r is None:
        raise EncodingError(f"{what} of length {length} is required")
    arr = np.asarray(r)
    if arr.ndim == 0 or arr.shape[-1] != length or arr.dtype != F.DTYPE:
        raise EncodingError(
            f"{what} must be {F.__name__} elements of shape ({length},) or (..., {length}); "
            f"got {arr.shape} {arr.dtype}"
        )
    if math.prod(arr.shape[:-1]) == 1:
        return arr.reshape(1, length)
    try:
        arr = np.broadcast_to(arr, (*bshape, length))
    except ValueError as exc:
        raise EncodingError(
            f"{what} of shape {arr.shape} does not broadcast over the batch {bshape}"
        ) from exc
    return np.ascontiguousarray(arr.reshape(-1, length))


# ---------------------------------------------------------------------------- the FLP


class _GadgetLayout:
    """Sizes of one gadget's part of a proof and of a verifier."""

    def __init__(self, gadget: Gadget, calls: int) -> None:
        self.gadget = gadget
        self.calls = calls
        self.P = next_power_of_2(calls + 1)  # wire length: seed + calls, padded
        self.poly_len = gadget.DEGREE * (self.P - 1) + 1  # gadget polynomial coefficients
        self.N = next_power_of_2(self.poly_len)  # grid on which the prover evaluates G
        self.proof_len = gadget.ARITY + self.poly_len
        self.verifier_len = gadget.ARITY + 1


# ------------------------------------------------------------------------- soundness


@dataclass(frozen=True)
class SoundnessBound:
    """The soundness bound of ``proofs`` repetitions of the FLP for one circuit.

    ``query_error``: ε, the chance that one repetition accepts a measurement whose circuit
    output is nonzero for its joint randomness; it is over the query randomness, which
    comes from the coin fixed after the inputs close, so it cannot be ground.
    ``joint_rand_error``: δ, the chance that a uniform joint randomness makes every
    circuit output of an invalid measurement vanish (then an honest proof passes); the
    joint randomness is a hash of the provider's own shares, so it can be ground with
    ``offline_queries`` hash evaluations. ``error``: the bound on the chance that an
    invalid measurement is accepted (see :func:`soundness_bound`).
    """

    circuit: str
    field_bits: int
    proofs: int
    query_error: float
    joint_rand_error: float
    offline_queries_log2: float
    error: float

    @property
    def error_log2(self) -> float:
        """log2 of ``error`` (−inf for a zero bound)."""
        return math.log2(self.error) if self.error > 0 else -math.inf

    @property
    def query_error_log2(self) -> float:
        return math.log2(self.query_error) if self.query_error > 0 else -math.inf

    @property
    def joint_rand_error_log2(self) -> float:
        return math.log2(self.joint_rand_error) if self.joint_rand_error > 0 else -math.inf


def soundness_bound(
    valid: Valid,
    proofs: int,
    offline_queries_log2: float = OFFLINE_QUERIES_LOG2,
    joint_rand_space: int | None = None,
) -> SoundnessBound:
    """Soundness bound of ``proofs`` repetitions of the FLP for ``valid`` against a prover
    that grinds its joint randomness offline with q = 2^offline_queries_log2 hashes.

    Per repetition (``docs/proofs.md`` has the derivation)::

        ε = min(1, Σ_gadgets DEGREE·(P − 1)/(|F| − P) + [EVAL_OUTPUT_LEN > 1]/|F|)
        δ = min(1, joint_rand_degree / |S|)        (S: where joint randomness is drawn, F)

    A prover that hashes q candidate submissions and sends the one whose joint randomness
    makes the most repetitions vanish (J of k) passes the other k − J with probability
    ≤ ε each, so::

        Pr[accept] ≤ E[ε^(k − J)] ≤ ε^k + Σ_{j=1..k} min(1, q·C(k, j)·δ^j)·ε^(k − j).

    Without joint randomness (δ = 0) this is ε^k. ``joint_rand_space`` replaces |F| in δ
    (a deliberately weakened joint randomness, for tests).
    Pre: proofs ≥ 1. Post: a :class:`SoundnessBound`.
    """
    if proofs < 1:
        raise ConfigError("proofs must be ≥ 1")
    p = valid.field.MODULUS
    eps = 0.0
    for g, calls in zip(valid.GADGETS, valid.GADGET_CALLS, strict=True):
        P = next_power_of_2(calls + 1)
        eps += g.DEGREE * (P - 1) / (p - P)
    if valid.EVAL_OUTPUT_LEN > 1:
        eps += 1 / p
    eps = min(1.0, eps)
    space = p if joint_rand_space is None else int(joint_rand_space)
    deg = valid.joint_rand_degree() if valid.JOINT_RAND_LEN else 0
    delta = min(1.0, deg / space)
    q = 2.0**offline_queries_log2
    err = eps**proofs
    if delta > 0:
        for j in range(1, proofs + 1):
            err += min(1.0, q * math.comb(proofs, j) * delta**j) * eps ** (proofs - j)
    return SoundnessBound(
        circuit=repr(valid),
        field_bits=p.bit_length(),
        proofs=proofs,
        query_error=eps,
        joint_rand_error=delta,
        offline_queries_log2=offline_queries_log2,
        error=min(1.0, err),
    )


def choose_proofs(
    valid: Valid,
    target_log2: float = TARGET_SOUNDNESS_LOG2,
    offline_queries_log2: float = OFFLINE_QUERIES_LOG2,
) -> int:
    """The least number of repetitions whose :func:`soundness_bound` is ≤ 2^target_log2.

    Raises ``ConfigError`` when even ``MAX_PROOFS`` do not suffice (use a larger field).
    """
    for k in range(1, MAX_PROOFS + 1):
        if soundness_bound(valid, k, offline_queries_log2).error_log2 <= target_log2:
            return k
    raise ConfigError(
        f"{valid!r} cannot reach soundness 2^{target_log2:g} over {valid.field.__name__} with "
        f"≤ {MAX_PROOFS} proofs against 2^{offline_queries_log2:g} offline hash evaluations; "
        "use Field128 or smaller gadget domains (chunk_length)"
    )


class FlpBBCGGI19:
    """The FLP of BBCGGI19 for a validity circuit, batched, with ``proofs`` repetitions.

    Sizes (all per record): ``MEAS_LEN``, ``OUTPUT_LEN``, ``PROVE_RAND_LEN``,
    ``JOINT_RAND_LEN``, ``QUERY_RAND_LEN``, ``PROOF_LEN``, ``VERIFIER_LEN``; the
    repetitions are laid out one after another in each of them.
    """

    def __init__(self, valid: Valid, proofs: int | None = None) -> None:
        self.valid = valid
        self.field = F = valid.field
        if len(valid.GADGETS) != len(valid.GADGET_CALLS):
            raise ConfigError("a circuit needs one call count per gadget")
        valid.check_layout()
        self.layouts = [
            _GadgetLayout(g, c) for g, c in zip(valid.GADGETS, valid.GADGET_CALLS, strict=True)
        ]
        for lay in self.layouts:
            if lay.N > F.GEN_ORDER:
                raise ConfigError(
                    f"{F.__name__} has no NTT domain of size {lay.N} for {lay.gadget!r}; "
                    "use fewer gadget calls (a larger chunk_length)"
                )
        if proofs is None:
            proofs = choose_proofs(valid)
        if proofs < 1:
            raise ConfigError("proofs must be ≥ 1")
        self.proofs = proofs
        self.MEAS_LEN = valid.MEAS_LEN
        self.OUTPUT_LEN = valid.OUTPUT_LEN
        self._jr1 = valid.JOINT_RAND_LEN
        self._jr_shared = valid.SHARED_JOINT_RAND_LEN
        self._jr_own = self._jr1 - self._jr_shared
        self._wit = valid.WITNESS_LEN
        if self._jr_own < 0 or self._wit < 0:
            raise ConfigError(f"{valid!r}: SHARED_JOINT_RAND_LEN > JOINT_RAND_LEN")
        self._qr1 = len(self.layouts) + (valid.EVAL_OUTPUT_LEN if valid.EVAL_OUTPUT_LEN > 1 else 0)
        self._pr1 = sum(lay.gadget.ARITY for lay in self.layouts)
        self._proof1 = sum(lay.proof_len for lay in self.layouts)
        self._ver1 = 1 + sum(lay.verifier_len for lay in self.layouts)
        self.JOINT_RAND_LEN = proofs * self._jr_own + self._jr_shared
        self.QUERY_RAND_LEN = proofs * self._qr1
        self.PROVE_RAND_LEN = proofs * self._pr1
        self.PROOF_LEN = self._wit + proofs * self._proof1
        self.VERIFIER_LEN = proofs * self._ver1
        self._checked_qr: bytes | None = None  # the last shared query_rand found valid

    def __repr__(self) -> str:
        return f"FlpBBCGGI19({self.valid!r}, proofs={self.proofs})"

    # -------------------------------------------------------------- soundness

    def soundness(self, offline_queries_log2: float = OFFLINE_QUERIES_LOG2) -> SoundnessBound:
        """The soundness bound of this FLP (all repetitions) against a grinding prover.

        See :func:`soundness_bound` and ``docs/proofs.md``.
        """
        return soundness_bound(self.valid, self.proofs, offline_queries_log2)

    def soundness_error_log2(self) -> float:
        """log2 of :meth:`soundness` ``.error`` (q = 2^64 offline hash evaluations)."""
        return self.soundness().error_log2

    # -------------------------------------------------------------- randomness helpers

    def random_prove_rand(self, batch: tuple[int, ...] = ()) -> np.ndarray:
        """Fresh prover randomness (wire seeds) from the CSPRNG."""
        return self.field.random((*batch, self.PROVE_RAND_LEN))

    def check_query_rand(self, query_rand: np.ndarray) -> None:
        """Raise ``ProtocolError`` if a query point lies in a gadget's wire domain.

        One shared vector that passed is remembered (a job queries each submission with
        the same one)."""
        F = self.field
        qr = np.asarray(query_rand).reshape(-1, self.QUERY_RAND_LEN)
        key = qr.tobytes() if qr.shape[0] == 1 else None
        if key is not None and key == self._checked_qr:
            return
        for rep in range(self.proofs):
            base = rep * self._qr1
            for g, lay in enumerate(self.layouts):
                t = qr[:, base + g]
                if np.any(F.pow(t, lay.P) == F.ones(t.shape)):
                    raise ProtocolError(
                        "a query point lies in the FLP evaluation domain (probability "
                        f"≈ {lay.P}/|F|); derive query_rand again with the next counter"
                    )
        if key is not None:
            self._checked_qr = key

    def derive_query_rand(self, seed: bytes, context: bytes = b"kaires/flp/query") -> np.ndarray:
        """Query randomness ``(QUERY_RAND_LEN,)`` expanded from a seed (one per job).

        Points in an evaluation domain are rejected and re-drawn with a counter appended
        to the context, as Prio3 aborts on them.
        """
        for ctr in range(64):
            qr = self.field.from_seed(seed, (self.QUERY_RAND_LEN,), context + bytes([ctr]))
            try:
                self.check_query_rand(qr)
            except ProtocolError:
                continue
            return qr
        raise ProtocolError("could not derive query randomness outside the domain")

    def derive_joint_rand(self, seed: bytes, context: bytes = b"kaires/flp/joint") -> np.ndarray:
        """Joint randomness ``(JOINT_RAND_LEN,)`` expanded from a seed."""
        return self.field.from_seed(seed, (self.JOINT_RAND_LEN,), context)

    def derive_joint_rand_staged(
        self, stage1: bytes, stage2: bytes, context: bytes = b"kaires/flp/joint"
    ) -> np.ndarray:
        """Two-stage joint randomness ``(JOINT_RAND_LEN,)`` of a circuit with a witness:
        the shared tail (what the witness may depend on) from ``stage1``, a commitment to
        the measurement; every repetition's own elements (which may weight the witness's
        checks) from ``stage2``, a commitment to the measurement and the witness."""
        own = self.field.from_seed(stage2, (self.proofs * self._jr_own,), context + b"/stage2")
        return np.concatenate([own, self.derive_stage1_rand(stage1, context)])

    def derive_stage1_rand(self, stage1: bytes, context: bytes = b"kaires/flp/joint") -> np.ndarray:
        """The shared tail ``(SHARED_JOINT_RAND_LEN,)`` of :meth:`derive_joint_rand_staged`."""
        return self.field.from_seed(stage1, (self._jr_shared,), context + b"/stage1")

    def witness(self, meas: np.ndarray, stage1: np.ndarray) -> np.ndarray:
        """The witness ``(B, WITNESS_LEN)`` of measurements ``(B, MEAS_LEN)`` for the
        stage-1 joint randomness ``stage1`` ``(SHARED_JOINT_RAND_LEN,)`` (the shared tail),
        to be committed before the stage-2 randomness is drawn."""
        F = self.field
        meas2, _ = _batch(self, meas, self.MEAS_LEN, "measurement")
        jr = np.concatenate([F.zeros((self._jr_own,)), np.asarray(stage1, dtype=F.DTYPE)])
        return np.asarray(self.valid.witness(meas2, jr[None, :]))

    def _rep_joint_rands(self, jr: np.ndarray) -> list[np.ndarray]:
        """Each repetition's joint randomness ``(1|B, jr1)``: its own elements, then the
        shared tail (the last ``SHARED_JOINT_RAND_LEN`` elements of ``jr``)."""
        own = [jr[:, rep * self._jr_own : (rep + 1) * self._jr_own] for rep in range(self.proofs)]
        if not self._jr_shared:
            return own
        shared = jr[:, self.proofs * self._jr_own :]
        return [np.ascontiguousarray(np.concatenate([o, shared], axis=1)) for o in own]

    # -------------------------------------------------------------- prove

    def prove(
        self,
        meas: np.ndarray,
        prove_rand: np.ndarray,
        joint_rand: np.ndarray | None,
        witness: np.ndarray | None = None,
    ) -> np.ndarray:
        """Proofs ``(..., PROOF_LEN)`` that each measurement ``(..., MEAS_LEN)`` is valid.

        ``prove_rand`` must be fresh and secret per record ``(..., PROVE_RAND_LEN)``;
        ``joint_rand`` is ``(JOINT_RAND_LEN,)`` or per record; ``witness`` ``(B,
        WITNESS_LEN)``: the one already committed (:meth:`witness`; None: computed here).
        """
        F = self.field
        meas2, bshape = _batch(self, meas, self.MEAS_LEN, "measurement")
        B = meas2.shape[0]
        pr = np.asarray(prove_rand)
        if pr.dtype != F.DTYPE or pr.shape[-1:] != (self.PROVE_RAND_LEN,):
            raise EncodingError(
                f"prove_rand must be {F.__name__} elements of shape (..., {self.PROVE_RAND_LEN})"
            )
        pr = np.broadcast_to(pr, (*bshape, self.PROVE_RAND_LEN)).reshape(B, -1)
        jr = _rand(F, joint_rand, self.JOINT_RAND_LEN, bshape, "joint_rand")
        wit = None if witness is None else np.asarray(witness).reshape(B, self._wit)
        try:
            if B <= _BLOCK_ROWS:
                return self._prove_block(meas2, pr, _rows(jr, 0, B), wit).reshape(
                    *bshape, self.PROOF_LEN
                )
            proof = zeros(F, (B, self.PROOF_LEN))
            for s in range(0, B, _BLOCK_ROWS):
                e = min(s + _BLOCK_ROWS, B)
                w = None if wit is None else wit[s:e]
                proof[s:e] = self._prove_block(meas2[s:e], pr[s:e], _rows(jr, s, e), w)
            return proof.reshape(*bshape, self.PROOF_LEN)
        finally:
            self.valid.forget_inputs()  # the proof is the provider's last use of them

    def _prove_block(
        self, meas2: np.ndarray, pr: np.ndarray, jr: np.ndarray, wit: np.ndarray | None = None
    ) -> np.ndarray:
        """``prove`` on one block of rows: meas2 ``(B, MEAS_LEN)``, pr ``(B, ·)``, jr
        ``(1|B, ·)``, the committed witness (or None) → ``(B, PROOF_LEN)``."""
        F = self.field
        B = meas2.shape[0]
        parts = []
        jrs = self._rep_joint_rands(jr)
        call_lists = [[GadgetCall(F, g, B) for g in self.valid.GADGETS] for _ in jrs]
        if self._wit:
            if wit is None:
                wit = self.valid.witness(meas2, jrs[0])
            parts.append(wit)
            meas2 = np.concatenate([meas2, wit], axis=1)
        self.valid.eval_reps(meas2, jrs, call_lists)
        for rep, calls in enumerate(call_lists):
            off = rep * self._pr1
            for lay, call in zip(self.layouts, calls, strict=True):
                L = lay.gadget.ARITY
                seeds = pr[:, off : off + L]
                off += L
                if _is64(F) and _is_psmul(lay.gadget) and call.calls == lay.calls:
                    gpoly = self._gadget_poly_psmul(call, lay, seeds)
                else:
                    wires = self._wires(call, lay, seeds)
                    vals = self._extend(lay, wires)  # wires on the N-th roots of unity
                    gvals = lay.gadget.eval(F, np.swapaxes(vals, 1, 2))  # (B, N)
                    gpoly = poly.intt(F, np.ascontiguousarray(gvals))[:, : lay.poly_len]
                parts.append(seeds)
                parts.append(gpoly)
        return np.concatenate(parts, axis=1) if parts else F.zeros((B, 0))

    def _gadget_poly_psmul(
        self, call: GadgetCall, lay: _GadgetLayout, seeds: np.ndarray
    ) -> np.ndarray:
        """Gadget polynomial ``(B, poly_len)`` of a ParallelSum(Mul) gadget (Field64), by
        ``_k_prove_psmul``: no wire grid is materialised."""
        inp = call.inputs[0] if len(call.inputs) == 1 else np.concatenate(call.inputs, axis=1)
        outs = call.results[0] if len(call.results) == 1 else np.concatenate(call.results, axis=1)
        out = np.empty((seeds.shape[0], lay.poly_len), dtype=np.uint64)
        itw, tw, rev, shift, itw2, rev2, inv2 = _psmul_tables(lay.P)
        group = _PROVE_GROUP if lay.P * lay.gadget.ARITY <= 4096 else 1
        _k_prove_psmul(
            _c(inp), _c(seeds), _c(outs), itw, tw, rev, shift, itw2, rev2, inv2, group, out
        )
        return out

    def _extend(self, lay: _GadgetLayout, wires: np.ndarray) -> np.ndarray:
        """Wire values on the P-th roots ``(B, L, P)`` → on the N-th roots ``(B, L, N)``.

        For N = 2P and small P (Field64) the even points are the values themselves and the
        odd points ω·α^k one shared P×P matrix product (cheaper than iNTT + NTT there);
        otherwise iNTT, zero-pad, NTT.
        """
        F = self.field
        B, L, P = wires.shape
        if _is64(F) and lay.N == 2 * P and P <= _DENSE_EXTEND_MAX:
            MT = _coset_matrix(P)
            odd = np.empty((B * L, P), dtype=np.uint64)
            _k_matmul_shared(np.ascontiguousarray(wires).reshape(B * L, P), MT, odd)
            vals = np.empty((B, L, P, 2), dtype=np.uint64)
            vals[..., 0] = wires
            vals[..., 1] = odd.reshape(B, L, P)
            return vals.reshape(B, L, 2 * P)
        coeffs = poly.intt(F, wires)
        grid = zeros(F, (B, L, lay.N))
        grid[..., :P] = coeffs
        return poly.ntt(F, grid)

    def _wires(self, call: GadgetCall, lay: _GadgetLayout, seeds: np.ndarray) -> np.ndarray:
        """Wire values ``(B, ARITY, P)``: seed at α^0, the k-th call's inputs at α^k."""
        F = self.field
        if call.calls != lay.calls:
            raise ConfigError(
                f"circuit {self.valid!r} called {lay.gadget!r} {call.calls} times; "
                f"declared {lay.calls}"
            )
        B = seeds.shape[0]
        wires = zeros(F, (B, lay.gadget.ARITY, lay.P))
        wires[:, :, 0] = seeds
        inp = np.concatenate(call.inputs, axis=1) if call.inputs else F.zeros((B, 0, 0))
        wires[:, :, 1 : 1 + lay.calls] = np.swapaxes(inp, 1, 2)
        return wires

    def _wires_at(
        self, call: GadgetCall, lay: _GadgetLayout, seeds: np.ndarray, weights: np.ndarray
    ) -> np.ndarray:
        """Wire polynomials at t ``(B, ARITY)``: the seeds times L_0(t) plus the inputs the
        query call folded in (``_QueryCall.acc``)."""
        F = self.field
        if call.calls != lay.calls:
            raise ConfigError(
                f"circuit {self.valid!r} called {lay.gadget!r} {call.calls} times; "
                f"declared {lay.calls}"
            )
        assert isinstance(call, _QueryCall)
        return F.add(call.wires_acc(), F.mul(seeds, weights[:, :1]))

    # -------------------------------------------------------------- query

    def query(
        self,
        meas: np.ndarray,
        proof: np.ndarray,
        query_rand: np.ndarray,
        joint_rand: np.ndarray | None,
    ) -> np.ndarray:
        """Verifiers ``(..., VERIFIER_LEN)``; affine in ``(meas, proof)``, constants in full.

        Works unchanged on Shamir shares of ``meas`` and ``proof`` and then returns shares
        of the verifier. ``query_rand``/``joint_rand``: one vector for the batch or one per
        record. Raises ``ProtocolError`` if a query point lies in a wire domain.
        """
        F = self.field
        meas2, bshape = _batch(self, meas, self.MEAS_LEN, "measurement")
        proof2, pshape = _batch(self, proof, self.PROOF_LEN, "proof")
        if pshape != bshape:
            raise EncodingError(f"proof batch {pshape} does not match measurement batch {bshape}")
        B = meas2.shape[0]
        jr = _rand(F, joint_rand, self.JOINT_RAND_LEN, bshape, "joint_rand")
        qr = _rand(F, query_rand, self.QUERY_RAND_LEN, bshape, "query_rand")
        self.check_query_rand(qr)
        if B <= _BLOCK_ROWS:
            ver = self._query_block(meas2, proof2, _rows(qr, 0, B), _rows(jr, 0, B))
            return ver.reshape(*bshape, self.VERIFIER_LEN)
        verifier = zeros(F, (B, self.VERIFIER_LEN))
        for s in range(0, B, _BLOCK_ROWS):
            e = min(s + _BLOCK_ROWS, B)
            verifier[s:e] = self._query_block(
                meas2[s:e], proof2[s:e], _rows(qr, s, e), _rows(jr, s, e)
            )
        return verifier.reshape(*bshape, self.VERIFIER_LEN)

    def _query_block(
        self, meas2: np.ndarray, proof2: np.ndarray, qr: np.ndarray, jr: np.ndarray
    ) -> np.ndarray:
        """``query`` on one block of rows (randomness ``(1|B, ·)``, already checked)."""
        F = self.field
        B = meas2.shape[0]
        out = []
        poff = self._wit
        if self._wit:
            meas2 = np.concatenate([meas2, proof2[:, : self._wit]], axis=1)
        jrs, reps = self._rep_joint_rands(jr), []
        cols = _Columns(meas2)  # the measurement column-major, once for all repetitions
        for rep in range(self.proofs):
            qr_rep = qr[:, rep * self._qr1 : (rep + 1) * self._qr1]
            seeds_l: list[np.ndarray] = []
            gpoly_l: list[np.ndarray] = []
            weights_l: list[np.ndarray] = []
            calls: list[GadgetCall] = []
            for g, lay in enumerate(self.layouts):
                L = lay.gadget.ARITY
                seeds = proof2[:, poff : poff + L]
                gpoly = proof2[:, poff + L : poff + lay.proof_len]
                poff += lay.proof_len
                weights = _lagrange_at(F, qr_rep[:, g], lay.P)  # (B|1, P)
                calls.append(_QueryCall(F, lay.gadget, B, None, weights, gpoly, cols))
                seeds_l.append(seeds)
                gpoly_l.append(gpoly)
                weights_l.append(weights)
            reps.append((qr_rep, seeds_l, gpoly_l, weights_l, calls))
        outs = self.valid.eval_reps(meas2, jrs, [r[-1] for r in reps])  # (B, EVAL_OUTPUT_LEN)
        for v, (qr_rep, seeds_l, gpoly_l, weights_l, calls) in zip(outs, reps, strict=True):
            if self.valid.EVAL_OUTPUT_LEN > 1:
                coef = qr_rep[:, len(self.layouts) :]
                v = F.sum(F.mul(v, coef), axis=-1)[:, None]
            out.append(v)
            for g, lay in enumerate(self.layouts):
                t = qr_rep[:, g]
                out.append(self._wires_at(calls[g], lay, seeds_l[g], weights_l[g]))
                tpow = powers(F, t, lay.poly_len)  # (B|1, poly_len)
                out.append(dot_rows(F, gpoly_l[g], tpow)[:, None])
        return np.concatenate(out, axis=1)

    # -------------------------------------------------------------- decide

    def decide(self, verifier: np.ndarray) -> np.ndarray:
        """Per-record acceptance ``(...)`` bool from opened verifiers ``(..., VERIFIER_LEN)``."""
        F = self.field
        ver, bshape = _batch(self, verifier, self.VERIFIER_LEN, "verifier")
        ok = np.ones(ver.shape[0], dtype=bool)
        off = 0
        for _rep in range(self.proofs):
            ok &= ver[:, off] == 0
            off += 1
            for lay in self.layouts:
                L = lay.gadget.ARITY
                w = ver[:, off : off + L]
                y = ver[:, off + L]
                off += L + 1
                ok &= lay.gadget.eval(F, w) == y
        return ok.reshape(bshape)


#: Largest wire domain for which the prover extends wires by a dense matrix product.
_DENSE_EXTEND_MAX = 32
#: Rows proved / queried at a time: the per-block temporaries (pair buffers, wire grids,
#: powers of the joint randomness) then stay in cache instead of streaming ~100 MB per
#: 20,000 records through fresh pages.
_BLOCK_ROWS = 512


def _rows(r: np.ndarray, s: int, e: int) -> np.ndarray:
    """Rows s..e of randomness ``(1|B, ·)``, as one shared row when they are all equal.

    Per-record randomness is typically one value per submission repeated over its records;
    a shared row lets the kernels compute e.g. powers of the joint randomness once per
    block instead of once per record (same results).
    """
    if r.shape[0] == 1:
        return r
    blk = r[s:e]
    if blk.shape[0] > 1 and bool(np.all(blk == blk[0])):
        return blk[:1]
    return blk


@lru_cache(maxsize=16)
def _coset_matrix(P: int) -> np.ndarray:
    """MT (P, P) with (v @ MT)[k] = w(ω·α^k) for w the polynomial with w(α^m) = v[m],
    ω the principal 2P-th root of unity and α = ω² (Field64)."""
    F = Field64
    coeffs = poly.intt(F, F.elements(np.eye(P, dtype=np.uint64)))  # row m: coeffs of L_m
    shift = powers(F, F.root_of_unity(2 * P), P)
    return np.ascontiguousarray(poly.ntt(F, F.mul(coeffs, shift[None, :])))


@njit(cache=True, nogil=True)
def _k_matmul_shared(a: np.ndarray, m: np.ndarray, out: np.ndarray) -> None:
    """out = a @ m mod p for a (R, K), m (K, N): rows share the matrix."""
    R, K = a.shape
    N = m.shape[1]
    lo = np.empty(N, dtype=np.uint64)
    hi = np.empty(N, dtype=np.uint64)
    for r in range(R):
        lo[:] = kern.ZERO
        hi[:] = kern.ZERO
        for k in range(K):
            x = a[r, k]
            for j in range(N):
                c = kern.mulmod(x, m[k, j])
                lo[j] += c & kern.M32
                hi[j] += c >> kern.S32
        for j in range(N):
            out[r, j] = _acc_reduce(hi[j], lo[j])


@lru_cache(maxsize=256)
def _sum_weights(P: int, n: int, start: int, k: int) -> np.ndarray:
    """Row ``(1, n)`` s with s_i = Σ_{m=start+1}^{start+k} α^(m·i), α the principal P-th
    root of unity (Field64): Σ_m G(α^m) = Σ_i c_i·s_i for G = Σ_i c_i·x^i. Read-only."""
    F = Field64
    dom = powers(F, np.asarray(F.root_of_unity(P), dtype=np.uint64), P)  # α^0..α^(P−1)
    m = np.arange(start + 1, start + 1 + k, dtype=np.int64)
    exps = (np.arange(n, dtype=np.int64)[:, None] * m[None, :]) % P
    out = np.ascontiguousarray(F.sum(dom[exps], axis=1).reshape(1, n))
    out.flags.writeable = False
    return out


def _fold(F: Any, c: np.ndarray, P: int) -> np.ndarray:
    """Coefficients reduced modulo x^P − 1 (same values on the P-th roots of unity)."""
    n = c.shape[-1]
    if n <= P:
        out = F.zeros((*c.shape[:-1], P))
        out[..., :n] = c
        return out
    pad = (-n) % P
    if pad:
        c = np.concatenate([c, F.zeros((*c.shape[:-1], pad))], axis=-1)
    blocks = c.reshape(*c.shape[:-1], -1, P)
    return F.sum(blocks, axis=-2)


def _lagrange_at(F: Any, t: np.ndarray, P: int) -> np.ndarray:
    """Lagrange basis over the P-th roots of unity at t: ``(len(t), P)``.

    L_k(t) = (t^P − 1)·α^k / (P·(t − α^k)); t must lie outside the domain. One shared
    Field64 point (a job's query randomness, the same for all its submissions) is cached;
    the result is then read-only.
    """
    if _is64(F) and t.shape == (1,):
        return _lagrange_at_64(int(t[0]), P)
    return _lagrange_rows(F, t, P)


@lru_cache(maxsize=64)
def _lagrange_at_64(t: int, P: int) -> np.ndarray:
    out = _lagrange_rows(Field64, Field64.elements([t]), P)
    out.flags.writeable = False
    return out


def _lagrange_rows(F: Any, t: np.ndarray, P: int) -> np.ndarray:
    """:func:`_lagrange_at` without the cache."""
    alpha = F.root_of_unity(P)
    dom = powers(F, np.asarray(alpha, dtype=F.DTYPE), P)  # α^0..α^(P-1)
    diff = F.sub(t[:, None], dom[None, :])
    zt = F.sub(F.pow(t, P), F.ones(t.shape))
    scale = F.mul(zt, F.inv(F.elements(P)))
    return F.mul(F.mul(F.inv(diff), dom[None, :]), scale[:, None])
