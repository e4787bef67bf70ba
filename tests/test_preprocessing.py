"""KairesStandardScaler and KairesPCA against scikit-learn on bundled data, through whole
Kaires jobs (LocalCommittee), and the covariance statistic on real encodings.

Tolerances (the fixed-point encoding's error bounds, see CovarianceStats and
MeanVarianceStats): provider granularity decodes every moment to P·2^−(f+1) in the bounds'
power-of-two frame (f = 40, P ≤ 10 providers), i.e. ≲ 1e-11 relative on these data sets, so
means, variances, eigenvalues and predictions are checked to 1e-9 relative and components
(which move by the error over the eigenvalue gap) to 1e-8 absolute. Record granularity is
exact for rows quantised to 28 bits (|x − x̂| ≤ (hi − lo)·2^−29): checked to 1e-6 relative.
"""

from __future__ import annotations

import pickle
import warnings
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.datasets import load_diabetes, load_wine
from sklearn.decomposition import PCA
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from kaires_fl import KairesPCA, KairesRidge, KairesStandardScaler
from kaires_fl.errors import ConfigError, KairesError, KairesWarning
from kaires_fl.estimators import auto_bounds
from kaires_fl.estimators.decomposition import flip_signs
from kaires_fl.simulation import LocalCommittee
from kaires_fl.statistics import CovarianceStats, from_params


def rel(a: Any, b: Any) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.fixture(scope="module")
def committee() -> Any:
    c = LocalCommittee(max_jobs=None)
    yield c
    c.close()


@pytest.fixture(scope="module")
def wine() -> tuple[np.ndarray, np.ndarray]:
    return load_wine(return_X_y=True)


@pytest.fixture(scope="module")
def diabetes() -> tuple[np.ndarray, np.ndarray]:
    return load_diabetes(return_X_y=True)


class Counting:
    """A committee that delegates to a LocalCommittee and records every job's statistic."""

    def __init__(self, inner: LocalCommittee) -> None:
        self.inner, self.jobs = inner, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def run_job(
        self, statistic: Any, data: Any, consumer: Any = None, progress: bool | str = False
    ) -> Any:
        self.jobs.append((statistic.spec(), sorted(data)))
        return self.inner.run_job(statistic, data, consumer, progress)


# ------------------------------------------------------------------------- the statistic


@pytest.mark.parametrize("granularity", ["provider", "record"])
def test_covariance_statistic_decodes_numpy_covariance(wine: tuple, granularity: str) -> None:
    """The consumer's decoded scatter equals numpy's on the rows, from real encodings
    (field sum of every provider's truncated measurements)."""
    X = wine[0]
    groups = np.array_split(np.arange(len(X)), 7)
    stat = CovarianceStats(
        X.shape[1],
        auto_bounds(X),
        granularity,
        max_rows=max(map(len, groups)),
        max_measurements=7 if granularity == "provider" else len(X),
    )
    assert from_params(*stat.spec()) == stat
    F = stat.field
    total, count = F.zeros(stat.output_len), 0
    for g in groups:
        meas = stat.measurements(X[g])
        total = F.add(total, F.sum(stat.circuit.truncate(meas), axis=0))
        count += meas.shape[0]
    out = stat.decode(total, count)
    tol = 1e-10 if granularity == "provider" else 1e-6
    assert out["n"] == len(X)
    assert rel(out["mean"], X.mean(axis=0)) <= tol
    assert rel(out["cov"], np.cov(X, rowvar=False)) <= tol
    assert rel(out["var"], X.var(axis=0)) <= tol
    if granularity == "provider":
        assert np.all(stat.error_bound(len(X), count) <= 1e-9 * X.var(axis=0))


def test_covariance_statistic_refuses_rows_outside_its_bounds() -> None:
    stat = CovarianceStats(2, [[0, 1], [0, 1]], max_rows=10, max_measurements=4)
    with pytest.raises(ConfigError, match=r"feature 1 .*outside its declared bounds"):
        stat.measurements(np.array([[0.5, 2.0]]))


_PARAM_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.lists(st.floats(-10, 10), max_size=3),
    st.lists(st.lists(st.floats(allow_nan=True), max_size=3), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    key=st.sampled_from(
        [
            "n_features",
            "bounds",
            "granularity",
            "max_rows",
            "max_measurements",
            "frac_bits",
            "bits",
            "unknown",
        ]
    ),
    value=_PARAM_VALUES,
)
def test_covariance_params_from_a_ledger_job_fail_typed(key: str, value: Any) -> None:
    """Robustness: an aggregator rebuilds the statistic from a committed job's
    ``(kind, params)``; any mutated parameter gives a statistic or a KairesError, nothing
    else. (n_features is kept small: a huge d is a memory question for every kind.)"""
    params = CovarianceStats(3, [[0, 1]] * 3, max_rows=10, max_measurements=4).params()
    if key == "n_features" and isinstance(value, int) and not isinstance(value, bool):
        value = min(value, 8)
    params[key] = value
    try:
        stat = from_params("covariance", params)
    except KairesError:
        return
    assert isinstance(stat, CovarianceStats)


