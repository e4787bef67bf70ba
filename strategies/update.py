"""The model-update statistic of :class:`~kaires_fl.strategies.KairesFedAvg`.

One Flower round of KairesFedAvg is one Kaires job whose statistic is ``"model_update"``:
each provider submits ONE fixed-point measurement, its weighted update and its weight

    (v, w),   w = min(n, W) / W ∈ [0, 1],   v = w · clip(Δ / C, 1),

where Δ is its flattened model update (trained − global parameters), C the clipping norm,
n its number of training examples and W the weight cap, fixed by the consumer's
configuration and recorded in the job (C, W public; Δ, n, w and v private). The validity
circuit is :class:`WeightedBoundedL2Vec`: every bit is a bit, w ∈ [0, 1 − 2^-f] and
**‖v‖₂ ≤ w**, proven on shares. The aggregators sum the accepted measurements; the
consumer (the ServerApp) gets (C·Σ v, Σ w) from the aggregate itself and sets
``global + C·Σ v / Σ w``. No weight claimed in a message is trusted: a lying client can
at most give itself weight 1 (the weight of a client with ≥ W examples) and move the
average by at most C·1/Σ w, and the new global model moves by at most C in total
(‖Σ v‖ ≤ Σ w).

Importing this module registers the kind in :data:`kaires_fl.statistics.KINDS`, so every
party that rebuilds a job's statistic from the ledger (``from_params``) finds it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from kaires_fl import statistics as _stats
from kaires_fl.arith import circuits, flp, pine
from kaires_fl.arith.field import Field64
from kaires_fl.errors import ConfigError, EncodingError

#: The most fractional bits of the fixed-point update (quantisation step C·2^-frac_bits):
#: ``ModelUpdateStats`` and ``KairesFedAvg`` use :func:`auto_frac_bits`, the most Field64
#: allows for the model size, at most this (20 up to 2^22 − 1 parameters).
DEFAULT_FRAC_BITS = 20

_P64 = 2**64 - 2**32 + 1


def auto_frac_bits(length: int, most: int = DEFAULT_FRAC_BITS) -> int:
    """The most fractional bits (≤ ``most``) a BoundedL2Vec of ``length`` entries with
    bound ``1 − 2^-f`` (:func:`proven_bound`: f + 1 bits per entry, a 2f-bit norm slack)
    can use in Field64 without wrapping."""
    for f in range(most, 0, -1):
        if length * 4 ** (f + 1) + 2 ** (2 * f) < _P64:
            return f
    return 1


def proven_bound(frac_bits: int) -> float:
    """The norm bound the circuit proves: ``1 − 2^-frac_bits`` (exact in float64).

    With bound 1 an entry a ∈ [−2^f, 2^f] is offset-encoded in [0, 2^(f+1)], which needs
    f + 2 bits for the single value 2^(f+1); with bound 1 − 2^-f it lies in
    [0, 2^(f+1) − 2] and f + 1 bits suffice: the measurement (and every share, proof,
    hash and verification of it) is one bit per entry shorter, at the same fixed-point
    step, and the proven norm is still ≤ 1.
    """
    return 1.0 - 2.0 ** -int(frac_bits)


def _l2_norm(v: np.ndarray) -> float:
    """‖v‖₂ of a 1-D float64 vector, single-threaded (``np.linalg.norm`` goes through BLAS,
    whose thread pool costs milliseconds per call on a loaded machine)."""
    return math.sqrt(float(np.einsum("i,i->", v, v)))


def _bits_of(values: np.ndarray, bits: int) -> np.ndarray:
    """Little-endian bits of non-negative ints: ``(...)`` → ``(..., bits)`` uint64."""
    v = np.asarray(values, dtype=np.uint64)
    return (v[..., None] >> np.arange(bits, dtype=np.uint64)) & np.uint64(1)


def _encode_weighted(circuit: Any, measurement: Any) -> tuple[np.ndarray, np.ndarray]:
    """A weighted measurement ``(..., OUTPUT_LEN)`` reals (v, w, the flags, c_j = w·t_j) of
    :class:`WeightedBoundedL2Vec` or :class:`WeightedL2BoundPine` → (a, tail): the entries
    a = round(v·2^f) (int64) and the bits that follow them in both encodings: ω (f bits),
    the slack ω² − ‖a‖² (``norm_bits``), the flags, each c_j and each ω − c_j (f bits).

    Raises ``EncodingError`` (as :meth:`WeightedBoundedL2Vec.encode`) for a wrong shape, a
    non-finite value, w outside [0, (2^f − 1)/2^f], ‖a‖ > ω, a flag not 0 or 1, or a
    metric value outside [0, w].
    """
    m = np.asarray(measurement, dtype=np.float64)
    L, f, top = circuit.length, circuit.frac_bits, circuit.max_weight
    if m.shape[-1:] != (circuit.OUTPUT_LEN,) or not np.all(np.isfinite(m)):
        raise EncodingError(
            f"{type(circuit).__name__} measurement must be finite reals of shape "
            f"(..., {circuit.OUTPUT_LEN}) (the vector, the weight, {circuit.flags} flags, "
            f"{circuit.metrics} weighted metrics)"
        )
    lead = m.shape[:-1]
    scale = 2.0**f
    # range checks on the rounded floats, before the int64 casts: a finite value beyond
    # 2^63 would cast to −2^63, whose |·| and square wrap in int64 and pass the checks
    omega_r = np.round(m[..., L] * scale)
    if np.any(omega_r < 0) or np.any(omega_r > top):
        raise EncodingError(f"the weight must be in [0, {top / scale}]")
    omega = omega_r.astype(np.int64)
    a_r = np.round(m[..., :L] * scale)
    if np.any(np.abs(a_r) > top):
        raise EncodingError("an entry exceeds the weight; scale the vector down first")
    a = a_r.astype(np.int64)
    if L * top * top < 2**62:  # Σ a² ≤ L·top² fits int64: no object arithmetic
        sq = np.sum(a * a, axis=-1).astype(object)
    else:
        sq = np.sum(a.astype(object) ** 2, axis=-1)
    w2 = omega.astype(object) ** 2
    if np.any(sq > w2):
        raise EncodingError(
            "the L2 norm of the vector exceeds its weight after rounding to "
            f"{f} fractional bits; scale the vector down first"
        )
    flags = m[..., L + 1 : L + 1 + circuit.flags]
    if np.any((flags != 0) & (flags != 1)):
        raise EncodingError("a flag must be 0 or 1")
    c_r = np.round(m[..., L + 1 + circuit.flags :] * scale)
    if np.any(c_r < 0) or np.any(c_r > omega[..., None]):
        raise EncodingError("a weighted metric must be in [0, w] (w·t with t in [0, 1])")
    c = c_r.astype(np.int64)
    parts = [
        _bits_of(omega.astype(np.uint64), f),
        _bits_of(np.asarray(w2 - sq, dtype=np.uint64), circuit.norm_bits),
        flags.astype(np.uint64),
    ]
    if circuit.metrics:
        parts.append(_bits_of(c.astype(np.uint64), f).reshape(*lead, -1))
        parts.append(_bits_of((omega[..., None] - c).astype(np.uint64), f).reshape(*lead, -1))
    return a, np.concatenate(parts, axis=-1)


class WeightedBoundedL2Vec(circuits._BitsCircuit):
    """A fixed-point weight w ∈ [0, 1 − 2^-f] and vector v with ‖v‖₂ ≤ w (``f`` =
    ``frac_bits``).

    Entries a_i = round(v_i·2^f) are offset-encoded as e_i = a_i + A (A = 2^f − 1,
    f + 1 bits each, the layout of :class:`~kaires_fl.arith.circuits.BoundedL2Vec` with
    bound ``proven_bound(f)``); the weight ω = round(w·2^f) takes f bits; the slack
    s = ω² − Σ a_i² takes the bits of (2^f − 1)² (2f for f ≥ 2). Measurement: entry bits,
    weight bits, slack bits (each integer least significant bit first).

    Checks (outputs of ``eval``, zero iff valid): every bit is a bit (weighed by one
    joint-randomness element per gadget call, as BoundedL2Vec), and Σ a_i² + s − ω² = 0 —
    one ParallelSum(Mul) over the L + 1 pairs (a_i, a_i) and (ω, −ω). Since
    L·4^(f+1) + 2^(2f) < p and ω² < p (checked), the equation holds over the integers, so
    Σ a_i² ≤ ω². Output: (e, ω), so the aggregate carries Σ v and Σ w; ``decode`` returns
    them as one float64 vector (Σ v then Σ w).

    Optional trailing coordinates (summed like v and w): ``flags`` bits (0 or 1 each, e.g.
    "this update was clipped"; the bit check proves them bits) and ``metrics`` weighted
    fixed-point values c_j ∈ [0, ω] (f bits each, plus f slack bits d_j with the linear
    check ω − c_j − d_j = 0, one output each): a provider's train metric t_j ∈ [0, 1]
    (normalised by declared bounds) enters as c_j = round(w·t_j·2^f), so Σ c / Σ w is the
    weighted average, and no provider moves it by more than its own weight allows.

    Pre: ``length ≥ 1``, ``frac_bits ≥ 1``, ``flags, metrics ≥ 0``. Post:
    ``MEAS_LEN = L·(f+1) + f + norm_bits + flags + 2·metrics·f``,
    ``OUTPUT_LEN = L + 1 + flags + metrics``, ``EVAL_OUTPUT_LEN = 2 + metrics``.
    """

    def __init__(
        self,
        length: int,
        frac_bits: int,
        field: Any = Field64,
        flags: int = 0,
        metrics: int = 0,
    ) -> None:
        if int(length) < 1 or int(frac_bits) < 1 or int(flags) < 0 or int(metrics) < 0:
            raise ConfigError(
                "WeightedBoundedL2Vec needs length ≥ 1, frac_bits ≥ 1, flags ≥ 0, metrics ≥ 0"
            )
        self.field = field
        self.length = L = int(length)
        self.frac_bits = f = int(frac_bits)
        self.bound = proven_bound(f)
        self.offset = (1 << f) - 1  # A: the largest |a_i| and the largest ω
        self.max_weight = self.offset
        self.entry_bits = (2 * self.offset).bit_length()  # f + 1
        self.weight_bits = f
        self.norm_bits = (self.offset**2).bit_length()  # slack s ≤ ω² ≤ A²
        if L * 4**self.entry_bits + 2**self.norm_bits >= field.MODULUS:
            raise ConfigError(
                f"WeightedBoundedL2Vec(length={L}, frac_bits={f}) could wrap "
                f"{field.__name__}: lower frac_bits or length"
            )
        self._weights_at = L * self.entry_bits
        self._slack_at = self._weights_at + self.weight_bits
        self.flags = k_f = int(flags)
        self.metrics = k_m = int(metrics)
        self._flags_at = self._slack_at + self.norm_bits
        self._metrics_at = self._flags_at + k_f
        self._mslack_at = self._metrics_at + k_m * f
        self.n_bits = n_bits = self._mslack_at + k_m * f
        self.chunk_length = circuits.best_chunk_length(n_bits)
        self.norm_chunk_length = circuits.best_chunk_length(L + 1)
        self.MEAS_LEN = n_bits
        self.OUTPUT_LEN = L + 1 + k_f + k_m
        self.EVAL_OUTPUT_LEN = 2 + k_m
        self.GADGETS = [
            flp.ParallelSum(flp.Mul(), self.chunk_length),
            flp.ParallelSum(flp.Mul(), self.norm_chunk_length),
        ]
        self.GADGET_CALLS = [
            math.ceil(n_bits / self.chunk_length),
            math.ceil((L + 1) / self.norm_chunk_length),
        ]
        # one joint-randomness element per range-check call (circuits.call_weights)
        self.JOINT_RAND_LEN = self.GADGET_CALLS[0]
        self._pairs = n_bits
        self.check_layout()
        self._pow2e = field.elements([1 << k for k in range(self.entry_bits)])
        self._pow2w = field.elements([1 << k for k in range(self.weight_bits)])
        self._pow2n = field.elements([1 << k for k in range(self.norm_bits)])

    def __repr__(self) -> str:
        extra = ""
        if self.flags or self.metrics:
            extra = f", flags={self.flags}, metrics={self.metrics}"
        return f"WeightedBoundedL2Vec(length={self.length}, frac_bits={self.frac_bits}{extra})"

    def _extras(self, meas: np.ndarray) -> np.ndarray:
        """The flag bits and metric values c_j as ``(..., flags + metrics)`` elements."""
        F = self.field
        meas = np.asarray(meas)
        flags = meas[..., self._flags_at : self._metrics_at]
        if not self.metrics:
            return flags
        c = flp.dot_groups(F, meas, self._pow2w, self.metrics, start=self._metrics_at)
        return np.concatenate([flags, c], axis=-1)

    def _metric_checks(self, meas: np.ndarray, omega: np.ndarray) -> np.ndarray:
        """ω − c_j − d_j per metric, ``(..., metrics)`` (zero iff c_j ≤ ω, given the bits)."""
        F = self.field
        c = flp.dot_groups(F, meas, self._pow2w, self.metrics, start=self._metrics_at)
        d = flp.dot_groups(F, meas, self._pow2w, self.metrics, start=self._mslack_at)
        return F.sub(F.sub(np.broadcast_to(omega, c.shape), c), d)

    def _entries(self, meas: np.ndarray) -> np.ndarray:
        return flp.dot_groups(self.field, np.asarray(meas), self._pow2e, self.length)

    def _weight(self, meas: np.ndarray) -> np.ndarray:
        return flp.dot_groups(self.field, np.asarray(meas), self._pow2w, 1, start=self._weights_at)

    def _norm_terms(
        self, meas: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(a_i, ω, −ω, s): what the norm check needs, independent of the randomness."""
        F = self.field
        centred = F.sub(self._entries(meas), F.elements(self.offset))
        omega = self._weight(meas)
        slack = flp.dot_groups(F, meas, self._pow2n, 1, start=self._slack_at)[:, 0]
        return centred, omega, F.neg(omega), slack

    def _eval_pre(
        self,
        meas: np.ndarray,
        pre: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
        joint_rand: np.ndarray,
        gadgets: list[flp.GadgetCall],
    ) -> np.ndarray:
        F = self.field
        L = self.length
        centred, omega, neg_omega, slack = pre
        bits, _ = self._range_pairs(gadgets[0], meas, joint_rand, self.n_bits)
        range_check = F.sum(gadgets[0].call_pairs(bits), axis=-1)
        norm_pairs = gadgets[1].pairs(L + 1, self.norm_chunk_length)
        norm_pairs.fill(0, L, centred, centred)
        norm_pairs.fill(L, 1, omega, neg_omega)
        norm = F.sum(gadgets[1].call_pairs(norm_pairs), axis=-1)
        out = np.stack([range_check, F.add(norm, slack)], axis=-1)
        if self.metrics:
            out = np.concatenate([out, self._metric_checks(meas, omega)], axis=-1)
        return out

    def eval(
        self, meas: np.ndarray, joint_rand: np.ndarray, gadgets: list[flp.GadgetCall]
    ) -> np.ndarray:
        return self._eval_pre(meas, self._norm_terms(meas), joint_rand, gadgets)

    def eval_reps(
        self,
        meas: np.ndarray,
        joint_rands: list[np.ndarray],
        gadget_lists: list[list[flp.GadgetCall]],
    ) -> list[np.ndarray]:
        """``eval`` per proof repetition, the entries, weight and slack decoded once."""
        pre = self._norm_terms(meas)
        return [
            self._eval_pre(meas, pre, jr, g)
            for jr, g in zip(joint_rands, gadget_lists, strict=True)
        ]

    def max_measurements(self) -> int:
        return (self.field.MODULUS - 1) // (2 * self.offset)

    def encode(self, measurement: Any) -> np.ndarray:
        """``(..., OUTPUT_LEN)`` reals (v, w, the flags, then c_j = w·t_j) →
        ``(..., MEAS_LEN)`` elements.

        Raises
        ------
        EncodingError
            if w is not in [0, 1 − 2^-f] after rounding, or ‖v‖ > w after rounding (scale
            v down first: :meth:`ModelUpdateStats.vector` does), a flag is not 0 or 1, or
            a metric value is not in [0, w].
        """
        a, tail = _encode_weighted(self, measurement)
        ebits = _bits_of((a + self.offset).astype(np.uint64), self.entry_bits)
        return self.field.elements(np.concatenate([ebits.reshape(*a.shape[:-1], -1), tail], -1))

    def truncate(self, meas: np.ndarray) -> np.ndarray:
        meas = np.asarray(meas)
        parts = [self._entries(meas), self._weight(meas)]
        if self.flags or self.metrics:
            parts.append(self._extras(meas))
        return np.concatenate(parts, axis=-1)

    def decode(self, output: np.ndarray, num_measurements: int) -> np.ndarray:
        """(Σ v, Σ w, Σ flags, Σ c) as one float64 vector of length ``OUTPUT_LEN`` (the
        flag sums are counts, not scaled)."""
        ints = np.asarray(self.field.to_ints(output), dtype=object)
        ints[: self.length] -= num_measurements * self.offset
        out = (ints / 2.0**self.frac_bits).astype(np.float64)
        flags = slice(self.length + 1, self.length + 1 + self.flags)
        out[flags] = np.asarray(ints[flags], dtype=np.float64)
        return out


