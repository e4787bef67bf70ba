"""KairesLogisticRegression and its Newton statistic: the provider's sums against direct
numpy formulas, bounds and encodings, fits through whole Kaires jobs against scikit-learn's
LogisticRegression (breast-cancer, binary; iris, multinomial), a rejected provider, and
scikit-learn's estimator checks.

Tolerances: predictions agree with scikit-learn's default fit on ≥ 99 % of rows (the issue's
acceptance bar); with a tight ``tol`` the coefficients equal scikit-learn's tightly converged
ones to 1e-3 absolute (the Newton optimum of the same objective; the fixed-point error of the
sums is ≈ 1e-12 relative).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import expit, softmax
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer, load_iris
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from kaires_fl import KairesLogisticRegression
from kaires_fl.errors import ConfigError, KairesWarning
from kaires_fl.estimators import auto_bounds
from kaires_fl.estimators.logistic import psd_part, solve_newton_step
from kaires_fl.simulation import LocalCommittee
from kaires_fl.statistics import LogisticRegressionStats, from_params


@pytest.fixture(scope="module")
def cancer() -> tuple[np.ndarray, np.ndarray]:
    X, y = load_breast_cancer(return_X_y=True)
    return StandardScaler().fit_transform(X), y


@pytest.fixture(scope="module")
def iris() -> tuple[np.ndarray, np.ndarray]:
    X, y = load_iris(return_X_y=True)
    return StandardScaler().fit_transform(X), y


def _decoded(stat: LogisticRegressionStats, X: np.ndarray, y: np.ndarray, k: int) -> dict:
    """The consumer's decoding of the field sum of k providers' truncated measurements."""
    F = stat.field
    total = F.zeros(stat.output_len)
    for g in np.array_split(np.arange(len(X)), k):
        total = F.add(total, F.sum(stat.circuit.truncate(stat.measurements(X[g], y[g])), axis=0))
    return stat.decode(total, k)


# ------------------------------------------------------------------------- statistic


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_decoded_sums_equal_the_direct_formulas(n_classes: int, fit_intercept: bool) -> None:
    rng = np.random.default_rng(n_classes)
    X = rng.normal(size=(300, 4)) * [1, 5, 0.1, 2] + [0, 3, -1, 0]
    y = rng.integers(0, n_classes, size=300)
    K1 = 1 if n_classes == 2 else n_classes
    coef = rng.normal(size=(K1, 4 + fit_intercept)) * 0.5
    stat = LogisticRegressionStats(
        4, n_classes, auto_bounds(X), coef, fit_intercept, max_rows=100, max_measurements=3
    )
    out = _decoded(stat, X, y, 3)
    U = (X - stat.center) / stat.scale
    A = np.hstack([np.ones((300, 1)), U]) if fit_intercept else U
    Z = A @ coef.T
    if n_classes == 2:
        p = expit(Z[:, 0])
        loss = np.sum(np.logaddexp(0, Z[:, 0]) - y * Z[:, 0])
        g = (A.T @ (p - y))[None, :]
        H = A.T @ (A * (p * (1 - p))[:, None])
    else:
        P = softmax(Z, axis=1)
        Y = np.eye(n_classes)[y]
        loss = -np.sum(np.log(P[np.arange(300), y]))
        g = (A.T @ (P - Y)).T
        H = np.block(
            [
                [A.T @ (A * (P[:, k] * ((k == j) - P[:, j]))[:, None]) for j in range(n_classes)]
                for k in range(n_classes)
            ]
        )
    assert out["n"] == 300
    np.testing.assert_allclose(out["loss"], loss, rtol=1e-9)
    np.testing.assert_allclose(out["grad"], g, atol=1e-9)
    np.testing.assert_allclose(out["hess"], H, atol=1e-9)
    # every party rebuilds the same statistic (coefficients included) from the job's record
    assert from_params(*stat.spec()) == stat
    assert np.array_equal(from_params(*stat.spec()).coef, coef)


def test_every_entry_is_bounded_by_the_row_count() -> None:
    """Robustness: whatever the data within bounds and the public parameters, an honest
    provider's entries lie in [−n, n], so the SumVec range (max_rows) admits them and a
    dishonest one can shift each released sum by at most max_rows."""
    rng = np.random.default_rng(1)
    X = rng.uniform(-1, 1, size=(50, 3))
    stat = LogisticRegressionStats(
        3, 3, [-1, 1], rng.normal(size=(3, 4)) * 40, max_rows=50, max_measurements=2
    )
    v = stat.local_sums(X, rng.integers(0, 3, size=50))
    assert np.all(np.abs(v) <= 50) and v[0] == 50 and 0 <= v[1] <= 50
    stat.measurements(X, rng.integers(0, 3, size=50))  # in range: encodes


def test_statistic_refuses_bad_inputs() -> None:
    with pytest.raises(ConfigError, match="provider granularity only"):
        LogisticRegressionStats(2, 2, [-1, 1], max_rows=5, granularity="record")
    with pytest.raises(ConfigError, match="n_classes must be ≥ 2"):
        LogisticRegressionStats(2, 1, [-1, 1], max_rows=5)
    with pytest.raises(ConfigError, match=r"coef must be a finite \(1, 3\)"):
        LogisticRegressionStats(2, 2, [-1, 1], [[0.0, np.nan, 1.0]], max_rows=5)
    stat = LogisticRegressionStats(2, 2, [-1, 1], max_rows=5)
    with pytest.raises(ConfigError, match=r"feature 1 .*x_bounds"):
        stat.measurements(np.array([[0.0, 2.0]]), [0])
    with pytest.raises(ConfigError, match="labels y must lie in 0 … 1"):
        stat.measurements(np.zeros((2, 2)), [0, 2])
    with pytest.raises(ConfigError, match="row cap"):
        stat.measurements(np.zeros((6, 2)), [0] * 6)


def test_psd_guard_keeps_the_step_a_descent_direction() -> None:
    """Robustness: providers may make the released Hessian indefinite (any bounded values);
    the consumer's step is still a descent direction of the penalised loss."""
    rng = np.random.default_rng(3)
    B = rng.normal(size=(6, 6))
    H = B + B.T - 8 * np.eye(6)  # indefinite
    Hp = psd_part(H)
    assert np.min(np.linalg.eigvalsh(Hp)) >= -1e-9
    g = rng.normal(size=6)
    step = solve_newton_step(Hp + 0.1 * np.eye(6), g)
    assert float(g @ step) < 0


