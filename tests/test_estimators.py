"""Kaires estimators: the normal-equation solve against scikit-learn (on statistics decoded
from real encodings), row splitting, bounds, and scikit-learn's estimator conventions.

Whole-job fits against scikit-learn are in tests/test_e2e_acceptance.py; the scikit-learn
checks at the end fit through the whole protocol too.
"""

from __future__ import annotations

from typing import Any

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
@pytest.mark.parametrize("cls", [KairesLinearRegression, KairesRidge])
def test_sklearn_check_estimator_in_full(cls: type) -> None:
    """Every check of scikit-learn's check_estimator (sample weights, multi-output and
    pickling included), each fit a whole Kaires job."""
    from sklearn.utils.estimator_checks import check_estimator

    results = check_estimator(cls(n_providers=3), on_fail=None)
    failed = [(r["check_name"], str(r["exception"])) for r in results if r["status"] == "failed"]
    assert not failed


def test_estimators_depend_on_the_committee_interface() -> None:
    """Shape: importing the estimators loads neither the simulation nor the node modules,
    and any :class:`~kaires_fl.committee.Committee` (here a delegating wrapper, not a
    LocalCommittee) runs the fit."""
    import subprocess
    import sys

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


# ----------------------------------------------------------------------- issue 12 features


@pytest.fixture(scope="module")
def committee() -> Any:
    from kaires_fl.simulation import LocalCommittee

    c = LocalCommittee()
    yield c
    c.close()


def test_sample_weight_equals_sklearns_weighted_fit(diabetes: tuple, committee: Any) -> None:
    """Weighted fit (weights proven inside each provider's sums): coef_ within 1e-8 relative
    and intercept_ within 1e-8 of scikit-learn's weighted fit, for OLS and Ridge, with and
    without intercept."""
    X, y = diabetes
    w = np.random.default_rng(3).uniform(0.0, 3.0, len(y))
    for cls, ref, kw in (
        (KairesLinearRegression, LinearRegression, {}),
        (KairesRidge, Ridge, {"alpha": 0.3}),
    ):
        for fit_intercept in (True, False):
            k = cls(committee=committee, progress=False, fit_intercept=fit_intercept, **kw)
            k.fit(X, y, sample_weight=w)
            s = ref(fit_intercept=fit_intercept, **kw).fit(X, y, sample_weight=w)
            assert rel(k.coef_, s.coef_) <= 1e-8, (cls, fit_intercept)
            assert abs(k.intercept_ - s.intercept_) <= 1e-8 * max(1.0, abs(s.intercept_))
            assert k.kaires_statistic_[1]["max_weight"] == pytest.approx(w.max())


def test_integer_weights_equal_repeated_rows(diabetes: tuple, committee: Any) -> None:
    X, y = diabetes[0][:60], diabetes[1][:60]
    w = np.random.default_rng(4).integers(0, 4, len(y)).astype(float)
    a = KairesLinearRegression(committee=committee, progress=False, n_providers=3)
    a.fit(X, y, sample_weight=w)
    rep = np.repeat(np.arange(len(y)), w.astype(int))
    b = LinearRegression().fit(X[rep], y[rep])
    assert rel(a.coef_, b.coef_) <= 1e-8


def test_sample_weight_errors_are_clear() -> None:
    X, y = np.random.default_rng(0).normal(size=(20, 2)), np.arange(20.0)
    with pytest.raises(ValueError, match=r"[Nn]egative"):
        KairesLinearRegression().fit(X, y, sample_weight=-np.ones(20))
    with pytest.raises(ConfigError, match=r"sample_weight .* outside its declared bounds"):
        KairesLinearRegression(max_sample_weight=2.0).fit(X, y, sample_weight=np.full(20, 3.0))
    with pytest.raises(ConfigError, match="granularity='provider'"):
        KairesLinearRegression(granularity="record").fit(X, y, sample_weight=np.ones(20))
    with pytest.raises(ConfigError, match="every sample weight is zero"):
        KairesLinearRegression().fit(X, y, sample_weight=np.zeros(20))
    stat = LinearRegressionStats(2, [-5, 5], [0, 20], max_rows=20, max_weight=1.0)
    with pytest.raises(ConfigError, match="unweighted"):
        LinearRegressionStats(2, [-5, 5], [0, 20], max_rows=20).measurements(X, y, np.ones(20))
    assert stat.measurements(X, y, np.ones(20)).shape[0] == 1