@settings(max_examples=100, deadline=None)
@given(
    granularity=st.sampled_from(["provider", "record"]),
    seed=st.integers(0, 2**32 - 1),
    count=st.integers(-2, 6),
)
def test_covariance_decode_of_any_aggregate_is_a_result_or_a_kaires_error(
    granularity: str, seed: int, count: int
) -> None:
    """Robustness: the consumer decodes whatever the reconstruction gives (arbitrary field
    elements, any count): a dict of arrays or a KairesError, never another exception."""
    stat = CovarianceStats(3, [[-1, 1]] * 3, granularity, max_rows=5, max_measurements=4)
    F = stat.field
    rng = np.random.default_rng(seed)
    agg = F.elements([int(v) for v in rng.integers(0, 2**62, stat.output_len)])
    try:
        out = stat.decode(agg, count)
    except KairesError:
        return
    assert out["scatter"].shape == (3, 3) and out["mean"].shape == (3,)


# ------------------------------------------------------------------------------- scaler


@pytest.mark.parametrize("granularity", ["provider", "record"])
def test_scaler_matches_standard_scaler(committee: Any, wine: tuple, granularity: str) -> None:
    X = wine[0]
    est = KairesStandardScaler(committee=committee, n_providers=6, granularity=granularity)
    Z = est.fit_transform(X)
    sk = StandardScaler().fit(X)
    tol = 1e-9 if granularity == "provider" else 1e-6
    assert est.n_samples_seen_ == sk.n_samples_seen_ == len(X)
    assert est.n_features_in_ == X.shape[1]
    assert rel(est.mean_, sk.mean_) <= tol
    assert rel(est.var_, sk.var_) <= tol
    assert rel(est.scale_, sk.scale_) <= tol
    assert np.max(np.abs(Z - sk.transform(X))) <= 1e-6
    assert np.max(np.abs(est.inverse_transform(Z) - X)) <= 1e-9 * np.max(np.abs(X))
    assert est.kaires_statistic_[0] == "mean_variance"
    assert est.kaires_report_["accepted"] == [f"provider-{i:03d}" for i in range(6)]


@pytest.mark.parametrize("with_mean, with_std", [(True, False), (False, True), (False, False)])
def test_scaler_options_match_standard_scaler(
    committee: Any, wine: tuple, with_mean: bool, with_std: bool
) -> None:
    X = wine[0]
    est = KairesStandardScaler(with_mean=with_mean, with_std=with_std, committee=committee)
    sk = StandardScaler(with_mean=with_mean, with_std=with_std).fit(X)
    est.fit(X)
    for name in ("mean_", "var_", "scale_"):
        ours, theirs = getattr(est, name), getattr(sk, name)
        assert (ours is None) == (theirs is None), name
        if theirs is not None:
            assert rel(ours, theirs) <= 1e-9, name
    assert np.max(np.abs(est.transform(X) - sk.transform(X))) <= 1e-6
    if not with_mean and not with_std:
        assert est.kaires_report_ == {}, "no job is needed when nothing is learned"


def test_scaler_constant_column_gets_unit_scale(committee: Any) -> None:
    """A constant column's variance decodes within the fixed-point error of 0: scale_ is 1
    (as scikit-learn), not a noise value that would blow the column up."""
    rng = np.random.default_rng(3)
    X = np.column_stack([rng.normal(size=200), np.full(200, 7.25)])
    est = KairesStandardScaler(committee=committee).fit(X)
    assert est.var_[1] == 0.0 and est.scale_[1] == 1.0
    assert np.allclose(est.transform(X)[:, 1], 0.0, atol=1e-9)


def test_scaler_provider_labels_and_declared_bounds(committee: Any, wine: tuple) -> None:
    X, y = wine
    est = KairesStandardScaler(committee=committee, bounds=[[0.0, 2000.0]] * X.shape[1])
    est.fit(X, provider=y)
    assert est.kaires_report_["accepted"] == ["0", "1", "2"]
    assert rel(est.mean_, X.mean(axis=0)) <= 1e-9
    with pytest.raises(ConfigError, match=r"feature 12 .*outside its declared bounds"):
        KairesStandardScaler(committee=committee, bounds=[0.0, 1000.0]).fit(X)