class WeightedL2BoundPine(pine.PineNormCircuit):
    """:class:`WeightedBoundedL2Vec`'s statement — w ∈ [0, 1 − 2^-f], ‖v‖₂ ≤ w, flags,
    weighted metrics in [0, w] — with the norm proven PINE-style
    (:mod:`kaires_fl.arith.pine`): the entries travel as d signed field elements instead of
    d·(f + 1) bits.

    Measurement: a_i = round(v_i·2^f) (d field elements), then the bits of ω = round(w·2^f)
    (f), of the slack s = ω² − Σ a_i² (bitlen((2^f − 1)²)), the flags, the metric values
    c_j (f each) and their slacks ω − c_j (f each). Witness (committed between the two
    joint-randomness stages, sealed at the head of the proof parts): the bits of y_k + β
    for the r wraparound checks. Outputs (combined by query randomness): the bit checks
    weighted by stage-2 randomness, Σ a_i² − ω² + s, the r wraparound checks, ω − c_j − d_j
    per metric.

    Soundness: the wraparound checks bound ‖ā‖² < T = p − 2^norm_bits except with
    probability ``wraparound().error``; then Σ ā_i² + s = ω² holds over the integers, so
    ‖ā‖ ≤ ω, and in particular every |ā_i| ≤ ω < 2^f.
    Output: (a, ω, flags, c); ``decode`` returns (Σ v, Σ w, Σ flags, Σ c) as float64, as
    :meth:`WeightedBoundedL2Vec.decode`.
    """

    _extra_pairs = 1  # (ω, −ω)

    def __init__(
        self,
        length: int,
        frac_bits: int,
        field: Any = Field64,
        flags: int = 0,
        metrics: int = 0,
        checks: int | None = None,
    ) -> None:
        if int(length) < 1 or int(frac_bits) < 1 or int(flags) < 0 or int(metrics) < 0:
            raise ConfigError(
                "WeightedL2BoundPine needs length ≥ 1, frac_bits ≥ 1, flags ≥ 0, metrics ≥ 0"
            )
        self.frac_bits = f = int(frac_bits)
        self.bound = proven_bound(f)
        self.offset = 0  # entries are signed field elements (no offset encoding)
        self.max_weight = (1 << f) - 1
        self.weight_bits = f
        self.norm_bits = (self.max_weight**2).bit_length()
        self.flags = k_f = int(flags)
        self.metrics = k_m = int(metrics)
        self._extra_outputs = k_m
        L = int(length)
        self._weights_at = L
        self._slack_at = L + f
        self._flags_at = self._slack_at + self.norm_bits
        self._metrics_at = self._flags_at + k_f
        self._mslack_at = self._metrics_at + k_m * f
        tail = f + self.norm_bits + k_f + 2 * k_m * f
        self._setup(L, self.max_weight, tail, self.norm_bits, field, checks, None)
        self.OUTPUT_LEN = L + 1 + k_f + k_m
        self._pow2f = field.elements([1 << k for k in range(f)])
        self._pow2n = field.elements([1 << k for k in range(self.norm_bits)])

    def __repr__(self) -> str:
        extra = ""
        if self.flags or self.metrics:
            extra = f", flags={self.flags}, metrics={self.metrics}"
        return (
            f"WeightedL2BoundPine(length={self.length}, frac_bits={self.frac_bits}{extra}, "
            f"checks={self.checks})"
        )

    def _weight(self, meas: np.ndarray) -> np.ndarray:
        return flp.dot_groups(self.field, np.asarray(meas), self._pow2f, 1, start=self._weights_at)

    def _fill_extra(self, pairs: Any, meas: np.ndarray) -> None:
        omega = self._weight(meas)
        pairs.fill(self.length, 1, omega, self.field.neg(omega))

    def _norm_check(self, meas: np.ndarray, norm: np.ndarray) -> np.ndarray:
        F = self.field
        s = flp.dot_groups(F, meas, self._pow2n, 1, start=self._slack_at)[:, 0]
        return F.add(norm, s)

    def _extra_checks(self, meas: np.ndarray) -> np.ndarray:
        """ω − c_j − d_j per metric (zero iff c_j ≤ ω, given the bits)."""
        F = self.field
        if not self.metrics:
            return np.zeros((meas.shape[0], 0), dtype=np.uint64)
        omega = self._weight(meas)
        c = flp.dot_groups(F, meas, self._pow2f, self.metrics, start=self._metrics_at)
        d = flp.dot_groups(F, meas, self._pow2f, self.metrics, start=self._mslack_at)
        return F.sub(F.sub(np.broadcast_to(omega, c.shape), c), d)

    def encode(self, measurement: Any) -> np.ndarray:
        """``(..., OUTPUT_LEN)`` reals (v, w, the flags, then c_j = w·t_j) →
        ``(..., MEAS_LEN)`` elements (raises ``EncodingError`` as
        :meth:`WeightedBoundedL2Vec.encode`)."""
        a, tail = _encode_weighted(self, measurement)
        return np.concatenate([self._entries_of(a), self.field.elements(tail)], axis=-1)

    def truncate(self, meas: np.ndarray) -> np.ndarray:
        meas = np.asarray(meas)
        flat = meas.reshape(-1, meas.shape[-1])
        parts = [
            flat[:, : self.length],
            self._weight(flat),
            flat[:, self._flags_at : self._metrics_at],
        ]
        if self.metrics:
            F = self.field
            parts.append(flp.dot_groups(F, flat, self._pow2f, self.metrics, start=self._metrics_at))
        return np.concatenate(parts, axis=-1).reshape(*meas.shape[:-1], self.OUTPUT_LEN)

    def decode(self, output: np.ndarray, num_measurements: int) -> np.ndarray:
        """(Σ v, Σ w, Σ flags, Σ c) as one float64 vector of length ``OUTPUT_LEN`` (the
        flag sums are counts, not scaled)."""
        ints = self.signed(np.asarray(output))
        out = np.asarray(ints / 2.0**self.frac_bits, dtype=np.float64)
        flags = slice(self.length + 1, self.length + 1 + self.flags)
        out[flags] = np.asarray(ints[flags], dtype=np.float64)
        return out


