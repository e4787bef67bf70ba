"""Acceptance of issue 5 from the user's side: whole Kaires jobs through the estimators.

Coefficients equal scikit-learn's on the same rows (≤ 1e-6 relative; record granularity is
exact on the quantised rows the circuit certifies), t Byzantine or crashed aggregators do
not change the result and are named, a misbehaving provider is rejected and the result
equals scikit-learn on the remaining rows.
(The protocol's own properties — access control, payments, coordinator view — are tested
with the protocol.)
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from sklearn.datasets import load_diabetes
from sklearn.linear_model import LinearRegression, Ridge

from kaires_fl import KairesLinearRegression, KairesRidge
from kaires_fl.estimators import split_rows
from kaires_fl.simulation import LocalCommittee
from kaires_fl.statistics import LinearRegressionStats

TOL = 1e-6


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a) - b)) / np.max(np.abs(b)))


def certified_rows(est: object, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows the job's circuit certified: raw rows (provider), quantised rows (record)."""
    _kind, params = est.kaires_statistic_  # type: ignore[attr-defined]
    stat = LinearRegressionStats(**params)
    if stat.granularity == "provider":
        return X, y
    Z = stat.dequantise(stat.quantise(X, y))
    return Z[:, :-1], Z[:, -1]


def assert_matches(est: object, ref: object) -> None:
    assert rel(est.coef_, ref.coef_) <= TOL  # type: ignore[attr-defined]
    assert abs(est.intercept_ - ref.intercept_) <= TOL * max(1.0, abs(ref.intercept_))  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def committee() -> Iterator[LocalCommittee]:
    c = LocalCommittee()
    yield c
    c.close()


@pytest.fixture(scope="module")
def diabetes() -> tuple[np.ndarray, np.ndarray]:
    return load_diabetes(return_X_y=True)