def test_rejected_provider_warns_and_is_left_out(wine: tuple) -> None:
    """Robustness: a provider whose proof fails is dropped; the scaler and the PCA say so
    (KairesWarning naming how many and why) and fit the accepted rows only."""
    X = wine[0]
    c = LocalCommittee(faults={"provider": {0: "bad_proof"}})
    try:
        est = KairesStandardScaler(committee=c, n_providers=5)
        with pytest.warns(KairesWarning, match=r"1 .*provider.*reject"):
            est.fit(X)
        pca = KairesPCA(3, committee=c, n_providers=5)
        with pytest.warns(KairesWarning, match=r"1 .*provider.*reject"):
            pca.fit(X)
    finally:
        c.close()
    kept = np.concatenate(np.array_split(np.arange(len(X)), 5)[1:])
    assert list(est.kaires_report_["rejected"]) == ["provider-000"]
    assert est.n_samples_seen_ == len(kept)
    sk = StandardScaler().fit(X[kept])
    assert rel(est.mean_, sk.mean_) <= 1e-9 and rel(est.var_, sk.var_) <= 1e-9
    ref = PCA(3, svd_solver="full").fit(X[kept])
    assert pca.n_samples_ == len(kept)
    assert rel(pca.explained_variance_, ref.explained_variance_) <= 1e-9
    assert np.max(np.abs(pca.components_ - ref.components_)) <= 1e-6


def test_too_few_providers_is_the_error_sklearn_expects(committee: Any) -> None:
    with pytest.raises(ValueError, match="n_samples = 1"):
        KairesStandardScaler(committee=committee).fit(np.ones((1, 3)))


# ----------------------------------------------------------------------------- pipeline


def test_private_pipeline_matches_sklearn_and_releases_only_aggregates(
    committee: Any, diabetes: tuple
) -> None:
    """Privacy: Pipeline(KairesStandardScaler(), KairesRidge()) asks the committee for two
    aggregates and nothing else (a mean/variance job, then a regression job over the same
    providers), and predicts as Pipeline(StandardScaler(), Ridge())."""
    X, y = diabetes
    groups = np.arange(len(X)) % 8
    counting = Counting(committee)
    pipe = make_pipeline(
        KairesStandardScaler(committee=counting), KairesRidge(alpha=0.5, committee=counting)
    )
    pipe.fit(X, y, kairesstandardscaler__provider=groups, kairesridge__provider=groups)
    ref = make_pipeline(StandardScaler(), Ridge(alpha=0.5)).fit(X, y)
    assert rel(pipe.predict(X), ref.predict(X)) <= 1e-9
    kinds = [spec[0] for spec, _ in counting.jobs]
    assert kinds == ["mean_variance", "linear_regression"]
    assert all(labels == [str(g) for g in range(8)] for _, labels in counting.jobs)


def test_provider_labels_through_metadata_routing(committee: Any, diabetes: tuple) -> None:
    """With scikit-learn's metadata routing on, ``provider`` is requested like any metadata."""
    import sklearn

    X, y = diabetes
    groups = np.arange(len(X)) % 5
    with sklearn.config_context(enable_metadata_routing=True):
        pipe = make_pipeline(
            KairesStandardScaler(committee=committee).set_fit_request(provider=True),
            KairesRidge(committee=committee).set_fit_request(provider=True),
        )
        pipe.fit(X, y, provider=groups)
    for step in pipe:
        assert step.kaires_report_["accepted"] == ["0", "1", "2", "3", "4"]


def test_grid_search_over_the_private_pipeline(committee: Any, diabetes: tuple) -> None:
    X, y = diabetes
    pipe = Pipeline(
        [
            ("scale", KairesStandardScaler(committee=committee)),
            ("ridge", KairesRidge(committee=committee)),
        ]
    )
    cv = KFold(3, shuffle=True, random_state=0)
    grid = GridSearchCV(pipe, {"ridge__alpha": [0.1, 10.0]}, cv=cv).fit(X, y)
    ref = GridSearchCV(
        Pipeline([("scale", StandardScaler()), ("ridge", Ridge())]),
        {"ridge__alpha": [0.1, 10.0]},
        cv=cv,
    ).fit(X, y)
    assert grid.best_params_ == ref.best_params_
    assert rel(grid.cv_results_["mean_test_score"], ref.cv_results_["mean_test_score"]) <= 1e-9
    assert grid.best_estimator_.named_steps["scale"].committee is committee


