"""Statistic kinds: encode → (field sum of truncations) → decode round trips against numpy,
bounds and wrap errors, (kind, params) serialisation.

The aggregate here is the plain field sum of ``circuit.truncate`` over the measurements:
exactly what the aggregators' shares reconstruct to (the protocol is tested elsewhere).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kaires_fl.arith.field import Field64, Field128
from kaires_fl.errors import ConfigError, DecodingError
from kaires_fl.statistics import (
    CountStats,
    HistogramStats,
    LinearRegressionStats,
    MeanVarianceStats,
    Statistic,
    choose_fixed_point,
    choose_record_bits,
    from_params,
    pow2_frame,
)


def check(stat: Statistic, meas: np.ndarray) -> np.ndarray:
    """The circuit evaluated directly on measurements (random joint randomness)."""
    c = stat.circuit
    jr = stat.field.random((c.JOINT_RAND_LEN,)) if c.JOINT_RAND_LEN else None
    return c.check(meas, jr)


def aggregate(stat: Statistic, parts: Sequence[tuple[Any, Any]]) -> tuple:
    """Field sum of truncate(measurements) over every provider's rows; (sum, count)."""
    F = stat.field
    total = F.zeros(stat.output_len)
    count = 0
    for X, y in parts:
        meas = stat.measurements(X, y)
        assert meas.shape == (meas.shape[0], stat.meas_len)
        assert np.all(check(stat, meas)), "honest measurement rejected by its circuit"
        total = F.add(total, F.sum(stat.circuit.truncate(meas), axis=0))
        count += meas.shape[0]
    return total, count


def split(X: np.ndarray, y: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(X[i], y[i]) for i in np.array_split(np.arange(len(X)), k)]


def centred(X: np.ndarray, y: np.ndarray) -> tuple:
    Xc, yc = X - X.mean(0), y - y.mean()
    return Xc.T @ Xc, Xc.T @ yc, float(yc @ yc)


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a) - b)) / max(np.max(np.abs(b)), 1e-300))


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(400, 4)) * [1, 10, 0.1, 3] + [0, 50, -1, 2]
    y = X @ [1.5, -0.2, 4.0, 0.7] + 3 + rng.normal(size=400)
    return X, y


def test_regression_provider_round_trip(data: tuple) -> None:
    X, y = data
    stat = LinearRegressionStats(
        4,
        [[-5, 5], [0, 100], [-2, 0], [-10, 14]],
        [-60, 60],
        "provider",
        max_rows=100,
        max_measurements=8,
    )
    assert stat.field is Field64 and stat.frac_bits == 40
    out = stat.decode(*aggregate(stat, split(X, y, 5)))
    sxx, sxy, syy = centred(X, y)
    assert out["n"] == 400
    assert rel(out["x_mean"], X.mean(0)) < 1e-12
    assert abs(out["y_mean"] - y.mean()) < 1e-9
    assert rel(out["sxx"], sxx) < 1e-9
    assert rel(out["sxy"], sxy) < 1e-9
    assert abs(out["syy"] - syy) / syy < 1e-9
    assert rel(out["xtx"], X.T @ X) < 1e-9
    assert rel(out["xty"], X.T @ y) < 1e-9
    assert abs(out["yty"] - y @ y) / (y @ y) < 1e-9
    assert rel(out["sum_x"], X.sum(0)) < 1e-9


