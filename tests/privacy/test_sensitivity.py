"""The sensitivities the statistics state hold for what their circuits accept, and noisy
aggregates decode."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kaires_fl.statistics import (
    CountStats,
    CovarianceStats,
    HistogramStats,
    LinearRegressionStats,
    LogisticRegressionStats,
    MeanVarianceStats,
)


def _outputs(stat, X, y=None) -> np.ndarray:
    """Each measurement's contribution to the aggregate (signed ints of truncate)."""
    F = stat.field
    meas = stat.measurements(X, y) if y is not None else stat.measurements(X)
    out = stat.circuit.truncate(meas)
    rows = [[int(v) for v in F.to_ints(row)] for row in np.atleast_2d(out)]
    return np.array(rows, dtype=object)


def _xy(r: np.random.Generator, rows: int, lo: float, fixed: bool = False) -> tuple:
    n = rows if fixed else int(r.integers(1, rows + 1))
    return r.random((n, 2)), r.uniform(lo, 1.0, n)


STATS = [
    (CountStats(), lambda r: (r.integers(0, 2, 6), None)),
    (CountStats("provider", max_rows=40), lambda r: (r.random((r.integers(1, 41), 2)), None)),
    (HistogramStats([0, 1, 2, 3, 4]), lambda r: (r.uniform(0, 4, (6, 1)), None)),
    (
        HistogramStats([0, 1, 2, 3], granularity="provider", max_rows=30),
        lambda r: (r.uniform(0, 3, (r.integers(1, 31), 1)), None),
    ),
    (
        LinearRegressionStats(2, [0, 1], [-1, 1], "provider", max_rows=20, frac_bits=10),
        lambda r: _xy(r, 20, -1.0),
    ),
    (
        LinearRegressionStats(2, [0, 1], [0, 1], "record", bits=8, max_measurements=64),
        lambda r: _xy(r, 4, 0.0, fixed=True),
    ),
    (
        MeanVarianceStats(2, [0, 1], max_rows=20, frac_bits=10),
        lambda r: (r.random((r.integers(1, 21), 2)), None),
    ),
    (
        CovarianceStats(2, [0, 1], max_rows=20, frac_bits=10),
        lambda r: (r.random((r.integers(1, 21), 2)), None),
    ),
]


@pytest.mark.parametrize("stat,draw", STATS, ids=lambda s: repr(s)[:40] if not callable(s) else "")
def test_replacement_moves_the_aggregate_within_the_stated_sensitivity(stat, draw) -> None:
    """For random valid contributions a, b of one unit (a provider's vector, or one record),
    ‖a − b‖₂ ≤ l2 and ‖a − b‖₁ ≤ l1 (what the noise is calibrated to)."""
    rng = np.random.default_rng(7)
    s = stat.sensitivity()
    assert s["unit"] == stat.granularity and s["l2"] <= s["l1"]
    worst2 = worst1 = 0.0
    for _ in range(40):
        Xa, ya = draw(rng)
        Xb, yb = draw(rng)
        a, b = _outputs(stat, Xa, ya), _outputs(stat, Xb, yb)
        if stat.granularity == "record":  # one record replaced by another
            pairs = [(a[i], b[j]) for i in range(len(a)) for j in range(len(b))]
        else:
            pairs = [(a.sum(axis=0), b.sum(axis=0))]
        for u, v in pairs:
            d = np.array([float(x - y) for x, y in zip(u, v, strict=True)])
            worst2 = max(worst2, float(np.sqrt(np.sum(d * d))))
            worst1 = max(worst1, float(np.abs(d).sum()))
    assert worst2 <= s["l2"] * (1 + 1e-12) and worst1 <= s["l1"] * (1 + 1e-12)
    assert worst2 > 0


def test_logistic_and_histogram_record_bounds() -> None:
    h = HistogramStats([0, 1, 2]).sensitivity()
    assert h["l2"] == pytest.approx(math.sqrt(2)) and h["l1"] == 2
    lg = LogisticRegressionStats(2, 2, [0, 1], max_rows=10)
    s = lg.sensitivity()
    assert s["unit"] == "provider" and s["scale"] == 2.0**-lg.frac_bits


