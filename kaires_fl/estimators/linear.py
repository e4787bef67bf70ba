"""scikit-learn linear regressors fitted through a whole Kaires job:
:class:`KairesLinearRegression` and :class:`KairesRidge`.

``fit(X, y, sample_weight=None, provider=None)`` splits the rows among simulated providers
(``n_providers`` contiguous blocks, or the groups of the ``provider`` labels in sorted
order), asks a :class:`~kaires_fl.committee.Committee` (an in-process
:class:`~kaires_fl.simulation.LocalCommittee` by default, or a deployed committee from
:func:`kaires_fl.connect`) to run one job of
:class:`~kaires_fl.statistics.LinearRegressionStats` over them (ledger grants, job, sealed
submissions, key release, BFT verification and aggregation, consumer reconstruction) and
solves the normal equations on the decoded aggregate (:func:`solve_normal_equations`):

* with an intercept, from the exactly centred (weighted) scatter Σω(x − x̄)(x − x̄)ᵀ,
  Σω(x − x̄)(y − ȳ), like scikit-learn, which centres the data before solving; the
  intercept is ȳ − x̄ᵀw and is not penalised by Ridge;
* without, from XᵀΩX and XᵀΩy.

Sample weights are part of what each provider computes and proves: it sends its weighted
sums (range-proved against its row cap; see
:class:`~kaires_fl.statistics.LinearRegressionStats`), so the weighted fit equals
scikit-learn's weighted fit. Multi-output ``y`` gives ``coef_`` of shape
(n_targets, n_features) as scikit-learn; ``KairesRidge(alpha=array)`` takes one penalty
per target.

The coefficients equal scikit-learn's on the accepted providers' rows to the precision
documented in :class:`~kaires_fl.statistics.LinearRegressionStats` (≤ 1e-6 relative for
reasonably conditioned data). Rank-deficient systems (n ≤ d, collinear features) get the
minimum-norm solution, as scikit-learn's ``lstsq``: see :func:`solve_normal_equations`.

Differential privacy (``epsilon=ε, delta=δ``): the job runs with ``dp=DP(ε, δ)`` and the
committee's aggregators add noise to every released sum (n, Σx, Σy, XᵀX, Xᵀy), calibrated
to what one provider (or one record, with ``granularity="record"``) can change them by
within the declared bounds. The fit then post-processes the noisy sums
(:func:`denoise_stats`): the scatter's eigenvalues are raised to at least the noise's
spectral norm before solving (a noisy XᵀX can be indefinite), which acts as a ridge of the
noise's size in the directions the noise dominates. ``kaires_report_["privacy"]`` holds
ε, δ, σ and the mechanism.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from kaires_fl.committee import Committee
from kaires_fl.errors import ConfigError, ProtocolError
from kaires_fl.estimators.base import (
    KairesEstimatorMixin,
    auto_bounds,
    noisy_psd,
    privacy_sigma,
    split_rows,
)
from kaires_fl.statistics import LinearRegressionStats

#: Relative eigenvalue threshold of the rank decision, × n_features: eigenvalues of the
#: scaled scatter below RANK_RTOL·d·λ_max are float64 round-off (scikit-learn's lstsq uses
#: a comparable machine-precision cut-off on the singular values).
RANK_RTOL = 64 * float(np.finfo(np.float64).eps)


def solve_normal_equations(
    stats: dict[str, Any], fit_intercept: bool = True, alpha: Any = 0.0
) -> tuple[np.ndarray, Any]:
    """Least-squares (alpha = 0) or ridge coefficients and intercept from decoded statistics.

    ``stats`` is :meth:`LinearRegressionStats.decode`'s dict; ``alpha`` a number ≥ 0 or one
    per target. Solves (A + αI)w = b with A, b the centred scatter (fit_intercept) or
    XᵀX, Xᵀy; the intercept ȳ − x̄ᵀw is not penalised.

    Rank decision (documented tolerance): A is scaled to D⁻¹AD⁻¹ with D the statistic's
    per-feature scales (``x_scale``, or ``x_scale_raw`` without intercept), the frame in
    which every entry's decoding error is at most ``scatter_tol`` (fixed-point rounding of
    P providers' sums: ≈ 3·P·2^−(f+1)). Its eigenvalues at most
    max(d·scatter_tol, RANK_RTOL·d·λ_max) are decoding noise and are dropped, so a scatter
    that is singular in exact arithmetic (n ≤ d, collinear features) is solved on its true
    rank r instead of a noise-conditioned full rank. The kept part A_r = B Bᵀ
    (B = D V_r Λ_r^½) gives w = U (S² + α)⁻¹ Uᵀ b with B = U S Wᵀ: for α = 0 the
    minimum-norm solution pinv(A_r)·b in the original units, as scikit-learn's lstsq.

    Returns (coef, intercept): (d,) and a float for one target (1-D ``sxy``), else
    (k, d) and (k,).
    """
    if stats["n"] <= 0:
        raise ProtocolError("the job aggregated no rows; nothing to fit")
    if fit_intercept:
        A, b = np.asarray(stats["sxx"], float), np.asarray(stats["sxy"], float)
        scale = stats.get("x_scale")
    else:
        A, b = np.asarray(stats["xtx"], float), np.asarray(stats["xty"], float)
        scale = stats.get("x_scale_raw")
    single = b.ndim == 1
    B2 = b[:, None] if single else b
    d, k = B2.shape
    alphas = np.broadcast_to(np.asarray(alpha, dtype=np.float64), (k,))
    if scale is None:  # statistics without decoding metadata: Jacobi scaling, no noise bound
        scale = np.sqrt(np.clip(np.diag(A), 0.0, None))
    s = np.asarray(scale, dtype=np.float64).copy()
    s[~(s > 0)] = 1.0
    As = A / np.outer(s, s)
    lam, V = np.linalg.eigh((As + As.T) / 2)
    cut = max(d * float(stats.get("scatter_tol", 0.0)), RANK_RTOL * d * max(lam[-1], 0.0))
    keep = lam > cut
    if not np.any(keep):
        coef2 = np.zeros((d, k))
    else:
        Bm = (s[:, None] * V[:, keep]) * np.sqrt(lam[keep])
        U, S, _ = np.linalg.svd(Bm, full_matrices=False)
        proj = U.T @ B2  # (r, k)
        coef2 = U @ (proj / (S[:, None] ** 2 + alphas[None, :]))
    if fit_intercept:
        intercept = (
            np.asarray(stats["y_mean"], dtype=np.float64)
            - np.asarray(stats["x_mean"], dtype=np.float64) @ coef2
        )
    else:
        intercept = np.zeros(k)
    if single:
        return coef2[:, 0], float(np.reshape(intercept, -1)[0])
    return coef2.T, np.asarray(intercept, dtype=np.float64).reshape(k)


def denoise_stats(
    stats: dict[str, Any], sigma: float, fit_intercept: bool = True
) -> dict[str, Any]:
    """Decoded statistics of a differentially private job, made fit for solving.

    Pre: ``stats`` is :meth:`LinearRegressionStats.decode`'s dict of a job whose released
    coordinates carry noise of std ``sigma`` in the statistic's scaled frame (the frame of
    ``sxx / outer(x_scale, x_scale)``). Post: the scatter the solver uses (``sxx`` with an
    intercept, ``xtx`` without) is replaced by its :func:`noisy_psd` projection in that
    frame, and ``scatter_tol`` is 0 (the floor already exceeds the decoding error), so
    :func:`solve_normal_equations` solves a well-posed system. Pure post-processing: the
    differential privacy of the release is unchanged.
    """
    if sigma <= 0:
        return stats
    out = dict(stats)
    key, scale_key = ("sxx", "x_scale") if fit_intercept else ("xtx", "x_scale_raw")
    A = np.asarray(stats[key], dtype=np.float64)
    s = np.asarray(stats.get(scale_key, np.ones(A.shape[0])), dtype=np.float64).copy()
    s[~(s > 0)] = 1.0
    out[key] = noisy_psd(A / np.outer(s, s), sigma) * np.outer(s, s)
    out["scatter_tol"] = 0.0
    return out


def with_public_count(
    stats: dict[str, Any], n: float, bounds: np.ndarray | None = None
) -> dict[str, Any]:
    """``stats`` recentred with the row count ``n`` (record granularity: the number of
    accepted records, public in the receipt; provider: the noisy count clamped to its
    public range), from its raw sums Σx, Σy, XᵀX, Xᵀy, yᵀy — a noisy count would
    otherwise distort every mean and the scatter.

    ``bounds`` ((d + k, 2), the declared [lo, hi] of each feature then target): the means
    are clamped into them (a mean outside the declared bounds is noise; post-processing).
    """
    out = dict(stats)
    sx, sy = np.asarray(stats["sum_x"], float), np.asarray(stats["sum_y"], float)
    xm, ym = sx / n, sy / n
    if bounds is not None:
        b = np.asarray(bounds, dtype=np.float64)
        d = xm.shape[0]
        xm = np.clip(xm, b[:d, 0], b[:d, 1])
        ym = np.clip(ym, b[d:, 0], b[d:, 1]).reshape(np.shape(ym))
    out["n"] = n
    out["x_mean"], out["y_mean"] = xm, ym
    out["sxx"] = np.asarray(stats["xtx"], float) - n * np.outer(xm, xm)
    xy = np.asarray(stats["xty"], float)
    out["sxy"] = xy - n * (np.outer(xm, ym) if xy.ndim == 2 else xm * float(ym))
    out["syy"] = np.asarray(stats["yty"], float) - n * ym * ym
    return out


class _KairesLinearModel(KairesEstimatorMixin, RegressorMixin, BaseEstimator):
    """Shared fit/predict of the Kaires linear models (see the module docstring)."""

    n_providers: int
    granularity: str
    fit_intercept: bool
    bounds: Any
    frac_bits: int | None
    max_sample_weight: Any

    def _alpha(self, n_targets: int) -> Any:
        return 0.0

    def _statistic(
        self,
        X: np.ndarray,
        Y: np.ndarray,
        groups: list[np.ndarray],
        max_weight: float | None,
    ) -> LinearRegressionStats:
        d, k = X.shape[1], Y.shape[1]
        if isinstance(self.bounds, str):
            if self.bounds != "auto":
                raise ConfigError(
                    f"bounds must be 'auto' or (x_bounds, y_bounds), got {self.bounds!r}"
                )
            xb, yb = auto_bounds(X), auto_bounds(Y)
        else:
            try:
                xb, yb = self.bounds
            except (TypeError, ValueError):
                raise ConfigError(
                    "bounds must be 'auto' or a pair (x_bounds, y_bounds): each [lo, hi] or a "
                    "list of [lo, hi] per feature / per target"
                ) from None
        if self.granularity == "provider":
            return LinearRegressionStats(
                d, xb, yb, "provider",
                max_rows=max(len(g) for g in groups),
                max_measurements=len(groups),
                frac_bits=self._frac_bits("provider"),
                n_targets=k,
                max_weight=max_weight,
            )  # fmt: skip
        if self.granularity == "record":
            if k != 1 or max_weight is not None:
                raise ConfigError(
                    "granularity='record' proves one unweighted target per record; use "
                    "granularity='provider' for multi-output y or sample_weight"
                )
            return LinearRegressionStats(
                d, xb, yb, "record", max_measurements=X.shape[0], bits=self._frac_bits("record")
            )
        raise ConfigError(f"granularity must be 'provider' or 'record', got {self.granularity!r}")

    def _max_weight(self, w: np.ndarray) -> float:
        """The declared weight bound: ``max_sample_weight``, or the largest weight ("auto")."""
        if isinstance(self.max_sample_weight, str):
            if self.max_sample_weight != "auto":
                raise ConfigError(
                    "max_sample_weight must be 'auto' or a positive number, got "
                    f"{self.max_sample_weight!r}"
                )
            top = float(np.max(w)) if w.size else 0.0
            if not top > 0:
                raise ConfigError("every sample weight is zero: there is nothing to fit")
            return top
        try:
            top = float(self.max_sample_weight)
        except (TypeError, ValueError):
            top = float("nan")
        if not (np.isfinite(top) and top > 0):
            raise ConfigError(
                "max_sample_weight must be 'auto' or a positive number, got "
                f"{self.max_sample_weight!r}"
            )
        return top

    def fit(self, X: Any, y: Any, sample_weight: Any = None, provider: Any = None) -> Any:
        """Fit through one Kaires job; returns self.

        Parameters
        ----------
        X : (n_samples, n_features) array-like.
        y : (n_samples,) or (n_samples, n_targets) array-like.
        sample_weight : optional (n_samples,) non-negative weights (scikit-learn's meaning).
            Every provider computes its weighted sums on its own rows and the job proves
            each sum within the provider's row cap; weights must lie in
            [0, ``max_sample_weight``] (the declared bound; "auto": the largest weight).
        provider : optional (n_samples,) labels; rows with the same label form one provider
            (providers are ordered by their labels sorted as strings, which is how
            ``faults`` indexes them).

        Warns :class:`~kaires_fl.errors.KairesWarning` when the committee rejected providers
        (their rows are not in the fit), naming how many and why.
        """
        X, y = validate_data(self, X, y, y_numeric=True, dtype=np.float64, multi_output=True)
        y = np.asarray(y, dtype=np.float64)
        Y = y[:, None] if y.ndim == 1 else y
        alpha = self._alpha(Y.shape[1])
        w = None
        if sample_weight is not None:
            w = _check_sample_weight(
                sample_weight, X, dtype=np.float64, ensure_non_negative=True,
                allow_all_zero_weights=True,
            )  # fmt: skip
        max_weight = None if w is None else self._max_weight(w)
        labels, groups = split_rows(X.shape[0], self.n_providers, provider)
        stat = self._statistic(X, Y, groups, max_weight)
        stat.check_data(X, Y, w)  # one clear error before the job starts
        # Contiguous blocks (no labels) are sliced as views: no copy of a large X.
        rows = groups if provider is not None else [slice(g[0], g[-1] + 1) for g in groups]
        data: dict[str, Any] = {
            lab: (X[r], Y[r]) if w is None else (X[r], Y[r], w[r])
            for lab, r in zip(labels, rows, strict=True)
        }
        result = self._run_job(stat, labels, data, X.shape[0])
        agg = result.aggregate
        sigma = privacy_sigma(result.report)
        if sigma > 0:
            m = float(result.report["num_measurements"])
            if stat.granularity == "record":  # one record per measurement: n is public
                n = m
            else:  # a noisy Σ rows (or Σω): within the public [1, P·max_rows·W]
                top = m * float(stat.max_rows or 1) * float(stat.max_weight or 1.0)
                n = float(np.clip(float(agg["n"]), 1.0, max(top, 1.0)))
            agg = with_public_count(agg, n, stat._bounds)
        agg = denoise_stats(agg, sigma, self.fit_intercept)
        coef, intercept = solve_normal_equations(agg, self.fit_intercept, alpha)
        if y.ndim == 2 and np.ndim(coef) == 1:  # one target given as a column: (1, d), (1,)
            coef, intercept = coef[None, :], np.array([intercept])
        self.coef_ = coef
        self.intercept_ = intercept
        self.kaires_report_ = dict(result.report)
        self.kaires_statistic_ = stat.spec()
        self.n_providers_ = len(labels)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predictions X·coef_ᵀ + intercept_ ((n,) or (n, n_targets), as fitted)."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return X @ np.asarray(self.coef_).T + self.intercept_

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.single_output = True
        tags.target_tags.multi_output = True
        return tags


_PARAMS_DOC = """
    Parameters
    ----------
    n_providers : int, default 10
        Simulated providers the rows are split among when ``fit`` gets no ``provider`` labels.
    committee : Committee or None
        The committee that runs the job (:class:`~kaires_fl.simulation.LocalCommittee`, or
        a deployed one from :func:`kaires_fl.connect`); None builds a fresh in-process one
        per fit. Clones share it; pickles and other processes reconnect to it by its
        description (:meth:`~kaires_fl.simulation.LocalCommittee.describe`), or fail with
        a clear error when it has none — never a silent substitute.
    granularity : {"provider", "record"}
        "provider": each provider submits its local (weighted) sufficient statistics
        (range-bounded by its row cap × the value bounds); "record": one proved record per
        row (Prio's strongest robustness, slower; one target, no sample weights).
    fit_intercept : bool, default True
    bounds : "auto" or (x_bounds, y_bounds)
        Declared value bounds ([lo, hi], or one pair per feature / per target). "auto"
        computes them from the data with a 5 % margin: a convenience for simulation only —
        in a deployment the bounds come from the providers' policies, not from the data.
    frac_bits : int or None
        Provider granularity: fractional bits of the fixed-point sums (default 40, fewer if
        the field requires). Record granularity: quantisation bits per value (default 28,
        fewer if the field requires: records·(2^bits − 1)² < p). With ``epsilon`` the
        defaults are 16 (provider) and 4 (record): fewer record bits put less noise on the
        linear sums (the noise is calibrated to the products), at a coarser quantisation.
    progress : bool or "auto", default "auto"
        Progress bar over the job's phases: ``"auto"`` shows it on a terminal once a fit has
        run for two seconds; ``True`` always, ``False`` never.
    max_sample_weight : "auto" or float, default "auto"
        The declared bound W on ``sample_weight`` (every weight must lie in [0, W]); "auto"
        takes the largest weight (simulation only: in a deployment it is a policy bound).
    epsilon, delta : float or None, default None
        Differential privacy of the fit: the committee adds noise to the released sums so
        that the fit is (ε, δ)-DP for each provider (``granularity="provider"``) or each
        record (``"record"``); δ defaults to 1e-6. None: the exact sums. With ``bounds=
        "auto"`` the bounds come from the data, which DP does not cover: declare them.

    Attributes
    ----------
    coef_ : (n_features,) or (n_targets, n_features)
    intercept_ : float or (n_targets,)
    n_features_in_, n_providers_,
    kaires_report_ : dict with ``accepted``, ``rejected``, ``faulty_aggregators``,
        ``ledger_height``, ``timings`` (per phase), ``privacy`` (ε, δ, σ, mechanism,
        unit; with ``epsilon``) and whatever else the job reports.
    kaires_statistic_ : the job's statistic as ``(kind, params)``.
"""


class KairesLinearRegression(_KairesLinearModel):
    def __init__(
        self,
        n_providers: int = 10,
        committee: Committee | None = None,
        granularity: str = "provider",
        fit_intercept: bool = True,
        bounds: Any = "auto",
        frac_bits: int | None = None,
        progress: bool | str = "auto",
        max_sample_weight: Any = "auto",
        epsilon: float | None = None,
        delta: float | None = None,
    ) -> None:
        self.n_providers = n_providers
        self.committee = committee
        self.granularity = granularity
        self.fit_intercept = fit_intercept
        self.bounds = bounds
        self.frac_bits = frac_bits
        self.progress = progress
        self.max_sample_weight = max_sample_weight
        self.epsilon = epsilon
        self.delta = delta


KairesLinearRegression.__doc__ = (
    "Ordinary least squares fitted through a Kaires job (privacy-preserving, BFT); "
    "minimum-norm solution on rank-deficient data, as scikit-learn.\n" + _PARAMS_DOC
)


class KairesRidge(_KairesLinearModel):
    def __init__(
        self,
        alpha: Any = 1.0,
        n_providers: int = 10,
        committee: Committee | None = None,
        granularity: str = "provider",
        fit_intercept: bool = True,
        bounds: Any = "auto",
        frac_bits: int | None = None,
        progress: bool | str = "auto",
        max_sample_weight: Any = "auto",
        epsilon: float | None = None,
        delta: float | None = None,
    ) -> None:
        self.alpha = alpha
        self.n_providers = n_providers
        self.committee = committee
        self.granularity = granularity
        self.fit_intercept = fit_intercept
        self.bounds = bounds
        self.frac_bits = frac_bits
        self.progress = progress
        self.max_sample_weight = max_sample_weight
        self.epsilon = epsilon
        self.delta = delta

    def _alpha(self, n_targets: int) -> Any:
        """``alpha`` as a float, or (n_targets,) for one penalty per target."""
        try:
            a = np.asarray(self.alpha, dtype=np.float64)
        except (TypeError, ValueError):
            raise ConfigError(
                f"alpha must be a number ≥ 0 or one per target, got {self.alpha!r}"
            ) from None
        if a.ndim > 1 or (a.ndim == 1 and a.shape[0] not in (1, n_targets)):
            raise ConfigError(
                f"alpha has shape {a.shape} but y has {n_targets} target(s): give one number, "
                f"or an array of {n_targets} (one penalty per target, as scikit-learn's Ridge)"
            )
        if not np.all(np.isfinite(a)) or np.any(a < 0):
            raise ConfigError(f"alpha must be a finite number ≥ 0, got {self.alpha!r}")
        return float(a) if a.ndim == 0 else a


KairesRidge.__doc__ = (
    "Ridge regression (L2 penalty ``alpha``, intercept not penalised) fitted through a "
    "Kaires job.\n\n    alpha : float or (n_targets,) array, default 1.0 — one penalty, or "
    "one per target (as scikit-learn's Ridge).\n" + _PARAMS_DOC
)

__all__ = [
    "RANK_RTOL",
    "KairesLinearRegression",
    "KairesRidge",
    "denoise_stats",
    "solve_normal_equations",
]