@pytest.mark.slow
def test_parallel_grid_search_keeps_the_users_committee(committee: Any, diabetes: tuple) -> None:
    """GridSearchCV(n_jobs=2) over scaler → PCA → ridge: the workers reconnect to the user's
    committee by its description (no silent substitute), the scores equal the sequential
    search's, and the refit model runs on the user's committee object."""
    X, y = diabetes
    # A committee that differs from the default one in a way the scores show: it rejects
    # provider 0 (a bad proof), so a substitute committee would give other scores.
    faulty = LocalCommittee(max_jobs=None, faults={"provider": {0: "bad_proof"}})
    try:
        pipe = Pipeline(
            [
                ("scale", KairesStandardScaler(committee=faulty)),
                ("pca", KairesPCA(committee=faulty)),
                ("ridge", KairesRidge(committee=faulty)),
            ]
        )
        cv = KFold(3, shuffle=True, random_state=0)
        grid = {"pca__n_components": [3, 8]}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", KairesWarning)
            par = GridSearchCV(pipe, grid, cv=cv, n_jobs=2).fit(X, y)
            seq = GridSearchCV(pipe, grid, cv=cv, n_jobs=1).fit(X, y)
            plain = GridSearchCV(
                clone(pipe).set_params(
                    scale__committee=committee, pca__committee=committee, ridge__committee=committee
                ),
                grid,
                cv=cv,
                n_jobs=1,
            ).fit(X, y)
    finally:
        faulty.close()
    scores = par.cv_results_["mean_test_score"]
    assert rel(scores, seq.cv_results_["mean_test_score"]) <= 1e-12
    assert rel(scores, plain.cv_results_["mean_test_score"]) > 1e-6, "faults had no effect"
    assert all(step.committee is faulty for _, step in par.best_estimator_.steps)


def test_clone_and_pickle_keep_the_users_committee(committee: Any, wine: tuple) -> None:
    """Clones share the committee; a pickle read back in this process reconnects to the
    same live committee (never a fresh default one) and keeps what was learned."""
    est = KairesStandardScaler(committee=committee).fit(wine[0])
    assert clone(est).committee is committee
    back = pickle.loads(pickle.dumps(est))
    assert back.committee is committee
    assert np.array_equal(back.mean_, est.mean_) and np.array_equal(back.scale_, est.scale_)
    pca = pickle.loads(pickle.dumps(KairesPCA(2, committee=committee).fit(wine[0])))
    assert pca.committee is committee and pca.components_.shape == (2, wine[0].shape[1])


# ---------------------------------------------------------------------------------- PCA


def assert_pca_matches(ours: KairesPCA, ref: PCA, X: np.ndarray, tol: float) -> None:
    assert ours.n_components_ == ref.n_components_
    # svd_flip convention: the same signs, not only the same axes
    assert np.max(np.abs(ours.components_ - ref.components_)) <= 1e3 * tol
    assert rel(ours.explained_variance_, ref.explained_variance_) <= tol
    assert rel(ours.explained_variance_ratio_, ref.explained_variance_ratio_) <= tol
    assert rel(ours.singular_values_, ref.singular_values_) <= tol
    assert np.max(np.abs(ours.mean_ - ref.mean_)) <= tol * np.max(np.abs(X))  # means ≈ 0
    assert (
        abs(ours.noise_variance_ - ref.noise_variance_)
        <= tol * max(ref.noise_variance_, 1e-300) + tol * ref.explained_variance_[0] * 1e-3
    )
    Z = ours.transform(X)
    assert rel(Z, ref.transform(X)) <= 1e3 * tol
    assert rel(ours.inverse_transform(Z), ref.inverse_transform(ref.transform(X))) <= 1e3 * tol
    assert rel(ours.get_covariance(), ref.get_covariance()) <= 1e3 * tol
    assert rel(ours.get_precision(), ref.get_precision()) <= 1e3 * tol
    assert abs(ours.score(X) - ref.score(X)) <= 1e3 * tol * abs(ref.score(X))


@pytest.mark.parametrize(
    "n_components, whiten, scaled",
    [(None, False, False), (5, False, False), (0.9, True, True), ("mle", False, False)],
)
def test_pca_matches_sklearn_full_solver(
    committee: Any, wine: tuple, n_components: Any, whiten: bool, scaled: bool
) -> None:
    X = wine[0]
    if scaled:
        X = StandardScaler().fit_transform(X)
    ours = KairesPCA(n_components, whiten=whiten, committee=committee).fit(X)
    ref = PCA(n_components, whiten=whiten, svd_solver="full").fit(X)
    assert_pca_matches(ours, ref, X, 1e-9)
    assert ours.kaires_statistic_[0] == "covariance"


