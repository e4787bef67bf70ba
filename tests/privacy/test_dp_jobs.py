"""Jobs with ``dp=DP(ε, δ)`` through the whole in-process committee: the released noise
(variance, mean, bounds) with honest, zero-noise, out-of-range and Byzantine aggregators,
the privacy report, noisy decoding, and a missing deal."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kaires_fl import DP
from kaires_fl.errors import ProtocolError
from kaires_fl.simulation import LocalCommittee
from kaires_fl.statistics import CountStats, HistogramStats, LinearRegressionStats

BINS = 800
ROWS = 4  # per provider: every row in bin 0
EDGES = np.arange(BINS + 1.0)
DATA = {f"p{i}": (np.full((ROWS, 1), 0.5), None) for i in range(3)}
TRUE = np.zeros(BINS, dtype=np.int64)
TRUE[0] = 3 * ROWS


def _noise(result) -> np.ndarray:
    return np.asarray(result.aggregate["counts"], dtype=np.int64) - TRUE


@pytest.mark.parametrize("faults", [{}, {3: "no_noise"}])
def test_released_noise_variance_and_mean(faults: dict[int, str]) -> None:
    """800 i.i.d. noise coordinates of one job: variance σ² (t = 1 aggregator adds none) or
    n/(n − t)·σ² (all honest), within 20 % (> 4 standard errors); mean 0 within 4 SE."""
    c = LocalCommittee(faults={"aggregator": faults})
    try:
        r = c.run_job(HistogramStats(EDGES), DATA, dp=DP(2.0, 1e-6))
    finally:
        c.close()
    p = r.report["privacy"]
    assert r.report["status"] == "done"
    assert p["mechanism"] == "skellam" and p["unit"] == "record"
    assert p["epsilon"] == 2.0 and p["delta"] == 1e-6
    assert p["sensitivity"]["l1"] == 2.0
    z = _noise(r)
    sigma2 = p["sigma"] ** 2
    want = sigma2 if faults else 4 / 3 * sigma2
    assert z.var() == pytest.approx(want, rel=0.2)
    assert z.var() >= 0.8 * sigma2
    assert abs(z.mean()) < 4 * math.sqrt(z.var() / z.size)


def test_out_of_range_noise_is_left_out() -> None:
    """An aggregator dealing noise of 4·B per coordinate: its proof fails, the job is done
    and every coordinate's noise stays within the three honest dealers' range ±3B."""
    c = LocalCommittee(faults={"aggregator": {2: "big_noise"}})
    try:
        r = c.run_job(HistogramStats(EDGES[:33]), DATA, dp=DP(1.0, 1e-6))
    finally:
        c.close()
    bound = r.report["privacy"]["bound_units"]
    z = np.asarray(r.aggregate["counts"], dtype=np.int64) - TRUE[:32]
    assert r.report["status"] == "done"
    assert np.abs(z).max() <= 3 * bound


def test_byzantine_aggregator_with_dp() -> None:
    c = LocalCommittee(faults={"aggregator": {1: "byzantine"}})
    try:
        r = c.run_job(CountStats(), DATA, dp=DP(1.0, 1e-6))
    finally:
        c.close()
    assert r.report["status"] == "done" and 1 in r.report["faulty_aggregators"]
    bound = r.report["privacy"]["bound_units"]
    assert abs(r.aggregate["count"] - 3 * ROWS) <= 4 * bound


def test_exact_job_has_no_privacy_report_and_noisy_regression_decodes() -> None:
    rng = np.random.default_rng(3)
    data = {f"p{i}": (rng.uniform(0, 1, (30, 2)), rng.uniform(0, 1, 30)) for i in range(3)}
    stat = LinearRegressionStats(
        2, [0, 1], [0, 1], "provider", max_rows=32, max_measurements=8, frac_bits=12
    )
    c = LocalCommittee()
    try:
        exact = c.run_job(stat, data)
        noisy = c.run_job(stat, data, dp=DP(4.0, 1e-6))
    finally:
        c.close()
    assert exact.report["privacy"] is None
    p = noisy.report["privacy"]
    assert p["unit"] == "provider" and p["sigma"] == pytest.approx(p["sigma_units"] * 2.0**-12)
    # a provider's whole contribution (≤ 32 rows) is protected: the noise is large
    assert p["sigma"] > 10
    assert isinstance(noisy.aggregate["n"], float)
    assert noisy.aggregate["sxx"].shape == (2, 2)


def test_a_missing_deal_stops_the_job() -> None:
    """Every aggregator's deal is needed (a relay leaving honest deals out would take
    their noise away): with one aggregator down nothing is released."""
    c = LocalCommittee(faults={"aggregator": {0: "crash"}}, round_timeout=0.2)
    try:
        with pytest.raises(ProtocolError, match="noise deals of aggregators \\[0\\]"):
            c.run_job(CountStats(), DATA, dp=DP(1.0, 1e-6))
        assert c.run_job(CountStats(), DATA).report["status"] == "done"  # exact jobs run
    finally:
        c.close()


def test_a_dealer_cheating_an_aggregator_changes_nothing() -> None:
    """Aggregator 3 deals aggregator 0 a share off its sharing: aggregator 0 proves its part
    key in round 2, every aggregator leaves dealer 3's noise out, and the result shares stay
    consistent (no aggregator reported wrong); the noise is the 3 honest ones' (σ²)."""
    c = LocalCommittee(faults={"aggregator": {3: "bad_noise_share"}})
    try:
        r = c.run_job(HistogramStats(EDGES), DATA, dp=DP(2.0, 1e-6))
    finally:
        c.close()
    assert r.report["status"] == "done" and r.report["faulty_aggregators"] == {}
    z = _noise(r)
    assert z.var() == pytest.approx(r.report["privacy"]["sigma"] ** 2, rel=0.2)