def test_regression_record_round_trip_is_exact_on_quantised_rows(data: tuple) -> None:
    X, y = data
    stat = LinearRegressionStats(
        4, [[-5, 5], [0, 100], [-2, 0], [-10, 14]], [-60, 60], "record", max_measurements=400
    )
    assert stat.field is Field64 and stat.bits == 27  # records·(2^b − 1)² < p
    out = stat.decode(*aggregate(stat, split(X, y, 3)))
    Z = stat.dequantise(stat.quantise(X, y))
    step = (stat._bounds[:, 1] - stat._bounds[:, 0]) / (2**stat.bits - 1)
    assert np.all(np.abs(Z - np.hstack([X, y[:, None]])) <= step / 2 * (1 + 1e-9))
    sxx, sxy, syy = centred(Z[:, :4], Z[:, 4])
    assert out["n"] == 400
    assert rel(out["sxx"], sxx) < 1e-12
    assert rel(out["sxy"], sxy) < 1e-12
    assert abs(out["syy"] - syy) / syy < 1e-12
    assert rel(out["x_mean"], Z[:, :4].mean(0)) < 1e-12
    # and close to the raw rows, within the quantisation error
    assert rel(out["sxx"], centred(X, y)[0]) < 1e-5


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    d=st.integers(1, 5),
    providers=st.integers(1, 6),
    scale=st.floats(1e-3, 1e4),
    shift=st.floats(-1e3, 1e3),
)
def test_regression_provider_matches_numpy(
    seed: int, d: int, providers: int, scale: float, shift: float
) -> None:
    rng = np.random.default_rng(seed)
    n = rng.integers(providers, 60 * providers)
    X = rng.uniform(-1, 1, size=(n, d)) * scale + shift
    y = rng.uniform(-1, 1, size=n) * scale
    xb = [X.min() - scale * 0.1, X.max() + scale * 0.1]
    yb = [y.min() - scale * 0.1, y.max() + scale * 0.1]
    parts = split(X, y, providers)
    stat = LinearRegressionStats(
        d, xb, yb, "provider", max_rows=max(len(p[0]) for p in parts), max_measurements=providers
    )
    out = stat.decode(*aggregate(stat, parts))
    sxx, sxy, syy = centred(X, y)
    assert out["n"] == n
    # documented bound: P·2^-(f+1) per moment in [-1,1] units, times the frame scales
    _, e = pow2_frame(stat._bounds)
    tol = 4 * providers * 2.0 ** -(stat._f + 1) * 4.0 ** e.max() + 1e-12 * np.abs(sxx).max()
    assert np.max(np.abs(out["sxx"] - sxx)) <= tol
    assert np.max(np.abs(out["sxy"] - sxy)) <= tol + 1e-12 * abs(sxy).max()
    assert abs(out["syy"] - syy) <= tol + 1e-12 * syy


def test_regression_in_field128_when_field64_cannot_hold_the_sums() -> None:
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(30, 2)), rng.normal(size=30)
    stat = LinearRegressionStats(
        2, [-8, 8], [-8, 8], "provider", max_rows=10, max_measurements=2**40, frac_bits=30
    )
    assert stat.field is Field128
    out = stat.decode(*aggregate(stat, split(X, y, 3)))
    assert rel(out["sxx"], centred(X, y)[0]) < 1e-7
    assert from_params(*stat.spec()).field is Field128


def test_out_of_bounds_data_name_the_column_and_the_parameter(data: tuple) -> None:
    X, y = data
    stat = LinearRegressionStats(
        4, [[-5, 5], [0, 100], [-2, 0], [-10, 14]], [-60, 60], "provider", max_rows=500
    )
    Xb = X.copy()
    Xb[7, 2] = 0.5
    with pytest.raises(ConfigError, match=r"feature 2 .*row 7.*\[-2.0, 0.0\].*x_bounds"):
        stat.measurements(Xb, y)
    with pytest.raises(ConfigError, match=r"y has value 100.0 .*y_bounds"):
        stat.measurements(X, np.where(np.arange(400) == 3, 100.0, y))
    Xb[7, 2] = np.nan
    with pytest.raises(ConfigError, match="non-finite"):
        stat.measurements(Xb, y)
    with pytest.raises(ConfigError, match="row cap is max_rows=100"):
        LinearRegressionStats(4, [-1e3, 1e3], [-1e3, 1e3], max_rows=100).measurements(X, y)
    with pytest.raises(ConfigError, match="X has 3 features"):
        stat.measurements(X[:, :3], y)
    rec = LinearRegressionStats(4, [-1, 1], [-60, 60], "record", max_measurements=400)
    with pytest.raises(ConfigError, match=r"feature 1 .*x_bounds"):
        rec.measurements(X, y)
    hist = HistogramStats([0, 1, 2], column=1)
    with pytest.raises(ConfigError, match=r"column 1 .*widen the histogram's edges"):
        hist.measurements(X)