# ------------------------------------------------------------------ fits (whole jobs)


def test_binary_breast_cancer_agrees_with_sklearn(cancer: tuple) -> None:
    X, y = cancer
    sk = LogisticRegression().fit(X, y)
    est = KairesLogisticRegression(progress=False).fit(X, y)
    assert np.mean(est.predict(X) == sk.predict(X)) >= 0.99
    assert est.coef_.shape == (1, 30) and est.intercept_.shape == (1,)
    assert list(est.classes_) == [0, 1] and est.n_iter_.shape == (1,) and est.n_iter_[0] >= 1
    assert len(est.kaires_reports_) >= est.n_iter_[0] + 1  # one job per evaluated point
    proba = est.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_allclose(proba, sk.predict_proba(X), atol=0.05)
    assert est.decision_function(X).shape == (len(X),)


def test_multinomial_iris_agrees_with_sklearn(iris: tuple) -> None:
    X, y = iris
    labels = np.array(["setosa", "versicolor", "virginica"])[y]
    sk = LogisticRegression().fit(X, labels)
    est = KairesLogisticRegression(n_providers=5, progress=False, tol=1e-8).fit(X, labels)
    assert np.mean(est.predict(X) == sk.predict(X)) >= 0.99
    assert list(est.classes_) == list(sk.classes_)
    assert est.coef_.shape == (3, 4) and est.intercept_.shape == (3,)
    tight = LogisticRegression(tol=1e-12, max_iter=10_000).fit(X, labels)
    np.testing.assert_allclose(est.coef_, tight.coef_, atol=1e-3)
    np.testing.assert_allclose(est.intercept_, tight.intercept_, atol=1e-3)
    np.testing.assert_allclose(est.predict_proba(X), tight.predict_proba(X), atol=1e-4)


