"""Per-block noise (σ_j ∝ each block's replacement bound): the product mechanism's RDP
against a slow reference (the exact Rényi divergence of a product of Skellams, summed over
its joint support), the calibration, the plan of a record regression, its sampling, its
deals, and a job through the in-process committee."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from dealing import make_committee, settle_deals
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import ive

from kaires_fl import DP
from kaires_fl.arith import sharing
from kaires_fl.errors import ConfigError
from kaires_fl.estimators.base import privacy_sigma
from kaires_fl.privacy.accounting import ORDERS, calibrate, epsilon_from_rdp, skellam_rdp
from kaires_fl.privacy.mechanism import (
    MAX_DEALER_VARIANCE,
    NoiseBlock,
    _block_at,
    block_spans,
    calibrate_blocks,
    deal_noise,
    decide_noise,
    noise_total,
    plan_noise,
    product_rdp,
)
from kaires_fl.simulation import LocalCommittee
from kaires_fl.statistics import HistogramStats, LinearRegressionStats, MeanVarianceStats

N, T = 4, 1
JOB = "cd" * 32
COIN = bytes(range(32))


def exact_product_rdp(alpha: int, mus: list[float], shifts: list[int]) -> float:
    """D_α(⊗_j (Sk(μ_j) + s_j) ‖ ⊗_j Sk(μ_j)) by direct summation over the JOINT support
    (a grid of every coordinate's support; slow reference, nothing factorised)."""
    axes = []
    for mu, s in zip(mus, shifts, strict=True):
        half = int(abs(s) + 30 * math.sqrt(mu) + 30)
        axes.append(np.arange(-half, half + 1))
    grids = np.meshgrid(*axes, indexing="ij")
    lp = np.zeros(grids[0].shape)
    lq = np.zeros(grids[0].shape)
    with np.errstate(divide="ignore"):
        for g, mu, s in zip(grids, mus, shifts, strict=True):
            lp = lp + np.log(ive(np.abs(g - s), mu))
            lq = lq + np.log(ive(np.abs(g), mu))
    ok = np.isfinite(lp) & np.isfinite(lq)
    terms = alpha * lp[ok] + (1 - alpha) * lq[ok]
    m = terms.max()
    return float((m + math.log(np.exp(terms - m).sum())) / (alpha - 1))


@settings(max_examples=25, deadline=None)
@given(
    mu1=st.floats(2.0, 40.0),
    mu2=st.floats(2.0, 40.0),
    s1=st.integers(-4, 4),
    s2=st.integers(-4, 4),
    alpha=st.integers(2, 8),
)
def test_product_rdp_bounds_the_exact_divergence(mu1, mu2, s1, s2, alpha) -> None:
    """For two one-coordinate blocks of different variances and any shift within their
    bounds, the exact divergence of the product is ≤ the blocks' summed RDP bound."""
    m1, m2 = max(abs(s1), 1), max(abs(s2), 1)  # each block's declared bound
    blocks = (
        NoiseBlock(0, 1, float(m1), float(m1), math.sqrt(mu1)),
        NoiseBlock(1, 2, float(m2), float(m2), math.sqrt(mu2)),
    )
    bound = product_rdp(blocks, [alpha])[0]
    exact = exact_product_rdp(alpha, [mu1, mu2], [s1, s2])
    assert exact <= bound * (1 + 1e-9) + 1e-12
    # and the sum is what the two one-block bounds give (no cross term is dropped)
    assert bound == pytest.approx(
        skellam_rdp([alpha], mu1, m1, m1)[0] + skellam_rdp([alpha], mu2, m2, m2)[0]
    )


def test_product_rdp_is_additive_and_a_public_block_costs_nothing() -> None:
    a = NoiseBlock(0, 3, 3.0, 5.0, 10.0)
    b = NoiseBlock(3, 5, 100.0, 140.0, 400.0)
    z = NoiseBlock(5, 6, 0.0, 0.0, 0.0)
    got = product_rdp((a, b, z))
    want = skellam_rdp(ORDERS, 100.0, 3.0, 5.0) + skellam_rdp(ORDERS, 160000.0, 100.0, 140.0)
    assert np.allclose(got, want)
    assert np.all(z.rdp() == 0)


def _record_reg(d: int = 4, bits: int = 8) -> LinearRegressionStats:
    return LinearRegressionStats(
        d, [[0, 1]] * d, [0, 1], "record", bits=bits, max_measurements=2000
    )


def test_record_regression_declares_its_blocks() -> None:
    reg = _record_reg(3)
    q = 255.0
    c = reg.circuit
    assert reg.noise_blocks() == [
        (0, c.n_vars, q),
        (c.n_vars, c.n_vars + c.n_prods, q * q),
        (c.n_vars + c.n_prods, reg.output_len, 0.0),
    ]
    prov = LinearRegressionStats(2, [0, 1], [0, 1], "provider", max_rows=10, frac_bits=8)
    assert prov.noise_blocks() is None and HistogramStats([0, 1, 2]).noise_blocks() is None
    mv = MeanVarianceStats(2, [0, 1], "record", bits=8)
    assert mv.noise_blocks() == mv._reg.noise_blocks() and len(mv.noise_blocks()) == 3


@pytest.mark.parametrize("eps", [0.5, 1.0, 4.0])
def test_calibration_is_tight_and_proportional(eps: float) -> None:
    """σ_j = s·m_j; the plan meets ε at (1 − TAIL_SHARE)·δ and a 0.1 % smaller s does not."""
    reg = _record_reg(4)
    plan = plan_noise(DP(eps, 1e-6), reg, N, T)
    blocks = plan.blocks
    assert [b.start for b in blocks] == [0, 5, 20] and blocks[-1].stop == reg.output_len
    s = blocks[0].sigma / 255.0
    assert blocks[1].sigma == pytest.approx(s * 255.0**2)
    assert blocks[2].sigma == 0 and blocks[2].l2 == 0
    assert plan.sigma == blocks[1].sigma
    target = 0.9e-6
    assert plan.epsilon(target) <= eps
    declared = [(b.start, b.stop, m) for b, m in zip(blocks, [255.0, 255.0**2, 0.0], strict=True)]
    smaller = tuple(_block_at(*sp, 0.999 * s, N - T) for sp in block_spans(declared))
    assert epsilon_from_rdp(product_rdp(smaller), target) > eps
    again = calibrate_blocks(DP(eps, target), declared, N - T)
    assert again == tuple(dataclasses.replace(b, bits=0) for b in blocks)


def test_blocks_beat_one_sigma_on_the_sums() -> None:
    """The sums' noise drops by ≈ the bound ratio 255; the products' grows by < 10 %."""
    reg = _record_reg(10)
    blocks = plan_noise(DP(1.0, 1e-6), reg, N, T).blocks
    assert plan_noise(DP(1.0, 1e-6), HistogramStats(np.arange(3.0)), N, T).blocks == ()
    sens = reg.sensitivity()
    one = calibrate(DP(1.0, 0.9e-6), sens["l2"], sens["l1"])
    assert blocks[0].sigma < one / 200
    assert blocks[1].sigma < 1.1 * one


def test_two_scale_blocks_when_beyond_the_sampler() -> None:
    reg = _record_reg(4, bits=12)
    plan = plan_noise(DP(0.5, 1e-6), reg, N, T)
    big = plan.blocks[1]
    assert big.sigma**2 / (N - T) > MAX_DEALER_VARIANCE and big.scale_bits > 0
    assert big.coarse_variance * 4.0**big.scale_bits + big.fine_variance == pytest.approx(
        big.sigma**2
    )
    assert big.coarse_variance / (N - T) <= MAX_DEALER_VARIANCE
    assert plan.epsilon(0.9e-6) <= 0.5


def test_block_samples_have_each_block_variance() -> None:
    """400 dealer draws: each block's empirical variance is its σ_j²/(n − t) within 15 %
    (> 4 standard errors), the public count's is 0, and every value is within ±B."""
    reg = _record_reg(4)
    plan = plan_noise(DP(1.0, 1e-6), reg, N, T)
    rng = np.random.default_rng(7)
    z = np.stack([plan.sample(rng) for _ in range(400)])
    assert z.min() >= -plan.bound and z.max() < plan.bound
    for b in plan.blocks:
        part = z[:, b.start : b.stop].astype(np.float64)
        if b.l2 == 0:
            assert np.all(part == 0)
        else:
            assert part.var() == pytest.approx(b.sigma**2 / (N - T), rel=0.15)
            assert abs(part.mean()) < 4 * math.sqrt(part.var() / part.size)


def test_bad_blocks_are_refused() -> None:
    class Bad(HistogramStats):
        def noise_blocks(self):
            return [(0, 1, 1.0), (2, 3, 1.0)]  # a gap

    with pytest.raises(ConfigError, match="tile"):
        plan_noise(DP(1.0, 1e-6), Bad(np.arange(4.0)), N, T)


def test_block_deals_are_range_proven_and_sum_exactly() -> None:
    plan = plan_noise(DP(1.0, 1e-6), _record_reg(2), N, T)
    rng = np.random.default_rng(2)
    noises = {d: plan.sample(rng) for d in range(N)}
    deals, shares, rounds = _deal_round(plan, noises)
    accepted, rejected = decide_noise(plan, deals, rounds)
    assert accepted == list(range(N)) and rejected == {}
    F = plan.field
    tot = {i: noise_total(plan, accepted, shares[i]) for i in range(N)}
    v = F.to_ints(sharing.reconstruct(F, tot, T))
    p = F.MODULUS
    got = np.array([int(x) - p if int(x) > p // 2 else int(x) for x in v])
    assert np.array_equal(got, sum(noises.values()))
    assert np.all(got[-1:] == 0)  # the public count gets no noise


def _deal_round(plan, noises: dict[int, np.ndarray], invalid: set[int] = frozenset()):
    committee = make_committee(N)
    ids, kps = committee
    boxes = [k.public for k in kps]
    deals = [
        deal_noise(plan, JOB, d, ids[d], boxes, noises[d], valid=d not in invalid) for d in range(N)
    ]
    return settle_deals(plan, JOB, deals, committee, COIN)


def test_each_block_range_is_proven_on_its_own() -> None:
    """Per-block ranges: B_sums ≪ B_products; a dealer's noise of B_sums on a sum
    coordinate (within the products' range) fails its proof, as does −B_sums − 1; noise at
    the edges of each block's range passes; nothing can be dealt on the public count."""
    plan = plan_noise(DP(1.0, 1e-6), _record_reg(2), N, T)
    sums, prods, count = plan.blocks
    assert 0 < sums.bound < prods.bound and count.bound == 0 and count.bits == 0
    assert sums.length * sums.bits + prods.length * prods.bits == plan.flp.valid.MEAS_LEN
    edge = np.zeros(plan.length, dtype=np.int64)
    edge[sums.start], edge[sums.start + 1] = sums.bound - 1, -sums.bound
    edge[prods.start], edge[prods.stop - 1] = prods.bound - 1, -prods.bound
    over = np.zeros(plan.length, dtype=np.int64)
    over[sums.start] = sums.bound
    under = np.zeros(plan.length, dtype=np.int64)
    under[sums.stop - 1] = -sums.bound - 1
    count_bump = np.zeros(plan.length, dtype=np.int64)
    count_bump[count.start] = 5
    noises = {0: edge, 1: over, 2: under, 3: count_bump}
    deals, shares, rounds = _deal_round(plan, noises, invalid={1, 2, 3})
    accepted, rejected = decide_noise(plan, deals, rounds)
    assert accepted == [0, 3] and set(rejected) == {1, 2}
    assert all("range proof" in why for why in rejected.values())
    F = plan.field
    tot = {i: noise_total(plan, accepted, shares[i]) for i in range(N)}
    v = F.to_ints(sharing.reconstruct(F, tot, T))
    p = F.MODULUS
    got = np.array([int(x) - p if int(x) > p // 2 else int(x) for x in v])
    want = edge.copy()  # the count bump has no bits to be dealt in: it is not released
    assert np.array_equal(got, want)


def test_faulty_dealers_of_a_block_plan() -> None:
    """deal_for's behaviours on a per-block plan: "big_noise" fails its proof, "no_noise"
    passes and adds nothing, an honest deal passes."""
    from kaires_fl.privacy.mechanism import deal_for

    plan = plan_noise(DP(1.0, 1e-6), _record_reg(2), N, T)
    committee = make_committee(N)
    ids, kps = committee
    boxes = [k.public for k in kps]
    how = {0: None, 1: "big_noise", 2: "no_noise", 3: None}
    deals = [deal_for(plan, JOB, d, ids[d], boxes, how[d]) for d in range(N)]
    deals, _, rounds = settle_deals(plan, JOB, deals, committee, COIN)
    accepted, rejected = decide_noise(plan, deals, rounds)
    assert accepted == [0, 2, 3] and list(rejected) == [1]


def test_block_sumvec_encodes_and_refuses_out_of_range() -> None:
    from kaires_fl.arith.field import Field64
    from kaires_fl.errors import EncodingError
    from kaires_fl.privacy.mechanism import BlockSumVec

    c = BlockSumVec([(2, 3), (1, 0), (2, 5)], Field64)
    assert c.MEAS_LEN == 2 * 3 + 2 * 5 and c.OUTPUT_LEN == 5
    v = np.array([7, 0, 0, 31, 17])
    out = Field64.to_ints(c.truncate(c.encode(v)[None, :])[0])
    assert out == v.tolist()
    with pytest.raises(EncodingError):
        c.encode(np.array([8, 0, 0, 0, 0]))
    with pytest.raises(EncodingError):
        c.encode(np.array([0, 0, 1, 0, 0]))  # the 0-bit block holds only 0


def test_record_regression_job_reports_blocks_and_keeps_the_count() -> None:
    rng = np.random.default_rng(5)
    data = {f"p{i}": (rng.uniform(0, 1, (20, 2)), rng.uniform(0, 1, 20)) for i in range(3)}
    stat = LinearRegressionStats(2, [0, 1], [0, 1], "record", bits=6, max_measurements=64)
    c = LocalCommittee()
    try:
        r = c.run_job(stat, data, dp=DP(4.0, 1e-6))
    finally:
        c.close()
    p = r.report["privacy"]
    assert p["blocks"] == [[0, 3], [3, 9], [9, 10]]
    assert isinstance(p["sigma"], list) and len(p["sigma"]) == 3 and p["sigma"][2] == 0.0
    assert p["sigma"][1] == pytest.approx(63.0 * p["sigma"][0])
    assert privacy_sigma(r.report) == p["sigma"][1]
    assert r.aggregate["n"] == 60
    X = np.concatenate([v[0] for v in data.values()])
    # Σx carries noise of σ_0 quantisation steps (1/63 each): far below one unit per sum
    assert np.allclose(r.aggregate["sum_x"], X.sum(axis=0), atol=6 * p["sigma"][0] / 63 + 1)