def test_sizes_that_would_wrap_are_refused() -> None:
    # Field64 holds max_measurements·(2^bits − 1) < p: 2^20 providers of < 2^20 rows leave
    # 63 − 20 − 21 = 22 fractional bits in Field64 (fewer than MIN_AUTO_FRAC_BITS) and at
    # most 62 − 21 = 41 in Field128 (bits ≤ 62).
    F, f, _ = choose_fixed_point(2**20 - 1, 2**20, None)
    assert F is Field128 and f == 40
    with pytest.raises(ConfigError, match="could wrap every field; use frac_bits ≤ 41"):
        choose_fixed_point(2**20 - 1, 2**20, 42)
    with pytest.raises(ConfigError, match="use frac_bits"):
        LinearRegressionStats(
            3, [-1, 1], [-1, 1], max_rows=2**20, max_measurements=2**40, frac_bits=41
        )
    # records·(2^b − 1)² < p: 2^20 records leave 22 bits in Field64.
    assert choose_record_bits(2**20, None) == (Field64, 22)
    assert choose_record_bits(2**20, 31)[0] is Field128
    with pytest.raises(ConfigError, match="bits ≤ 31"):
        choose_record_bits(2**20, 32)
    stat = LinearRegressionStats(2, [-1, 1], [-1, 1], max_rows=10, max_measurements=3)
    with pytest.raises(ConfigError, match="max_measurements=3"):
        stat.decode(stat.field.zeros(stat.output_len), 4)


def test_every_field_sum_fits(data: tuple) -> None:
    # The worst case allowed by the bounds (every value at its extreme) must still decode.
    stat = LinearRegressionStats(2, [-3, 3], [-3, 3], "provider", max_rows=50, max_measurements=4)
    X = np.full((50, 2), -3.0)
    y = np.full(50, 3.0)
    out = stat.decode(*aggregate(stat, [(X, y)] * 4))
    assert out["n"] == 200
    assert np.allclose(out["xtx"], np.full((2, 2), 200 * 9.0), rtol=1e-12)
    assert np.allclose(out["xty"], [-200 * 9.0] * 2, rtol=1e-12)


def test_mismatched_aggregate_is_a_decoding_error() -> None:
    stat = LinearRegressionStats(2, [-1, 1], [-1, 1], "provider", max_rows=10, max_measurements=4)
    agg = stat.field.add(aggregate(stat, [(np.zeros((3, 2)), np.zeros(3))])[0], stat.field.ones(1))
    with pytest.raises(DecodingError, match="row count is not an integer"):
        stat.decode(agg, 1)


def test_out_of_range_measurement_fails_its_circuit() -> None:
    stat = LinearRegressionStats(2, [-1, 1], [-1, 1], "provider", max_rows=10)
    meas = stat.measurements(np.zeros((3, 2)), np.zeros(3))
    bad = meas.copy()
    bad[0, 5] = stat.field.elements(2)  # a "bit" that is not a bit
    assert check(stat, meas).all() and not check(stat, bad).any()


@pytest.mark.parametrize("granularity", ["provider", "record"])
def test_mean_variance(data: tuple, granularity: str) -> None:
    X, _ = data
    stat = MeanVarianceStats(
        4,
        [[-5, 5], [0, 100], [-2, 0], [-10, 14]],
        granularity,
        max_rows=200,
        max_measurements=4 if granularity == "provider" else 400,
    )
    out = stat.decode(*aggregate(stat, [(X[:200], None), (X[200:], None)]))
    tol = 1e-10 if granularity == "provider" else 1e-6
    assert out["n"] == 400
    assert rel(out["mean"], X.mean(0)) < tol
    assert rel(out["var"], X.var(0)) < tol
    assert rel(out["sum_sq"], (X * X).sum(0)) < tol


@pytest.mark.parametrize("granularity", ["provider", "record"])
def test_histogram_and_count(data: tuple, granularity: str) -> None:
    X, _ = data
    edges = [0, 25, 50, 75, 100]
    hist = HistogramStats(edges, column=1, granularity=granularity, max_rows=300)
    out = hist.decode(*aggregate(hist, [(X[:150], None), (X[150:], None)]))
    assert out["counts"].tolist() == np.histogram(X[:, 1], edges)[0].tolist()
    assert out["n"] == 400
    count = CountStats(granularity, max_rows=300)
    flags = X[:, 0] > 0
    agg, _ = aggregate(count, [(flags[:150], None), (flags[150:], None)])
    n_meas = 2 if granularity == "provider" else 400
    assert count.decode(agg, n_meas) == {"count": int(flags.sum())}
    agg, _ = aggregate(count, [(X[:150], None), (X[150:], None)])
    assert count.decode(agg, n_meas) == {"count": 400}