def test_multi_output_matches_sklearn(committee: Any) -> None:
    """Multi-output y (linnerud, 3 targets): coef_ (n_targets, n_features) and intercept_
    (n_targets,) as scikit-learn, within 1e-8 relative; per-target alpha for Ridge."""
    from sklearn.datasets import load_linnerud

    X, Y = load_linnerud(return_X_y=True)
    k = KairesLinearRegression(committee=committee, progress=False, n_providers=4).fit(X, Y)
    s = LinearRegression().fit(X, Y)
    assert k.coef_.shape == s.coef_.shape == (3, 3) and k.intercept_.shape == (3,)
    assert rel(k.coef_, s.coef_) <= 1e-8
    assert rel(k.intercept_, s.intercept_) <= 1e-8
    assert k.predict(X).shape == (20, 3)
    alphas = np.array([0.1, 10.0, 1000.0])
    k = KairesRidge(alpha=alphas, committee=committee, progress=False, n_providers=4).fit(X, Y)
    s = Ridge(alpha=alphas).fit(X, Y)
    assert rel(k.coef_, s.coef_) <= 1e-8 and rel(k.intercept_, s.intercept_) <= 1e-8
    # one target as a column: (1, d) and (1,), as scikit-learn
    k = KairesLinearRegression(committee=committee, progress=False, n_providers=4)
    k.fit(X, Y[:, :1])
    assert k.coef_.shape == (1, 3) and k.intercept_.shape == (1,)
    with pytest.raises(ConfigError, match=r"alpha has shape \(2,\) but y has 3 target"):
        KairesRidge(alpha=[1.0, 2.0], committee=committee).fit(X, Y)
    with pytest.raises(ConfigError, match="alpha must be a finite number"):
        KairesRidge(alpha=[1.0, -2.0, 1.0], committee=committee).fit(X, Y)


@pytest.mark.parametrize("n", [5, 8, 10, 11])
def test_rank_deficient_held_out_predictions_match_sklearn(
    diabetes: tuple, committee: Any, n: int
) -> None:
    """n ≤ d (diabetes, d = 10): the minimum-norm solution, as scikit-learn's lstsq. Held-out
    predictions agree within 1e-4 (targets are 25..346; they were off by 70–1,400 when
    Cholesky ran on the noise-conditioned scatter)."""
    X, y = diabetes
    k = KairesLinearRegression(committee=committee, progress=False, n_providers=2)
    k.fit(X[:n], y[:n])
    s = LinearRegression().fit(X[:n], y[:n])
    assert np.max(np.abs(k.predict(X[200:300]) - s.predict(X[200:300]))) <= 1e-4
    if n <= 10:  # rank n − 1 < d: the minimum norm, not just any solution
        assert rel(k.coef_, s.coef_) <= 1e-6


def test_rank_decision_uses_the_decoding_bound(diabetes: tuple) -> None:
    """The decoded statistics say how noisy they are (scatter_tol); a scatter singular in
    exact arithmetic is solved on its true rank."""
    X, y = diabetes
    X = np.hstack([X[:9], X[:9, :3] + X[:9, 3:6]])  # 9 rows, 13 features: rank 8
    stats, _ = decoded(X, y[:9], "provider", providers=3)
    assert 0 < stats["scatter_tol"] < 1e-9
    coef, _ = solve_normal_equations(stats, True)
    sk = LinearRegression().fit(X, y[:9])
    assert rel(coef, sk.coef_) <= 1e-6


def test_rejected_providers_warn(diabetes: tuple) -> None:
    from kaires_fl.errors import KairesWarning
    from kaires_fl.simulation import LocalCommittee

    X, y = diabetes
    c = LocalCommittee(faults={"provider": {1: "bad_proof", 3: "out_of_range"}})
    try:
        with pytest.warns(KairesWarning, match=r"2 of 5 providers were rejected") as rec:
            est = KairesLinearRegression(committee=c, n_providers=5, progress=False).fit(X, y)
    finally:
        c.close()
    msg = str(rec[0].message)
    assert "provider-001" in msg and "provider-003" in msg
    assert set(est.kaires_report_["rejected"]) == {"provider-001", "provider-003"}


def test_pickle_keeps_the_users_committee(diabetes: tuple) -> None:
    """Pickling keeps the committee by its description: the same object in this process, the
    user's parameters in another; a committee without a description fails clearly."""
    import pickle
    import subprocess
    import sys

    from kaires_fl.simulation import LocalCommittee

    c = LocalCommittee(min_providers=3, seed=11)
    try:
        est = KairesRidge(committee=c, alpha=2.0, n_providers=4, progress=False)
        blob = pickle.dumps(est)
        assert pickle.loads(blob).committee is c
        code = (
            "import pickle, sys\n"
            "est = pickle.loads(sys.stdin.buffer.read())\n"
            "p = est.committee.describe()['params']\n"
            "assert type(est.committee).__name__ == 'LocalCommittee'\n"
            "assert p['min_providers'] == 3 and p['seed'] == 11, p\n"
        )
        subprocess.run([sys.executable, "-c", code], input=blob, check=True, timeout=300)
    finally:
        c.close()

    class Opaque:
        min_providers = 2

    with pytest.raises(ConfigError, match="cannot cross a process boundary"):
        pickle.dumps(KairesRidge(committee=Opaque()))


