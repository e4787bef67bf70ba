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
from collections.abc import Sequence
from typing import Any

import numpy as np

from kaires_fl import statistics as _stats
from kaires_fl.arith import circuits, flp
from kaires_fl.arith.field import Field64
from kaires_fl.errors import ConfigError, EncodingError

#: Fractional bits of the fixed-point update (quantisation step C·2^-frac_bits).
DEFAULT_FRAC_BITS = 16


def proven_bound(frac_bits: int) -> float:
    """The norm bound the circuit proves: ``1 − 2^-frac_bits`` (exact in float64).

    With bound 1 an entry a ∈ [−2^f, 2^f] is offset-encoded in [0, 2^(f+1)], which needs
    f + 2 bits for the single value 2^(f+1); with bound 1 − 2^-f it lies in
    [0, 2^(f+1) − 2] and f + 1 bits suffice: the measurement (and every share, proof,
    hash and verification of it) is one bit per entry shorter, at the same fixed-point
    step, and the proven norm is still ≤ 1.
    """
    return 1.0 - 2.0 ** -int(frac_bits)


def _bits_of(values: np.ndarray, bits: int) -> np.ndarray:
    """Little-endian bits of non-negative ints: ``(...)`` → ``(..., bits)`` uint64."""
    v = np.asarray(values, dtype=np.uint64)
    return (v[..., None] >> np.arange(bits, dtype=np.uint64)) & np.uint64(1)


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

    Pre: ``length ≥ 1``, ``frac_bits ≥ 1``. Post: ``MEAS_LEN = L·(f+1) + f + norm_bits``,
    ``OUTPUT_LEN = L + 1``.
    """

    def __init__(self, length: int, frac_bits: int, field: Any = Field64) -> None:
        if int(length) < 1 or int(frac_bits) < 1:
            raise ConfigError("WeightedBoundedL2Vec needs length ≥ 1 and frac_bits ≥ 1")
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
        self.n_bits = n_bits = self._slack_at + self.norm_bits
        self.chunk_length = circuits.best_chunk_length(n_bits)
        self.norm_chunk_length = circuits.best_chunk_length(L + 1)
        self.MEAS_LEN = n_bits
        self.OUTPUT_LEN = L + 1
        self.EVAL_OUTPUT_LEN = 2
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
        return f"WeightedBoundedL2Vec(length={self.length}, frac_bits={self.frac_bits})"

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
        return np.stack([range_check, F.add(norm, slack)], axis=-1)

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
        """``(..., L + 1)`` reals (v, then w) → ``(..., MEAS_LEN)`` elements.

        Raises
        ------
        EncodingError
            if w is not in [0, 1 − 2^-f] after rounding, or ‖v‖ > w after rounding (scale
            v down first: :meth:`ModelUpdateStats.vector` does).
        """
        m = np.asarray(measurement, dtype=np.float64)
        L = self.length
        if m.shape[-1:] != (L + 1,) or not np.all(np.isfinite(m)):
            raise EncodingError(
                f"WeightedBoundedL2Vec measurement must be finite reals of shape (..., {L + 1})"
                " (the vector, then the weight)"
            )
        scale = 2.0**self.frac_bits
        omega = np.round(m[..., L] * scale).astype(np.int64)
        if np.any(omega < 0) or np.any(omega > self.max_weight):
            raise EncodingError(f"the weight must be in [0, {self.max_weight / scale}]")
        a = np.round(m[..., :L] * scale).astype(np.int64)
        if np.any(np.abs(a) > self.offset):
            raise EncodingError("an entry exceeds the weight; scale the vector down first")
        sq = np.sum(a.astype(object) ** 2, axis=-1)
        w2 = omega.astype(object) ** 2
        if np.any(sq > w2):
            raise EncodingError(
                "the L2 norm of the vector exceeds its weight after rounding to "
                f"{self.frac_bits} fractional bits; scale the vector down first"
            )
        e = (a + self.offset).astype(np.uint64)
        slack = np.asarray(w2 - sq, dtype=np.uint64)
        ebits = _bits_of(e, self.entry_bits).reshape(*m.shape[:-1], -1)
        wbits = _bits_of(omega.astype(np.uint64), self.weight_bits)
        nbits = _bits_of(slack, self.norm_bits)
        return self.field.elements(np.concatenate([ebits, wbits, nbits], axis=-1))

    def truncate(self, meas: np.ndarray) -> np.ndarray:
        meas = np.asarray(meas)
        return np.concatenate([self._entries(meas), self._weight(meas)], axis=-1)

    def decode(self, output: np.ndarray, num_measurements: int) -> np.ndarray:
        """(Σ v, Σ w) as one float64 vector of length L + 1."""
        ints = np.asarray(self.field.to_ints(output), dtype=object)
        ints[: self.length] -= num_measurements * self.offset
        return (ints / 2.0**self.frac_bits).astype(np.float64)


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
        Fixed-point fractional bits of v and w (the field must hold ``length`` squared
        entries).
    max_measurements:
        Most providers one aggregate may sum (checked against the field).
    """

    kind = "model_update"

    def __init__(
        self,
        length: int,
        clip_norm: float = 10.0,
        weight_cap: float = 1.0,
        frac_bits: int = DEFAULT_FRAC_BITS,
        max_measurements: int = _stats.DEFAULT_MAX_PROVIDERS,
    ) -> None:
        if int(length) < 1:
            raise ConfigError(f"model_update needs length ≥ 1 (parameters), got {length}")
        if not (float(clip_norm) > 0 and math.isfinite(float(clip_norm))):
            raise ConfigError(f"clip_norm must be a positive finite number, got {clip_norm}")
        if not (float(weight_cap) > 0 and math.isfinite(float(weight_cap))):
            raise ConfigError(f"weight_cap must be a positive finite number, got {weight_cap}")
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
        }

    def _build_circuit(self, field: Any) -> Any:
        return WeightedBoundedL2Vec(self.length, self.frac_bits, field=field)

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
        norm = float(np.linalg.norm(u))
        if room <= 0:
            return np.zeros_like(u)
        if w * norm > room:
            return u * (room / norm)
        return w * u

    def measurement(self, update: Any, num_examples: float) -> np.ndarray:
        """The reals (v, w) the circuit encodes (length ``length + 1``)."""
        return np.append(self.vector(update, num_examples), self.weight(num_examples))

    def measurements(self, X: Any, y: Any = None) -> np.ndarray:
        """``X``: the flattened update Δ; ``y``: num-examples (default W)."""
        n = self.weight_cap if y is None else float(np.asarray(y).reshape(-1)[0])
        return np.asarray(self.circuit.encode(self.measurement(X, n)[None, :]))

    def decode(self, aggregate: np.ndarray, num_measurements: int) -> dict[str, Any]:
        """``{"sum": C·Σ v (float64, length ``length``), "weight": Σ w}``."""
        self._check_count(num_measurements)
        s = self.circuit.decode(np.asarray(aggregate), num_measurements)
        return {"sum": s[: self.length] * self.clip_norm, "weight": float(s[self.length])}