def test_pca_record_granularity(committee: Any, wine: tuple) -> None:
    X = wine[0]
    ours = KairesPCA(4, committee=committee, granularity="record").fit(X)
    ref = PCA(4, svd_solver="full").fit(X)
    assert rel(ours.explained_variance_, ref.explained_variance_) <= 1e-6
    # components up to the quantisation error over the smallest eigenvalue gap
    assert np.max(np.abs(ours.components_ - ref.components_)) <= 1e-4


def test_pca_more_features_than_rows(committee: Any) -> None:
    """n < d: min(n, d) components, the last singular value ≈ 0 (rank n − 1), as sklearn."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(12, 20))
    ours = KairesPCA(committee=committee, n_providers=4).fit(X)
    ref = PCA(svd_solver="full").fit(X)
    assert ours.n_components_ == ref.n_components_ == 12
    top = slice(0, 11)
    assert rel(ours.explained_variance_[top], ref.explained_variance_[top]) <= 1e-9
    assert np.max(np.abs(ours.components_[top] - ref.components_[top])) <= 1e-6


def test_pca_inside_a_pipeline_with_provider_labels(committee: Any, wine: tuple) -> None:
    X, y = wine
    pipe = make_pipeline(
        KairesStandardScaler(committee=committee), KairesPCA(3, committee=committee)
    )
    Z = pipe.fit_transform(X, kairesstandardscaler__provider=y, kairespca__provider=y)
    ref = make_pipeline(StandardScaler(), PCA(3, svd_solver="full")).fit_transform(X)
    assert rel(Z, ref) <= 1e-8
    assert pipe.get_feature_names_out().tolist() == ["kairespca0", "kairespca1", "kairespca2"]


def test_grid_search_picks_pca_components_by_log_likelihood(committee: Any, wine: tuple) -> None:
    """PCA's default GridSearchCV score (the average log-likelihood) as scikit-learn's."""
    X = StandardScaler().fit_transform(wine[0])
    cv = KFold(3, shuffle=True, random_state=1)
    grid = {"n_components": [2, 6, 10]}
    ours = GridSearchCV(KairesPCA(committee=committee), grid, cv=cv).fit(X)
    ref = GridSearchCV(PCA(svd_solver="full"), grid, cv=cv).fit(X)
    assert ours.best_params_ == ref.best_params_
    assert rel(ours.cv_results_["mean_test_score"], ref.cv_results_["mean_test_score"]) <= 1e-8


def test_pca_bad_n_components(committee: Any, wine: tuple) -> None:
    with pytest.raises(ValueError, match="between 0 and min"):
        KairesPCA(50, committee=committee).fit(wine[0])
    with pytest.raises(ConfigError, match="n_components must be"):
        KairesPCA("all", committee=committee).fit(wine[0])


def test_flip_signs_is_sklearns_svd_flip() -> None:
    from sklearn.utils.extmath import svd_flip

    rng = np.random.default_rng(0)
    Vt = rng.normal(size=(5, 7))
    U = rng.normal(size=(9, 5))
    assert np.array_equal(flip_signs(Vt), svd_flip(U, Vt.copy(), u_based_decision=False)[1])


# ------------------------------------------------------------------ scikit-learn's checks

FAST_CHECKS = [
    "check_estimator_cloneable",
    "check_no_attributes_set_in_init",
    "check_parameters_default_constructible",
    "check_get_params_invariance",
    "check_set_params",
    "check_estimators_unfitted",
    "check_estimators_fit_returns_self",
    "check_n_features_in_after_fitting",
    "check_transformer_general",
    "check_estimators_nan_inf",
    "check_estimators_pickle",
    "check_fit_check_is_fitted",
    "check_fit2d_1sample",
]


@pytest.mark.parametrize("check", FAST_CHECKS)
@pytest.mark.parametrize("make", [KairesStandardScaler, KairesPCA])
def test_sklearn_check(make: Any, check: str) -> None:
    from sklearn.utils import estimator_checks

    est = make(n_providers=3)
    getattr(estimator_checks, check)(type(est).__name__, est)


@pytest.mark.slow
@pytest.mark.parametrize("make", [KairesStandardScaler, KairesPCA])
def test_sklearn_check_estimator_in_full(make: Any) -> None:
    from sklearn.utils.estimator_checks import check_estimator

    results = check_estimator(make(n_providers=3), on_fail=None)
    failed = [(r["check_name"], str(r["exception"])) for r in results if r["status"] == "failed"]
    assert not failed
