"""Differentially private estimators: post-processing of noisy sufficient statistics (on
statistics decoded from real encodings with integer noise added in the field, as the
aggregators' noise arrives), parameters and scikit-learn conventions, and whole DP fits."""

from __future__ import annotations

import inspect
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
HAS_DP = "dp" in inspect.signature(LocalCommittee.run_job).parameters


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


@pytest.mark.skipif(not HAS_DP, reason="committee.run_job(dp=...) not available yet")
def test_dp_linear_regression_end_to_end(diabetes_sums: tuple) -> None:
    """A whole DP fit on a LocalCommittee: the report carries the guarantee, the model is
    close to the exact one at ε = 4 (the noise is small next to 442 rows), and declared
    bounds give no warning while bounds='auto' warns that the range is not covered."""
    X, y = diabetes_sums[:2]
    bounds = (auto_bounds(X).tolist(), auto_bounds(y[:, None])[0].tolist())
    c = LocalCommittee()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", KairesWarning)
            est = KairesLinearRegression(committee=c, bounds=bounds, epsilon=4.0, delta=1e-6)
            est.fit(X, y)
        priv = est.kaires_report_["privacy"]
        assert priv["epsilon"] == 4.0 and priv["delta"] == 1e-6 and priv["sigma"] > 0
        exact = KairesLinearRegression(committee=c, bounds=bounds).fit(X, y)
        assert "privacy" not in exact.kaires_report_ or not exact.kaires_report_["privacy"]
        ex = mse(X, y, exact.coef_, exact.intercept_)
        assert mse(X, y, est.coef_, est.intercept_) < 1.5 * ex
        with pytest.warns(KairesWarning, match="bounds='auto'"):
            KairesRidge(committee=c, epsilon=4.0).fit(X, y)
    finally:
        c.close()