def test_rejected_provider_warns_and_the_fit_still_agrees(cancer: tuple) -> None:
    """Robustness: a provider whose measurement is out of range is rejected at every Newton
    job, the user is told (KairesWarning naming how many and why), and the fit on the other
    providers' rows still agrees with scikit-learn."""
    X, y = cancer
    committee = LocalCommittee(faults={"provider": {0: "out_of_range"}})
    try:
        est = KairesLogisticRegression(committee=committee, n_providers=6, progress=False)
        with pytest.warns(KairesWarning, match=r"1 provider\(s\) rejected in \d+ of \d+"):
            est.fit(X, y)
    finally:
        committee.close()
    assert all("provider-000" in rep["rejected"] for rep in est.kaires_reports_)
    sk = LogisticRegression().fit(X, y)
    assert np.mean(est.predict(X) == sk.predict(X)) >= 0.99
    # it is the fit on the accepted rows (provider-000 held the first sixth)
    rest = np.array_split(np.arange(len(X)), 6)[0][-1] + 1
    sk_rest = LogisticRegression(tol=1e-10, max_iter=10_000).fit(X[rest:], y[rest:])
    np.testing.assert_allclose(est.coef_, sk_rest.coef_, atol=0.05)


class _LyingStats(LogisticRegressionStats):
    """The attacker: a provider holding ``target`` rows submits, instead of its sums, the
    largest vector the SumVec range proof admits (claiming no rows), with its own keys and
    a valid proof; everyone else (the aggregators rebuild the job's statistic from the
    ledger) is honest."""

    target: np.ndarray | None = None

    def measurements(self, X: object, y: object = None) -> np.ndarray:
        if self.target is not None and np.array_equal(np.asarray(X), self.target):
            ints = np.full((1, self.length), (1 << self.bits) - 1, dtype=np.int64)
            ints[0, 0] = 1 << (self.bits - 1)  # "0 rows"
            return self.circuit.encode(ints)
        return super().measurements(X, y)


def test_a_lying_provider_moves_each_released_sum_by_a_bounded_amount(cancer: tuple) -> None:
    """Robustness: a provider submitting any in-range vector is accepted, yet moves every
    released sum (count, loss/L, gradient, Hessian) by at most 2^bitlen(max_rows)
    (< 2·max_rows) — the SumVec proof's range; a larger value fails its proof (the
    out_of_range fault above is rejected)."""
    X, y = cancer
    groups = np.array_split(np.arange(len(X)), 5)
    data = {f"p{i}": (X[g], y[g]) for i, g in enumerate(groups)}
    coef = np.full((1, 31), 0.05)
    stat = LogisticRegressionStats(
        30, 2, auto_bounds(X), coef, max_rows=max(map(len, groups)), max_measurements=5
    )
    liar = _LyingStats(**stat.params())
    liar.target = data["p0"][0]
    committee = LocalCommittee()
    try:
        honest = committee.run_job(stat, data, progress=False)
        lied = committee.run_job(liar, data, progress=False)
    finally:
        committee.close()
    assert not lied.report["rejected"] and len(lied.report["accepted"]) == 5
    own = stat.local_sums(*data["p0"])  # the liar's honest contribution, replaced by the lie

    def flat(a: dict) -> np.ndarray:
        iu = np.triu_indices(31)
        return np.concatenate(
            [[a["n"], a["loss"] / stat.loss_scale], a["grad"].ravel(), a["hess"][iu]]
        )

    contribution = flat(lied.aggregate) - flat(honest.aggregate) + own
    bound = 2 ** stat.max_rows.bit_length()
    assert np.all(np.abs(contribution) <= bound + 1e-6)
    assert np.all(contribution[1:] >= bound / 2)  # and the lie did take effect


def test_a_lying_provider_cannot_break_the_fit(cancer: tuple) -> None:
    """Robustness: with a provider lying within its range at every Newton job, the fit
    still terminates within its job budget with finite coefficients, and says it stopped
    early (ConvergenceWarning) instead of returning silently."""
    from sklearn.exceptions import ConvergenceWarning

    X, y = cancer
    target = X[: int(np.ceil(len(X) / 10))]

    class LiarFit(KairesLogisticRegression):
        @staticmethod
        def _statistic_at(stat: LogisticRegressionStats, theta: np.ndarray) -> _LyingStats:
            p = stat.params()
            p["coef"] = theta.tolist()
            lying = _LyingStats(**p)
            lying.target = target
            return lying

    with pytest.warns(ConvergenceWarning, match="did not decrease"):
        est = LiarFit(n_providers=10, max_iter=5, progress=False).fit(X, y)
    assert np.all(np.isfinite(est.coef_)) and np.all(np.isfinite(est.intercept_))
    assert len(est.kaires_reports_) <= 1 + 5 * 11
    assert all(not rep["rejected"] for rep in est.kaires_reports_)


def test_max_iter_warns_convergence(iris: tuple) -> None:
    from sklearn.exceptions import ConvergenceWarning

    X, y = iris
    with pytest.warns(ConvergenceWarning, match="max_iter=1"):
        est = KairesLogisticRegression(n_providers=3, max_iter=1, progress=False).fit(X, y)
    assert est.n_iter_[0] == 1