def test_params_round_trip_through_json() -> None:
    stats = [
        LinearRegressionStats(3, [-1, 1], [0, 5], "provider", max_rows=20, max_measurements=10),
        LinearRegressionStats(3, [[-1, 1], [0, 2], [3, 4]], [0, 5], "record", bits=16),
        CountStats("provider", max_rows=7),
        CountStats(),
        MeanVarianceStats(2, [-1, 1], "provider", max_rows=9, frac_bits=30),
        MeanVarianceStats(2, [-1, 1], "record", max_measurements=100),
        HistogramStats([0, 1, 2, 3], column=2, granularity="provider", max_rows=5),
        HistogramStats([0.0, 0.5, 1.0]),
    ]
    for s in stats:
        kind, params = json.loads(json.dumps(s.spec()))
        t = from_params(kind, params)
        assert t == s and type(t) is type(s)
        assert t.field is s.field and repr(t.circuit) == repr(s.circuit)
        assert Statistic.from_params(kind, params) == s
    with pytest.raises(ConfigError, match="unknown statistic kind 'median'"):
        from_params("median", {})
    with pytest.raises(ConfigError, match="bad parameters for statistic 'count'"):
        from_params("count", {"bins": 3})


def test_parameter_errors() -> None:
    with pytest.raises(ConfigError, match="granularity must be one of"):
        CountStats("row")
    with pytest.raises(ConfigError, match="needs max_rows"):
        LinearRegressionStats(2, [-1, 1], [-1, 1], "provider")
    with pytest.raises(ConfigError, match="lo ≤ hi"):
        LinearRegressionStats(2, [1, -1], [-1, 1], max_rows=3)
    with pytest.raises(ConfigError, match="2 \\[lo, hi\\] pairs"):
        LinearRegressionStats(2, [[-1, 1]] * 3, [-1, 1], max_rows=3)
    with pytest.raises(ConfigError, match="strictly increasing"):
        HistogramStats([0, 0, 1])
    with pytest.raises(ConfigError, match="needs targets y"):
        LinearRegressionStats(2, [-1, 1], [-1, 1], max_rows=3).measurements(np.zeros((2, 2)))


def test_each_statistic_declares_its_batch_limit() -> None:
    """B = 1 in provider granularity; the record row cap (else max_measurements) in record
    granularity; the record cap is part of the params every party rebuilds."""
    assert CountStats("provider", max_rows=50).max_batch == 1
    assert LinearRegressionStats(2, [-1, 1], [-1, 1], max_rows=50).max_batch == 1
    assert MeanVarianceStats(2, [-1, 1], "provider", max_rows=9).max_batch == 1
    assert HistogramStats([0, 1], granularity="provider", max_rows=3).max_batch == 1
    assert CountStats("record", max_measurements=64).max_batch == 64
    capped = [
        CountStats("record", max_rows=8, max_measurements=64),
        HistogramStats([0, 1, 2], granularity="record", max_rows=8, max_measurements=64),
        LinearRegressionStats(2, [-1, 1], [-1, 1], "record", max_rows=8, max_measurements=64),
        MeanVarianceStats(2, [-1, 1], "record", max_rows=8, max_measurements=64),
    ]
    for s in capped:
        assert s.max_batch == 8
        kind, params = json.loads(json.dumps(s.spec()))
        assert params["max_rows"] == 8 and from_params(kind, params).max_batch == 8
        s.measurements(np.zeros((8, 2)), np.zeros(8))
        with pytest.raises(ConfigError, match="at most 8 records per provider"):
            s.measurements(np.zeros((9, 2)), np.zeros(9))
    # no record cap given: the params are unchanged (same circuit id as before)
    assert "max_rows" not in CountStats("record").params()
    with pytest.raises(ConfigError, match="max_rows must be a positive integer"):
        CountStats("record", max_rows=0)


# ------------------------------------------- weighted, multi-output linear regression (#12)


