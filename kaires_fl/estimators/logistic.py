"""scikit-learn's logistic regression fitted by private Newton steps:
:class:`KairesLogisticRegression`.

The objective is scikit-learn's ``LogisticRegression(penalty="l2")`` (its default lbfgs
objective): Σ log-loss + ‖W‖²/(2C), the intercepts not penalised; binary problems use one
logit, K ≥ 3 classes the multinomial (softmax) model.

Each Newton iteration is ONE Kaires job of
:class:`~kaires_fl.statistics.LogisticRegressionStats` at the current public parameters:
every provider computes, on its own rows, its row count, log-loss, gradient and exact
(block) Hessian sums — fixed-point entries each bounded by its row count, range-checked by
the ``SumVec`` circuit — and the committee releases only their sums. The consumer then

1. makes the decoded Hessian positive semi-definite (a provider may send any bounded value)
   and adds the penalty (and, for the multinomial intercepts, the gauge term that keeps
   Σ_k b_k = 0, which changes no prediction);
2. solves the penalised Newton system for the step;
3. runs the next job at the new parameters and accepts the step when the penalised loss
   decreased enough (Armijo); otherwise halves it (one more job per halving). After
   ``MAX_HALVINGS`` halvings without a decrease — the fixed-point precision floor, or a
   provider lying within its proven range — it stops with a ConvergenceWarning.

It stops when the largest entry of the mean penalised gradient (in the original feature
units, as scikit-learn's lbfgs ``gtol``) is ≤ ``tol``, or after ``max_iter`` iterations
(ConvergenceWarning, as scikit-learn).

Differential privacy (``epsilon=ε, delta=δ``): the fit runs exactly
``min(max_iter, DP_NEWTON_JOBS)`` Newton jobs, each with ``dp=DP(ε/J, δ/J)`` (basic
composition, as the ledger's budgets count them), and takes every full Newton step without
a line search (comparing noisy losses would spend budget on jobs that are thrown away).
Each step's noisy Hessian is made positive definite with eigenvalues at least the noise's
spectral norm (:func:`~kaires_fl.estimators.base.noisy_psd`) before the penalty is added.

Standardise the features first (e.g. ``KairesStandardScaler`` or a public rescaling): the
penalty is on the raw coefficients, as in scikit-learn, so both fit the same model either
way, but Newton steps on standardised data need fewer jobs and the fixed-point error is
smaller relative to the data.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import scipy.linalg
from scipy.special import expit, softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from kaires_fl.committee import Committee, default_committee
from kaires_fl.errors import ConfigError, KairesWarning, ProtocolError
from kaires_fl.estimators.base import (
    KairesEstimatorMixin,
    auto_bounds,
    check_released,
    noisy_psd,
    privacy_sigma,
    run_with_dp,
    split_rows,
)
from kaires_fl.statistics.logistic import LogisticRegressionStats

#: Armijo constant of the line search (sufficient decrease of the penalised loss).
ARMIJO = 1e-4
#: Step halvings before an iteration gives up (the step is then 2^−10 of Newton's).
MAX_HALVINGS = 10
#: Newton jobs of a differentially private fit (the budget is split over them).
DP_NEWTON_JOBS = 4


def psd_part(H: np.ndarray) -> np.ndarray:
    """The nearest positive semi-definite matrix to the symmetric part of ``H``."""
    S = (H + H.T) / 2
    w, V = np.linalg.eigh(S)
    return (V * np.clip(w, 0.0, None)) @ V.T


def solve_newton_step(H: np.ndarray, g: np.ndarray) -> np.ndarray:
    """−H⁻¹g for a positive (semi-)definite H: Cholesky after Jacobi scaling, else lstsq."""
    s = np.sqrt(np.clip(np.diag(H), 0.0, None))
    s[s == 0] = 1.0
    Hs = H / np.outer(s, s)
    try:
        return -scipy.linalg.cho_solve(scipy.linalg.cho_factor(Hs), g / s) / s
    except np.linalg.LinAlgError:
        return -np.linalg.lstsq(H, g, rcond=None)[0]


class KairesLogisticRegression(KairesEstimatorMixin, ClassifierMixin, BaseEstimator):
    """L2-penalised logistic regression (binary and multinomial) fitted by private Newton
    steps, each one Kaires job (see the module docstring).

    Parameters
    ----------
    C : float, default 1.0
        Inverse regularisation strength, as scikit-learn: minimises Σ log-loss + ‖W‖²/(2C).
    fit_intercept : bool, default True
        Intercepts are not penalised.
    max_iter : int, default 100
        Most Newton iterations (each one job, plus one job per step halving).
    tol : float, default 1e-4
        Stop when max |mean penalised gradient| ≤ tol (scikit-learn's lbfgs ``gtol``).
    n_providers : int, default 10
        Simulated providers the rows are split among when ``fit`` gets no ``provider`` labels.
    committee : Committee or None
        The committee that runs the jobs; None builds one in-process committee per fit
        (every Newton job of the fit runs on it) and closes it after.
    bounds : "auto" or x_bounds
        Declared feature bounds ([lo, hi], or one pair per feature). "auto" computes them
        from the data with a 5 % margin: a convenience for simulation only — in a deployment
        the bounds are the providers' public policy parameters.
    frac_bits : int or None
        Fractional bits of the fixed-point sums (default 40, fewer if the field requires).
    progress : bool or "auto", default "auto"
        Progress bar over each job's phases (``"auto"``: on a terminal, once a job has run
        for two seconds).
    epsilon, delta : float or None, default None
        Differential privacy of the whole fit, for each provider: J = min(max_iter,
        DP_NEWTON_JOBS) full Newton steps, each job (ε/J, δ/J)-DP (δ defaults to 1e-6;
        see the module docstring). None: exact jobs with a line search.

    Attributes
    ----------
    classes_ : (K,) the class labels.
    coef_ : (1, d) for two classes, (K, d) for K ≥ 3 (as scikit-learn).
    intercept_ : (1,) or (K,).
    n_iter_ : (1,) int array, the Newton iterations run.
    n_features_in_, n_providers_,
    kaires_reports_ : list of every job's report (accepted, rejected, timings …).
    kaires_report_ : the last job's report.
    kaires_statistic_ : the last job's statistic as ``(kind, params)``.
    """

    def __init__(
        self,
        C: float = 1.0,
        fit_intercept: bool = True,
        max_iter: int = 100,
        tol: float = 1e-4,
        n_providers: int = 10,
        committee: Committee | None = None,
        bounds: Any = "auto",
        frac_bits: int | None = None,
        progress: bool | str = "auto",
        epsilon: float | None = None,
        delta: float | None = None,
    ) -> None:
        self.C = C
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.n_providers = n_providers
        self.committee = committee
        self.bounds = bounds
        self.frac_bits = frac_bits
        self.progress = progress
        self.epsilon = epsilon
        self.delta = delta

    # ------------------------------------------------------------------ parameters

    def _check_params(self) -> tuple[float, int, float]:
        try:
            C = float(self.C)
        except (TypeError, ValueError):
            C = float("nan")
        if not np.isfinite(C) or C <= 0:
            raise ConfigError(f"C must be a finite number > 0, got {self.C!r}")
        if not isinstance(self.max_iter, int | np.integer) or self.max_iter < 1:
            raise ConfigError(f"max_iter must be a positive integer, got {self.max_iter!r}")
        try:
            tol = float(self.tol)
        except (TypeError, ValueError):
            tol = float("nan")
        if not np.isfinite(tol) or tol < 0:
            raise ConfigError(f"tol must be a finite number ≥ 0, got {self.tol!r}")
        return C, int(self.max_iter), tol

    def _x_bounds(self, X: np.ndarray) -> Any:
        if isinstance(self.bounds, str):
            if self.bounds != "auto":
                raise ConfigError(f"bounds must be 'auto' or x_bounds, got {self.bounds!r}")
            return auto_bounds(X)
        return self.bounds

    # ------------------------------------------------------------------------- fit

    def fit(self, X: Any, y: Any, provider: Any = None) -> Any:
        """Fit by private Newton steps (one Kaires job each); returns self.

        Parameters
        ----------
        X : (n_samples, n_features) array-like.
        y : (n_samples,) class labels (at least two classes).
        provider : optional (n_samples,) labels; rows with the same label form one provider.

        Warns KairesWarning when a job rejected providers (their rows are left out of that
        step), ConvergenceWarning when ``max_iter`` is reached first.
        """
        C, max_iter, tol = self._check_params()
        self.dp()  # an invalid ε or δ fails before any job
        X, y = validate_data(self, X, y, dtype=np.float64)
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        enc = LabelEncoder().fit(y)
        self.classes_ = enc.classes_
        K = len(self.classes_)
        if K < 2:
            raise ConfigError(
                "This solver needs samples of at least 2 classes in the data, but the data "
                f"contains only one class: {self.classes_[0]!r}"
            )
        yi = enc.transform(y)
        labels, groups = split_rows(X.shape[0], self.n_providers, provider)
        rows = groups if provider is not None else [slice(g[0], g[-1] + 1) for g in groups]
        data = {lab: (X[r], yi[r]) for lab, r in zip(labels, rows, strict=True)}
        stat = self._statistic(X.shape[1], K, self._x_bounds(X), None, groups)
        stat.check_data(X, yi)  # one clear error before the first job
        committee = self.committee if self.committee is not None else default_committee()
        try:
            needed = int(getattr(committee, "min_providers", 1))
            if len(labels) < needed:
                raise ConfigError(
                    f"{len(labels)} provider(s) from n_samples = {X.shape[0]}: every Kaires "
                    f"aggregate needs at least {needed} providers (the policies' "
                    "min_providers), so no single provider's data is released alone; pass "
                    "more samples or more provider labels"
                )
            if self.dp() is None:
                theta, n_iter, reports = self._newton(
                    committee, stat, data, groups, C, max_iter, tol
                )
            else:
                self._warn_auto_bounds()
                theta, n_iter, reports = self._newton_dp(
                    committee, stat, data, C, min(max_iter, DP_NEWTON_JOBS)
                )
        finally:
            if self.committee is None:
                committee.close()
        self._set_coefficients(stat, theta)
        self.n_iter_ = np.array([n_iter], dtype=np.int32)
        self.kaires_reports_ = reports
        self.kaires_report_ = reports[-1]
        full = self.dp()
        if full is not None:  # the whole fit's guarantee; each job's is in kaires_reports_
            self.kaires_report_ = {
                **reports[-1],
                "privacy": {
                    **dict(reports[-1].get("privacy") or {}),
                    **full.to_obj(),
                    "jobs": len(reports),
                    "composition": "basic",
                },
            }
        self.kaires_statistic_ = self._statistic_at(stat, theta).spec()
        self.n_providers_ = len(labels)
        self._warn_rejected(reports)
        return self

    def _statistic(
        self, d: int, K: int, xb: Any, coef: Any, groups: list[np.ndarray]
    ) -> LogisticRegressionStats:
        return LogisticRegressionStats(
            d, K, xb, coef,
            fit_intercept=bool(self.fit_intercept),
            max_rows=max(len(g) for g in groups),
            max_measurements=len(groups),
            frac_bits=self._frac_bits("provider"),
        )  # fmt: skip

    @staticmethod
    def _statistic_at(stat: LogisticRegressionStats, theta: np.ndarray) -> LogisticRegressionStats:
        p = stat.params()
        p["coef"] = theta.tolist()
        return LogisticRegressionStats(**p)

    def _job(
        self, committee: Committee, stat: LogisticRegressionStats, data: dict, dp: Any = None
    ) -> Any:
        return check_released(run_with_dp(committee, stat, data, self.progress, dp))

    def _penalty(self, stat: LogisticRegressionStats, C: float) -> np.ndarray:
        """Diagonal of the penalty's Hessian in the u frame, (K', m): w = v / scale."""
        row = 1.0 / (C * stat.scale**2)
        if stat.fit_intercept:
            row = np.concatenate([[0.0], row])
        return np.tile(row, (stat.n_logits, 1))

    def _original_gradient(self, stat: LogisticRegressionStats, G: np.ndarray) -> np.ndarray:
        """Gradient in the original units (w, b) from the u-frame gradient G (K', m)."""
        if not stat.fit_intercept:
            return G / stat.scale
        g0 = G[:, :1]
        return np.hstack([g0, G[:, 1:] / stat.scale + g0 * stat.center])

    def _newton(
        self,
        committee: Committee,
        stat: LogisticRegressionStats,
        data: dict,
        groups: list[np.ndarray],
        C: float,
        max_iter: int,
        tol: float,
    ) -> tuple[np.ndarray, int, list[dict[str, Any]]]:
        """Newton iterations with Armijo backtracking, one job per evaluated point."""
        P = self._penalty(stat, C)
        Km = P.size
        gauge = np.zeros((Km, Km))
        if stat.fit_intercept and stat.n_logits > 1:  # Σ_k b_k: the softmax's free direction
            idx = np.arange(stat.n_logits) * stat.width
            gauge[np.ix_(idx, idx)] = 1.0
        reports: list[dict[str, Any]] = []

        def evaluate(theta: np.ndarray) -> tuple[dict[str, Any], float, np.ndarray]:
            result = self._job(committee, self._statistic_at(stat, theta), data)
            reports.append(dict(result.report))
            s = result.aggregate
            if s["n"] < 1:
                raise ProtocolError("the job aggregated no rows; nothing to fit")
            obj = s["loss"] + 0.5 * float(np.sum(P * theta * theta))
            return s, obj, s["grad"] + P * theta

        theta = np.zeros(P.shape)
        s, obj, grad = evaluate(theta)
        n_iter = 0
        while True:
            mean_grad = self._original_gradient(stat, grad) / s["n"]
            if float(np.max(np.abs(mean_grad))) <= tol:
                break
            if n_iter >= max_iter:
                warnings.warn(
                    f"KairesLogisticRegression did not converge in max_iter={max_iter} Newton "
                    f"iterations (max |mean gradient| = {float(np.max(np.abs(mean_grad))):.3g} "
                    f"> tol={tol}); raise max_iter or scale the features",
                    ConvergenceWarning,
                    stacklevel=3,
                )
                break
            H = psd_part(s["hess"]) + np.diag(P.reshape(-1)) + gauge
            step = solve_newton_step(H, grad.reshape(-1)).reshape(P.shape)
            slope = float(np.sum(grad * step))
            accepted_before = sorted(reports[-1].get("accepted", []))
            t = 1.0
            for _ in range(MAX_HALVINGS + 1):
                cand = theta + t * step
                s2, obj2, grad2 = evaluate(cand)
                same_rows = s2["n"] == s["n"] and (
                    sorted(reports[-1].get("accepted", [])) == accepted_before
                )
                # Different accepted rows: the two losses are not comparable; take the step.
                if not same_rows or obj2 <= obj + ARMIJO * t * min(slope, 0.0):
                    break
                t /= 2
            n_iter += 1
            if not same_rows or obj2 <= obj:
                theta, s, obj, grad = cand, s2, obj2, grad2
            else:
                # No decrease even at 2^-10 of the Newton step: at the fixed-point noise
                # floor, or providers sent in-range sums inconsistent with their rows.
                warnings.warn(
                    f"KairesLogisticRegression stopped after {n_iter} Newton iterations: the "
                    "released penalised loss did not decrease along the Newton step (max |mean "
                    f"gradient| = {float(np.max(np.abs(mean_grad))):.3g} > tol={tol}). Either "
                    "tol is below the fixed-point precision (raise tol or frac_bits) or a "
                    "provider submitted in-range sums inconsistent with its rows (see "
                    "kaires_reports_)",
                    ConvergenceWarning,
                    stacklevel=3,
                )
                break
        return theta, n_iter, reports

    def _newton_dp(
        self,
        committee: Committee,
        stat: LogisticRegressionStats,
        data: dict,
        C: float,
        jobs: int,
    ) -> tuple[np.ndarray, int, list[dict[str, Any]]]:
        """``jobs`` full Newton steps, each from one (ε/jobs, δ/jobs)-DP job at the current
        parameters; the noisy Hessian is floored at the noise's spectral norm."""
        P = self._penalty(stat, C)
        Km = P.size
        gauge = np.zeros((Km, Km))
        if stat.fit_intercept and stat.n_logits > 1:
            idx = np.arange(stat.n_logits) * stat.width
            gauge[np.ix_(idx, idx)] = 1.0
        dp = self.dp(jobs)
        reports: list[dict[str, Any]] = []
        theta = np.zeros(P.shape)
        for _ in range(jobs):
            result = self._job(committee, self._statistic_at(stat, theta), data, dp)
            reports.append(dict(result.report))
            s = result.aggregate
            grad = np.asarray(s["grad"]) + P * theta
            H = noisy_psd(s["hess"], privacy_sigma(result.report)) + np.diag(P.reshape(-1))
            theta = theta + solve_newton_step(H + gauge, grad.reshape(-1)).reshape(P.shape)
        return theta, jobs, reports

    def _set_coefficients(self, stat: LogisticRegressionStats, theta: np.ndarray) -> None:
        if stat.fit_intercept:
            W = theta[:, 1:] / stat.scale
            b = theta[:, 0] - W @ stat.center
        else:
            W = theta / stat.scale
            b = np.zeros(stat.n_logits)
        self.coef_ = W
        self.intercept_ = b

    def _warn_rejected(self, reports: list[dict[str, Any]]) -> None:
        rejected: dict[str, Any] = {}
        steps = 0
        for rep in reports:  # rejected submissions, or providers the job excluded
            left_out = {str(k): str(v) for k, v in dict(rep.get("rejected") or {}).items()}
            left_out.update({str(k): str(v) for k, v in dict(rep.get("excluded") or {}).items()})
            if left_out:
                steps += 1
                rejected.update(left_out)
        if rejected:
            items = sorted(rejected.items())
            why = "; ".join(f"{k}: {v[:200]}" for k, v in items[:5])
            more = ", …" if len(items) > 5 else ""
            warnings.warn(
                f"{len(rejected)} provider(s) rejected in {steps} of {len(reports)} Newton jobs "
                f"({why}{more}); their rows were left out of those steps. See "
                "kaires_reports_[i]['rejected'] for each job",
                KairesWarning,
                stacklevel=3,
            )

    # --------------------------------------------------------------------- predict

    def decision_function(self, X: Any) -> np.ndarray:
        """Logits X·coef_ᵀ + intercept_: (n,) for two classes, (n, K) otherwise."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        Z = X @ self.coef_.T + self.intercept_
        return Z[:, 0] if Z.shape[1] == 1 else Z

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (n, K), columns in the order of ``classes_``."""
        Z = self.decision_function(X)
        if Z.ndim == 1:
            p = expit(Z)
            return np.stack([1.0 - p, p], axis=1)
        return softmax(Z, axis=1)

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """Logarithm of :meth:`predict_proba`."""
        return np.log(self.predict_proba(X))

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each row."""
        Z = self.decision_function(X)
        idx = (Z > 0).astype(int) if Z.ndim == 1 else np.argmax(Z, axis=1)
        return self.classes_[idx]
