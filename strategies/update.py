"""The model-update statistic of :class:`~kaires_fl.strategies.KairesFedAvg`.

One Flower round of KairesFedAvg is one Kaires job whose statistic is ``"model_update"``:
each provider submits ONE fixed-point vector

    v = w · clip(Δ / C, 1),   w = min(n, W) / W,

where Δ is its flattened model update (trained − global parameters), C the clipping norm,
n its number of training examples and W the round's weight cap (all public job parameters
except Δ and n). The validity circuit is :class:`~kaires_fl.arith.circuits.BoundedL2Vec`
with bound ``1 − 2^-frac_bits`` (:func:`proven_bound`), so every accepted submission has
‖v‖₂ ≤ 1: a malicious provider can move the
aggregate by at most C·(its weight share), exactly like the largest honest update. The
aggregators sum the accepted v's; the consumer (the ServerApp) gets ``C·Σ v`` and divides
by ``Σ w`` over the accepted providers (their claimed weights are public, as in FedAvg,
and capped at W).

Importing this module registers the kind in :data:`kaires_fl.statistics.KINDS`, so every
party that rebuilds a job's statistic from the ledger (``from_params``) finds it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from kaires_fl import statistics as _stats
from kaires_fl.arith import circuits
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


class ModelUpdateStats(_stats.Statistic):
    """A clipped, weighted model update proven to have L2 norm ≤ 1 (see module docstring).

    Parameters
    ----------
    length:
        Number of model parameters (the flattened update's length).
    clip_norm:
        C: updates are scaled down to ‖Δ‖₂ ≤ C before encoding.
    weight_cap:
        W: a provider's weight is min(num-examples, W) / W ∈ [0, 1].
    frac_bits:
        Fixed-point fractional bits of v (the field must hold ``length`` squared entries).
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
        return circuits.BoundedL2Vec(
            self.length, self.frac_bits, proven_bound(self.frac_bits), field=field
        )

    def weight(self, num_examples: float) -> float:
        """w = min(n, W) / W: the public weight of a provider with ``num_examples``."""
        n = float(num_examples)
        if not (n >= 0 and math.isfinite(n)):
            raise ConfigError(f"num-examples must be a finite number ≥ 0, got {num_examples}")
        return min(n, self.weight_cap) / self.weight_cap

    def vector(self, update: Any, num_examples: float) -> np.ndarray:
        """v = w · clip(Δ / C, 1), shrunk so that rounding cannot push ‖v‖ over the proven
        bound ``1 − 2^-frac_bits``."""
        d = np.asarray(update, dtype=np.float64).reshape(-1)
        if d.shape[0] != self.length or not np.all(np.isfinite(d)):
            raise EncodingError(
                f"the update must hold {self.length} finite numbers, got {d.shape[0]}"
            )
        u = d / self.clip_norm
        # Rounding moves each entry by ≤ 2^-(f+1), so the norm by ≤ √length·2^-(f+1).
        room = (
            proven_bound(self.frac_bits)
            - math.sqrt(self.length) * 2.0 ** -(self.frac_bits + 1)
            - 1e-12
        )
        norm = float(np.linalg.norm(u))
        if norm > room:
            u = u * (room / norm)
        return self.weight(num_examples) * u

    def measurements(self, X: Any, y: Any = None) -> np.ndarray:
        """``X``: the flattened update Δ; ``y``: num-examples (default W)."""
        n = self.weight_cap if y is None else float(np.asarray(y).reshape(-1)[0])
        return np.asarray(self.circuit.encode(self.vector(X, n)[None, :]))

    def decode(self, aggregate: np.ndarray, num_measurements: int) -> dict[str, Any]:
        """``{"sum": C·Σ v}`` (float64, length ``length``)."""
        self._check_count(num_measurements)
        s = self.circuit.decode(np.asarray(aggregate), num_measurements)
        return {"sum": np.asarray(s, dtype=np.float64) * self.clip_norm}


def over_norm_measurements(stat: ModelUpdateStats) -> np.ndarray:
    """A malicious provider's measurement: every entry at the range limit (‖v‖ = √length),
    with the slack bits it cannot honestly fill left at zero. Each entry passes its range
    check; the norm check fails, so BFT Prio must reject it (tests, robustness demos)."""
    c = stat.circuit
    F = c.field
    e = np.full((1, c.length), 2 * c.offset, dtype=np.uint64)
    ebits = ((e[..., None] >> np.arange(c.entry_bits, dtype=np.uint64)) & np.uint64(1)).reshape(
        1, -1
    )
    nbits = np.zeros((1, c.norm_bits), dtype=np.uint64)
    return np.asarray(F.elements(np.concatenate([ebits, nbits], axis=-1)))


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


__all__ = ["ModelUpdateStats", "flatten", "over_norm_measurements", "proven_bound", "unflatten"]
