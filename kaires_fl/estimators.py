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
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from kaires_fl.committee import Committee, default_committee
from kaires_fl.errors import ConfigError, ProtocolError
from kaires_fl.statistics import LinearRegressionStats

#: Margin added on each side of the data's range by ``bounds="auto"`` (fraction of the range).
AUTO_MARGIN = 0.05


def auto_bounds(values: np.ndarray, margin: float = AUTO_MARGIN) -> np.ndarray:
    """Per-column [lo, hi] from the data, widened by ``margin`` × range (±1 if constant).

    A convenience for simulation only: bounds computed from the data reveal its range. In a
    deployment they are public policy parameters, fixed before any data is seen.
    """
    lo, hi = values.min(axis=0), values.max(axis=0)
    pad = np.where(hi > lo, (hi - lo) * margin, np.maximum(np.abs(hi) * margin, 1.0))
    return np.stack([lo - pad, hi + pad], axis=1)


def split_rows(
    n_samples: int, n_providers: int, provider: Any = None
) -> tuple[list[str], list[np.ndarray]]:
    """Provider labels and row indices: the groups of ``provider`` or
    ``min(n_providers, n_samples)`` contiguous blocks labelled ``provider-000`` …

    Labels are compared as strings and sorted as strings, which is how the committee orders
    providers (and indexes ``faults``): labels 1, 2, 10 become "1", "10", "2".
    """
    if provider is None:
        if not isinstance(n_providers, int | np.integer) or n_providers < 1:
            raise ConfigError(f"n_providers must be a positive integer, got {n_providers!r}")
        k = min(int(n_providers), n_samples)
        blocks = np.array_split(np.arange(n_samples), k)
        return [f"provider-{i:03d}" for i in range(k)], blocks
    labels = column_or_1d(np.asarray(provider), warn=True).astype(str)
    if labels.shape[0] != n_samples:
        raise ConfigError(
            f"provider has {labels.shape[0]} labels for {n_samples} rows; give one per row"
        )
    uniq, inverse = np.unique(labels, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.cumsum(np.bincount(inverse, minlength=len(uniq)))[:-1]
    return [str(u) for u in uniq], np.split(order, bounds)


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


def _default_committee() -> Committee:
    return default_committee()


class _KairesLinearModel(RegressorMixin, BaseEstimator):
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
        committee = self.committee if self.committee is not None else _default_committee()
        needed = int(getattr(committee, "min_providers", 1))
        if len(labels) < needed:
            if self.committee is None:
                committee.close()
            raise ConfigError(
                f"{len(labels)} provider(s) from n_samples = {X.shape[0]}: every Kaires "
                f"aggregate needs at least {needed} providers (the policies' min_providers), "
                "so no single provider's data is released alone; pass more samples or more "
                "provider labels"
            )
        try:
            result = committee.run_job(stat, data, progress=self.progress)
        finally:
            if self.committee is None:
                committee.close()
        if result.aggregate is None:
            rep = result.report
            raise ProtocolError(
                f"the Kaires job {str(rep.get('job', ''))[:16]}… released no result "
                f"({rep.get('status')}: {rep.get('why') or 'see the report'}); rejected "
                f"providers: {rep.get('rejected')}. Fewer providers were accepted than the "
                "policies' minimum, or the committee failed"
            )
        coef, intercept = solve_normal_equations(result.aggregate, self.fit_intercept, alpha)
        self.coef_ = coef
        self.intercept_ = intercept
        self.kaires_report_ = dict(result.report)
        self.kaires_statistic_ = stat.spec()
        self.n_providers_ = len(labels)
        return self

    def __sklearn_clone__(self) -> Any:
        # A committee is a running service, not a hyper-parameter: clones share it (sklearn
        # would otherwise deep-copy it, databases and all).
        committee = self.committee
        try:
            self.committee = None
            new = super().__sklearn_clone__()
        finally:
            self.committee = committee
        new.committee = committee
        return new

    def __getstate__(self) -> dict[str, Any]:
        # A pickled model keeps what it learned, not the connection to a running committee.
        state = dict(super().__getstate__())
        state["committee"] = None
        return state

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