def test_noisy_decoding() -> None:
    """A noisy aggregate (sums below zero, a fractional moment count) decodes; the record
    count is the public one; an exact aggregate decodes as before."""
    F = CountStats().field
    c = CountStats()
    assert c.decode_noisy(F.elements([F.MODULUS - 3]), 5) == {"count": -3}
    h = HistogramStats([0, 1, 2])
    assert h.decode_noisy(F.elements([F.MODULUS - 2, 7]), 5)["counts"].tolist() == [-2, 7]
    reg = LinearRegressionStats(2, [0, 1], [0, 1], "record", bits=8, max_measurements=64)
    rng = np.random.default_rng(1)
    X, y = rng.random((10, 2)), rng.random(10)
    agg = reg.field.elements(np.sum(_outputs(reg, X, y), axis=0) % reg.field.MODULUS)
    noise = reg.field.elements(rng.integers(-50, 50, agg.shape).astype(object) % reg.field.MODULUS)
    noisy = reg.decode_noisy(reg.field.add(agg, noise), 10)
    assert noisy["n"] == 10
    assert reg.decode(agg, 10)["n"] == 10
    prov = LinearRegressionStats(2, [0, 1], [0, 1], "provider", max_rows=20, frac_bits=10)
    a = np.sum(_outputs(prov, X, y), axis=0)
    agg = prov.field.elements((a + 333) % prov.field.MODULUS)  # count no longer integral
    with pytest.raises(Exception, match="not an integer"):
        prov.decode(agg, 1)
    assert prov.decode_noisy(agg, 1)["n"] == pytest.approx(10, abs=1)


def test_noisy_decoding_keeps_raw_sums_finite() -> None:
    """A noisy count ≤ 0 leaves the raw sums (Σx, XᵀX, Xᵀy, yᵀy; Σx, Σx²) finite and equal
    to those of the noisy moments (NaN only in the n-divided means); a count > 0 gives the
    same raw sums as the exact decode (up to the noise)."""
    rng = np.random.default_rng(3)
    X, y = rng.uniform(-1, 3, (12, 2)), rng.uniform(0, 2, 12)
    prov = LinearRegressionStats(2, [-1, 3], [0, 2], "provider", max_rows=20, frac_bits=10)
    F, w = prov.field, 1 << 10
    a = np.sum(_outputs(prov, X, y), axis=0).astype(object)
    exact = prov.decode(F.elements(a % F.MODULUS), 1)
    got = prov.decode_noisy(F.elements(a % F.MODULUS), 1)
    for key in ("sum_x", "xtx", "xty", "sum_y", "yty"):
        assert np.allclose(got[key], exact[key], rtol=1e-9, atol=1e-6), key
    assert np.allclose(exact["xtx"], X.T @ X, atol=0.1) and np.isclose(
        exact["yty"], y @ y, atol=0.1
    )
    b = a.copy()
    b[0] = a[0] - 15 * w - 5  # the count coordinate (M[0, 0]) driven below zero by noise
    noisy = prov.decode_noisy(F.elements(b % F.MODULUS), 1)
    assert noisy["n"] < 0 and np.all(np.isnan(noisy["x_mean"])) and np.isnan(noisy["y_mean"])
    for key in ("sum_x", "xtx", "xty", "sum_y", "yty"):
        assert np.all(np.isfinite(noisy[key])), key
    # Only the count moved: Σx changes by Δn·center of the frame, XᵀX by Δn·ccᵀ.
    dn = (b[0] - a[0]) / w
    c = prov._center
    assert np.allclose(noisy["sum_x"], exact["sum_x"] + dn * c[:2], atol=1e-6)
    assert np.allclose(noisy["xtx"], exact["xtx"] + dn * np.outer(c[:2], c[:2]), atol=1e-6)
    mv = MeanVarianceStats(2, [-1, 3], "provider", max_rows=20, frac_bits=10)
    m = np.sum(_outputs(mv, X), axis=0).astype(object)
    m[0] = m[0] - 13 * w
    r = mv.decode_noisy(mv.field.elements(m % mv.field.MODULUS), 1)
    assert np.all(np.isnan(r["mean"])) and np.all(np.isfinite(r["sum"]))
    assert np.allclose(r["sum"], X.sum(axis=0) - 13 * mv._center, atol=0.1)
    assert np.allclose(r["sum_sq"], (X * X).sum(axis=0) - 13 * mv._center**2, atol=0.1)
