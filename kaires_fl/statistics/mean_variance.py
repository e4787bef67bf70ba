"""Per-column count, mean and variance (kind ``"mean_variance"``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from kaires_fl.arith import circuits
from kaires_fl.statistics.base import (
    _as_2d,
    _fixed_point,
    _signed_ints,
    moments_to_raw_sums,
    moments_to_stats,
    noisy_decoding,
    pow2_frame,
)
from kaires_fl.statistics.covariance import ConstantTargetStats

# ---------------------------------------------------------------------- mean, variance


class MeanVarianceStats(ConstantTargetStats):
    """Count, mean and variance (ddof = 0) of every column, from n, Σx, Σx².

    ``"provider"``: [n, Σu, Σu²] in the exact power-of-two frame of
    :class:`LinearRegressionStats` as a fixed-point ``SumVec`` (same error bound).
    ``"record"``: each row quantised to ``bits`` and proved as a ``LinearRegressionRecord``
    with y ≡ 0 (its XᵀX diagonal is Σx², proved consistent with x); exact for the
    quantised rows.
    """

    kind = "mean_variance"
    _f: int = 0

    def __init__(
        self,
        n_features: int,
        bounds: Any,
        granularity: str = "provider",
        max_rows: int | None = None,
        max_measurements: int | None = None,
        frac_bits: int | None = None,
        bits: int | None = None,
    ) -> None:
        # Record granularity reuses the regression encoding with a constant target.
        super().__init__(
            n_features, bounds, granularity, max_rows, max_measurements, frac_bits, bits
        )
        if granularity == "provider":
            self._f = self._reg._f
            self._center, self._exp = pow2_frame(self.bounds)

    def _build_circuit(self, field: Any) -> Any:
        if self.granularity == "provider":
            return circuits.SumVec(2 * self.n_features + 1, self.bits, field=field)
        return self._reg._build_circuit(field)

    def measurements(self, X: Any, y: Any = None) -> np.ndarray:
        Xa = _as_2d(X)
        zeros = np.zeros(Xa.shape[0])
        if self.granularity == "record":
            return self._reg.measurements(Xa, zeros)
        Z = self._reg._validated(Xa, zeros)[0]
        U = np.clip((Z - self._center) * np.ldexp(1.0, -self._exp), -1.0, 1.0)
        v = np.concatenate([[U.shape[0]], U.sum(axis=0), (U * U).sum(axis=0)])
        return self.circuit.encode(_fixed_point(v, self._f, self.bits)[None, :])

    def decode(self, aggregate: np.ndarray, num_measurements: int) -> dict[str, Any]:
        """Returns ``n``, ``mean`` (d,), ``var`` (d,, ddof = 0), ``sum`` and ``sum_sq`` (d,)."""
        self._check_count(num_measurements)
        d = self.n_features
        if self.granularity == "record":
            r = self._reg.decode(aggregate, num_measurements)
            n, mean, var = r["n"], r["x_mean"], np.diag(r["sxx"]) / max(r["n"], 1)
        else:
            v = _signed_ints(self.field, aggregate, num_measurements << (self.bits - 1))
            M = np.empty((d + 1, d + 1), dtype=object)
            M[...] = 0  # off-diagonal cross moments are not collected
            M[0, 0] = v[0]
            M[0, 1:] = v[1 : d + 1]
            M[1:, 0] = v[1 : d + 1]
            M[np.arange(1, d + 1), np.arange(1, d + 1)] = v[d + 1 :]
            n, mean, C = moments_to_stats(M, 1 << self._f, self._center, 2.0**self._exp)
            var = np.diag(C) / max(n, 1)
        if n == 0:
            var = np.full(d, np.nan)
        out = {
            "n": n,
            "mean": mean,
            "var": var,
            "sum": n * mean,
            "sum_sq": n * (var + mean * mean),
        }
        if noisy_decoding():  # raw sums finite whatever the noisy count
            if self.granularity == "record":
                out.update(sum=r["sum_x"], sum_sq=np.diag(r["xtx"]).copy())
            else:
                _, s1, s2 = moments_to_raw_sums(M, 1 << self._f, self._center, 2.0**self._exp)
                out.update(sum=s1, sum_sq=np.diag(s2).copy())
        return out
