"""Differentially private estimators: post-processing of noisy sufficient statistics (on
statistics decoded from real encodings with integer noise added in the field, as the
aggregators' noise arrives), parameters and scikit-learn conventions, and whole DP fits."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.datasets import load_diabetes

from kaires_fl import (
    KairesLinearRegression,
    KairesLogisticRegression,
    KairesPCA,
    KairesRidge,
    KairesStandardScaler,
)
from kaires_fl.errors import ConfigError, KairesWarning
from kaires_fl.estimators import auto_bounds, solve_normal_equations
from kaires_fl.estimators.base import NOISE_FLOOR, noisy_psd, privacy_sigma
from kaires_fl.estimators.linear import denoise_stats
from kaires_fl.simulation import LocalCommittee
from kaires_fl.statistics import LinearRegressionStats

ESTIMATORS = [
    KairesLinearRegression,
    KairesRidge,
    KairesLogisticRegression,
    KairesPCA,
    KairesStandardScaler,
]


@pytest.fixture(scope="module")
def diabetes_sums() -> tuple[np.ndarray, np.ndarray, LinearRegressionStats, np.ndarray]:
    """The diabetes data, its statistic (10 providers) and the exact field aggregate."""
    X, y = load_diabetes(return_X_y=True)
    groups = np.array_split(np.arange(len(X)), 10)
    stat = LinearRegressionStats(
        X.shape[1], auto_bounds(X), auto_bounds(y[:, None])[0], "provider",
        max_rows=max(map(len, groups)), max_measurements=10,
    )  # fmt: skip
    F = stat.field
    total = F.zeros(stat.output_len)
    for g in groups:
        meas = stat.measurements(X[g], y[g])
        total = F.add(total, F.sum(stat.circuit.truncate(meas), axis=0))
    return X, y, stat, total


def noisy_decode(stat: LinearRegressionStats, total: np.ndarray, sigma: float, seed: int) -> dict:
    """Decode ``total`` plus rounded Gaussian integer noise of std σ·2^f on every moment but
    the row count (σ in the scaled frame, as the report's ``sigma_scaled``)."""
    rng = np.random.default_rng(seed)
    z = np.rint(rng.normal(0.0, sigma * 2.0**stat._f, stat.output_len))
    z[0] = 0.0
    F = stat.field
    noise = np.array([int(v) % F.MODULUS for v in z], dtype=np.uint64)
    return stat.decode(F.add(total, noise), 10)


def mse(X: np.ndarray, y: np.ndarray, coef: np.ndarray, intercept: float) -> float:
    return float(np.mean((X @ coef + intercept - y) ** 2))


def test_denoised_fit_is_stable_where_the_raw_solve_is_not(diabetes_sums: tuple) -> None:
    """σ = 2 in the scaled frame (about 5 % of the scatter's diagonal): over 10 noise draws the
    PSD-floored solve stays within 20 % of the exact fit's training MSE; solving the raw
    noisy normal equations does much worse (an indefinite or noise-conditioned scatter)."""
    X, y, stat, total = diabetes_sums
    exact = mse(X, y, *solve_normal_equations(stat.decode(total, 10)))
    raw, fixed = [], []
    for seed in range(10):
        stats = noisy_decode(stat, total, 2.0, seed)
        raw.append(mse(X, y, *solve_normal_equations(stats)))
        fixed.append(mse(X, y, *solve_normal_equations(denoise_stats(stats, 2.0))))
    assert max(fixed) < 1.2 * exact
    assert np.median(raw) > 1.3 * np.median(fixed)
    # σ = 0 (no DP) leaves the statistics untouched
    st0 = stat.decode(total, 10)
    assert denoise_stats(st0, 0.0) is st0


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 8),
    st.floats(0.0, 5.0),
    st.integers(0, 2**32 - 1),
)
def test_noisy_psd_floor(d: int, sigma: float, seed: int) -> None:
    """Symmetric, every eigenvalue ≥ the floor 2σ√d·NOISE_FLOOR (≥ 0 at σ = 0), and a matrix
    whose eigenvalues already exceed the floor is unchanged."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(d, d)) * 3
    out = noisy_psd(A, sigma)
    floor = NOISE_FLOOR * 2 * sigma * np.sqrt(d)
    assert np.allclose(out, out.T)
    lam = np.linalg.eigvalsh(out)
    assert lam.min() >= floor - 1e-9 * max(1.0, np.abs(lam).max())
    B = A @ A.T + (floor + 1.0) * np.eye(d)
    assert np.allclose(noisy_psd(B, sigma), B)


def test_privacy_sigma_reads_the_report() -> None:
    assert privacy_sigma({}) == 0.0 and privacy_sigma({"privacy": None}) == 0.0
    assert privacy_sigma({"privacy": {"sigma": 3.0}}) == 3.0
    assert privacy_sigma({"privacy": {"sigma": 3.0, "sigma_scaled": 0.5}}) == 0.5


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_epsilon_delta_are_sklearn_parameters(cls: type) -> None:
    est = cls(epsilon=1.0, delta=1e-7)
    assert est.get_params()["epsilon"] == 1.0 and est.get_params()["delta"] == 1e-7
    assert clone(est).get_params()["epsilon"] == 1.0
    assert est.set_params(epsilon=0.5).epsilon == 0.5
    assert cls().epsilon is None and cls().delta is None
    dp = est.dp()
    assert (dp.epsilon, dp.delta) == (0.5, 1e-7)
    assert cls().dp() is None
    assert cls(epsilon=2.0).dp().delta == 1e-6  # the default δ
    four = cls(epsilon=2.0, delta=1e-6).dp(4)  # a fit of 4 jobs: basic composition
    assert four.epsilon == 0.5 and four.delta == 2.5e-7


def test_bad_privacy_parameters_fail_before_any_job() -> None:
    X, y = np.zeros((20, 2)), np.arange(20.0)
    with pytest.raises(ConfigError, match="without epsilon"):
        KairesLinearRegression(delta=1e-6).fit(X, y)
    with pytest.raises(ConfigError, match="epsilon"):
        KairesRidge(epsilon=-1.0).fit(X, y)
    with pytest.raises(ConfigError, match="delta"):
        KairesPCA(epsilon=1.0, delta=2.0).fit(X)


def test_dp_linear_regression_end_to_end() -> None:
    """A whole record-level DP fit on a LocalCommittee (20,000 records, 2 features, ε = 4):
    the report carries the guarantee, the coefficients are within 0.1 of the exact fit's
    (the noise is small next to 20,000 rows), declared bounds give no warning and
    bounds='auto' warns that the data's range is not covered."""
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 1, (20_000, 2))
    y = np.clip(1 + 2 * X[:, 0] - X[:, 1] + rng.normal(0, 0.1, len(X)), -1, 4)
    bounds = ([[0, 1], [0, 1]], [-1, 4])
    c = LocalCommittee()
    try:
        exact = KairesLinearRegression(
            committee=c, bounds=bounds, granularity="record", frac_bits=4
        ).fit(X, y)
        assert exact.kaires_report_.get("privacy") is None
        with warnings.catch_warnings():
            warnings.simplefilter("error", KairesWarning)
            est = KairesLinearRegression(
                committee=c, bounds=bounds, granularity="record", epsilon=4.0, delta=1e-5
            ).fit(X, y)
        priv = est.kaires_report_["privacy"]
        assert priv["epsilon"] == 4.0 and priv["delta"] == 1e-5 and max(priv["sigma"]) > 0
        assert priv["unit"] == "record"
        # per-block noise (sums, products, the public count): σ list, one per block
        assert len(priv["sigma"]) == len(priv["blocks"]) == 3 and priv["sigma"][2] == 0
        assert np.max(np.abs(est.coef_ - exact.coef_)) < 0.1
        assert abs(est.intercept_ - exact.intercept_) < 0.1
        with pytest.warns(KairesWarning, match="bounds='auto'"):
            KairesRidge(committee=c, granularity="record", epsilon=4.0).fit(X[:2000], y[:2000])
    finally:
        c.close()