# ------------------------------------------------------------------ sklearn conventions


def test_parameters_and_errors_before_any_job() -> None:
    est = KairesLogisticRegression()
    p = est.get_params()
    assert p["C"] == 1.0 and p["max_iter"] == 100 and p["tol"] == 1e-4 and p["fit_intercept"]
    shared = object()
    assert clone(KairesLogisticRegression(committee=shared)).committee is shared
    with pytest.raises(NotFittedError):
        est.predict(np.zeros((2, 3)))
    X, y = np.zeros((20, 2)), np.arange(20) % 2
    with pytest.raises(ConfigError, match="C must be a finite number > 0"):
        KairesLogisticRegression(C=0).fit(X, y)
    with pytest.raises(ConfigError, match="max_iter must be a positive integer"):
        KairesLogisticRegression(max_iter=0).fit(X, y)
    with pytest.raises(ConfigError, match="at least 2 classes"):
        KairesLogisticRegression().fit(X, np.zeros(20))
    with pytest.raises(ValueError, match="Unknown label type"):
        KairesLogisticRegression().fit(X, np.linspace(0, 1, 20))
    with pytest.raises(ConfigError, match="bounds must be 'auto' or x_bounds"):
        KairesLogisticRegression(bounds="tight").fit(X, y)


FAST_CHECKS = [
    "check_no_attributes_set_in_init",
    "check_parameters_default_constructible",
    "check_estimators_unfitted",
    "check_classifiers_one_label",
    "check_fit2d_1sample",
    "check_estimators_pickle",
]


@pytest.mark.parametrize("check", FAST_CHECKS)
def test_sklearn_check(check: str) -> None:
    from sklearn.utils import estimator_checks

    est = KairesLogisticRegression(n_providers=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KairesWarning)
        getattr(estimator_checks, check)(type(est).__name__, est)


@pytest.mark.slow
def test_sklearn_check_estimator_in_full() -> None:
    from sklearn.utils.estimator_checks import check_estimator

    results = check_estimator(KairesLogisticRegression(n_providers=3), on_fail=None)
    failed = [(r["check_name"], str(r["exception"])) for r in results if r["status"] == "failed"]
    assert not failed


# ------------------------------------------------------------- peers' inputs (fuzzed)

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(
    mutation=st.dictionaries(
        st.sampled_from(
            [
                "n_features",
                "n_classes",
                "x_bounds",
                "coef",
                "fit_intercept",
                "max_rows",
                "max_measurements",
                "frac_bits",
                "granularity",
                "extra",
            ]
        ),
        _json | st.integers(min_value=-(2**70), max_value=2**70),
        max_size=3,
    )
)
def test_job_parameters_from_the_ledger_give_a_statistic_or_config_error(mutation: dict) -> None:
    """Robustness: every aggregator rebuilds the statistic from the job's (kind, params) on
    the ledger; any mutated parameters give a statistic or ConfigError, never another
    exception and never an oversized allocation (MAX_ENTRIES)."""
    params = LogisticRegressionStats(3, 3, [-1, 1], max_rows=10, max_measurements=4).params()
    params.update(mutation)
    try:
        stat = from_params("logistic_regression", params)
    except ConfigError:
        return
    assert stat.length <= 1 << 20 and np.all(np.isfinite(stat.coef))
    assert stat.length == stat.circuit.OUTPUT_LEN  # the aggregators can build its circuit


@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_any_aggregate_decodes_to_finite_numbers(data: st.DataObject) -> None:
    """Robustness: whatever field elements the aggregators reconstruct (e.g. sums of lying
    providers' in-range vectors), decoding gives finite numbers or ConfigError."""
    stat = LogisticRegressionStats(2, 3, [-1, 1], np.ones((3, 3)), max_rows=10, max_measurements=4)
    F = stat.field
    ints = data.draw(
        st.lists(st.integers(0, F.MODULUS - 1), min_size=stat.output_len, max_size=stat.output_len)
    )
    k = data.draw(st.integers(0, 6))
    try:
        out = stat.decode(F.elements(ints), k)
    except ConfigError:
        assert k > 4
        return
    assert np.isfinite(out["loss"]) and np.all(np.isfinite(out["grad"]))
    assert np.all(np.isfinite(out["hess"])) and isinstance(out["n"], int)
