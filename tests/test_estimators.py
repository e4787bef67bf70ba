"""Kaires estimators: the normal-equation solve against scikit-learn (on statistics decoded
from real encodings), row splitting, bounds, and scikit-learn's estimator conventions.

Whole-job fits against scikit-learn are in tests/test_e2e_acceptance.py; the scikit-learn
checks at the end fit through the whole protocol too.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_diabetes
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LinearRegression, Ridge

from kaires_fl import KairesLinearRegression, KairesRidge
from kaires_fl.errors import ConfigError, ProtocolError
from kaires_fl.estimators import auto_bounds, solve_normal_equations, split_rows
from kaires_fl.statistics import LinearRegressionStats


def decoded(
    X: np.ndarray, y: np.ndarray, granularity: str, providers: int = 10
) -> tuple[dict, LinearRegressionStats]:
    """Statistics of (X, y) as the consumer decodes them: the field sum of every provider's
    truncated measurements (what the aggregators' shares reconstruct to)."""
    groups = np.array_split(np.arange(len(X)), providers)
    stat = LinearRegressionStats(
        X.shape[1],
        auto_bounds(X),
        auto_bounds(y[:, None])[0],
        granularity,
        max_rows=max(map(len, groups)),
        max_measurements=providers if granularity == "provider" else len(X),
    )
    F = stat.field
    total = F.zeros(stat.output_len)
    count = 0
    for g in groups:
        meas = stat.measurements(X[g], y[g])
        total = F.add(total, F.sum(stat.circuit.truncate(meas), axis=0))
        count += meas.shape[0]
    return stat.decode(total, count), stat


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a) - b)) / np.max(np.abs(b)))


@pytest.fixture(scope="module")
def diabetes() -> tuple[np.ndarray, np.ndarray]:
    return load_diabetes(return_X_y=True)


@pytest.fixture(scope="module")
def synthetic() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    X = rng.normal(size=(20_000, 20)) * rng.uniform(0.1, 10, size=20) + rng.normal(size=20)
    y = X @ rng.normal(size=20) + 5 + rng.normal(size=20_000)
    return X, y


@pytest.mark.parametrize("granularity", ["provider", "record"])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_normal_equations_match_sklearn(
    diabetes: tuple, synthetic: tuple, granularity: str, fit_intercept: bool
) -> None:
    for X, y in (diabetes, synthetic):
        stats, stat = decoded(X, y, granularity)
        # Record granularity certifies the quantised rows; provider granularity the raw ones.
        if granularity == "record":
            Z = stat.dequantise(stat.quantise(X, y))
            Xs, ys = Z[:, :-1], Z[:, -1]
        else:
            Xs, ys = X, y
        for alpha, ref in ((0.0, LinearRegression), (0.5, Ridge), (10.0, Ridge)):
            kw = {"alpha": alpha} if ref is Ridge else {}
            sk = ref(fit_intercept=fit_intercept, **kw).fit(Xs, ys)
            coef, intercept = solve_normal_equations(stats, fit_intercept, alpha)
            assert rel(coef, sk.coef_) <= 1e-6, (granularity, alpha)
            assert abs(intercept - sk.intercept_) <= 1e-6 * max(1.0, abs(sk.intercept_))
        if granularity == "record":
            # documented: within the quantisation error of the raw-data fit
            sk = LinearRegression(fit_intercept=fit_intercept).fit(X, y)
            assert rel(solve_normal_equations(stats, fit_intercept)[0], sk.coef_) <= 1e-5


def test_rank_deficient_gives_the_minimum_norm_solution(diabetes: tuple) -> None:
    X, y = diabetes
    X = np.hstack([X, X[:, :1]])  # a duplicated column
    stats, _ = decoded(X, y, "provider")
    sk = LinearRegression().fit(X, y)
    coef, intercept = solve_normal_equations(stats, True)
    assert rel(coef, sk.coef_) <= 1e-6
    assert abs(intercept - sk.intercept_) <= 1e-6 * abs(sk.intercept_)


def test_no_rows_is_a_protocol_error() -> None:
    stat = LinearRegressionStats(2, [-1, 1], [-1, 1], max_rows=5, max_measurements=2)
    stats = stat.decode(stat.field.elements([1 << (stat.bits - 1)] * stat.output_len), 1)
    with pytest.raises(ProtocolError, match="no rows"):
        solve_normal_equations(stats)


def test_split_rows() -> None:
    labels, groups = split_rows(10, 3)
    assert labels == ["provider-000", "provider-001", "provider-002"]
    assert [g.tolist() for g in groups] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert len(split_rows(2, 10)[0]) == 2  # never an empty provider
    labels, groups = split_rows(6, 99, provider=["b", "a", "c", "a", "b", "a"])
    assert labels == ["a", "b", "c"]
    assert [g.tolist() for g in groups] == [[1, 3, 5], [0, 4], [2]]
    labels, groups = split_rows(4, 99, provider=np.array([2, 10, 1, 2]))
    assert labels == ["1", "10", "2"]  # string order, as the committee indexes providers
    assert [g.tolist() for g in groups] == [[2], [1], [0, 3]]
    with pytest.raises(ConfigError, match="5 labels for 6 rows"):
        split_rows(6, 2, provider=[1, 2, 3, 4, 5])
    with pytest.raises(ConfigError, match="n_providers must be a positive integer"):
        split_rows(6, 0)