def weighted_aggregate(stat: Statistic, parts: Sequence[tuple[Any, Any, Any]]) -> tuple:
    """As :func:`aggregate`, with each provider's weights."""
    F = stat.field
    total, count = F.zeros(stat.output_len), 0
    for X, y, w in parts:
        meas = stat.measurements(X, y, w)
        assert np.all(check(stat, meas)), "honest weighted measurement rejected"
        total = F.add(total, F.sum(stat.circuit.truncate(meas), axis=0))
        count += meas.shape[0]
    return total, count


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    d=st.integers(1, 4),
    k=st.integers(1, 3),
    providers=st.integers(1, 5),
    wmax=st.floats(0.5, 100.0),
)
def test_weighted_multi_output_matches_numpy(
    seed: int, d: int, k: int, providers: int, wmax: float
) -> None:
    """Weighted, multi-target sums decode to numpy's weighted moments within the documented
    fixed-point bound (scatter_tol per entry in the frame)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(providers, 40 * providers))
    X = rng.uniform(-3, 3, size=(n, d))
    Y = rng.uniform(-5, 5, size=(n, k))
    w = rng.uniform(0, wmax, size=n)
    groups = np.array_split(np.arange(n), providers)
    stat = LinearRegressionStats(
        d, [-3, 3], [-5, 5], "provider", max_rows=max(map(len, groups)),
        max_measurements=providers, n_targets=k, max_weight=wmax,
    )  # fmt: skip
    out = stat.decode(*weighted_aggregate(stat, [(X[g], Y[g], w[g]) for g in groups]))
    sw = w.sum()
    xm, ym = w @ X / sw, w @ Y / sw
    Xc, Yc = X - xm, Y - ym
    sxx, sxy = (Xc * w[:, None]).T @ Xc, (Xc * w[:, None]).T @ Yc
    s = out["x_scale"]
    assert abs(out["n"] - sw) <= 1e-9 * sw
    assert np.max(np.abs((out["sxx"] - sxx) / np.outer(s, s))) <= out["scatter_tol"]
    if k == 1:
        sxy, ym = sxy[:, 0], float(ym[0])
    assert np.shape(out["sxy"]) == np.shape(sxy) and np.shape(out["y_mean"]) == np.shape(ym)
    assert np.max(np.abs(out["sxy"] - sxy)) <= 1e-8 * max(1.0, np.abs(sxy).max())
    assert np.max(np.abs(np.asarray(out["y_mean"]) - ym)) <= 1e-9


def test_weighted_statistic_params_and_errors() -> None:
    stat = LinearRegressionStats(
        2, [-1, 1], [[-1, 1], [0, 2]], max_rows=5, n_targets=2, max_weight=3.0
    )
    kind, params = stat.spec()
    assert params["n_targets"] == 2 and params["max_weight"] == 3.0
    assert from_params(kind, json.loads(json.dumps(params))) == stat
    # unweighted single-target specs are unchanged (jobs already on ledgers stay valid)
    assert "max_weight" not in LinearRegressionStats(2, [-1, 1], [-1, 1], max_rows=5).params()
    X, Y = np.zeros((3, 2)), np.ones((3, 2))
    with pytest.raises(ConfigError, match=r"sample_weight has value 4\.0"):
        stat.measurements(X, Y, np.array([1.0, 4.0, 0.0]))
    with pytest.raises(ConfigError, match=r"sample_weight has value -1\.0"):
        stat.measurements(X, Y, np.array([1.0, -1.0, 0.0]))
    with pytest.raises(ConfigError, match="2 sample weights for 3 rows"):
        stat.measurements(X, Y, np.ones(2))
    with pytest.raises(ConfigError, match="y has 1 targets; the job declares 2"):
        stat.measurements(X, np.ones(3))
    with pytest.raises(ConfigError, match="max_weight must be a positive"):
        LinearRegressionStats(2, [-1, 1], [-1, 1], max_rows=5, max_weight=0)
    with pytest.raises(ConfigError, match="record granularity proves one target"):
        LinearRegressionStats(2, [-1, 1], [-1, 1], "record", max_weight=1.0)
    with pytest.raises(ConfigError, match="record granularity proves one target"):
        LinearRegressionStats(2, [-1, 1], [[-1, 1]] * 2, "record", n_targets=2)


def test_a_weight_above_the_bound_cannot_pass_the_range_proof() -> None:
    """Robustness: a provider that skips its own weight check (weights 8× the declared bound)
    produces moments beyond max_rows; it cannot encode them within the proved bit width,
    and a measurement forged with a wider entry fails the circuit."""
    stat = LinearRegressionStats(1, [-1, 1], [-1, 1], max_rows=4, max_weight=1.0)
    X, y = np.ones((4, 1)), np.ones(4)
    big = stat.local_moments(X, y, np.ones(4)) * 8.0  # what weights of 8 would give
    from kaires_fl.statistics.base import _fixed_point

    with pytest.raises(ConfigError, match="exceeds max_rows"):
        _fixed_point(big, stat._f, stat.bits)
    honest = stat.measurements(X, y, np.ones(4))
    forged = honest.copy()
    forged[0, stat.bits - 1] = stat.field.elements(8)  # top "bit" of entry 0 set to 8
    assert check(stat, honest).all() and not check(stat, forged).any()
