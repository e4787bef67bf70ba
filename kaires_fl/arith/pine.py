"""A compact L2-norm bound in the spirit of PINE (draft-chen-cfrg-vdaf-pine; Rothblum, Omri,
Chen, Talwar, arXiv 2311.10237), adapted to BFT Prio over Field64.

The measurement holds the d entries a_i = round(v_i·2^f) **as field elements** (signed,
not bit-decomposed), then a few bits (the slack s of the squared norm, and in subclasses a
weight, flags, metrics). The circuit proves

* Σ a_i² + s = N in the field (``N`` the squared bound; one ParallelSum(Mul) gadget), and
* r *wraparound checks*: for r vectors z_k ∈ {−1, 0, 1}^d (each entry −1, 0, 1 with
  probability 1/4, 1/2, 1/4) expanded (ChaCha20) from the shared joint randomness — a
  Fiat–Shamir hash of the provider's sealed measurement shares — the value y_k = ⟨z_k, a⟩ lies in
  [−β, W − 1 − β] (W = 2^``wr_bits``): the provider sends the bits of y_k + β as the FLP
  *witness* (:attr:`~kaires_fl.arith.flp.Valid.WITNESS_LEN`, computed after the joint
  randomness, at the head of the proof), and the circuit checks Σ_j 2^j·b_{k,j} − β = y_k,
  computed by the aggregators on their shares (it is linear in a).

The wraparound checks make the field equation an integer one: a vector whose centred lift
ā has ‖ā‖² ≥ T (so that Σ a_i² could wrap modulo p) passes each check with probability at
most c ≈ 1/2, independently, so all r of them with probability ≤ c^r (``docs/proofs.md``
§ "PINE"; :func:`wraparound_bound`). Below T, Σ ā_i² + s < p, so the field equation holds
over the integers and ‖ā‖² ≤ N.

The joint randomness comes in two Fiat–Shamir stages
(:meth:`~kaires_fl.arith.flp.FlpBBCGGI19.derive_joint_rand_staged`): stage 1, the shared
tail that seeds z, from a commitment to the measurement shares; the witness is then
committed (sealed, its hashes signed), and stage 2 — one element r_m per call of the
bit-check gadget — from a commitment to both. Every bit (tail and witness) is checked in
one ``ParallelSum(Mul, c_b)`` output Σ_j r_m^(j mod c_b + 1)·b_j·(b_j − 1): the prover
fixed the witness before r was drawn, so non-bits cannot be made to cancel
(``joint_rand_degree() = c_b``; three proofs over Field64).

Sizes: MEAS_LEN = d + tail bits; proof = r·wr_bits + 3·(bit gadget ≈ 2√(n_bits) + 2·P
+ squares gadget ≈ 2√(2d) + …): ≈ 1.08 elements per parameter at d = 10^5, 1.016 at 10^6.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from numba import njit

from kaires_fl.arith import _kernels as kern
from kaires_fl.arith.circuits import best_chunk_length, call_weights
from kaires_fl.arith.field import Field64
from kaires_fl.arith.flp import (
    OFFLINE_QUERIES_LOG2,
    TARGET_SOUNDNESS_LOG2,
    FlpBBCGGI19,
    GadgetCall,
    Mul,
    ParallelSum,
    Valid,
    _acc_reduce,
    dot_groups,
    soundness_bound,
)
from kaires_fl.errors import ConfigError, EncodingError

#: Joint-randomness elements the wraparound vectors are expanded from (256 bits).
WR_SEED_LEN = 4
#: Berry–Esseen constant for independent, non-identically distributed terms (Shevtsova 2010).
BERRY_ESSEEN_C = 0.56
#: log2 of the largest chance an honest provider may fail a wraparound check (it then cannot
#: prove; it would have to seal its shares afresh).
HONEST_FAILURE_LOG2 = -64.0
#: Most measurement entries whose wraparound values a circuit remembers (16 MB).
_Y_MEMO_ELEMENTS = 1 << 21


def _bits_of(values: np.ndarray, bits: int) -> np.ndarray:
    """Little-endian bits of non-negative ints: ``(...)`` → ``(..., bits)`` uint64."""
    v = np.asarray(values, dtype=np.uint64)
    return (v[..., None] >> np.arange(bits, dtype=np.uint64)) & np.uint64(1)


# ------------------------------------------------------------------- wraparound vectors


#: Code bytes (4 entries each) whose nibble tables stay in L1 while all r checks read them.
_TABLE_BLOCK = 64


@njit(cache=True, nogil=True)
def _k_wraparound_dots(a: np.ndarray, zb: np.ndarray, out: np.ndarray) -> None:
    """out[r, k] = Σ_i z_{k,i}·a[r, i] mod p, z_{k,i} = b0 − b1 for the 2-bit code
    (b1 b0) = (zb[k, i // 4] >> 2·(i % 4)) & 3 (so −1, 0, 1 with probability 1/4, 1/2, 1/4).

    Pre: a (R, d) canonical Field64, d < 2^32; zb (K, ⌈d/4⌉) uint8; out (R, K).
    Four Russians on nibbles: a code byte is two nibbles, each the codes of two entries
    (x, y); the 16 values z_x·x + z_y·y mod p of a nibble are tabulated once per block of
    entries and shared by all K checks, so a check costs two table reads per 4 entries
    instead of 4 multiply-adds. Reads are summed as 32-bit halves (exact for < 2^32 terms).
    """
    R, d = a.shape
    K, G = zb.shape
    gb = _TABLE_BLOCK
    table = np.zeros((gb, 32), dtype=np.uint64)
    for r in range(R):
        slo = np.zeros(K, dtype=np.uint64)
        shi = np.zeros(K, dtype=np.uint64)
        for g0 in range(0, G, gb):
            g1 = min(g0 + gb, G)
            for g in range(g0, g1):
                row = table[g - g0]
                for h in range(2):
                    i0 = 4 * g + 2 * h
                    x = a[r, i0] if i0 < d else kern.ZERO
                    y = a[r, i0 + 1] if i0 + 1 < d else kern.ZERO
                    nx = kern.submod(kern.ZERO, x)
                    ny = kern.submod(kern.ZERO, y)
                    # nibble (b3 b2 b1 b0): z_x = b0 − b1, z_y = b2 − b3
                    for cy in range(4):
                        vy = y if cy == 1 else (ny if cy == 2 else kern.ZERO)
                        o = 16 * h + 4 * cy
                        row[o] = vy
                        row[o + 1] = kern.addmod(vy, x)
                        row[o + 2] = kern.addmod(vy, nx)
                        row[o + 3] = vy
            for k in range(K):
                lo = kern.ZERO
                hi = kern.ZERO
                for g in range(g1 - g0):
                    c = zb[k, g0 + g]
                    t0 = table[g, c & np.uint8(15)]
                    t1 = table[g, np.uint8(16) + (c >> np.uint8(4))]
                    lo += (t0 & kern.M32) + (t1 & kern.M32)
                    hi += (t0 >> kern.S32) + (t1 >> kern.S32)
                slo[k] += lo
                shi[k] += hi
        for k in range(K):
            out[r, k] = _acc_reduce(shi[k], slo[k])


#: Bytes of wraparound codes kept for reuse (``wraparound_codes``): in one process — a
#: simulation, where the provider and every aggregator expand the same z — each record's
#: codes are expanded once; a deployed node expands each record's once anyway.
_CODES_CACHE_BYTES = 48 << 20
_codes_cache: OrderedDict[tuple[bytes, int, int], np.ndarray] = OrderedDict()
_codes_cache_lock = threading.Lock()


#: Zero bytes the keystream is XORed onto, kept (calloc'd pages that are only read stay
#: the kernel's shared zero page); allocating and zeroing them per call cost 4× the cipher.
_zeros = b""


def _expand_codes(raw: bytes, checks: int, length: int) -> np.ndarray:
    """The keystream of :func:`wraparound_codes`, read-only ``(checks, ⌈length/4⌉)``."""
    global _zeros
    nbytes = -(-length // 4)
    n = checks * nbytes
    zeros = _zeros  # read once: another thread may rebind the global to a shorter buffer
    if len(zeros) < n:
        zeros = _zeros = bytes(n)
    key = hashlib.sha256(b"kaires/pine/wraparound" + raw + length.to_bytes(8, "little"))
    enc = Cipher(algorithms.ChaCha20(key.digest(), bytes(16)), mode=None).encryptor()
    out = np.empty(n + 64, dtype=np.uint8)  # update_into wants block-size headroom
    enc.update_into(memoryview(zeros)[:n], out.data)
    codes = out[:n].reshape(checks, nbytes)
    codes.flags.writeable = False
    return codes


def wraparound_codes(seed: np.ndarray, checks: int, length: int) -> np.ndarray:
    """The 2-bit codes of the r wraparound vectors ``(checks, ⌈length/4⌉)`` uint8,
    read-only: the ChaCha20 keystream (zero nonce) under the key SHA-256(context ‖ ``seed``
    ‖ length), ``seed`` the shared joint randomness (WR_SEED_LEN Field64 elements). A PRF
    keyed by a hash — an XOF, at 2.5× SHAKE-128's speed (r·d/4 bytes per record and
    aggregator). The most recent expansions are kept (``_CODES_CACHE_BYTES``)."""
    raw = np.ascontiguousarray(np.asarray(seed, dtype="<u8")).tobytes()
    ident = (raw, int(checks), int(length))
    with _codes_cache_lock:
        hit = _codes_cache.get(ident)
        if hit is not None:
            _codes_cache.move_to_end(ident)
            return hit
    codes = _expand_codes(raw, int(checks), int(length))
    if codes.nbytes <= _CODES_CACHE_BYTES:
        with _codes_cache_lock:
            _codes_cache[ident] = codes
            held = sum(c.nbytes for c in _codes_cache.values())
            while held > _CODES_CACHE_BYTES:
                held -= _codes_cache.popitem(last=False)[1].nbytes
    return codes


def wraparound_vectors(seed: np.ndarray, checks: int, length: int) -> np.ndarray:
    """The z_k as int8 ``(checks, length)`` (reference and tests; the kernel reads codes)."""
    codes = wraparound_codes(seed, checks, length)
    two = (codes[:, :, None] >> np.arange(0, 8, 2, dtype=np.uint8)) & np.uint8(3)
    two = two.reshape(checks, -1)[:, :length].astype(np.int8)
    return (two & 1) - (two >> 1)


def wraparound_dots(F: Any, a: np.ndarray, joint_rand: np.ndarray, checks: int) -> np.ndarray:
    """y ``(B, checks)``: ⟨z_k, a_b⟩ in the field, z from each row's (1|B) joint randomness
    (its last WR_SEED_LEN elements); rows sharing a seed share one expansion."""
    B, d = a.shape
    seeds = joint_rand[:, -WR_SEED_LEN:]
    out = np.empty((B, checks), dtype=np.uint64)
    a = np.ascontiguousarray(a)
    if seeds.shape[0] == 1:
        _k_wraparound_dots(a, wraparound_codes(seeds[0], checks, d), out)
        return out
    uniq, inv = np.unique(seeds, axis=0, return_inverse=True)
    for u in range(uniq.shape[0]):
        rows = np.flatnonzero(inv.reshape(-1) == u)
        part = np.empty((rows.shape[0], checks), dtype=np.uint64)
        codes = wraparound_codes(uniq[u], checks, d)
        _k_wraparound_dots(np.ascontiguousarray(a[rows]), codes, part)
        out[rows] = part
    return out


# ----------------------------------------------------------------------------- soundness


@dataclass(frozen=True)
class WraparoundBound:
    """What the wraparound checks guarantee (``docs/proofs.md``, § PINE).

    ``pass_prob``: c, the most probability with which one check passes for a measurement
    whose centred lift has ‖ā‖² ≥ ``threshold`` (T); ``error``: min(1, q·c^r), a prover
    grinding q = 2^offline_queries_log2 joint randomness; ``honest_failure``: the most
    probability with which an honest provider fails one of the r checks.
    """

    checks: int
    wr_bits: int
    threshold: int
    pass_prob: float
    error: float
    honest_failure: float

    @property
    def error_log2(self) -> float:
        return math.log2(self.error) if self.error > 0 else -math.inf


def wraparound_pass_prob(length: int, wr_bits: int, threshold: int, modulus: int) -> float:
    """c: the most probability one check passes when ‖ā‖² ≥ T (``threshold``).

    Case 1, some |ā_i| ≥ W: given the other entries, the three values c' + z_i·a_i
    (z_i = −1, 0, 1) cannot have c' and c' ± a_i both in an interval of W residues, so at
    most probability 1/2. Case 2, every |ā_i| < W: S = Σ z_i ā_i does not wrap (needs
    d·(W − 1) + W < p) and has variance σ² = ‖ā‖²/2 ≥ T/2; by Berry–Esseen,
    Pr[|S| < W] ≤ (2/√(2π) + 2·C_BE)·W/σ. c is the larger of the two.
    """
    W = 1 << wr_bits
    if length * (W - 1) + W >= modulus:
        raise ConfigError(f"{length} entries with {wr_bits}-bit wraparound checks could wrap")
    sigma = math.sqrt(threshold / 2)
    case2 = (2 / math.sqrt(2 * math.pi) + 2 * BERRY_ESSEEN_C) * W / sigma
    return min(1.0, max(0.5, case2))


def honest_failure(max_abs: int, wr_bits: int, checks: int) -> float:
    """Most probability an honest ‖a‖ ≤ A (``max_abs``) fails one of ``checks`` checks:
    S = ⟨z, a⟩ is sub-Gaussian with variance proxy ‖a‖²/2 (E e^(λz) = cosh²(λ/2)), and
    fails only if |S| ≥ β + 1 = 2^(wr_bits − 1), so r·2·exp(−(β + 1)²/A²)."""
    lim = 1 << (wr_bits - 1)
    return min(1.0, checks * 2 * math.exp(-(lim**2) / max(1, max_abs) ** 2))


def choose_wr_bits(max_abs: int, length: int, checks_guess: int = 256) -> int:
    """Least wraparound range (bits) an honest provider fails with ≤ 2^HONEST_FAILURE_LOG2."""
    for bits in range(max(2, max_abs.bit_length()), 63):
        if honest_failure(max_abs, bits, checks_guess) <= 2.0**HONEST_FAILURE_LOG2:
            return bits
    raise ConfigError("no wraparound range fits Field64")


def choose_checks(
    pass_prob: float,
    target_log2: float = TARGET_SOUNDNESS_LOG2 - 1,
    offline_queries_log2: float = OFFLINE_QUERIES_LOG2,
) -> int:
    """Least r with q·c^r ≤ 2^target_log2 (default: half the FLP's 2^-64 target)."""
    return max(1, math.ceil((offline_queries_log2 - target_log2) / -math.log2(pass_prob)))


# ------------------------------------------------------------------------------ circuit


class PineNormCircuit(Valid):
    """Shared parts of the PINE-style circuits: entries, tail bits, witness, the checks.

    Subclasses set the tail layout (``_tail_bits``), the norm target and the extra square
    pairs through the hooks ``_norm_check`` / ``_extra_pairs`` / ``_fill_extra``, and the
    extra (linear) outputs through ``_extra_checks`` / ``_extra_outputs``.
    """

    _extra_pairs = 0
    _extra_outputs = 0
    _y_memo: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def _setup(
        self,
        length: int,
        max_abs: int,
        tail_bits: int,
        norm_bits: int,
        field: Any,
        checks: int | None,
        wr_bits: int | None,
    ) -> None:
        """Sizes, gadgets and wraparound parameters. Pre: ``max_abs`` ≥ ‖a‖ of an honest
        measurement; ``norm_bits`` bounds the slack (T = p − 2^norm_bits)."""
        if field is not Field64:
            raise ConfigError("the PINE circuits are defined over Field64")
        if length < 1 or length >= 2**32:
            raise ConfigError("a PINE circuit needs 1 ≤ length < 2^32")
        self.field = field
        self.length = d = int(length)
        self.max_abs = int(max_abs)
        p = field.MODULUS
        self.threshold = p - (1 << norm_bits)
        if self.threshold <= self.max_abs**2:
            raise ConfigError("the norm bound does not fit Field64; lower frac_bits")
        self.wr_bits = wr_bits or choose_wr_bits(self.max_abs, d)
        self.beta = (1 << (self.wr_bits - 1)) - 1
        self.pass_prob = wraparound_pass_prob(d, self.wr_bits, self.threshold, p)
        self.checks = int(checks) if checks is not None else choose_checks(self.pass_prob)
        self.tail_bits = int(tail_bits)
        self.WITNESS_LEN = self.checks * self.wr_bits
        self.n_bits = self.tail_bits + self.WITNESS_LEN
        self.MEAS_LEN = d + self.tail_bits
        self.SHARED_JOINT_RAND_LEN = WR_SEED_LEN
        self.norm_chunk_length = best_chunk_length(d + self._extra_pairs)
        self.bits_chunk_length = best_chunk_length(self.n_bits)
        self.bit_calls = math.ceil(self.n_bits / self.bits_chunk_length)
        self.GADGETS = [
            ParallelSum(Mul(), self.bits_chunk_length),
            ParallelSum(Mul(), self.norm_chunk_length),
        ]
        self.GADGET_CALLS = [
            self.bit_calls,
            math.ceil((d + self._extra_pairs) / self.norm_chunk_length),
        ]
        # per repetition: one stage-2 element per bit-check call, then the shared stage-1
        # tail (the seed of z)
        self.JOINT_RAND_LEN = self.bit_calls + WR_SEED_LEN
        self.EVAL_OUTPUT_LEN = 1 + 1 + self.checks + self._extra_outputs
        self._pow2w = field.elements([1 << k for k in range(self.wr_bits)])

    def joint_rand_degree(self) -> int:
        """The bit checks of a call are weighted by powers r^1..r^chunk of its stage-2
        element, so degree ``bits_chunk_length`` (z comes from the stage-1 tail, fixed
        before the witness; see ``docs/proofs.md`` § PINE)."""
        return min(self.n_bits, self.bits_chunk_length)

    def check_layout(self) -> None:
        """The stage-2 elements (one per bit-check call) precede the stage-1 tail."""
        if self.GADGET_CALLS[0] + self.SHARED_JOINT_RAND_LEN != self.JOINT_RAND_LEN:
            raise ConfigError(f"{self!r}: JOINT_RAND_LEN ≠ bit-check calls + wraparound seed")

    def wraparound(self, offline_queries_log2: float = OFFLINE_QUERIES_LOG2) -> WraparoundBound:
        """The wraparound checks' guarantee (see :class:`WraparoundBound`)."""
        q = 2.0**offline_queries_log2
        err = min(1.0, q * self.pass_prob**self.checks)
        return WraparoundBound(
            self.checks,
            self.wr_bits,
            self.threshold,
            self.pass_prob,
            err,
            honest_failure(self.max_abs, self.wr_bits, self.checks),
        )

    def soundness_error_log2(self, proofs: int | None = None) -> float:
        """log2 of the whole bound: the FLP's (q = 2^64) plus the wraparound checks'."""
        k = proofs if proofs is not None else FlpBBCGGI19(self).proofs
        total = soundness_bound(self, k).error + self.wraparound().error
        return math.log2(total)

    # ---- hooks
    def _norm_check(self, meas: np.ndarray, norm: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _fill_extra(self, pairs: Any, meas: np.ndarray) -> None:
        """Fill the square pairs d.. (none by default)."""

    def _extra_checks(self, meas: np.ndarray) -> np.ndarray:
        return np.zeros((meas.shape[0], 0), dtype=np.uint64)

    # ---- the circuit
    def wraparound_values(self, meas: np.ndarray, joint_rand: np.ndarray) -> np.ndarray:
        """y ``(B, checks)`` = ⟨z_k, a⟩ (on shares: shares of y).

        The last result is remembered with exact copies of its inputs (up to
        ``_Y_MEMO_ELEMENTS`` entries): a provider computes y for its own test, the witness
        and the proof on the same measurement and seed, and pays for one projection pass.
        """
        entries = meas[:, : self.length]
        seeds = np.asarray(joint_rand)[:, -WR_SEED_LEN:]
        memo = self._y_memo  # one tuple, replaced atomically (threads may share a circuit)
        if (
            memo is not None
            and memo[0].shape == seeds.shape
            and memo[1].shape == entries.shape
            and np.array_equal(memo[0], seeds)
            and np.array_equal(memo[1], entries)
        ):
            return memo[2].copy()
        y = wraparound_dots(self.field, entries, joint_rand, self.checks)
        if entries.size <= _Y_MEMO_ELEMENTS:
            self._y_memo = (seeds.copy(), np.array(entries), y.copy())
        return y

    def forget_inputs(self) -> None:
        """Drop the remembered y and the copy of the entries it was computed from."""
        self._y_memo = None

    def witness(self, meas: np.ndarray, joint_rand: np.ndarray) -> np.ndarray:
        """The bits of y_k + β (``(B, checks·wr_bits)``).

        If some y_k + β lies outside [0, 2^wr_bits) — the vector is not short; an honest
        one fails with probability ≤ ``wraparound().honest_failure`` — its low bits are
        sent and the verifier rejects the check (:meth:`wraparound_passes` tells first).
        """
        shifted = self._shifted(meas, joint_rand)
        mask = np.uint64((1 << self.wr_bits) - 1)
        return _bits_of(shifted & mask, self.wr_bits).reshape(meas.shape[0], -1)

    def _shifted(self, meas: np.ndarray, joint_rand: np.ndarray) -> np.ndarray:
        F = self.field
        return F.add(self.wraparound_values(meas, joint_rand), F.elements(self.beta))

    def wraparound_passes(self, meas: np.ndarray, joint_rand: np.ndarray) -> np.ndarray:
        """Per record ``(B,)``: whether every wraparound check of ``meas`` (in the clear)
        passes for this joint randomness (the provider's own test before it proves)."""
        return np.all(self._shifted(meas, joint_rand) < np.uint64(1 << self.wr_bits), axis=-1)

    def eval(
        self, meas: np.ndarray, joint_rand: np.ndarray, gadgets: list[GadgetCall]
    ) -> np.ndarray:
        return self._eval_y(meas, joint_rand, self.wraparound_values(meas, joint_rand), gadgets)

    def eval_reps(
        self,
        meas: np.ndarray,
        joint_rands: list[np.ndarray],
        gadget_lists: list[list[GadgetCall]],
    ) -> list[np.ndarray]:
        """``eval`` per repetition; y computed once (z comes from the shared tail)."""
        y = self.wraparound_values(meas, joint_rands[0])
        return [
            self._eval_y(meas, jr, y, g) for jr, g in zip(joint_rands, gadget_lists, strict=True)
        ]

    def _eval_y(
        self, meas: np.ndarray, joint_rand: np.ndarray, y: np.ndarray, gadgets: list[GadgetCall]
    ) -> np.ndarray:
        F = self.field
        d = self.length
        # every tail and witness bit b_j: Σ_j w_j·b_j·(b_j − 1) with stage-2 weights w,
        # drawn after the witness was committed (the prover cannot make non-bits cancel)
        w = call_weights(F, joint_rand, self.n_bits, self.bits_chunk_length)
        bpairs = gadgets[0].pairs(self.n_bits, self.bits_chunk_length)
        bpairs.fill(0, self.n_bits, meas, meas, w=w, b_const=1, a_start=d, b_start=d)
        bit_check = gadgets[0].sum_pairs(bpairs)
        pairs = gadgets[1].pairs(d + self._extra_pairs, self.norm_chunk_length)
        pairs.fill(0, d, meas, meas)
        self._fill_extra(pairs, meas)
        norm = gadgets[1].sum_pairs(pairs)
        norm_check = self._norm_check(meas, norm)
        claimed = dot_groups(F, meas, self._pow2w, self.checks, start=self.MEAS_LEN)
        wr_checks = F.sub(F.sub(claimed, F.elements(self.beta)), y)
        return np.concatenate(
            [bit_check[:, None], norm_check[:, None], wr_checks, self._extra_checks(meas)],
            axis=-1,
        )

    # ---- encoding helpers
    def _entries_of(self, v: np.ndarray) -> np.ndarray:
        """Signed ints ``(..., d)`` → field elements (negatives as p − |a|)."""
        a = np.asarray(v, dtype=np.int64)
        mag = np.abs(a).astype(np.uint64)
        out = np.where(a < 0, np.uint64(self.field.MODULUS) - mag, mag).astype(np.uint64)
        return self.field.elements(out)

    def signed(self, values: np.ndarray) -> np.ndarray:
        """Centred lift of field elements: int64 in (−p/2, p/2) (exact: p/2 < 2^63)."""
        v = np.asarray(values, dtype=np.uint64)
        p = np.uint64(self.field.MODULUS)
        neg = v > p // np.uint64(2)
        mag = np.where(neg, p - v, v).astype(np.int64)
        return np.where(neg, -mag, mag)

    def max_measurements(self) -> int:
        """Sums stay in (−p/2, p/2): n·A < p/2."""
        return (self.field.MODULUS // 2) // max(1, self.max_abs)


class L2BoundPine(PineNormCircuit):
    """A fixed-point vector v with ‖v‖₂ ≤ ``bound``, proven PINE-style (module docstring).

    a_i = round(v_i·2^f) (signed field elements), N = ⌊bound²·4^f⌋, slack s = N − Σ a_i²
    (bitlen(N) bits). Measurement: a, then the slack bits. Outputs (combined by query
    randomness): every bit check, Σ a_i² + s − N, the r wraparound checks. Output: a;
    ``decode`` returns Σ v as float64.
    """

    def __init__(
        self,
        length: int,
        frac_bits: int,
        bound: float,
        field: Any = Field64,
        checks: int | None = None,
        wr_bits: int | None = None,
    ) -> None:
        if frac_bits < 0 or not bound > 0:
            raise ConfigError("L2BoundPine needs frac_bits ≥ 0 and bound > 0")
        b = Fraction(float(bound))
        self.frac_bits = int(frac_bits)
        self.bound = float(bound)
        self.norm_int = math.floor(b * b * 4**frac_bits)
        if self.norm_int < 1:
            raise ConfigError("bound·2^frac_bits must be ≥ 1; raise frac_bits")
        self.norm_bits = self.norm_int.bit_length()
        self._setup(
            length,
            math.isqrt(self.norm_int),
            self.norm_bits,
            self.norm_bits,
            field,
            checks,
            wr_bits,
        )
        self.OUTPUT_LEN = self.length
        self._pow2n = field.elements([1 << k for k in range(self.norm_bits)])

    def __repr__(self) -> str:
        return (
            f"L2BoundPine(length={self.length}, frac_bits={self.frac_bits}, bound={self.bound}, "
            f"checks={self.checks})"
        )

    def _norm_check(self, meas: np.ndarray, norm: np.ndarray) -> np.ndarray:
        F = self.field
        s = dot_groups(F, meas, self._pow2n, 1, start=self.length)[:, 0]
        return F.sub(F.add(norm, s), F.elements(self.norm_int))

    def encode(self, measurement: Any) -> np.ndarray:
        v = np.asarray(measurement, dtype=np.float64)
        if v.shape[-1:] != (self.length,) or not np.all(np.isfinite(v)):
            raise EncodingError(
                f"L2BoundPine measurement must be finite reals of shape (..., {self.length})"
            )
        a = np.round(v * 2.0**self.frac_bits).astype(np.int64)
        sq = np.sum(a.astype(object) ** 2, axis=-1)
        if np.any(sq > self.norm_int):
            raise EncodingError(
                f"the L2 norm exceeds the bound {self.bound} after rounding to "
                f"{self.frac_bits} fractional bits; scale the vector down first"
            )
        slack = np.asarray(self.norm_int - sq, dtype=np.uint64)
        sbits = self.field.elements(_bits_of(slack, self.norm_bits))
        return np.concatenate([self._entries_of(a), sbits], axis=-1)

    def truncate(self, meas: np.ndarray) -> np.ndarray:
        return np.asarray(meas)[..., : self.length]

    def decode(self, output: np.ndarray, num_measurements: int) -> np.ndarray:
        return (self.signed(output) / 2.0**self.frac_bits).astype(np.float64)


def doc_pine_circuits() -> list[PineNormCircuit]:
    """The PINE circuits ``docs/proofs.md`` tabulates (model-update sizes, f = 20)."""
    return [L2BoundPine(n, 20, 1 - 2.0**-20) for n in (10_000, 100_000, 1_000_000)]


def elements_per_param(valid: PineNormCircuit | Valid) -> float:
    """(MEAS_LEN + PROOF_LEN at the default proofs) / parameters: a provider's upload in
    field elements per model parameter, before sharing."""
    flp = FlpBBCGGI19(valid)
    length = getattr(valid, "length", valid.MEAS_LEN)
    return (flp.MEAS_LEN + flp.PROOF_LEN) / length


def pine_table(circuits: list[PineNormCircuit] | None = None) -> str:
    """Markdown table of the PINE circuits' parameters and bounds (``docs/proofs.md``)."""
    rows = [
        "| circuit | r | W | c | q·c^r | FLP proofs | FLP bound | total | honest fails "
        "| elements / param |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in circuits if circuits is not None else doc_pine_circuits():
        flp = FlpBBCGGI19(c)
        wr = c.wraparound()
        fl = soundness_bound(c, flp.proofs)
        rows.append(
            f"| `{c!r}` | {c.checks} | 2^{c.wr_bits} | {c.pass_prob:.4f} "
            f"| 2^{wr.error_log2:.1f} | {flp.proofs} | 2^{fl.error_log2:.1f} "
            f"| 2^{c.soundness_error_log2(flp.proofs):.1f} "
            f"| 2^{math.log2(wr.honest_failure):.1f} | {elements_per_param(c):.3f} |"
        )
    return "\n".join(rows) + "\n"


__all__ = [
    "L2BoundPine",
    "PineNormCircuit",
    "WraparoundBound",
    "doc_pine_circuits",
    "elements_per_param",
    "pine_table",
    "wraparound_dots",
    "wraparound_vectors",
]
