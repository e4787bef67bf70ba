"""Count, mean and covariance of the columns (kind ``"covariance"``): what a private PCA needs."""

from __future__ import annotations

from typing import Any

import numpy as np

from kaires_fl.statistics.base import MAX_FEATURES, Statistic, _as_2d, _positive_int, bounds_array
from kaires_fl.statistics.linear_regression import LinearRegressionStats

# ------------------------------------------------------------- constant-target regression


class ConstantTargetStats(Statistic):
    """Base of the column statistics encoded as :class:`LinearRegressionStats` with y ≡ 0.

    Builds ``self._reg`` (the regression statistic with declared target bounds [0, 0]) and
    takes its sizes; ``params()`` are the regression's without the target bounds, the
    column bounds named ``bounds``. Subclasses set ``kind`` and encode/decode.

    Pre: ``n_features`` ≤ MAX_FEATURES (checked before anything is allocated); ``bounds``
    one [lo, hi] pair or one per column. Post: ``n_features``, ``bounds``, ``granularity``,
    ``max_measurements``, ``max_rows``, ``field`` and ``bits`` are set (ConfigError else).
    """

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
        self.n_features = _positive_int(n_features, "n_features", MAX_FEATURES)
        self.bounds = bounds_array(bounds, self.n_features, "bounds")
        self._reg = LinearRegressionStats(
            self.n_features,
            self.bounds,
            [0.0, 0.0],
            granularity,
            max_rows,
            max_measurements,
            frac_bits,
            bits,
        )
        self.granularity = self._reg.granularity
        self.max_measurements = self._reg.max_measurements
        self.max_rows = self._reg.max_rows
        self.field = self._reg.field
        self.bits = self._reg.bits

    def params(self) -> dict[str, Any]:
        p = self._reg.params()
        p.pop("y_bounds")
        p["bounds"] = p.pop("x_bounds")
        return p

    def _replacement_bounds(self) -> np.ndarray:
        if self.granularity == "record":  # the regression's record circuit
            return self._reg._replacement_bounds()
        return super()._replacement_bounds()  # a SumVec of the regression's bits

    def noise_scale(self) -> float:
        return self._reg.noise_scale()

    def noise_blocks(self) -> list[tuple[float, ...]] | None:
        return self._reg.noise_blocks() if self.granularity == "record" else None


# --------------------------------------------------------------------------- covariance


class CovarianceStats(ConstantTargetStats):
    """n, the column means and the centred scatter Σ(x − x̄)(x − x̄)ᵀ, from n, Σx and XᵀX.

    The encoding is :class:`LinearRegressionStats`'s with a constant target y ≡ 0 (declared
    bounds [0, 0]), so both granularities reuse its proved circuits and its error bounds:

    * ``"provider"``: the upper triangle of Σ[1, u][1, u]ᵀ (u the exact power-of-two frame
      of the bounds) as fixed-point ``SumVec`` entries; every decoded moment is exact to
      P·2^−(f+1) in u units for P accepted providers, centring is exact (integers), so the
      scatter's relative error is ≲ 3·P·2^−(f+1) / (n·v), v the smallest column variance in
      u units (≤ 1.4e-12 at f = 40, P = 100, n = 10^4, v ≥ 0.01);
    * ``"record"``: one ``LinearRegressionRecord`` per row (its XᵀX is proved consistent
      with x); exact for the rows quantised to ``bits``.

    Parameters
    ----------
    n_features : d.
    bounds : declared bounds, [lo, hi] for every column or one pair per column.
    granularity, max_rows, max_measurements, frac_bits, bits : as
        :class:`LinearRegressionStats`.
    """

    kind = "covariance"

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
        super().__init__(
            n_features, bounds, granularity, max_rows, max_measurements, frac_bits, bits
        )
        self.frac_bits = self._reg.frac_bits

    def _build_circuit(self, field: Any) -> Any:
        return self._reg._build_circuit(field)

    def check_data(self, X: Any) -> None:
        """Raise ConfigError if any row lies outside the declared bounds (any number of rows)."""
        Xa = _as_2d(X)
        self._reg.check_data(Xa, np.zeros(Xa.shape[0]))

    def measurements(self, X: Any, y: Any = None) -> np.ndarray:
        """ONE provider's rows (``y`` is ignored) as measurements of the regression circuit."""
        Xa = _as_2d(X)
        return self._reg.measurements(Xa, np.zeros(Xa.shape[0]))

    def error_bound(self, n: int, num_measurements: int) -> np.ndarray:
        """Per-column absolute bound (d,) on the decoded variance's encoding error.

        Provider granularity: each of Σu, Σu² is off by at most P·2^−(f+1) (P measurements),
        so var = Σu²/n − (Σu/n)² is off by ≤ 3·P·2^−(f+1)/n in u units, times 4^e in x units.
        Record granularity: 0 (exact for the quantised rows).
        """
        if self.granularity != "provider" or n <= 0:
            return np.zeros(self.n_features)
        d = self.n_features
        scale2 = np.ldexp(1.0, 2 * self._reg._exp[:d])
        return 3.0 * num_measurements * np.ldexp(1.0, -(self._reg._f + 1)) / n * scale2

    def decode(self, aggregate: np.ndarray, num_measurements: int) -> dict[str, Any]:
        """Returns ``n``, ``mean`` (d,), the centred ``scatter`` (d, d) and ``cov`` (d, d,
        ddof = 1; NaN when n < 2), and ``var`` (d,, ddof = 0)."""
        r = self._reg.decode(aggregate, num_measurements)
        n, S = int(r["n"]), np.asarray(r["sxx"], dtype=np.float64)
        S = (S + S.T) / 2
        cov = S / (n - 1) if n >= 2 else np.full_like(S, np.nan)
        var = np.diag(S) / n if n >= 1 else np.full(self.n_features, np.nan)
        return {"n": n, "mean": np.asarray(r["x_mean"]), "scatter": S, "cov": cov, "var": var}