def over_norm_measurements(stat: ModelUpdateStats) -> np.ndarray:
    """A malicious provider's measurement: the largest weight, every entry at the range
    limit (‖v‖ = √length·w), the slack bits it cannot honestly fill left at zero. Each
    entry passes its range check; the norm check fails, so BFT Prio must reject it (tests,
    robustness demos)."""
    c = stat.circuit
    F = c.field
    e = np.full((1, c.length), 2 * c.offset, dtype=np.uint64)
    ebits = _bits_of(e, c.entry_bits).reshape(1, -1)
    wbits = np.ones((1, c.weight_bits), dtype=np.uint64)
    nbits = np.zeros((1, c.norm_bits), dtype=np.uint64)
    return np.asarray(F.elements(np.concatenate([ebits, wbits, nbits], axis=-1)))


def underweight_measurements(stat: ModelUpdateStats, update: Any) -> np.ndarray:
    """A malicious provider's measurement: its update at full norm (‖v‖ ≈ 1) with the
    smallest non-zero weight (2^-f), to pull the average by C/Σ w while adding nothing to
    Σ w. Every bit is a bit; Σ a² + s = ω² fails, so BFT Prio must reject it."""
    c = stat.circuit
    u = np.asarray(update, dtype=np.float64).reshape(-1)
    u = u / max(float(np.linalg.norm(u)), 1e-300) * (proven_bound(c.frac_bits) - 2.0**-c.frac_bits)
    a = np.clip(np.round(u * 2.0**c.frac_bits), -c.offset, c.offset).astype(np.int64)
    ebits = _bits_of((a + c.offset).astype(np.uint64)[None, :], c.entry_bits).reshape(1, -1)
    wbits = _bits_of(np.array([1], dtype=np.uint64), c.weight_bits)
    nbits = np.zeros((1, c.norm_bits), dtype=np.uint64)
    return np.asarray(c.field.elements(np.concatenate([ebits, wbits, nbits], axis=-1)))


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
    "ModelUpdateStats",
    "WeightedBoundedL2Vec",
    "flatten",
    "over_norm_measurements",
    "proven_bound",
    "underweight_measurements",
    "unflatten",
]