def test_auto_bounds() -> None:
    b = auto_bounds(np.array([[0.0, 5.0], [10.0, 5.0]]))
    assert b.tolist() == [[-0.5, 10.5], [4.0, 6.0]]


def test_sklearn_conventions_without_fitting() -> None:
    for cls in (KairesLinearRegression, KairesRidge):
        est = cls(n_providers=4, granularity="record", frac_bits=16)
        params = est.get_params()
        assert params["n_providers"] == 4 and params["committee"] is None
        assert params["bounds"] == "auto" and params["progress"] == "auto"
        c = clone(est)
        assert c is not est and c.get_params() == params
        assert est.set_params(n_providers=7) is est and est.n_providers == 7
        with pytest.raises(NotFittedError):
            est.predict(np.zeros((2, 3)))
    shared = object()  # a committee is a running service: clones share it, never copy it
    assert clone(KairesRidge(committee=shared, alpha=3.0)).committee is shared
    assert KairesRidge().alpha == 1.0
    assert KairesLinearRegression().n_providers == 10


def test_bad_parameters_fail_before_any_job() -> None:
    X, y = np.zeros((20, 2)), np.arange(20.0)
    with pytest.raises(ConfigError, match="alpha must be a finite number"):
        KairesRidge(alpha=-1.0).fit(X, y)
    with pytest.raises(ConfigError, match="granularity must be"):
        KairesLinearRegression(granularity="row").fit(X, y)
    with pytest.raises(ConfigError, match="bounds must be 'auto' or"):
        KairesLinearRegression(bounds="tight").fit(X, y)
    with pytest.raises(ConfigError, match="bounds must be 'auto' or a pair"):
        KairesLinearRegression(bounds=3).fit(X, y)
    with pytest.raises(ConfigError, match=r"feature 1 .*x_bounds"):
        KairesLinearRegression(bounds=([[-1, 1], [0, 0.5]], [0, 100])).fit(X + np.array([0, 1]), y)


# scikit-learn's own checks. The full check_estimator runs ~100 fits, each a whole Kaires job
# (≈ 80 s): it runs as a slow test; the fast suite runs the checks below, one or two fits each.
FAST_CHECKS = [
    "check_estimator_cloneable",
    "check_no_attributes_set_in_init",
    "check_parameters_default_constructible",
    "check_get_params_invariance",
    "check_set_params",
    "check_estimators_unfitted",
    "check_estimators_fit_returns_self",
    "check_n_features_in_after_fitting",
    "check_fit2d_predict1d",
    "check_estimators_nan_inf",
    "check_estimators_pickle",
    "check_fit_check_is_fitted",
    "check_dict_unchanged",
]


@pytest.mark.parametrize("check", FAST_CHECKS)
def test_sklearn_check(check: str) -> None:
    from sklearn.utils import estimator_checks

    est = KairesRidge(n_providers=3)
    getattr(estimator_checks, check)(type(est).__name__, est)


@pytest.mark.slow
def test_sklearn_check_estimator_in_full() -> None:
    # KairesRidge runs every line KairesLinearRegression does (alpha = 0 is the latter), so
    # one full run keeps the slow suite short; both passed in full when this was written.
    from sklearn.utils.estimator_checks import check_estimator

    results = check_estimator(KairesRidge(n_providers=3), on_fail=None)
    failed = [(r["check_name"], str(r["exception"])) for r in results if r["status"] == "failed"]
    assert not failed


def test_estimators_depend_on_the_committee_interface() -> None:
    """Shape: importing the estimators loads neither the simulation nor the node modules,
    and any :class:`~kaires_fl.committee.Committee` (here a delegating wrapper, not a
    LocalCommittee) runs the fit."""
    import subprocess
    import sys
    from typing import Any

    code = (
        "import sys, kaires_fl.estimators, kaires_fl.committee\n"
        "bad = [m for m in ('kaires_fl.simulation', 'kaires_fl.node.client', "
        "'kaires_fl.transport.memory') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)

    from kaires_fl.committee import Committee
    from kaires_fl.simulation import LocalCommittee

    class Wrapped:
        """A committee that is not a LocalCommittee: it delegates and counts jobs."""

        def __init__(self, inner: LocalCommittee) -> None:
            self.inner, self.jobs = inner, 0

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

        def run_job(
            self, statistic: Any, data: Any, consumer: Any = None, progress: bool | str = False
        ) -> Any:
            self.jobs += 1
            return self.inner.run_job(statistic, data, consumer, progress)

    inner = LocalCommittee()
    try:
        w = Wrapped(inner)
        assert isinstance(inner, Committee)
        X, y = load_diabetes(return_X_y=True)
        est = KairesLinearRegression(n_providers=4, committee=w).fit(X, y)
        assert w.jobs == 1
        sk = LinearRegression().fit(X, y)
        assert np.max(np.abs(est.coef_ - sk.coef_)) / np.max(np.abs(sk.coef_)) <= 1e-6
    finally:
        inner.close()
