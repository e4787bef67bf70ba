"""Privacy accounting of the (distributed) Skellam mechanism.

The mechanism adds, to an integer-valued statistic, noise Z with i.i.d. coordinates
``Sk(μ)`` = Poisson(μ/2) − Poisson(μ/2) (variance μ = σ²). A sum of independent Skellams is
Skellam, so the n − t honest aggregators' shares of variance σ²/(n − t) add up to exactly
this mechanism, whatever the t others add.

Rényi DP (Agarwal, Kairouz, Liu, NeurIPS'21, Theorem 3.5): for an integer order α > 1 and
integer-valued neighbouring inputs at L2 distance ≤ Δ₂ and L1 distance ≤ Δ₁,

    ε(α) ≤ α Δ₂² / (2μ) + min( ((2α − 1) Δ₂² + 6 Δ₁) / (4μ²), 3 Δ₁ / (2μ) ).

Composition over ``rounds`` releases adds the RDP curves; the conversion to (ε, δ) is the
one of Canonne, Kamath, Steinke (NeurIPS'20, Prop. 12) as implemented by Google's
``dp-accounting`` (``compute_epsilon``). :func:`calibrate` finds the least σ whose
(ε, δ) meets a target, by bisection on σ.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from dp_accounting.rdp.rdp_privacy_accountant import compute_epsilon

from kaires_fl.errors import ConfigError
from kaires_fl.privacy import DP

__all__ = [
    "ORDERS",
    "calibrate",
    "calibrate_coarse",
    "epsilon_from_rdp",
    "epsilon_spent",
    "skellam_rdp",
    "two_scale_epsilon",
    "two_scale_rdp",
]

#: Integer Rényi orders the accountant optimises over (the bound holds for integers α > 1).
ORDERS: tuple[int, ...] = (
    *range(2, 65),
    *range(72, 257, 8),
    *range(288, 1025, 32),
    1536,
    2048,
    4096,
    8192,
)
#: Relative precision of :func:`calibrate` (σ is rounded up, never down).
CALIBRATION_RTOL = 1e-6


def _check_sensitivity(l2: float, l1: float) -> None:
    if not (math.isfinite(l2) and math.isfinite(l1)) or l2 <= 0 or l1 <= 0:
        raise ConfigError(
            f"sensitivities must be finite and positive, got L2 = {l2!r}, L1 = {l1!r}"
        )
    if l2 > l1 * (1 + 1e-12):
        raise ConfigError(f"an L2 sensitivity ({l2!r}) cannot exceed the L1 one ({l1!r})")


def skellam_rdp(orders: Sequence[int], variance: float, l2: float, l1: float) -> np.ndarray:
    """RDP ε(α) of the Skellam mechanism of per-coordinate ``variance`` μ (AKL21 Thm 3.5).

    Pre: integer orders > 1, ``variance > 0``, sensitivities in the statistic's integer
    units with ``0 < l2 ≤ l1``. Post: an upper bound on the order-α Rényi divergence
    between the outputs on any two neighbouring inputs.
    """
    _check_sensitivity(l2, l1)
    if not variance > 0:
        raise ConfigError(f"the noise variance must be positive, got {variance!r}")
    a = np.asarray(orders, dtype=np.float64)
    if np.any(a < 2) or np.any(a != np.floor(a)):
        raise ConfigError("the Skellam RDP bound holds for integer orders α ≥ 2")
    mu = float(variance)
    d2 = float(l2) ** 2
    tail = np.minimum(((2 * a - 1) * d2 + 6 * l1) / (4 * mu * mu), 3 * l1 / (2 * mu))
    out: np.ndarray = a * d2 / (2 * mu) + tail
    return out


def epsilon_spent(sigma: float, l2: float, l1: float, delta: float, rounds: int = 1) -> float:
    """The ε at which ``rounds`` releases with Skellam noise of std ``sigma`` (integer
    units, per coordinate) of a statistic of sensitivities ``l2``/``l1`` are (ε, δ)-DP.

    Pre: ``sigma > 0``, ``0 < delta < 1``, ``rounds ≥ 1``. Post: ε ≥ 0 (``inf`` when no
    order gives a finite bound).
    """
    if not (math.isfinite(sigma) and sigma > 0):
        raise ConfigError(f"sigma must be positive and finite, got {sigma!r}")
    return epsilon_from_rdp(skellam_rdp(ORDERS, sigma * sigma, l2, l1), delta, rounds)


def epsilon_from_rdp(rdp: Sequence[float] | np.ndarray, delta: float, rounds: int = 1) -> float:
    """The ε at ``delta`` of ``rounds`` releases of a mechanism whose RDP curve over
    :data:`ORDERS` is ``rdp`` (compositions add RDP curves: so do the independent blocks of
    a product mechanism, :class:`kaires_fl.privacy.mechanism.NoiseBlock`)."""
    if not 0 < delta < 1:
        raise ConfigError(f"delta must lie in (0, 1), got {delta!r}")
    if int(rounds) != rounds or rounds < 1:
        raise ConfigError(f"rounds must be a positive integer, got {rounds!r}")
    curve = int(rounds) * np.asarray(rdp, dtype=np.float64)
    eps, _ = compute_epsilon(ORDERS, curve.tolist(), float(delta))
    return float(eps)


def least_passing(
    ok: Callable[[float], bool],
    start: float,
    *,
    factor: float = 2.0,
    shrink: bool = True,
    rtol: float = CALIBRATION_RTOL,
) -> float | None:
    """The least noise level passing the monotone test ``ok`` (False below some level, True
    from it on), by bisection.

    From ``start``, multiply by ``factor`` until ``ok`` passes (None past 1e300); with
    ``shrink``, halve down while the level below still passes (down to 1e-300); then bisect
    the last bracket to relative width ``rtol``. Post: ``ok(result)`` is True and the least
    passing level lies within ``rtol·result`` below it.
    """
    hi = start
    while not ok(hi):
        hi *= factor
        if hi > 1e300:
            return None
    lo = hi / factor
    while shrink and ok(lo) and lo > 1e-300:
        hi, lo = lo, lo / factor
    while hi - lo > rtol * hi:
        mid = (lo + hi) / 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


def calibrate(dp: DP, l2_sensitivity: float, l1_sensitivity: float, rounds: int = 1) -> float:
    """The least noise std σ (integer units, per coordinate) with which ``rounds`` releases
    of a statistic of these sensitivities are ``(dp.epsilon, dp.delta)``-DP.

    Post: ``epsilon_spent(σ, l2, l1, dp.delta, rounds) ≤ dp.epsilon`` (σ is the upper end
    of the bisection, within :data:`CALIBRATION_RTOL` of the least such σ).
    """
    _check_sensitivity(l2_sensitivity, l1_sensitivity)

    def ok(s: float) -> bool:
        return epsilon_spent(s, l2_sensitivity, l1_sensitivity, dp.delta, rounds) <= dp.epsilon

    sigma = least_passing(ok, max(l2_sensitivity, 1.0))
    if sigma is None:
        raise ConfigError(f"no noise level reaches ε = {dp.epsilon} at δ = {dp.delta}")
    return sigma


# ---------------------------------------------------------------------------- two scales


def two_scale_rdp(
    orders: Sequence[int],
    coarse_variance: float,
    fine_variance: float,
    scale_bits: int,
    l2: float,
    l1: float,
    length: int,
) -> np.ndarray:
    """RDP of releasing x + 2^k·Z₁ + Z₂ (Z₁ ~ Sk(coarse), Z₂ ~ Sk(fine), k = scale_bits).

    Write a neighbour's change Δ = 2^k·q + r with q = round(Δ/2^k), |r_i| ≤ 2^(k−1). The
    output is a function of (Z₁ + q, Z₂ + r), so by data processing and independence its
    Rényi divergence is at most the sum of two Skellam mechanisms' with sensitivities
    ‖q‖₂ ≤ Δ₂/2^k + √L/2, ‖q‖₁ ≤ Δ₁/2^k + L/2 and ‖r‖₂ ≤ 2^(k−1)√L, ‖r‖₁ ≤ 2^(k−1)L.
    """
    if scale_bits == 0:
        return skellam_rdp(orders, coarse_variance + fine_variance, l2, l1)
    h = float(2 ** (scale_bits - 1))
    q2 = l2 / (2 * h) + math.sqrt(length) / 2
    q1 = l1 / (2 * h) + length / 2
    out: np.ndarray = skellam_rdp(orders, coarse_variance, q2, q1) + skellam_rdp(
        orders, fine_variance, h * math.sqrt(length), h * length
    )
    return out


def two_scale_epsilon(
    coarse_variance: float,
    fine_variance: float,
    scale_bits: int,
    l2: float,
    l1: float,
    length: int,
    delta: float,
    rounds: int = 1,
) -> float:
    """:func:`epsilon_spent` of the two-scale mechanism (:func:`two_scale_rdp`)."""
    rdp = two_scale_rdp(ORDERS, coarse_variance, fine_variance, scale_bits, l2, l1, length)
    return epsilon_from_rdp(rdp, delta, rounds)


def calibrate_coarse(
    dp: DP,
    fine_variance: float,
    scale_bits: int,
    l2: float,
    l1: float,
    length: int,
    rounds: int = 1,
) -> float | None:
    """The least coarse variance (bisection, rounded up) meeting ``dp`` with the fine part
    fixed; None when the fine part alone already spends more than ε."""
    _check_sensitivity(l2, l1)

    def ok(v: float) -> bool:
        e = two_scale_epsilon(v, fine_variance, scale_bits, l2, l1, length, dp.delta, rounds)
        return e <= dp.epsilon

    return least_passing(ok, 1.0, factor=4.0, shrink=False)