def synthetic(n: int, d: int = 20, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * rng.uniform(0.5, 20, size=d) + rng.normal(0, 5, size=d)
    y = X @ rng.normal(size=d) - 7 + rng.normal(size=n)
    return X, y


@pytest.mark.parametrize("granularity", ["provider", "record"])
def test_diabetes_matches_sklearn(
    committee: LocalCommittee, diabetes: tuple, granularity: str
) -> None:
    X, y = diabetes
    for est, ref in (
        (KairesLinearRegression(committee=committee, granularity=granularity), LinearRegression()),
        (KairesRidge(alpha=0.1, committee=committee, granularity=granularity), Ridge(alpha=0.1)),
    ):
        est.fit(X, y)
        Xs, ys = certified_rows(est, X, y)
        assert_matches(est, ref.fit(Xs, ys))
        # the quantisation of record granularity (28 bits here) stays within 1e-6 too
        assert_matches(est, type(ref)(**ref.get_params()).fit(X, y))
        rep = est.kaires_report_
        assert rep["status"] == "done" and len(rep["accepted"]) == 10 and not rep["rejected"]
        assert rep["faulty_aggregators"] == {}
        assert rep["ledger_height"] >= rep["receipt_height"] > 0
        assert {"seal", "result"} <= set(rep["timings"])
        assert est.n_features_in_ == 10
        assert est.score(X, y) == pytest.approx(ref.score(X, y), rel=1e-9)


@pytest.mark.parametrize(
    ("granularity", "n"), [("provider", 20_000), ("record", 1_000)], ids=["provider", "record"]
)
def test_synthetic_matches_sklearn(committee: LocalCommittee, granularity: str, n: int) -> None:
    X, y = synthetic(n)
    est = KairesLinearRegression(committee=committee, granularity=granularity, n_providers=8)
    est.fit(X, y)
    Xs, ys = certified_rows(est, X, y)
    assert_matches(est, LinearRegression().fit(Xs, ys))
    ridge = KairesRidge(alpha=3.0, committee=committee, granularity=granularity, n_providers=8)
    assert_matches(ridge.fit(X, y), Ridge(alpha=3.0).fit(Xs, ys))
    np.testing.assert_allclose(est.predict(X[:5]), LinearRegression().fit(Xs, ys).predict(X[:5]))


# Record granularity proves every row (about a thousand rows/s on 2 cores today), so its
# large run uses 10,000 rows to keep the whole suite within its 10-minute budget.
@pytest.mark.slow
@pytest.mark.parametrize(
    ("granularity", "n"), [("provider", 100_000), ("record", 10_000)], ids=["provider", "record"]
)
def test_synthetic_large_matches_sklearn(
    committee: LocalCommittee, granularity: str, n: int
) -> None:
    X, y = synthetic(n)
    est = KairesLinearRegression(committee=committee, granularity=granularity).fit(X, y)
    Xs, ys = certified_rows(est, X, y)
    assert_matches(est, LinearRegression().fit(Xs, ys))


def test_fit_intercept_false_and_provider_labels(committee: LocalCommittee) -> None:
    X, y = synthetic(2_000, d=5, seed=4)
    labels = np.array(["hospital-b", "hospital-a", "clinic"])[np.arange(2_000) % 3]
    est = KairesRidge(alpha=2.0, fit_intercept=False, committee=committee)
    est.fit(X, y, provider=labels)
    assert sorted(est.kaires_report_["accepted"]) == ["clinic", "hospital-a", "hospital-b"]
    assert est.intercept_ == 0.0
    assert_matches(est, Ridge(alpha=2.0, fit_intercept=False).fit(X, y))


@pytest.mark.parametrize(
    ("behaviour", "granularity"),
    [("byzantine", "provider"), ("crash", "provider"), ("byzantine", "record")],
)
def test_t_faulty_aggregators_change_nothing_and_are_named(
    committee: LocalCommittee, diabetes: tuple, behaviour: str, granularity: str
) -> None:
    X, y = diabetes
    clean = KairesLinearRegression(committee=committee, granularity=granularity).fit(X, y)
    faulty = LocalCommittee(faults={"aggregator": {1: behaviour}})
    try:
        est = KairesLinearRegression(committee=faulty, granularity=granularity).fit(X, y)
    finally:
        faulty.close()
    np.testing.assert_array_equal(est.coef_, clean.coef_)
    assert est.intercept_ == clean.intercept_
    assert list(est.kaires_report_["faulty_aggregators"]) == [1]
    assert len(est.kaires_report_["accepted"]) == 10


@pytest.mark.parametrize("behaviour", ["out_of_range", "inconsistent_shares", "bad_proof"])
@pytest.mark.parametrize("granularity", ["provider", "record"])
def test_bad_provider_is_rejected_and_the_rest_match_sklearn(
    diabetes: tuple, behaviour: str, granularity: str
) -> None:
    X, y = diabetes
    c = LocalCommittee(faults={"provider": {3: behaviour}})
    try:
        est = KairesLinearRegression(committee=c, granularity=granularity).fit(X, y)
    finally:
        c.close()
    rep = est.kaires_report_
    labels, groups = split_rows(len(X), 10)
    assert list(rep["rejected"]) == [labels[3]]
    assert labels[3] not in rep["accepted"] and len(rep["accepted"]) == 9
    assert rep["faulty_aggregators"] == {}  # a bad provider gets no aggregator blamed
    rows = np.concatenate([g for i, g in enumerate(groups) if i != 3])
    Xs, ys = certified_rows(est, X[rows], y[rows])
    assert_matches(est, LinearRegression().fit(Xs, ys))


def test_descriptive_statistics_through_a_job(committee: LocalCommittee, diabetes: tuple) -> None:
    from kaires_fl.statistics import CountStats, HistogramStats, MeanVarianceStats

    X, y = diabetes
    labels, groups = split_rows(len(X), 5)
    data = {lab: (X[g], y[g]) for lab, g in zip(labels, groups, strict=True)}
    mv = MeanVarianceStats(10, [-0.3, 0.3], "provider", max_rows=100, max_measurements=5)
    out = committee.run_job(mv, data).aggregate
    assert out["n"] == len(X)
    np.testing.assert_allclose(out["mean"], X.mean(0), rtol=0, atol=1e-11)  # means are ~0
    np.testing.assert_allclose(out["var"], X.var(0), rtol=1e-8)
    edges = [-0.3, -0.1, 0.0, 0.1, 0.3]
    hist = HistogramStats(edges, column=2, granularity="record", max_measurements=len(X))
    out = committee.run_job(hist, data).aggregate
    assert out["counts"].tolist() == np.histogram(X[:, 2], edges)[0].tolist()
    count = CountStats("provider", max_rows=100, max_measurements=5)
    flags = {lab: (X[g][:, 1] > 0, None) for lab, g in zip(labels, groups, strict=True)}
    assert committee.run_job(count, flags).aggregate == {"count": int((X[:, 1] > 0).sum())}


def test_too_few_accepted_providers_release_nothing_and_say_why(diabetes: tuple) -> None:
    from kaires_fl.errors import ProtocolError

    X, y = diabetes
    c = LocalCommittee(min_providers=10, faults={"provider": {0: "bad_proof"}})
    try:
        est = KairesLinearRegression(committee=c)
        with pytest.raises(ProtocolError, match=r"released no result .*provider-000"):
            est.fit(X, y)
        assert not hasattr(est, "coef_")
    finally:
        c.close()


def test_data_outside_declared_bounds_is_refused_before_the_job(committee: LocalCommittee) -> None:
    from kaires_fl.errors import ConfigError

    X, y = synthetic(100, d=2)
    height = committee.client.height
    with pytest.raises(ConfigError, match=r"y has value .* outside .*y_bounds"):
        KairesLinearRegression(committee=committee, bounds=([-1e3, 1e3], [0, 1])).fit(X, y)
    assert committee.client.height == height  # nothing reached the ledger