@pytest.mark.slow
def test_grid_search_n_jobs_keeps_the_users_committee(diabetes: tuple) -> None:
    """GridSearchCV(n_jobs=2): the workers fit on the user's committee (rebuilt from its
    description), not fresh defaults. A committee demanding 4 providers per job makes
    every 3-provider fit fail in the workers too; the old __sklearn_clone__/__getstate__
    dropped the committee and the workers fitted on a default one (2 providers)."""
    from sklearn.model_selection import GridSearchCV

    from kaires_fl.simulation import LocalCommittee

    X, y = diabetes
    strict = LocalCommittee(min_providers=4)
    try:
        gs = GridSearchCV(
            KairesRidge(committee=strict, n_providers=3, progress=False),
            {"alpha": [0.1, 1.0]},
            cv=2,
            n_jobs=2,
            error_score="raise",
        )
        with pytest.raises(ConfigError, match="at least 4 providers"):
            gs.fit(X, y)
        gs.set_params(estimator__n_providers=4).fit(X, y)
        assert gs.best_estimator_.committee is strict
    finally:
        strict.close()


def test_local_committee_db_dir_persists_the_ledger(diabetes: tuple, tmp_path: Any) -> None:
    """LocalCommittee(db_dir=...): one SQLite file per ledger node; a second committee on the
    same directory sees the first one's chain, verifies it and continues it."""
    from kaires_fl.simulation import LocalCommittee

    X, y = diabetes
    first = LocalCommittee(db_dir=tmp_path)
    est = KairesLinearRegression(committee=first, n_providers=3, progress=False).fit(X, y)
    height = first.client.height
    job_height = est.kaires_report_["job_height"]
    first.close()
    assert sorted(p.name for p in tmp_path.iterdir())[:4] == [
        f"ledger-{i}.sqlite" for i in range(4)
    ]
    second = LocalCommittee(db_dir=tmp_path)
    try:
        assert second.client.height >= height
        assert second.client.verify_chain() >= height
        block, _ = second.client.block(job_height)
        assert est.kaires_report_["job"] in [tx.id for tx in block.txs]
        again = KairesLinearRegression(committee=second, n_providers=3, progress=False)
        again.fit(X, y)
        assert again.kaires_report_["job_height"] > height
        assert rel(again.coef_, est.coef_) <= 1e-12
        assert second.describe()["params"]["db_dir"] == str(tmp_path)
    finally:
        second.close()


def test_committee_descriptions_reconnect_or_fail_clearly(tmp_path: Any) -> None:
    """A connected committee travels as its group file (same object in this process); an
    unknown description, or a db_dir committee opened from another process, is a clear
    ConfigError — never a fresh default committee."""
    import pickle
    import subprocess
    import sys

    from kaires_fl.estimators.base import describe_committee, reconnect
    from kaires_fl.simulation import LocalCommittee

    class Connected:  # what kaires_fl.connect returns carries such a description
        min_providers = 2

        def __init__(self) -> None:
            self.description = {"kind": "connect", "group": "/srv/group.toml", "options": {}}

    remote = Connected()
    desc = describe_committee(remote)
    assert desc["group"] == "/srv/group.toml" and reconnect(desc) is remote
    assert pickle.loads(pickle.dumps(KairesRidge(committee=remote))).committee is remote
    with pytest.raises(ConfigError, match="cannot reconnect to a committee of kind 'mystery'"):
        reconnect({"kind": "mystery"})

    persisted = LocalCommittee(db_dir=tmp_path)
    try:
        blob = pickle.dumps(KairesLinearRegression(committee=persisted))
        code = (
            "import pickle, sys\n"
            "from kaires_fl.errors import ConfigError\n"
            "try:\n"
            "    pickle.loads(sys.stdin.buffer.read())\n"
            "except ConfigError as exc:\n"
            "    assert 'cannot be used from another process' in str(exc), exc\n"
            "else:\n"
            "    raise SystemExit('a db_dir committee was silently reopened elsewhere')\n"
        )
        subprocess.run([sys.executable, "-c", code], input=blob, check=True, timeout=300)
    finally:
        persisted.close()