#: The norm proofs ``ModelUpdateStats`` can use: ``"pine"`` (default,
#: :class:`WeightedL2BoundPine`, ≈ 1 element per parameter) or ``"bits"``
#: (:class:`WeightedBoundedL2Vec`, f + 1 bits per parameter).
NORM_PROOFS = ("pine", "bits")


class ModelUpdateStats(_stats.Statistic):
    """A clipped, weighted model update and its weight, proven ‖v‖₂ ≤ w ≤ 1 (module
    docstring).

    Parameters
    ----------
    length:
        Number of model parameters (the flattened update's length).
    clip_norm:
        C: updates are scaled down to ‖Δ‖₂ ≤ C before encoding.
    weight_cap:
        W: a provider's weight is min(num-examples, W) / W ∈ [0, 1]; set by the consumer's
        configuration, never derived from claims.
    frac_bits:
        Fixed-point fractional bits of v and w (default: 20 with ``norm_proof="pine"``;
        with ``"bits"`` the most the field allows for ``length`` squared entries).
    max_measurements:
        Most providers one aggregate may sum (checked against the field).
    metrics:
        Declared train metrics ``[(name, low, high), ...]``: each provider's value of
        ``name`` (from its train reply's MetricRecord) is clipped to [low, high],
        normalised to t ∈ [0, 1] and submitted as the weighted coordinate w·t, proven in
        [0, w]; the consumer reads the weighted average ``low + (high − low)·Σ w·t / Σ w``.
    norm_proof:
        ``"pine"`` (default): :class:`WeightedL2BoundPine`, the entries as d field elements
        and the norm proven by wraparound checks (≈ 1.03 elements per parameter at 10^6
        parameters, 1.22 at 10^5); ``"bits"``: :class:`WeightedBoundedL2Vec`, every entry
        as f + 1 bits (the earlier circuit, kept for comparison).

    Two flag bits ride along in every measurement: "my update was clipped" (‖Δ‖ > C) and
    "my weight was capped" (n > W); the aggregate carries only their counts.
    """

    kind = "model_update"
    #: The flag bits of every measurement, in order.
    FLAGS = ("clipped", "capped")

    def __init__(
        self,
        length: int,
        clip_norm: float = 10.0,
        weight_cap: float = 1.0,
        frac_bits: int | None = None,
        max_measurements: int = _stats.DEFAULT_MAX_PROVIDERS,
        metrics: Sequence[Sequence[Any]] = (),
        norm_proof: str = "pine",
    ) -> None:
        self.metrics = _check_metrics(metrics)
        if norm_proof not in NORM_PROOFS:
            raise ConfigError(f"norm_proof must be one of {NORM_PROOFS}, got {norm_proof!r}")
        self.norm_proof = norm_proof
        if int(length) < 1:
            raise ConfigError(f"model_update needs length ≥ 1 (parameters), got {length}")
        if not (float(clip_norm) > 0 and math.isfinite(float(clip_norm))):
            raise ConfigError(f"clip_norm must be a positive finite number, got {clip_norm}")
        if not (float(weight_cap) > 0 and math.isfinite(float(weight_cap))):
            raise ConfigError(f"weight_cap must be a positive finite number, got {weight_cap}")
        if frac_bits is None:
            frac_bits = auto_frac_bits(int(length)) if norm_proof == "bits" else DEFAULT_FRAC_BITS
        if int(frac_bits) < 1:
            raise ConfigError(f"model_update needs frac_bits ≥ 1, got {frac_bits}")
        self.granularity = "provider"
        self.length = int(length)
        self.clip_norm = float(clip_norm)
        self.weight_cap = float(weight_cap)
        self.frac_bits = int(frac_bits)
        self.max_measurements = int(max_measurements)
        self.field = Field64
        if self.circuit.max_measurements() < self.max_measurements:
            raise ConfigError(
                f"model_update: {self.max_measurements} providers could wrap the field; "
                "lower max_measurements or frac_bits"
            )

    def params(self) -> dict[str, Any]:
        return {
            "length": self.length,
            "clip_norm": self.clip_norm,
            "weight_cap": self.weight_cap,
            "frac_bits": self.frac_bits,
            "max_measurements": self.max_measurements,
            **({"metrics": [list(m) for m in self.metrics]} if self.metrics else {}),
            "norm_proof": self.norm_proof,
        }

    def _build_circuit(self, field: Any) -> Any:
        if self.norm_proof == "pine":
            return WeightedL2BoundPine(
                self.length,
                self.frac_bits,
                field=field,
                flags=len(self.FLAGS),
                metrics=len(self.metrics),
            )
        return WeightedBoundedL2Vec(
            self.length,
            self.frac_bits,
            field=field,
            flags=len(self.FLAGS),
            metrics=len(self.metrics),
        )

    def sensitivity(self) -> dict[str, Any]:
        """What the norm proof bounds when ONE provider's update is replaced by any other
        valid one (integer units, 2^−f of v = the clipped update over ``clip_norm``):
        ‖Δa‖₂ ≤ 2·M (‖a‖ ≤ ω ≤ M = 2^f − 1 for both), |Δω| ≤ M, each flag ≤ 1, each
        weighted metric ≤ M; L1 from L2 by Cauchy–Schwarz on the L entries."""
        m = float((1 << self.frac_bits) - 1)
        k_f, k_m = len(self.FLAGS), len(self.metrics)
        l2 = math.sqrt((2 * m) ** 2 + m * m + k_f + k_m * m * m)
        l1 = 2 * m * math.sqrt(self.length) + m + k_f + k_m * m
        return {"l2": l2, "l1": l1, "unit": "provider", "scale": self.noise_scale()}

    def noise_scale(self) -> float:
        """One integer unit is 2^−f of v (the update divided by ``clip_norm``)."""
        return 2.0**-self.frac_bits

    def noise_blocks(self) -> list[tuple[float, ...]]:
        """Noise blocks ``(start, stop, l2, l1, scale)`` of :meth:`sensitivity`'s parts:
        the update a (L coordinates, ‖Δa‖₂ ≤ 2M), the weight ω (M), the flag counts (1
        each) and the weighted metrics (M each). Scales σ_j² ∝ l2_j/√(L_j·w_j) minimise
        the summed error Σ w_j·L_j·σ_j² at a fixed Gaussian privacy cost Σ l2_j²/σ_j²: w = 1
        for a and the metrics (what the averaged model and metrics divide by ω sees), w =
        M² for the flags (whole counts, not 2^−f units). ω: with ``weight_cap`` 1 every
        weight is 1 and the consumer divides by the public accepted count (KairesFedAvg
        with ``num_examples_cap=1``), so ω's noise is unused: w = 1, and ω and the flags
        take a few percent of the budget instead of the 25 % (√5M against 2M) of one σ for
        all; otherwise ω scales the whole mean and keeps a's σ, as with one σ."""
        m = float((1 << self.frac_bits) - 1)
        L, k_f, k_m = self.length, len(self.FLAGS), len(self.metrics)
        a_scale = math.sqrt(2 * m / math.sqrt(L))
        out: list[tuple[float, ...]] = [
            (0, L, 2 * m, 2 * m * math.sqrt(L), a_scale),
            (L, L + 1, m, m, math.sqrt(m) if self.weight_cap == 1 else a_scale),
        ]
        if k_f:
            out.append((L + 1, L + 1 + k_f, math.sqrt(k_f), float(k_f), math.sqrt(1 / m)))
        if k_m:
            a = L + 1 + k_f
            out.append((a, a + k_m, m * math.sqrt(k_m), m * k_m, math.sqrt(m)))
        return out

    def clipped(self, update: Any) -> bool:
        """Whether ``update`` is scaled down to the clipping norm (‖Δ‖₂ > C)."""
        d = np.asarray(update, dtype=np.float64).reshape(-1)
        return bool(_l2_norm(d) > self.clip_norm)

    def capped(self, num_examples: float) -> bool:
        """Whether ``num_examples`` exceeds the weight cap W (the provider counts as W)."""
        return float(num_examples) > self.weight_cap

    def metric_coordinates(self, w: float, values: Mapping[str, Any] | None) -> np.ndarray:
        """c_j = w·t_j (rounded down to the fixed-point step, so c_j ≤ w), t_j the declared
        metric ``name`` clipped to [low, high] and normalised to [0, 1].

        Raises
        ------
        ConfigError
            if a declared metric is missing from ``values`` or not a finite number.
        """
        out = np.zeros(len(self.metrics))
        scale = 2.0**self.frac_bits
        for j, (name, lo, hi) in enumerate(self.metrics):
            v = None if values is None else values.get(name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise ConfigError(
                    f"the train reply has no finite numeric metric {name!r}, declared in the "
                    "strategy's train_metrics; add it to the handler's MetricRecord"
                )
            t = min(max((float(v) - lo) / (hi - lo), 0.0), 1.0)
            out[j] = math.floor(w * t * scale) / scale
        return out

    def weight(self, num_examples: float) -> float:
        """w = min(n, W) / W rounded down to the fixed-point step 2^-f and at most
        1 − 2^-f (the circuit's largest weight): the provider's own weight.

        Raises
        ------
        ConfigError
            if ``num_examples`` is negative or not finite.
        """
        n = float(num_examples)
        if not (n >= 0 and math.isfinite(n)):
            raise ConfigError(f"num-examples must be a finite number ≥ 0, got {num_examples}")
        scale = 2.0**self.frac_bits
        omega = min(math.floor(min(n, self.weight_cap) / self.weight_cap * scale), scale - 1)
        return omega / scale

    def vector(self, update: Any, num_examples: float) -> np.ndarray:
        """v = w · clip(Δ / C, 1), shrunk so that rounding cannot push ‖v‖ over w."""
        d = np.asarray(update, dtype=np.float64).reshape(-1)
        if d.shape[0] != self.length or not np.all(np.isfinite(d)):
            raise EncodingError(
                f"the update must hold {self.length} finite numbers, got {d.shape[0]}"
            )
        w = self.weight(num_examples)
        u = d / self.clip_norm
        # Rounding moves each entry by ≤ 2^-(f+1), so the norm by ≤ √length·2^-(f+1).
        room = w - math.sqrt(self.length) * 2.0 ** -(self.frac_bits + 1) - 1e-12
        norm = _l2_norm(u)
        if room <= 0:
            return np.zeros_like(u)
        if w * norm > room:
            return u * (room / norm)
        return w * u

    def measurement(
        self, update: Any, num_examples: float, metrics: Mapping[str, Any] | None = None
    ) -> np.ndarray:
        """The reals the circuit encodes: v, w, the flags (clipped, capped), then the
        weighted metrics w·t_j (length ``circuit.OUTPUT_LEN``)."""
        w = self.weight(num_examples)
        flags = [float(self.clipped(update)), float(self.capped(num_examples))]
        return np.concatenate(
            [
                self.vector(update, num_examples),
                [w],
                flags,
                self.metric_coordinates(w, metrics) if self.metrics else [],
            ]
        )

    def measurements(
        self, X: Any, y: Any = None, metrics: Mapping[str, Any] | None = None
    ) -> np.ndarray:
        """``X``: the flattened update Δ; ``y``: num-examples (default W); ``metrics``:
        the train reply's metrics (the declared ones are encoded)."""
        n = self.weight_cap if y is None else float(np.asarray(y).reshape(-1)[0])
        return np.asarray(self.circuit.encode(self.measurement(X, n, metrics)[None, :]))

    def decode(self, aggregate: np.ndarray, num_measurements: int) -> dict[str, Any]:
        """``{"sum": C·Σ v (float64, length ``length``), "weight": Σ w, "clipped": how many
        updates were clipped, "capped": how many weights capped, "metrics": {name: weighted
        average}}`` (a metric average is NaN when Σ w = 0)."""
        self._check_count(num_measurements)
        s = self.circuit.decode(np.asarray(aggregate), num_measurements)
        L = self.length
        total_w = float(s[L])
        flags = {name: round(float(s[L + 1 + k])) for k, name in enumerate(self.FLAGS)}
        sums = s[L + 1 + len(self.FLAGS) :]
        averages = {
            name: (lo + (hi - lo) * float(c) / total_w if total_w > 0 else float("nan"))
            for (name, lo, hi), c in zip(self.metrics, sums, strict=True)
        }
        return {"sum": s[:L] * self.clip_norm, "weight": total_w, **flags, "metrics": averages}


def _check_metrics(metrics: Sequence[Sequence[Any]]) -> tuple[tuple[str, float, float], ...]:
    """Declared train metrics as ``((name, low, high), ...)``.

    Raises
    ------
    ConfigError
        unless each is a distinct name with finite bounds low < high.
    """
    out: list[tuple[str, float, float]] = []
    for m in metrics or ():
        try:
            name, lo, hi = m
            lo_f, hi_f = float(lo), float(hi)
        except (TypeError, ValueError):
            raise ConfigError(
                f"a train metric is declared as (name, low, high), got {m!r}"
            ) from None
        if not isinstance(name, str) or not name or any(name == o[0] for o in out):
            raise ConfigError(f"train metric names must be distinct non-empty strings: {name!r}")
        if not (math.isfinite(lo_f) and math.isfinite(hi_f) and lo_f < hi_f):
            raise ConfigError(f"train metric {name!r} needs finite bounds low < high")
        out.append((name, lo_f, hi_f))
    return tuple(out)


def _pad(stat: ModelUpdateStats, parts: list[np.ndarray]) -> np.ndarray:
    """A forged measurement's bits padded with zeros to ``MEAS_LEN`` (flags, metrics)."""
    bits = np.concatenate(parts, axis=-1)
    pad = np.zeros((1, stat.circuit.MEAS_LEN - bits.shape[-1]), dtype=np.uint64)
    return np.concatenate([bits, pad], axis=-1)


def _pad_bits(c: WeightedL2BoundPine, parts: list[np.ndarray]) -> np.ndarray:
    """A forged PINE measurement's tail bits padded with zeros to the tail length."""
    bits = np.concatenate(parts, axis=-1)
    pad = np.zeros((1, c.tail_bits - bits.shape[-1]), dtype=np.uint64)
    return np.concatenate([bits, pad], axis=-1)


def over_norm_measurements(stat: ModelUpdateStats) -> np.ndarray:
    """A malicious provider's measurement: the largest weight, every entry at the range
    limit (‖v‖ = √length·w), the slack bits it cannot honestly fill left at zero. Each
    entry passes its range check; the norm check fails, so BFT Prio must reject it (tests,
    robustness demos)."""
    c = stat.circuit
    F = c.field
    if isinstance(c, WeightedL2BoundPine):
        a = c._entries_of(np.full((1, c.length), c.max_weight, dtype=np.int64))
        wbits = np.ones((1, c.weight_bits), dtype=np.uint64)
        return np.concatenate([a, F.elements(_pad_bits(c, [wbits]))], axis=-1)
    e = np.full((1, c.length), 2 * c.offset, dtype=np.uint64)
    ebits = _bits_of(e, c.entry_bits).reshape(1, -1)
    wbits = np.ones((1, c.weight_bits), dtype=np.uint64)
    nbits = np.zeros((1, c.norm_bits), dtype=np.uint64)
    return np.asarray(F.elements(_pad(stat, [ebits, wbits, nbits])))


def underweight_measurements(stat: ModelUpdateStats, update: Any) -> np.ndarray:
    """A malicious provider's measurement: its update at full norm (‖v‖ ≈ 1) with the
    smallest non-zero weight (2^-f), to pull the average by C/Σ w while adding nothing to
    Σ w. Every bit is a bit; Σ a² + s = ω² fails, so BFT Prio must reject it."""
    c = stat.circuit
    u = np.asarray(update, dtype=np.float64).reshape(-1)
    u = u / max(_l2_norm(u), 1e-300) * (proven_bound(c.frac_bits) - 2.0**-c.frac_bits)
    if isinstance(c, WeightedL2BoundPine):
        a = np.clip(np.round(u * 2.0**c.frac_bits), -c.max_weight, c.max_weight)
        wbits = _bits_of(np.array([1], dtype=np.uint64), c.weight_bits)
        return np.concatenate(
            [c._entries_of(a[None, :].astype(np.int64)), c.field.elements(_pad_bits(c, [wbits]))],
            axis=-1,
        )
    a = np.clip(np.round(u * 2.0**c.frac_bits), -c.offset, c.offset).astype(np.int64)
    ebits = _bits_of((a + c.offset).astype(np.uint64)[None, :], c.entry_bits).reshape(1, -1)
    wbits = _bits_of(np.array([1], dtype=np.uint64), c.weight_bits)
    nbits = np.zeros((1, c.norm_bits), dtype=np.uint64)
    return np.asarray(c.field.elements(_pad(stat, [ebits, wbits, nbits])))


def wraparound_measurements(stat: ModelUpdateStats) -> np.ndarray:
    """A malicious provider's measurement against the PINE circuit: four entries 2^-1 mod p
    (centred lift ≈ p/2 each, so the vector moves the sum by ≈ p/2), the largest weight and
    the slack ω² − 1. In the field Σ a² = 4·(1/4) = 1, so every bit is a bit and the norm
    equation holds (declared metrics are 0, valid); only the wraparound checks catch it
    (each passes with probability 1/2). Needs ``norm_proof="pine"`` and length ≥ 4."""
    c = stat.circuit
    if not isinstance(c, WeightedL2BoundPine) or c.length < 4:
        raise ConfigError("wraparound_measurements needs a PINE model_update of length ≥ 4")
    F = c.field
    a = np.zeros((1, c.length), dtype=np.uint64)
    a[0, :4] = (F.MODULUS + 1) // 2
    omega = c.max_weight
    wbits = _bits_of(np.array([omega], dtype=np.uint64), c.weight_bits)
    sbits = _bits_of(np.array([omega**2 - 1], dtype=np.uint64), c.norm_bits)
    zeros = np.zeros((1, c.flags + c.metrics * c.frac_bits), dtype=np.uint64)
    dbits = np.tile(wbits, (1, c.metrics))  # metric c_j = 0, its slack d_j = ω: valid
    tail = np.concatenate([wbits, sbits, zeros, dbits], axis=-1)
    return np.concatenate([F.elements(a), F.elements(tail)], axis=-1)


def inflated_metric_measurements(
    stat: ModelUpdateStats, update: Any, num_examples: float, metrics: Mapping[str, Any]
) -> np.ndarray:
    """A malicious provider's measurement: honest update and weight, but every declared
    metric at the largest value the bits can hold (c_j = 2^f − 1, its slack d_j = 0), to
    pull the metric averages towards their upper bounds with a small weight. The check
    ω − c_j − d_j = 0 fails unless ω = 2^f − 1, so BFT Prio must reject it."""
    c = stat.circuit
    meas = np.array(stat.measurements(update, num_examples, metrics), copy=True)
    k = c.metrics * c.frac_bits
    meas[0, c._metrics_at : c._mslack_at] = c.field.elements(np.ones(k, dtype=np.uint64))
    meas[0, c._mslack_at :] = c.field.elements(np.zeros(k, dtype=np.uint64))
    return meas


_stats.KINDS.setdefault(ModelUpdateStats.kind, ModelUpdateStats)


def flatten(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """All arrays as one float64 vector (in order)."""
    if not arrays:
        return np.zeros(0)
    return np.concatenate([np.asarray(a, dtype=np.float64).reshape(-1) for a in arrays])


def unflatten(vector: np.ndarray, like: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Split ``vector`` into arrays shaped and typed like ``like``."""
    total = sum(int(np.asarray(a).size) for a in like)
    if vector.shape[0] != total:
        raise EncodingError(f"vector of {vector.shape[0]} numbers does not fit {total} parameters")
    out, k = [], 0
    for a in like:
        a = np.asarray(a)
        out.append(vector[k : k + a.size].reshape(a.shape).astype(a.dtype, copy=False))
        k += a.size
    return out


__all__ = [
    "NORM_PROOFS",
    "ModelUpdateStats",
    "WeightedBoundedL2Vec",
    "WeightedL2BoundPine",
    "flatten",
    "inflated_metric_measurements",
    "over_norm_measurements",
    "proven_bound",
    "underweight_measurements",
    "unflatten",
    "wraparound_measurements",
]
