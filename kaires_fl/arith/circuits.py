"""Validity circuits for the FLP (Prio3's types, plus linear regression and bounded L2).

Each circuit is a :class:`~kaires_fl.arith.flp.Valid` with

* ``encode(measurement)`` → ``(..., MEAS_LEN)`` field elements (batched over leading axes;
  raises ``EncodingError`` on an invalid measurement),
* ``truncate(meas)`` → ``(..., OUTPUT_LEN)``: affine, constants added in full, so it maps a
  Shamir share of the measurement to a Shamir share of the output,
* ``decode(output, num_measurements)`` → the aggregate in plain Python/numpy terms,
* ``max_measurements()``: how many outputs may be summed before the field could wrap.

Range checks are the bit test b·(b − 1) = 0 for every bit, batched through a
``ParallelSum(Mul, chunk_length)`` gadget. As in draft-irtf-cfrg-vdaf-12, every gadget
call m has its own joint-randomness element r_m and weighs the j-th check of its chunk by
r_m^(j+1): the output Σ_m Σ_j r_m^(j+1)·e_{m,j} has degree chunk_length in the joint
randomness (``joint_rand_degree``), so an invalid measurement passes for at most a
chunk_length/|F| fraction of joint randomness — instead of (number of checks)/|F| with
powers of one element (see ``docs/proofs.md``). ``chunk_length`` defaults to the value
that minimises the proof length (≈ √(number of bit checks)).

:func:`soundness_table` renders the soundness of the reference circuits (``DOC_CIRCUITS``)
for ``docs/proofs.md``.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np

from kaires_fl.arith.field import Field64
from kaires_fl.arith.flp import (
    FlpBBCGGI19,
    Gadget,
    GadgetCall,
    Mul,
    PairInputs,
    ParallelSum,
    Valid,
    dot_groups,
    dot_rows,
    next_power_of_2,
    powers,
    soundness_bound,
)
from kaires_fl.errors import ConfigError, EncodingError


def best_chunk_length(pairs: int) -> int:
    """Chunk length minimising the proof of ``pairs`` products under ParallelSum(Mul, c).

    Proof length is 2c (wire seeds) + 2(P − 1) + 1 with P = next_pow2(⌈pairs/c⌉ + 1).
    """
    best_c, best_len = 1, None
    for j in range(1, 40):
        c = max(1, math.ceil(pairs / ((1 << j) - 1)))
        P = next_power_of_2(math.ceil(pairs / c) + 1)
        length = 2 * c + 2 * (P - 1) + 1
        if best_len is None or length < best_len:
            best_c, best_len = c, length
        if c == 1:
            break
    return best_c


def _bits_of(values: np.ndarray, bits: int) -> np.ndarray:
    """Little-endian bit decomposition of non-negative ints: ``(...)`` → ``(..., bits)``."""
    v = np.asarray(values, dtype=np.uint64)
    return ((v[..., None] >> np.arange(bits, dtype=np.uint64)) & np.uint64(1)).astype(np.uint64)


def _as_ints(values: Any, what: str) -> np.ndarray:
    """Integer array from user input, rejecting non-integers with ``EncodingError``."""
    arr = np.asarray(values)
    if arr.dtype == bool:
        return arr.astype(np.int64)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64) if arr.dtype.kind == "i" else arr
    if arr.dtype.kind == "O":
        try:
            ints = np.vectorize(int, otypes=[object])(arr)
        except (TypeError, ValueError) as exc:
            raise EncodingError(f"{what} must be integers") from exc
        if np.any(ints != arr):
            raise EncodingError(f"{what} must be integers")
        if np.any(ints < 0) or np.any(ints >= 2**63):
            raise EncodingError(f"{what} out of range: use integers in the declared range")
        return ints.astype(np.int64)
    if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
        return arr.astype(np.int64)
    raise EncodingError(f"{what} must be integers; got dtype {arr.dtype}")


def call_weights(F: Any, joint_rand: np.ndarray, pairs: int, chunk: int) -> np.ndarray:
    """Weights ``(1|B, pairs)`` of the checks fed to ParallelSum(Mul, chunk): pair i, in
    call m = i // chunk at slot j = i % chunk, is weighed by r_m^(j+1), r_m = joint_rand[:, m].

    Pre: ``joint_rand`` is ``(1|B, ≥ ⌈pairs/chunk⌉)``. The combination Σ r_m^(j+1)·e_{m,j}
    of the checks e has degree ``chunk`` in the joint randomness (draft-12's SumVec).
    """
    calls = -(-pairs // chunk)
    pw = powers(F, joint_rand[:, :calls], chunk + 1)  # (R, calls, chunk + 1): r_m^0..r_m^chunk
    w = np.ascontiguousarray(pw[:, :, 1:]).reshape(pw.shape[0], calls * chunk)
    return w if calls * chunk == pairs else np.ascontiguousarray(w[:, :pairs])


class _BitsCircuit(Valid):
    """Shared parts: range checks of bit vectors, one joint-randomness element per call."""

    field: Any = Field64

    def _check_field(self, field: Any) -> None:
        self.field = field

    def _range_pairs(
        self,
        call: GadgetCall,
        meas: np.ndarray,
        joint_rand: np.ndarray,
        n: int,
        extra: int = 0,
    ) -> tuple[PairInputs, np.ndarray]:
        """``(pairs, w)``: inputs of the ParallelSum(Mul, chunk) gadget ``call`` holding
        (w_k·b_k, b_k − 1) for the first n entries of meas (the weighted products vanish for
        every weight iff every b_k is a bit), with room for ``extra`` more pairs, and the
        weights w = :func:`call_weights` of all n + extra pairs (for the caller's extra
        checks). Evaluate with ``call.call_pairs(pairs)``.

        Pre: the circuit declared ``_pairs = n + extra`` checks, ``chunk_length`` = the
        gadget's chunk and ``JOINT_RAND_LEN = GADGET_CALLS[0]`` (:meth:`check_layout`).
        """
        chunk = call.gadget.count  # type: ignore[attr-defined]
        w = call_weights(call.F, joint_rand, n + extra, chunk)
        pairs = call.pairs(n + extra, chunk)
        pairs.fill(0, n, meas, meas, w=w, b_const=1)
        return pairs, w

    def joint_rand_degree(self) -> int:
        """chunk_length: every check of a call is weighed by a power ≤ chunk of its element."""
        return min(self._pairs, self.chunk_length) if self._pairs else 0

    def check_layout(self) -> None:
        """Raise ``ConfigError`` unless the range-check gadget (``GADGETS[0]``) has one
        joint-randomness element per call and ``_pairs`` checks in chunks of
        ``chunk_length`` — what :meth:`joint_rand_degree` (hence the soundness bound)
        assumes. Subclasses that change the layout must update all three."""
        if not self._pairs:
            if self.JOINT_RAND_LEN:
                raise ConfigError(f"{self!r} declares joint randomness but no range checks")
            return
        calls = -(-self._pairs // self.chunk_length)
        if self.GADGET_CALLS[0] != calls or calls != self.JOINT_RAND_LEN:
            raise ConfigError(
                f"{self!r}: {self._pairs} checks in chunks of {self.chunk_length} make {calls} "
                f"calls, but GADGET_CALLS[0] = {self.GADGET_CALLS[0]} and JOINT_RAND_LEN = "
                f"{self.JOINT_RAND_LEN}; set _pairs, GADGET_CALLS[0] and JOINT_RAND_LEN "
                "together (one joint-randomness element per call, see call_weights)"
            )

    _pairs: int = 0
    chunk_length: int = 1


# ------------------------------------------------------------------------------ Count


class Count(_BitsCircuit):
    """A single bit; output the bit. Circuit: Mul(b, b) − b = 0."""

    def __init__(self, field: Any = Field64) -> None:
        self.field = field
        self.MEAS_LEN = 1
        self.OUTPUT_LEN = 1
        self.JOINT_RAND_LEN = 0
        self.EVAL_OUTPUT_LEN = 1
        self.GADGETS: list[Gadget] = [Mul()]
        self.GADGET_CALLS = [1]

    def __repr__(self) -> str:
        return "Count()"

    def eval(
        self, meas: np.ndarray, joint_rand: np.ndarray, gadgets: list[GadgetCall]
    ) -> np.ndarray:
        F = self.field
        b = meas[:, 0:1]
        sq = gadgets[0](np.stack([b, b], axis=-1))  # (B, 1)
        return F.sub(sq, b)

    def encode(self, measurement: Any) -> np.ndarray:
        v = _as_ints(measurement, "Count measurement")
        if np.any((v != 0) & (v != 1)):
            raise EncodingError("Count measurements must be 0/1 or booleans")
        return self.field.elements(v.astype(np.uint64))[..., None]

    def truncate(self, meas: np.ndarray) -> np.ndarray:
        return meas[..., :1]

    def decode(self, output: np.ndarray, num_measurements: int) -> int:
        return int(self.field.to_ints(output[..., 0]))

    def max_measurements(self) -> int:
        return self.field.MODULUS - 1


# -------------------------------------------------------------------------------- Sum


class Sum(_BitsCircuit):
    """An integer in [0, 2^bits) as its bits; output the integer."""

    def __init__(self, bits: int, chunk_length: int | None = None, field: Any = Field64) -> None:
        if not 1 <= bits < field.MODULUS.bit_length() - 1:
            raise ConfigError(f"Sum bits must be in [1, {field.MODULUS.bit_length() - 2}]")
        self.field = field
        self.bits = bits
        self.chunk_length = chunk_length or best_chunk_length(bits)
        self.MEAS_LEN = bits
        self.OUTPUT_LEN = 1
        self.EVAL_OUTPUT_LEN = 1
        self.GADGETS = [ParallelSum(Mul(), self.chunk_length)]
        self.GADGET_CALLS = [math.ceil(bits / self.chunk_length)]
        self.JOINT_RAND_LEN = self.GADGET_CALLS[0]
        self._pairs = bits
        self._pow2 = field.elements([1 << k for k in range(bits)])

    def __repr__(self) -> str:
        return f"Sum(bits={self.bits}, chunk_length={self.chunk_length})"

    def eval(
        self, meas: np.ndarray, joint_rand: np.ndarray, gadgets: list[GadgetCall]
    ) -> np.ndarray:
        pairs, _ = self._range_pairs(gadgets[0], meas, joint_rand, self.bits)
        return gadgets[0].sum_pairs(pairs)[:, None]

    def encode(self, measurement: Any) -> np.ndarray:
        v = _as_ints(measurement, "Sum measurement")
        if np.any(v < 0) or np.any(v >= 2**self.bits):
            raise EncodingError(f"Sum measurements must lie in [0, 2^{self.bits})")
        return self.field.elements(_bits_of(v, self.bits))

    def truncate(self, meas: np.ndarray) -> np.ndarray:
        return dot_groups(self.field, np.asarray(meas), self._pow2, 1)

    def decode(self, output: np.ndarray, num_measurements: int) -> int:
        return int(self.field.to_ints(output[..., 0]))

    def max_measurements(self) -> int:
        return (self.field.MODULUS - 1) // (2**self.bits - 1)


# ----------------------------------------------------------------------------- SumVec


class SumVec(_BitsCircuit):
    """A vector of ``length`` integers in [0, 2^bits), as bits; output the vector."""

    def __init__(
        self, length: int, bits: int, chunk_length: int | None = None, field: Any = Field64
    ) -> None:
        if length < 1 or not 1 <= bits < field.MODULUS.bit_length() - 1:
            raise ConfigError("SumVec needs length ≥ 1 and 1 ≤ bits < log2(p) − 1")
        self.field = field
        self.length = length
        self.bits = bits
        n = length * bits
        self.chunk_length = chunk_length or best_chunk_length(n)
        self.MEAS_LEN = n
        self.OUTPUT_LEN = length
        self.EVAL_OUTPUT_LEN = 1
        self.GADGETS = [ParallelSum(Mul(), self.chunk_length)]
        self.GADGET_CALLS = [math.ceil(n / self.chunk_length)]
        self.JOINT_RAND_LEN = self.GADGET_CALLS[0]
        self._pairs = n
        self._pow2 = field.elements([1 << k for k in range(bits)])

    def __repr__(self) -> str:
        return f"SumVec(length={self.length}, bits={self.bits}, chunk_length={self.chunk_length})"

    def eval(
        self, meas: np.ndarray, joint_rand: np.ndarray, gadgets: list[GadgetCall]
    ) -> np.ndarray:
        pairs, _ = self._range_pairs(gadgets[0], meas, joint_rand, self.MEAS_LEN)
        return gadgets[0].sum_pairs(pairs)[:, None]

    def encode(self, measurement: Any) -> np.ndarray:
        v = _as_ints(measurement, "SumVec measurement")
        if v.shape[-1:] != (self.length,):
            raise EncodingError(f"SumVec measurement must have shape (..., {self.length})")
        if np.any(v < 0) or np.any(v >= 2**self.bits):
            raise EncodingError(f"SumVec entries must lie in [0, 2^{self.bits})")
        return self.field.elements(_bits_of(v, self.bits).reshape(*v.shape[:-1], self.MEAS_LEN))

    def truncate(self, meas: np.ndarray) -> np.ndarray:
        m = np.asarray(meas)
        return dot_groups(self.field, m, self._pow2, self.length)

    def decode(self, output: np.ndarray, num_measurements: int) -> list[int]:
        return [int(v) for v in self.field.to_ints(output)]

    def max_measurements(self) -> int:
        return (self.field.MODULUS - 1) // (2**self.bits - 1)


# -------------------------------------------------------------------------- Histogram


class Histogram(_BitsCircuit):
    """A one-hot vector of ``length`` buckets; output the vector (bucket counts).

    Two checks, combined by query randomness: every entry is a bit, and they sum to 1.
    """

    def __init__(self, length: int, chunk_length: int | None = None, field: Any = Field64) -> None:
        if length < 1:
            raise ConfigError("Histogram needs length ≥ 1")
        self.field = field
        self.length = length
        self.chunk_length = chunk_length or best_chunk_length(length)
        self.MEAS_LEN = length
        self.OUTPUT_LEN = length
        self.EVAL_OUTPUT_LEN = 2
        self.GADGETS = [ParallelSum(Mul(), self.chunk_length)]
        self.GADGET_CALLS = [math.ceil(length / self.chunk_length)]
        self.JOINT_RAND_LEN = self.GADGET_CALLS[0]
        self._pairs = length

    def __repr__(self) -> str:
        return f"Histogram(length={self.length}, chunk_length={self.chunk_length})"

    def eval(
        self, meas: np.ndarray, joint_rand: np.ndarray, gadgets: list[GadgetCall]
    ) -> np.ndarray:
        F = self.field
        pairs, _ = self._range_pairs(gadgets[0], meas, joint_rand, self.length)
        range_check = gadgets[0].sum_pairs(pairs)
        sum_check = F.sub(F.sum(meas, axis=-1), F.ones(()))
        return np.stack([range_check, sum_check], axis=-1)

    def encode(self, measurement: Any) -> np.ndarray:
        idx = _as_ints(measurement, "Histogram bucket")
        if np.any(idx < 0) or np.any(idx >= self.length):
            raise EncodingError(f"Histogram buckets must lie in [0, {self.length})")
        onehot = (idx[..., None] == np.arange(self.length)).astype(np.uint64)
        return self.field.elements(onehot)

    def truncate(self, meas: np.ndarray) -> np.ndarray:
        return meas

    def decode(self, output: np.ndarray, num_measurements: int) -> list[int]:
        return [int(v) for v in self.field.to_ints(output)]

    def max_measurements(self) -> int:
        return self.field.MODULUS - 1


# ------------------------------------------------------------- LinearRegressionRecord


class LinearRegressionRecord(_BitsCircuit):
    """One record (x ∈ [0, 2^bits)^d, y ∈ [0, 2^bits)) in Prio's linear-regression encoding.

    Let z = (x_1, …, x_d, y). Measurement layout (MEAS_LEN = (d+1)·bits + T with
    T = (d+1)(d+2)/2): the bits of z_0, …, z_d (``bits`` each, least significant first),
    then the products z_i·z_j for i ≤ j in row-major order (``np.triu_indices(d+1)``) —
    that is every x_i·x_j (i ≤ j), every x_i·y and y·y.

    Circuit: Σ_k w_k·b_k(b_k − 1) + Σ_m w_(K+m)·(z_i·z_j − p_m) = 0 with one
    ParallelSum(Mul) gadget for all K + T products (z_i is Σ_k 2^k b_{i,k}, affine) and w
    the per-call powers of :func:`call_weights`.

    Output (OUTPUT_LEN = (d+1) + T + 1): z (so Σx, Σy), the products (XᵀX upper triangle,
    Xᵀy, Σy²) and the constant 1 (so the count). ``decode`` returns a dict of Python ints:
    ``sum_x`` (d), ``sum_y``, ``xtx`` (d×d, symmetric), ``xty`` (d), ``sum_yy``, ``count``.
    No wrap while records·(2^bits − 1)² < p (:meth:`max_measurements`).
    """

    def __init__(
        self, d: int, bits: int, chunk_length: int | None = None, field: Any = Field64
    ) -> None:
        if d < 1 or bits < 1 or 2 * bits >= field.MODULUS.bit_length() - 1:
            raise ConfigError(
                "LinearRegressionRecord needs d ≥ 1 and 1 ≤ bits with 2·bits < log2(p) − 1 "
                "(products must not wrap the field)"
            )
        self.field = field
        self.d = d
        self.bits = bits
        self.n_vars = d + 1
        self.n_bits = self.n_vars * bits
        self._iu = np.triu_indices(self.n_vars)
        self.n_prods = len(self._iu[0])
        pairs = self.n_bits + self.n_prods
        self.chunk_length = chunk_length or best_chunk_length(pairs)
        self.MEAS_LEN = self.n_bits + self.n_prods
        self.OUTPUT_LEN = self.n_vars + self.n_prods + 1
        self.EVAL_OUTPUT_LEN = 1
        self.GADGETS = [ParallelSum(Mul(), self.chunk_length)]
        self.GADGET_CALLS = [math.ceil(pairs / self.chunk_length)]
        self.JOINT_RAND_LEN = self.GADGET_CALLS[0]
        self._pairs = pairs
        self._pow2 = field.elements([1 << k for k in range(bits)])

    def __repr__(self) -> str:
        return (
            f"LinearRegressionRecord(d={self.d}, bits={self.bits}, "
            f"chunk_length={self.chunk_length})"
        )

    def _z(self, meas: np.ndarray) -> np.ndarray:
        return dot_groups(self.field, np.asarray(meas), self._pow2, self.n_vars)

    def eval(
        self, meas: np.ndarray, joint_rand: np.ndarray, gadgets: list[GadgetCall]
    ) -> np.ndarray:
        return self._eval_z(meas, self._z(meas), joint_rand, gadgets)

    def eval_reps(
        self,
        meas: np.ndarray,
        joint_rands: list[np.ndarray],
        gadget_lists: list[list[GadgetCall]],
    ) -> list[np.ndarray]:
        """``eval`` per repetition, z decoded from the bits once."""
        z = self._z(meas)
        return [
            self._eval_z(meas, z, jr, g) for jr, g in zip(joint_rands, gadget_lists, strict=True)
        ]

    def _eval_z(
        self, meas: np.ndarray, z: np.ndarray, joint_rand: np.ndarray, gadgets: list[GadgetCall]
    ) -> np.ndarray:
        F = self.field
        K = self.n_bits
        pairs, w = self._range_pairs(gadgets[0], meas, joint_rand, K, extra=self.n_prods)
        iu = self._iu
        pairs.fill(K, self.n_prods, z, z, w=w, w_start=K, a_index=iu[0], b_index=iu[1])
        total = gadgets[0].sum_pairs(pairs)
        claimed = dot_rows(F, meas, w, start=K, w_start=K)
        return F.sub(total, claimed)[:, None]

    def encode(self, measurement: Any) -> np.ndarray:
        """``measurement`` ``(..., d+1)``: the d features then y, integers in [0, 2^bits)."""
        v = _as_ints(measurement, "LinearRegressionRecord measurement")
        if v.shape[-1:] != (self.n_vars,):
            raise EncodingError(
                f"LinearRegressionRecord measurement must have shape (..., {self.n_vars}) "
                "(features then y)"
            )
        if np.any(v < 0) or np.any(v >= 2**self.bits):
            raise EncodingError(
                f"features and y must be integers in [0, 2^{self.bits}); encode reals with a "
                "fixed-point offset first"
            )
        v = v.astype(np.uint64)
        bits = _bits_of(v, self.bits).reshape(*v.shape[:-1], self.n_bits)
        prods = v[..., self._iu[0]] * v[..., self._iu[1]]  # < 2^(2·bits) < 2^63: exact
        return self.field.elements(np.concatenate([bits, prods], axis=-1))

    def encode_xy(self, x: Any, y: Any) -> np.ndarray:
        """Encode features ``x`` ``(..., d)`` and targets ``y`` ``(...)``."""
        xa = _as_ints(x, "features")
        ya = _as_ints(y, "target")
        return self.encode(np.concatenate([xa, ya[..., None]], axis=-1))

    def truncate(self, meas: np.ndarray) -> np.ndarray:
        F = self.field
        m = np.asarray(meas)
        ones = F.ones((*m.shape[:-1], 1))
        return np.concatenate([self._z(m), m[..., self.n_bits :], ones], axis=-1)

    def decode(self, output: np.ndarray, num_measurements: int) -> dict[str, Any]:
        vals = self.field.to_ints(output)
        d = self.d
        z = vals[: self.n_vars]
        prods = vals[self.n_vars : self.n_vars + self.n_prods]
        full = [[0] * self.n_vars for _ in range(self.n_vars)]
        for (i, j), v in zip(zip(*self._iu, strict=True), prods, strict=True):
            full[i][j] = full[j][i] = int(v)
        return {
            "sum_x": [int(v) for v in z[:d]],
            "sum_y": int(z[d]),
            "xtx": [row[:d] for row in full[:d]],
            "xty": [full[i][d] for i in range(d)],
            "sum_yy": full[d][d],
            "count": int(vals[-1]),
        }

    def max_measurements(self) -> int:
        return (self.field.MODULUS - 1) // (2**self.bits - 1) ** 2


# ----------------------------------------------------------------------- BoundedL2Vec


class BoundedL2Vec(_BitsCircuit):
    """A fixed-point vector v with ‖v‖₂ ≤ ``bound`` (gradients; cf. Prio3's
    FixedPointBoundedL2VecSum).

    Entries are a_i = round(v_i·2^frac_bits), offset-encoded as e_i = a_i + A with
    A = ⌊bound·2^frac_bits⌋ and range-checked by ``entry_bits`` bits; the squared norm in
    integer units, Σ a_i², must not exceed N = ⌊bound²·4^frac_bits⌋, proved by the bits of the
    slack s = N − Σ a_i² (``norm_bits`` bits). Measurement: the entry bits (``entry_bits``
    each, least significant first), then the slack bits.

    Gadgets: ParallelSum(Mul) for the bit checks (one joint-randomness element per call) and
    ParallelSum(Mul) for Σ a_i·a_i. Outputs (combined by query randomness): the range check
    and Σ a_i² + s − N. Since length·2^(2·entry_bits) + 2^norm_bits < p (checked), the
    second equation cannot be met by wrapping around the field. Output: e (offset form);
    ``decode`` returns Σ v as float64.
    """

    def __init__(
        self,
        length: int,
        frac_bits: int,
        bound: float,
        chunk_length: int | None = None,
        norm_chunk_length: int | None = None,
        field: Any = Field64,
    ) -> None:
        if length < 1 or frac_bits < 0 or not bound > 0:
            raise ConfigError("BoundedL2Vec needs length ≥ 1, frac_bits ≥ 0 and bound > 0")
        self.field = field
        self.length = length
        self.frac_bits = frac_bits
        self.bound = float(bound)
        b = Fraction(self.bound)
        self.offset = math.floor(b * 2**frac_bits)  # A
        self.norm_int = math.floor(b * b * 4**frac_bits)  # N
        if self.offset < 1:
            raise ConfigError("bound·2^frac_bits must be ≥ 1; raise frac_bits")
        self.entry_bits = (2 * self.offset).bit_length()
        self.norm_bits = self.norm_int.bit_length()
        if length * 4**self.entry_bits + 2**self.norm_bits >= field.MODULUS:
            raise ConfigError(
                f"BoundedL2Vec(length={length}, frac_bits={frac_bits}, bound={bound}) could wrap "
                f"{field.__name__}: lower frac_bits or length, or use Field128"
            )
        n_bits = length * self.entry_bits + self.norm_bits
        self.n_bits = n_bits
        self.chunk_length = chunk_length or best_chunk_length(n_bits)
        self.norm_chunk_length = norm_chunk_length or best_chunk_length(length)
        self.MEAS_LEN = n_bits
        self.OUTPUT_LEN = length
        self.EVAL_OUTPUT_LEN = 2
        self.GADGETS = [
            ParallelSum(Mul(), self.chunk_length),
            ParallelSum(Mul(), self.norm_chunk_length),
        ]
        self.GADGET_CALLS = [
            math.ceil(n_bits / self.chunk_length),
            math.ceil(length / self.norm_chunk_length),
        ]
        self.JOINT_RAND_LEN = self.GADGET_CALLS[0]
        self._pairs = n_bits
        self._pow2e = field.elements([1 << k for k in range(self.entry_bits)])
        self._pow2n = field.elements([1 << k for k in range(self.norm_bits)])

    def __repr__(self) -> str:
        return f"BoundedL2Vec(length={self.length}, frac_bits={self.frac_bits}, bound={self.bound})"

    def _entries(self, meas: np.ndarray) -> np.ndarray:
        return dot_groups(self.field, np.asarray(meas), self._pow2e, self.length)

    def eval(
        self, meas: np.ndarray, joint_rand: np.ndarray, gadgets: list[GadgetCall]
    ) -> np.ndarray:
        return self._eval_pre(meas, self._norm_terms(meas), joint_rand, gadgets)

    def eval_reps(
        self,
        meas: np.ndarray,
        joint_rands: list[np.ndarray],
        gadget_lists: list[list[GadgetCall]],
    ) -> list[np.ndarray]:
        """``eval`` per repetition, the entries and the slack decoded once."""
        pre = self._norm_terms(meas)
        return [
            self._eval_pre(meas, pre, jr, g)
            for jr, g in zip(joint_rands, gadget_lists, strict=True)
        ]

    def _norm_terms(self, meas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(a_i = e_i − A, s − N): what the norm check needs, independent of randomness."""
        F = self.field
        centred = F.sub(self._entries(meas), F.elements(self.offset))
        slack = dot_groups(F, meas, self._pow2n, 1, start=self.length * self.entry_bits)[:, 0]
        return centred, F.sub(slack, F.elements(self.norm_int))

    def _eval_pre(
        self,
        meas: np.ndarray,
        pre: tuple[np.ndarray, np.ndarray],
        joint_rand: np.ndarray,
        gadgets: list[GadgetCall],
    ) -> np.ndarray:
        F = self.field
        centred, slack_minus_n = pre
        pairs, _ = self._range_pairs(gadgets[0], meas, joint_rand, self.n_bits)
        range_check = gadgets[0].sum_pairs(pairs)
        npairs = gadgets[1].pairs(self.length, self.norm_chunk_length)
        npairs.fill(0, self.length, centred, centred)
        norm = gadgets[1].sum_pairs(npairs)
        return np.stack([range_check, F.add(norm, slack_minus_n)], axis=-1)

    def encode(self, measurement: Any) -> np.ndarray:
        v = np.asarray(measurement, dtype=np.float64)
        if v.shape[-1:] != (self.length,) or not np.all(np.isfinite(v)):
            raise EncodingError(
                f"BoundedL2Vec measurement must be finite reals of shape (..., {self.length})"
            )
        a = np.round(v * 2.0**self.frac_bits).astype(np.int64)
        if np.any(np.abs(a) > self.offset):
            raise EncodingError(f"an entry exceeds the bound {self.bound}; clip the vector first")
        sq = np.sum(a.astype(object) ** 2, axis=-1)
        if np.any(sq > self.norm_int):
            raise EncodingError(
                f"the L2 norm exceeds the bound {self.bound} after rounding to "
                f"{self.frac_bits} fractional bits; scale the vector down first"
            )
        e = (a + self.offset).astype(np.uint64)
        slack = np.asarray(self.norm_int - sq, dtype=np.uint64)
        ebits = _bits_of(e, self.entry_bits).reshape(*v.shape[:-1], -1)
        nbits = _bits_of(slack, self.norm_bits)
        return self.field.elements(np.concatenate([ebits, nbits], axis=-1))

    def truncate(self, meas: np.ndarray) -> np.ndarray:
        return self._entries(np.asarray(meas))

    def decode(self, output: np.ndarray, num_measurements: int) -> np.ndarray:
        ints = self.field.to_ints(output)
        scale = 2.0**self.frac_bits
        return np.array(
            [(int(e) - num_measurements * self.offset) / scale for e in ints], dtype=np.float64
        )

    def max_measurements(self) -> int:
        return (self.field.MODULUS - 1) // (2 * self.offset)


# ------------------------------------------------------------------ soundness table


def doc_circuits() -> list[Valid]:
    """The circuits ``docs/proofs.md`` tabulates: every circuit the statistics and the
    Flower strategies build, at their usual sizes and up to 10^6-entry vectors (model
    updates: bound 1 − 2^-f, ``strategies.update.proven_bound``, at the default f = 16 and
    at ``auto_frac_bits(10^6)`` = 20)."""
    return [
        Count(),
        Sum(32),
        SumVec(1000, 1),
        SumVec(100_000, 8),
        SumVec(1_000_000, 8),
        Histogram(1000),
        Histogram(1_000_000),
        LinearRegressionRecord(14, 14),
        LinearRegressionRecord(100, 14),
        BoundedL2Vec(1000, 14, 1.0),
        BoundedL2Vec(100_000, 16, 1 - 2.0**-16),
        BoundedL2Vec(1_000_000, 16, 1 - 2.0**-16),
        BoundedL2Vec(1_000_000, 20, 1 - 2.0**-20),
    ]


def _log2(x: float) -> str:
    return "0" if x == 0 else f"2^{math.log2(x):.1f}"


def soundness_table(circuits: list[Valid] | None = None) -> str:
    """Markdown table of :func:`~kaires_fl.arith.flp.soundness_bound` for ``circuits``
    (default :func:`doc_circuits`) at the default number of proofs — the table of
    ``docs/proofs.md``, which a test compares with this output."""
    rows = [
        "| circuit | MEAS_LEN | calls / P | JOINT_RAND_LEN | δ (offline) | ε (online) "
        "| proofs | bound, q = 2^64 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for valid in circuits if circuits is not None else doc_circuits():
        flp = FlpBBCGGI19(valid)
        b = soundness_bound(valid, flp.proofs)
        calls = ", ".join(f"{lay.calls} / {lay.P}" for lay in flp.layouts)
        rows.append(
            f"| `{valid!r}` | {valid.MEAS_LEN} | {calls} | {valid.JOINT_RAND_LEN} "
            f"| {_log2(b.joint_rand_error)} | {_log2(b.query_error)} | {b.proofs} "
            f"| {_log2(b.error)} |"
        )
    return "\n".join(rows) + "\n"