def test_every_estimator_fits_with_dp() -> None:
    """PCA, the scaler and the logistic regression run their jobs with dp, report the
    guarantee and give finite models (noisy, post-processed)."""
    rng = np.random.default_rng(1)
    X = rng.uniform(-1, 1, (3000, 3))
    c = LocalCommittee()
    try:
        kw = {"committee": c, "bounds": [-1, 1], "epsilon": 2.0, "delta": 1e-5}
        pca = KairesPCA(n_components=2, granularity="record", **kw).fit(X)
        assert pca.kaires_report_["privacy"]["epsilon"] == 2.0
        assert np.all(np.isfinite(pca.components_)) and np.all(pca.explained_variance_ >= 0)
        sc = KairesStandardScaler(granularity="record", **kw).fit(X)
        assert np.all(np.isfinite(sc.scale_)) and np.all(sc.var_ >= 0)
        assert sc.n_samples_seen_ == 3000  # the record count is public: exact
        yc = (X[:, 0] + 0.3 * X[:, 1] > 0).astype(int)
        lr = KairesLogisticRegression(n_providers=10, **kw).fit(X, yc)
        priv = lr.kaires_report_["privacy"]
        assert priv["epsilon"] == 2.0 and priv["jobs"] == len(lr.kaires_reports_) == 4
        assert all(r["privacy"]["epsilon"] == 0.5 for r in lr.kaires_reports_)
        assert np.all(np.isfinite(lr.coef_))
    finally:
        c.close()
