"""A private :class:`KairesStandardScaler`: scikit-learn's ``StandardScaler`` whose mean and
variance come from ONE Kaires job of :class:`~kaires_fl.statistics.MeanVarianceStats`.

The consumer learns n, Σx and Σx² of the accepted providers' rows and nothing else, so
``Pipeline([KairesStandardScaler(), KairesRidge()])`` releases only aggregates: the scaler's
job (n, means, variances), then the regression's job over the scaled rows (the sufficient
statistics of least squares). Scaling itself (``transform``) runs where the rows are.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from kaires_fl.committee import Committee
from kaires_fl.errors import ConfigError
from kaires_fl.estimators.base import KairesEstimatorMixin, auto_bounds, split_rows
from kaires_fl.statistics import MeanVarianceStats, check_within


def column_statistic_job(
    est: Any, stat_cls: Any, X: np.ndarray, provider: Any
) -> tuple[Any, dict[str, Any], Any, list[str]]:
    """Run one job of ``stat_cls`` (a per-column statistic taking ``n_features, bounds``)
    over the rows of X split among providers as ``est`` says; returns (statistic, decoded
    aggregate, job result, provider labels).

    Pre: X validated float64 (n, d); ``est`` has ``n_providers``, ``granularity``,
    ``bounds`` ("auto" or [lo, hi] / one pair per column), ``frac_bits`` and the
    :class:`KairesEstimatorMixin` committee handling. Raises ConfigError for bad
    parameters or rows outside the declared bounds, before any job starts.
    """
    n, d = X.shape
    labels, groups = split_rows(n, est.n_providers, provider)
    if isinstance(est.bounds, str):
        if est.bounds != "auto":
            raise ConfigError(
                f"bounds must be 'auto', [lo, hi] or one [lo, hi] per feature, got {est.bounds!r}"
            )
        bounds = auto_bounds(X)
    else:
        bounds = est.bounds
    if est.granularity == "provider":
        stat = stat_cls(
            d, bounds, "provider",
            max_rows=max(len(g) for g in groups),
            max_measurements=len(groups),
            frac_bits=est._frac_bits("provider"),
        )  # fmt: skip
    elif est.granularity == "record":
        stat = stat_cls(d, bounds, "record", max_measurements=n, bits=est._frac_bits("record"))
    else:
        raise ConfigError(f"granularity must be 'provider' or 'record', got {est.granularity!r}")
    # One clear error naming the column before the job starts (the providers would refuse).
    names = [f"feature {j}" for j in range(d)]
    check_within(X, stat.bounds, names, "widen bounds (policy bounds)")
    rows: list[Any] = (
        list(groups) if provider is not None else [slice(g[0], g[-1] + 1) for g in groups]
    )
    data = {lab: (X[r], None) for lab, r in zip(labels, rows, strict=True)}
    result = est._run_job(stat, labels, data, n)
    return stat, result.aggregate, result, labels


def _variance_error_bound(stat: Any, n: int, num_measurements: int) -> np.ndarray:
    """Per-column bound on the decoded variance's fixed-point error (0 for record
    granularity, exact on the quantised rows): 3·P·2^−(f+1)/n in the u frame, × 4^e."""
    if stat.granularity != "provider" or n <= 0:
        return np.zeros(stat.n_features)
    return 3.0 * num_measurements * np.ldexp(1.0, 2 * stat._exp - (stat._f + 1)) / n


def _constant_mask(var: np.ndarray, mean: np.ndarray, n: int, bound: np.ndarray) -> np.ndarray:
    """Columns scikit-learn would call constant (``_is_constant_feature``), or whose variance
    is within the encoding error of zero."""
    eps = np.finfo(np.float64).eps
    upper = n * eps * var + (n * mean * eps) ** 2
    return (var <= upper) | (var <= bound)


class KairesStandardScaler(
    KairesEstimatorMixin, OneToOneFeatureMixin, TransformerMixin, BaseEstimator
):
    """Standardise features (x − mean_) / scale_ with the mean and variance of ONE Kaires job.

    Parameters
    ----------
    with_mean, with_std, copy : as scikit-learn's ``StandardScaler``. With neither, no job
        runs (nothing is learned from the data but ``n_samples_seen_``).
    n_providers : int, default 10
        Simulated providers the rows are split among when ``fit`` gets no ``provider`` labels.
    committee : Committee or None
        The committee that runs the job; None builds a fresh in-process one per fit.
    granularity : {"provider", "record"}
        As :class:`~kaires_fl.KairesLinearRegression`.
    bounds : "auto", [lo, hi] or one [lo, hi] per feature
        Declared value bounds. "auto" computes them from the data with a 5 % margin: a
        convenience for simulation only (in a deployment they are policy parameters).
    frac_bits : int or None
        Fixed-point fractional bits (provider) or quantisation bits (record).
    progress : bool or "auto"
    epsilon, delta : float or None, default None
        Differential privacy of the fit: the committee's aggregators add noise to the
        released sums (n, Σx, Σx²) so that the fit is (ε, δ)-DP for each provider (or each
        record with ``granularity="record"``); δ defaults to 1e-6; negative noisy variances
        are clipped to 0; ``kaires_report_["privacy"]`` says ε, δ, σ and the mechanism.
        None: the exact sums. Declare ``bounds`` (with "auto" they come from the data,
        which differential privacy does not cover).

    Attributes
    ----------
    mean_ (d,) or None, var_ (d,, ddof = 0) or None, scale_ (d,) or None (columns whose
    variance is within the encoding error of zero get scale 1), n_samples_seen_ (rows of the
    accepted providers), n_features_in_, feature_names_in_, n_providers_, kaires_report_,
    kaires_statistic_.

    Precision: provider granularity gives the accepted rows' mean and variance to
    ≈ 3·P·2^−(f+1)/n × (bound half-width)² absolute (f = 40 by default: ≲ 1e-12 relative
    for data spreading over a tenth of its bounds); record granularity is exact for the
    rows quantised to ``frac_bits`` (default 28) bits.
    """

    def __init__(
        self,
        *,
        with_mean: bool = True,
        with_std: bool = True,
        copy: bool = True,
        n_providers: int = 10,
        committee: Committee | None = None,
        granularity: str = "provider",
        bounds: Any = "auto",
        frac_bits: int | None = None,
        progress: bool | str = "auto",
        epsilon: float | None = None,
        delta: float | None = None,
    ) -> None:
        self.with_mean = with_mean
        self.with_std = with_std
        self.copy = copy
        self.n_providers = n_providers
        self.committee = committee
        self.granularity = granularity
        self.bounds = bounds
        self.frac_bits = frac_bits
        self.progress = progress
        self.epsilon = epsilon
        self.delta = delta

    def fit(self, X: Any, y: Any = None, provider: Any = None) -> KairesStandardScaler:
        """Learn mean_ and var_ through one Kaires job; returns self.

        Parameters
        ----------
        X : (n_samples, n_features) array-like (dense, finite).
        y : ignored.
        provider : optional (n_samples,) labels; rows with the same label form one provider.
            In a Pipeline pass it as ``pipe.fit(X, y, <step name>__provider=labels)``.
        """
        X = validate_data(self, X, dtype=np.float64, reset=True)
        n = X.shape[0]
        self.kaires_report_: dict[str, Any] = {}
        self.kaires_statistic_: Any = None
        if not self.with_mean and not self.with_std:
            self.mean_ = self.var_ = self.scale_ = None
            self.n_samples_seen_ = n
            self.n_providers_ = 0
            return self
        stat, agg, result, labels = column_statistic_job(self, MeanVarianceStats, X, provider)
        m = round(max(float(agg["n"]), 0.0))  # noisy with epsilon
        mean = np.asarray(agg["mean"], dtype=np.float64)
        var = np.maximum(np.asarray(agg["var"], dtype=np.float64), 0.0)
        self.mean_ = mean
        self.n_samples_seen_ = m
        self.kaires_report_ = dict(result.report)
        self.kaires_statistic_ = stat.spec()
        self.n_providers_ = len(labels)
        if self.with_std:
            bound = _variance_error_bound(stat, m, int(result.report.get("num_measurements", 0)))
            constant = _constant_mask(var, mean, m, bound)
            self.var_ = np.where(constant, 0.0, var)
            self.scale_ = np.where(constant, 1.0, np.sqrt(self.var_))
        else:
            self.var_ = self.scale_ = None
        return self

    def transform(self, X: Any, copy: bool | None = None) -> np.ndarray:
        """(X − mean_) / scale_ (each part only if enabled)."""
        check_is_fitted(self, "n_samples_seen_")
        copy = self.copy if copy is None else copy
        X = validate_data(self, X, reset=False, dtype=np.float64, copy=copy)
        if self.with_mean:
            X -= self.mean_
        if self.with_std:
            X /= self.scale_
        return X

    def inverse_transform(self, X: Any, copy: bool | None = None) -> np.ndarray:
        """X · scale_ + mean_ (each part only if enabled)."""
        check_is_fitted(self, "n_samples_seen_")
        copy = self.copy if copy is None else copy
        X = validate_data(self, X, reset=False, dtype=np.float64, copy=copy)
        if self.with_std:
            X *= self.scale_
        if self.with_mean:
            X += self.mean_
        return X

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.input_tags.sparse = False
        tags.transformer_tags.preserves_dtype = ["float64"]
        return tags
