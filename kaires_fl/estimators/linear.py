"""scikit-learn estimators fitted through a whole Kaires job: :class:`KairesLinearRegression`
and :class:`KairesRidge`.

``fit(X, y, provider=None)`` splits the rows among simulated providers (``n_providers``
contiguous blocks, or the groups of the ``provider`` labels in sorted order), asks a
:class:`~kaires_fl.committee.Committee` (an in-process
:class:`~kaires_fl.simulation.LocalCommittee` by default, or a deployed committee from
:func:`kaires_fl.connect`) to run one job of
:class:`~kaires_fl.statistics.LinearRegressionStats` over them (ledger grants, job, sealed
submissions, key release, BFT verification and aggregation, consumer reconstruction) and
solves the normal equations on the decoded aggregate:

* with an intercept, from the exactly centred scatter (Σ(x − x̄)(x − x̄)ᵀ, Σ(x − x̄)(y − ȳ)),
  like scikit-learn, which centres the data before solving; the intercept is ȳ − x̄ᵀw and is
  not penalised by Ridge;
* without, from XᵀX and Xᵀy.

The coefficients equal scikit-learn's on the accepted providers' rows to the precision
documented in :class:`~kaires_fl.statistics.LinearRegressionStats` (≤ 1e-6 relative for
reasonably conditioned data: provider granularity is exact to ≈ 1e-12, record granularity
is exact on the quantised rows).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.linalg
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from kaires_fl.committee import Committee
from kaires_fl.errors import ConfigError, ProtocolError
from kaires_fl.estimators.base import KairesEstimatorMixin, auto_bounds, split_rows
from kaires_fl.statistics import LinearRegressionStats


def solve_normal_equations(
    stats: dict[str, Any], fit_intercept: bool = True, alpha: float = 0.0
) -> tuple[np.ndarray, float]:
    """Least-squares (alpha = 0) or ridge coefficients and intercept from decoded statistics.

    ``stats`` is :meth:`LinearRegressionStats.decode`'s dict. Solves (A + αI)w = b with
    A, b the centred scatter (fit_intercept) or XᵀX, Xᵀy; the intercept ȳ − x̄ᵀw is not
    penalised. Well-conditioned systems are solved by Cholesky after Jacobi scaling; a
    singular least-squares system gets the minimum-norm solution (as scikit-learn's lstsq).
    """
    if stats["n"] < 1:
        raise ProtocolError("the job aggregated no rows; nothing to fit")
    if fit_intercept:
        A, b = np.asarray(stats["sxx"], float), np.asarray(stats["sxy"], float)
    else:
        A, b = np.asarray(stats["xtx"], float), np.asarray(stats["xty"], float)
    A = A + alpha * np.eye(A.shape[0])
    coef = _solve_psd(A, b)
    intercept = float(stats["y_mean"] - stats["x_mean"] @ coef) if fit_intercept else 0.0
    return coef, intercept


def _solve_psd(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    s = np.sqrt(np.clip(np.diag(A), 0.0, None))
    s[s == 0] = 1.0
    As = A / np.outer(s, s)
    if np.linalg.cond(As) < 1e10:
        try:
            return scipy.linalg.cho_solve(scipy.linalg.cho_factor(As), b / s) / s
        except np.linalg.LinAlgError:
            pass
    return np.linalg.lstsq(A, b, rcond=None)[0]


class _KairesLinearModel(KairesEstimatorMixin, RegressorMixin, BaseEstimator):
    """Shared fit/predict of the Kaires linear models (see the module docstring)."""

    _alpha: float = 0.0
    n_providers: int
    committee: Committee | None
    granularity: str
    fit_intercept: bool
    bounds: Any
    frac_bits: int | None
    progress: bool | str

    def _statistic(
        self, X: np.ndarray, y: np.ndarray, groups: list[np.ndarray]
    ) -> LinearRegressionStats:
        d = X.shape[1]
        if isinstance(self.bounds, str):
            if self.bounds != "auto":
                raise ConfigError(
                    f"bounds must be 'auto' or (x_bounds, y_bounds), got {self.bounds!r}"
                )
            xb, yb = auto_bounds(X), auto_bounds(y[:, None])[0]
        else:
            try:
                xb, yb = self.bounds
            except (TypeError, ValueError):
                raise ConfigError(
                    "bounds must be 'auto' or a pair (x_bounds, y_bounds): each [lo, hi] or a "
                    "list of [lo, hi] per feature"
                ) from None
        if self.granularity == "provider":
            return LinearRegressionStats(
                d, xb, yb, "provider",
                max_rows=max(len(g) for g in groups),
                max_measurements=len(groups),
                frac_bits=self.frac_bits,
            )  # fmt: skip
        if self.granularity == "record":
            return LinearRegressionStats(
                d, xb, yb, "record", max_measurements=X.shape[0], bits=self.frac_bits
            )
        raise ConfigError(f"granularity must be 'provider' or 'record', got {self.granularity!r}")

    def fit(self, X: Any, y: Any, provider: Any = None) -> Any:
        """Fit through one Kaires job; returns self.

        Parameters
        ----------
        X : (n_samples, n_features) array-like.
        y : (n_samples,) array-like.
        provider : optional (n_samples,) labels; rows with the same label form one provider
            (providers are ordered by their labels sorted as strings, which is how
            ``faults`` indexes them).
        """
        X, y = validate_data(self, X, y, y_numeric=True, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        alpha = self._alpha
        labels, groups = split_rows(X.shape[0], self.n_providers, provider)
        stat = self._statistic(X, y, groups)
        stat.check_data(X, y)  # one clear error before the job starts
        # Contiguous blocks (no labels) are sliced as views: no copy of a large X.
        rows = groups if provider is not None else [slice(g[0], g[-1] + 1) for g in groups]
        data = {lab: (X[r], y[r]) for lab, r in zip(labels, rows, strict=True)}
        result = self._run_job(stat, labels, data, X.shape[0])
        coef, intercept = solve_normal_equations(result.aggregate, self.fit_intercept, alpha)
        self.coef_ = coef
        self.intercept_ = intercept
        self.kaires_report_ = dict(result.report)
        self.kaires_statistic_ = stat.spec()
        self.n_providers_ = len(labels)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predictions X·coef_ + intercept_."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return X @ self.coef_ + self.intercept_

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.single_output = True
        tags.target_tags.multi_output = False
        return tags


class KairesLinearRegression(_KairesLinearModel):
    """Ordinary least squares fitted through a Kaires job (privacy-preserving, BFT).

    Parameters
    ----------
    n_providers : int, default 10
        Simulated providers the rows are split among when ``fit`` gets no ``provider`` labels.
    committee : Committee or None
        The committee that runs the job (:class:`~kaires_fl.simulation.LocalCommittee`, or
        a deployed one from :func:`kaires_fl.connect`); None builds a fresh in-process one
        per fit.
    granularity : {"provider", "record"}
        "provider": each provider submits its local sufficient statistics (range-bounded by
        its row cap × the value bounds); "record": one proved record per row (Prio's
        strongest robustness, slower).
    fit_intercept : bool, default True
    bounds : "auto" or (x_bounds, y_bounds)
        Declared value bounds ([lo, hi], or one pair per feature). "auto" computes them from
        the data with a 5 % margin: a convenience for simulation only — in a deployment the
        bounds come from the providers' policies, not from the data.
    frac_bits : int or None
        Provider granularity: fractional bits of the fixed-point sums (default 40, fewer if
        the field requires). Record granularity: quantisation bits per value (default 28,
        fewer if the field requires: records·(2^bits − 1)² < p).
    progress : bool or "auto", default "auto"
        Progress bar over the job's phases: ``"auto"`` shows it on a terminal once a fit has
        run for two seconds; ``True`` always, ``False`` never.

    Attributes
    ----------
    coef_, intercept_, n_features_in_, n_providers_,
    kaires_report_ : dict with ``accepted``, ``rejected``, ``faulty_aggregators``,
        ``ledger_height``, ``timings`` (per phase) and whatever else the job reports.
    kaires_statistic_ : the job's statistic as ``(kind, params)``.
    """

    def __init__(
        self,
        n_providers: int = 10,
        committee: Committee | None = None,
        granularity: str = "provider",
        fit_intercept: bool = True,
        bounds: Any = "auto",
        frac_bits: int | None = None,
        progress: bool | str = "auto",
    ) -> None:
        self.n_providers = n_providers
        self.committee = committee
        self.granularity = granularity
        self.fit_intercept = fit_intercept
        self.bounds = bounds
        self.frac_bits = frac_bits
        self.progress = progress


class KairesRidge(_KairesLinearModel):
    """Ridge regression (L2 penalty ``alpha``, intercept not penalised) fitted through a
    Kaires job; parameters and attributes as :class:`KairesLinearRegression`, plus
    ``alpha`` (default 1.0, as scikit-learn's Ridge)."""

    def __init__(
        self,
        alpha: float = 1.0,
        n_providers: int = 10,
        committee: Committee | None = None,
        granularity: str = "provider",
        fit_intercept: bool = True,
        bounds: Any = "auto",
        frac_bits: int | None = None,
        progress: bool | str = "auto",
    ) -> None:
        self.alpha = alpha
        self.n_providers = n_providers
        self.committee = committee
        self.granularity = granularity
        self.fit_intercept = fit_intercept
        self.bounds = bounds
        self.frac_bits = frac_bits
        self.progress = progress

    @property
    def _alpha(self) -> float:  # type: ignore[override]
        a = float(self.alpha)
        if not np.isfinite(a) or a < 0:
            raise ConfigError(f"alpha must be a finite number ≥ 0, got {self.alpha!r}")
        return a
