"""The accountant against slow references: the exact Rényi divergence of the Skellam
mechanism (numerical sums of its pmf), the (ε, δ) conversion formula, calibration."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import ive

import kaires_fl
from kaires_fl.errors import ConfigError
from kaires_fl.privacy import DP
from kaires_fl.privacy.accounting import (
    ORDERS,
    calibrate,
    epsilon_spent,
    least_passing,
    skellam_rdp,
)


def skellam_logpmf(k: np.ndarray, mu: float) -> np.ndarray:
    """log P(Z = k), Z = Poisson(μ/2) − Poisson(μ/2): e^{−μ} I_k(μ) (ive = I·e^{−μ})."""
    return np.log(ive(np.abs(k), mu))


def exact_rdp(alpha: int, mu: float, shift: int) -> float:
    """D_α(Sk(μ) + shift ‖ Sk(μ)) by direct summation over a wide support (slow reference)."""
    half = int(shift + 40 * math.sqrt(mu) + 40)
    k = np.arange(-half, half + 1)
    with np.errstate(divide="ignore"):
        lp = skellam_logpmf(k - shift, mu)
        lq = skellam_logpmf(k, mu)
    ok = np.isfinite(lp) & np.isfinite(lq)  # far tails underflow in both: negligible mass
    terms = alpha * lp[ok] + (1 - alpha) * lq[ok]
    m = terms.max()
    return float((m + math.log(np.exp(terms - m).sum())) / (alpha - 1))


def reference_epsilon(rdp: np.ndarray, delta: float) -> float:
    """Canonne–Kamath–Steinke Prop. 12, written out: min over α of
    rdp + log((α − 1)/α) − (log δ + log α)/(α − 1)."""
    a = np.asarray(ORDERS, dtype=np.float64)
    eps = rdp + np.log1p(-1 / a) - (math.log(delta) + np.log(a)) / (a - 1)
    return max(0.0, float(eps.min()))


def test_dp_is_exported_and_validated() -> None:
    dp = kaires_fl.DP(1, 1e-6)
    assert dp == DP(1.0, 1e-6) and isinstance(dp.epsilon, float)
    assert dp.to_obj() == {"epsilon": 1.0, "delta": 1e-6}
    for eps, delta in [
        (0, 1e-6),
        (-1, 1e-6),
        (101, 1e-6),
        (1, 0),
        (1, 1),
        (math.nan, 1e-6),
        (1, math.inf),
        (True, 1e-6),
        ("1", 1e-6),
    ]:
        with pytest.raises(ConfigError):
            DP(eps, delta)  # type: ignore[arg-type]


@settings(max_examples=40, deadline=None)
@given(
    mu=st.floats(2.0, 400.0),
    shift=st.integers(1, 4),
    alpha=st.integers(2, 24),
)
def test_rdp_bound_is_above_the_exact_divergence(mu: float, shift: int, alpha: int) -> None:
    """AKL21's bound (1-D: Δ₁ = Δ₂ = shift) is never below the exact Rényi divergence,
    and is tight for large μ (Gaussian regime: within 50 %)."""
    bound = float(skellam_rdp([alpha], mu, shift, shift)[0])
    exact = exact_rdp(alpha, mu, shift)
    assert exact <= bound * (1 + 1e-9) + 1e-12
    if mu > 50 * shift * alpha:
        assert bound <= 1.5 * exact


def test_bound_approaches_the_gaussian_rdp() -> None:
    mu, d = 1e6, 3.0
    r = skellam_rdp([2, 8, 32], mu, d, d)
    assert np.allclose(r, np.array([2, 8, 32]) * d * d / (2 * mu), rtol=1e-3)


@settings(max_examples=30, deadline=None)
@given(
    sigma=st.floats(0.5, 1e4),
    l2=st.floats(0.1, 100.0),
    ratio=st.floats(1.0, 10.0),
    rounds=st.integers(1, 50),
    log_delta=st.floats(-12, -2),
)
def test_epsilon_is_the_conversion_of_the_composed_curve(
    sigma: float, l2: float, ratio: float, rounds: int, log_delta: float
) -> None:
    delta = 10.0**log_delta
    rdp = rounds * skellam_rdp(ORDERS, sigma * sigma, l2, l2 * ratio)
    want = reference_epsilon(rdp, delta)
    got = epsilon_spent(sigma, l2, l2 * ratio, delta, rounds)
    assert got == pytest.approx(want, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("eps", [0.1, 0.5, 1.0, 4.0, 10.0])
@pytest.mark.parametrize("l2,l1", [(1.0, 1.0), (math.sqrt(2), 2.0), (1e6, 3e7)])
def test_calibration_is_the_least_sigma_meeting_the_target(
    eps: float, l2: float, l1: float
) -> None:
    dp = DP(eps, 1e-6)
    sigma = calibrate(dp, l2, l1)
    assert epsilon_spent(sigma, l2, l1, dp.delta) <= eps
    assert epsilon_spent(sigma * (1 - 1e-4), l2, l1, dp.delta) > eps


def test_composition_costs_more_noise_and_more_epsilon() -> None:
    one = calibrate(DP(1.0, 1e-6), 1.0, 1.0)
    ten = calibrate(DP(1.0, 1e-6), 1.0, 1.0, rounds=10)
    assert ten > 2.5 * one  # ≈ √10 in the Gaussian regime
    spent = [epsilon_spent(one, 1.0, 1.0, 1e-6, r) for r in (1, 2, 4, 8)]
    assert spent[0] == pytest.approx(1.0, rel=1e-3) and spent == sorted(spent)
    assert spent[-1] < 8 * spent[0]  # RDP composition beats the basic ε·k


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ConfigError):
        skellam_rdp([2], 0.0, 1.0, 1.0)
    with pytest.raises(ConfigError):
        skellam_rdp([1.5], 1.0, 1.0, 1.0)
    with pytest.raises(ConfigError):
        calibrate(DP(1.0, 1e-6), 2.0, 1.0)  # L2 > L1
    with pytest.raises(ConfigError):
        epsilon_spent(1.0, 1.0, 1.0, 1e-6, rounds=0)


def test_two_scale_accounting() -> None:
    """k = 0 is the one-scale mechanism; at k > 0 the fine part's cost is counted (a fine
    variance far too small makes any coarse one fail), and the calibrated coarse variance
    meets the target at the least value (bisection)."""
    from kaires_fl.privacy.accounting import calibrate_coarse, two_scale_epsilon, two_scale_rdp

    a = two_scale_rdp(ORDERS, 50.0, 50.0, 0, 1.0, 2.0, 4)
    assert np.allclose(a, skellam_rdp(ORDERS, 100.0, 1.0, 2.0))
    dp = DP(1.0, 1e-6)
    assert calibrate_coarse(dp, 1.0, 20, 1e9, 4e9, 15) is None
    v = calibrate_coarse(dp, 1e12, 10, 1e9, 4e9, 15)
    assert v is not None
    assert two_scale_epsilon(v, 1e12, 10, 1e9, 4e9, 15, 1e-6) <= 1.0
    assert two_scale_epsilon(v * (1 - 1e-4), 1e12, 10, 1e9, 4e9, 15, 1e-6) > 1.0


@settings(max_examples=60, deadline=None)
@given(
    threshold=st.floats(1e-3, 1e6),
    start=st.floats(1e-2, 1e3),
    factor=st.sampled_from([2.0, 4.0]),
)
def test_least_passing_brackets_the_threshold(
    threshold: float, start: float, factor: float
) -> None:
    """The bisection returns a passing level within rtol of the least one (a monotone step);
    without shrink it never goes below start/factor; None when nothing passes."""
    found = least_passing(lambda s: s >= threshold, start, factor=factor)
    assert found is not None and threshold <= found <= threshold * (1 + 1e-6)
    kept = least_passing(lambda s: s >= threshold, start, factor=factor, shrink=False)
    assert kept is not None and kept >= threshold and kept >= start / factor
    if start / factor >= threshold:  # already passing below start: the bracket stays there
        assert kept <= start
    else:
        assert kept <= threshold * (1 + 1e-6)
    assert least_passing(lambda s: False, start) is None
