"""The distributed Skellam mechanism at the dealing level: sampling, tail bound, deals
verified on shares (honest, zero, out-of-range, tampered), the noise the consumer gets."""

from __future__ import annotations

import contextlib
import math

import msgspec
import numpy as np
import pytest
from dealing import Committee, make_committee, settle_deals
from scipy.stats import skellam

from kaires_fl.arith import sharing
from kaires_fl.crypto.elgamal import RecipientKey
from kaires_fl.crypto.envelope import EnvelopeKeyPair
from kaires_fl.errors import ConfigError, InvalidProof
from kaires_fl.privacy import DP
from kaires_fl.privacy.mechanism import (
    NoisePlan,
    NoiseRound,
    check_deals,
    deal_for,
    deal_noise,
    decide_noise,
    noise_round,
    noise_total,
    open_deal,
    plan_noise,
    sample_noise,
    skellam_tail,
)
from kaires_fl.schema import Elements
from kaires_fl.statistics import CountStats, HistogramStats, LinearRegressionStats

N, T = 4, 1
JOB = "ab" * 32
COIN = bytes(range(32))


@pytest.fixture(scope="module")
def committee() -> Committee:
    return make_committee(N)


def _plan(bins: int = 3, eps: float = 1.0) -> NoisePlan:
    return plan_noise(DP(eps, 1e-6), HistogramStats(np.arange(bins + 1.0)), N, T)


def _run(
    plan: NoisePlan,
    committee: Committee,
    behaviours: dict[int, str] | None = None,
    noises: dict[int, np.ndarray] | None = None,
) -> tuple[list, dict, dict]:
    """Every dealer deals, every aggregator opens and publishes: (deals, shares, rounds)."""
    ids, kps = committee
    boxes = [k.public for k in kps]
    deals = []
    for d in range(N):
        if noises and d in noises:
            deals.append(deal_noise(plan, JOB, d, ids[d], boxes, noises[d]))
        else:
            deals.append(deal_for(plan, JOB, d, ids[d], boxes, (behaviours or {}).get(d)))
    return settle_deals(plan, JOB, deals, committee, COIN)


def _rk(kp: EnvelopeKeyPair) -> RecipientKey:
    return RecipientKey.from_x25519(kp)


def _released(plan: NoisePlan, accepted: list[int], shares: dict) -> np.ndarray:
    """The noise the consumer reconstructs from every aggregator's noise share (signed)."""
    F = plan.field
    tot = {i: noise_total(plan, accepted, shares[i]) for i in shares}
    v = F.to_ints(sharing.reconstruct(F, tot, T))
    p = F.MODULUS
    return np.array([int(x) - p if int(x) > p // 2 else int(x) for x in v])


def test_sampler_variance_and_mean() -> None:
    """200 000 draws of variance 37.5: sample variance within 2 % (≈ 6 standard errors)
    and mean within 4 standard errors of 0."""
    z = sample_noise(37.5, 200_000, 1 << 20, rng=np.random.default_rng(1))
    assert z.dtype == np.int64
    assert abs(z.var() / 37.5 - 1) < 0.02
    assert abs(z.mean()) < 4 * math.sqrt(37.5 / z.size)
    a = sample_noise(10.0, 8, 1 << 10)
    b = sample_noise(10.0, 8, 1 << 10)
    assert not np.array_equal(a, b)  # fresh OS randomness each time


def test_tail_bound_dominates_the_exact_tail() -> None:
    for mu in (1.0, 10.0, 400.0):
        for b in (2, 8, 64, 256):
            exact = 2 * skellam.sf(b - 1, mu / 2, mu / 2)  # P(|Z| ≥ b)
            assert skellam_tail(mu, b) >= exact * (1 - 1e-9)
    z = sample_noise(4.0, 10_000, 3, rng=np.random.default_rng(2))
    assert z.min() >= -3 and z.max() <= 2  # clipped to the proven [−B, B − 1]


def test_plan() -> None:
    plan = _plan(bins=5, eps=1.0)
    assert plan.unit == "record" and plan.l1 == 2.0 and plan.l2 == pytest.approx(math.sqrt(2))
    assert plan.dealer_variance == pytest.approx(plan.sigma**2 / (N - T))
    assert plan.max_variance == pytest.approx(N / (N - T) * plan.sigma**2)
    # clipping is budgeted at TAIL_SHARE·δ = 1e-7 of δ, for the (1 + e^ε) factor of a
    # mechanism within total variation P of the unclipped one
    factor = 1 + math.exp(1.0)
    p_clip = N * plan.length * skellam_tail(plan.dealer_variance, plan.bound)
    assert p_clip == plan.clip_probability and factor * p_clip <= 1e-7
    assert plan.tail == pytest.approx(factor * p_clip) and plan.tail <= 1e-7
    # fewer bits would not meet the budget
    assert factor * N * plan.length * skellam_tail(plan.dealer_variance, plan.bound // 2) > 1e-7
    rep = plan.report(1.0)
    assert rep["sigma"] == plan.sigma and rep["mechanism"] == "skellam"
    # a statistic whose noise cannot fit its field is refused before anything is run
    with pytest.raises(ConfigError, match="half the field"):
        full = CountStats("provider", max_rows=1 << 20).circuit.max_measurements()
        stat = CountStats("provider", max_rows=1 << 20, max_measurements=full // 2)
        assert stat.field.__name__ == "Field64"  # sums of up to p/2 fit: no room for noise
        plan_noise(DP(1.0, 1e-6), stat, N, T)
    # with room for the noise the same statistic is planned
    room = CountStats("provider", max_rows=1 << 20, max_measurements=full // 4)
    assert plan_noise(DP(1.0, 1e-6), room, N, T).bits > 1


def test_honest_deals_are_accepted_and_sum_exactly(committee) -> None:
    plan = _plan()
    noises = {d: sample_noise(plan.dealer_variance, plan.length, plan.bound) for d in range(N)}
    deals, shares, rounds = _run(plan, committee, noises=noises)
    accepted, rejected = decide_noise(plan, deals, rounds)
    assert accepted == list(range(N)) and rejected == {}
    assert np.array_equal(_released(plan, accepted, shares), sum(noises.values()))


def test_out_of_range_noise_is_rejected_by_its_proof(committee) -> None:
    plan = _plan()
    deals, shares, rounds = _run(plan, committee, behaviours={2: "big_noise"})
    accepted, rejected = decide_noise(plan, deals, rounds)
    assert accepted == [0, 1, 3] and "range proof" in rejected[2]
    # had it been accepted, the consumer would see a noise beyond every honest bound
    worst = np.abs(_released(plan, [0, 1, 2, 3], shares)).max()
    assert worst >= 4 * plan.bound - 3 * plan.bound


def test_no_noise_passes_and_adds_nothing(committee) -> None:
    plan = _plan()
    zero = {d: np.zeros(plan.length, dtype=np.int64) for d in range(N)}
    deals, shares, rounds = _run(plan, committee, noises=zero)
    accepted, _ = decide_noise(plan, deals, rounds)
    assert accepted == list(range(N))
    assert not _released(plan, accepted, shares).any()


def test_faulty_aggregator_values_are_corrected(committee) -> None:
    """A Byzantine aggregator publishing random values, and one whose values are missing,
    take no honest noise away (decoded around them, n = 3t + 1)."""
    plan = _plan()
    deals, _, rounds = _run(plan, committee)
    F = plan.field
    bad = rounds[1]
    rounds[1] = msgspec.structs.replace(
        bad,
        z=Elements.of(F, F.random((N,))),
        verifier=Elements.of(F, F.random((N, plan.flp.VERIFIER_LEN))),
    )
    assert decide_noise(plan, deals, rounds)[0] == list(range(N))
    del rounds[1]
    assert decide_noise(plan, deals, rounds)[0] == list(range(N))
    rounds[1] = "not a round"  # malformed: counts as missing
    assert decide_noise(plan, deals, rounds)[0] == list(range(N))


def test_inconsistent_shares_are_rejected(committee) -> None:
    """A dealer whose sharing is off the degree-t polynomial at two holders (beyond what
    n = 4, t = 1 can correct) is rejected."""
    plan = _plan()
    deals, shares, _ = _run(plan, committee)
    F = plan.field
    for i in (0, 2):
        meas, proof = shares[i][3]
        shares[i][3] = (F.add(meas, F.ones(meas.shape)), proof)
    rounds = {i: noise_round(plan, COIN, deals, shares[i]) for i in range(N)}
    accepted, rejected = decide_noise(plan, deals, rounds)
    assert accepted == [0, 1, 2] and "decode" in rejected[3]


def test_tampered_or_forged_deals(committee) -> None:
    ids, kps = committee
    plan = _plan()
    boxes = [k.public for k in kps]
    signers = [i.public.hex() for i in ids]
    good = deal_for(plan, JOB, 0, ids[0], boxes)
    parts = list(good.meas_parts)
    parts[1] = parts[1][:-1] + bytes([parts[1][-1] ^ 1])
    tampered = msgspec.structs.replace(good, meas_parts=tuple(parts))
    forged = deal_for(plan, JOB, 1, ids[0], boxes)  # dealer 1's deal signed by 0
    other_job = deal_for(plan, "cd" * 32, 2, ids[2], boxes)
    assert check_deals(plan, JOB, [tampered, forged, other_job, good, good], signers) == [good]
    with pytest.raises(InvalidProof):  # a part altered in transit does not open
        open_deal(plan, msgspec.structs.replace(good, meas_parts=tuple(parts)), 1, _rk(kps[1]))
    with pytest.raises(InvalidProof):  # nor with another aggregator's key
        open_deal(plan, good, 1, _rk(kps[2]))


def test_unopened_part_counts_as_missing(committee) -> None:
    plan = _plan()
    deals, shares, _ = _run(plan, committee)
    del shares[2][0]  # aggregator 2 could not open dealer 0's part
    rounds = {i: noise_round(plan, COIN, deals, shares[i]) for i in range(N)}
    assert rounds[2].unopened == (0,)
    assert decide_noise(plan, deals, rounds)[0] == list(range(N))


@pytest.mark.parametrize("faulty", [0, 1])
def test_variance_with_t_dealers_adding_none(committee, faulty: int) -> None:
    """One deal per dealer of a 1,500-coordinate noise (i.i.d. coordinates): the released
    noise has mean 0 and variance σ² ≤ var ≤ n/(n − t)·σ² (tolerance 15 %, > 4 standard
    errors of a variance estimate from 1,500 draws)."""
    plan = _plan(bins=1500, eps=2.0)
    deals, shares, rounds = _run(plan, committee, behaviours={3: "no_noise"} if faulty else {})
    accepted, _ = decide_noise(plan, deals, rounds)
    assert accepted == list(range(N))
    z = _released(plan, accepted, shares)
    var = z.var()
    target = plan.sigma**2
    honest = N - faulty
    assert var == pytest.approx(honest * plan.dealer_variance, rel=0.15)
    assert var >= 0.85 * target and var <= 1.15 * plan.max_variance
    assert abs(z.mean()) < 4 * math.sqrt(var / z.size)


def test_linear_regression_plan_is_in_moment_units() -> None:
    stat = LinearRegressionStats(
        2, [0, 1], [0, 1], "provider", max_rows=100, max_measurements=16, frac_bits=8
    )
    plan = plan_noise(DP(1.0, 1e-6), stat, N, T)
    rep = plan.report(stat.noise_scale())
    assert rep["sigma"] == pytest.approx(plan.sigma * 2.0**-8)
    assert rep["unit"] == "provider"


def test_noise_round_is_a_typed_message() -> None:
    plan = _plan()
    F = plan.field
    r = NoiseRound((0, 1), Elements.of(F, F.zeros((2,))), Elements.of(F, F.zeros((2, 3))))
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(r), type=NoiseRound) == r


def test_noise_messages_travel_the_wire(committee) -> None:
    """A ReadSigned with its deal, a ReadCommitted with the deals and a Published with its
    noise round encode and decode (what the TCP transport does) to equal messages; a
    deal with a tampered field no longer verifies."""
    from kaires_fl import schema
    from kaires_fl.aggregation.aggregator import Published
    from kaires_fl.aggregation.job import ReadCommitted, ReadSigned, ToAggregator, ToCoordinator

    plan = _plan()
    deals, _, rounds = _run(plan, committee)
    F = plan.field
    msgs = [
        (ReadSigned(JOB, 0, None, deals[0]), ToCoordinator),
        (ReadCommitted(JOB, (), tuple(deals)), ToAggregator),
        (
            Published(
                JOB,
                1,
                Elements.of(F, F.zeros((0,))),
                Elements.of(F, F.zeros((0, 3))),
                (),
                noise=rounds[1],
            ),
            ToCoordinator,
        ),
    ]
    from kaires_fl.aggregation.aggregator import Reveal
    from kaires_fl.privacy.mechanism import complain

    _, kps = committee
    c = complain(plan, deals[2], 1, _rk(kps[1]))
    msgs.append((Reveal(JOB, 1, (), noise=(c,)), ToCoordinator))
    for m, union in msgs:
        assert schema.decode(schema.encode(m), union) == m
    ids, _ = committee
    signers = [i.public.hex() for i in ids]
    moved = msgspec.structs.replace(deals[0], dealer=1)
    assert check_deals(plan, JOB, [moved], signers) == []


def test_two_scale_noise_for_a_fine_fixed_point() -> None:
    """A σ beyond one Skellam draw (fixed point with 20 fractional bits): noise
    2^k·Z₁ + Z₂ whose accounting meets the target, whose variance is the plan's (2 %) and
    whose low bits are uniform (no lattice the statistic's low bits could leak through);
    a fixed point far finer than the noise is refused with the frac_bits to use."""
    stat = LinearRegressionStats(3, [0, 1], [0, 1], "provider", max_rows=100, frac_bits=20)
    plan = plan_noise(DP(1.0, 1e-6), stat, N, T)
    assert plan.scale_bits > 0
    assert plan.epsilon(0.9e-6) <= 1.0
    assert plan.sigma**2 == pytest.approx(
        plan.coarse_variance * 4.0**plan.scale_bits + plan.fine_variance
    )
    assert plan.coarse_variance / (N - T) <= 1e12 and plan.fine_variance / (N - T) <= 1e12
    z = np.stack([plan.sample(np.random.default_rng(s)) for s in range(3000)]).astype(float)
    assert z.var() == pytest.approx(plan.dealer_variance, rel=0.02)
    assert abs(((z % 2) == 0).mean() - 0.5) < 0.01
    assert np.abs(z).max() < plan.bound
    with pytest.raises(ConfigError, match=r"frac_bits ≤ \d+"):
        plan_noise(
            DP(1.0, 1e-6),
            LinearRegressionStats(3, [0, 1], [0, 1], "provider", max_rows=100, frac_bits=40),
            N,
            T,
        )


def _bad_part(plan, committee, deal, to: int, garbage: bool = False):
    """``deal`` with aggregator ``to``'s proof share changed (or its part made unopenable),
    re-signed by its dealer: what a Byzantine dealer sends."""
    from kaires_fl import schema
    from kaires_fl.crypto import envelope
    from kaires_fl.crypto.group import Point
    from kaires_fl.privacy.mechanism import DEAL_CONTEXT, _aad, _part_key

    ids, kps = committee
    F = plan.field
    # the proof share (the measurement parts fix the joint randomness the proof was made for)
    if garbage:
        blob = b"\x00" * len(deal.proof_parts[to])
    else:
        y = _rk(kps[to]).secret
        key = _part_key(JOB, deal.dealer, to, Point.from_bytes(deal.ephemeral) * y)
        _, proof = open_deal(plan, deal, to, _rk(kps[to]))
        wrong = F.add(proof, F.ones(proof.shape))
        blob = envelope.seal(key, F.encode(wrong), _aad(JOB, deal.dealer, to, b"proof"))
    parts = list(deal.proof_parts)
    parts[to] = blob
    bad = msgspec.structs.replace(deal, proof_parts=tuple(parts), signature=b"")
    return schema.sign(bad, ids[deal.dealer], DEAL_CONTEXT)


def _round_trip(plan, committee, deals):
    """Open, publish, and each aggregator in question complains: (shares, rounds, complaints)."""
    from kaires_fl.privacy.mechanism import complain, noise_disputes

    _, kps = committee
    shares: dict = {i: {} for i in range(N)}
    for i in range(N):
        for d in deals:
            with contextlib.suppress(InvalidProof):
                shares[i][d.dealer] = open_deal(plan, d, i, _rk(kps[i]))
    rounds = {i: noise_round(plan, COIN, deals, shares[i]) for i in range(N)}
    disputes = noise_disputes(plan, deals, rounds)
    complaints = [
        complain(plan, d, i, _rk(kps[i]))
        for i in range(N)
        for d in deals
        if i in disputes.get(d.dealer, set())
    ]
    return shares, rounds, complaints


@pytest.mark.parametrize("garbage", [False, True])
def test_a_dealer_cheating_one_aggregator_is_proven_at_fault(committee, garbage: bool) -> None:
    """Dealer 3 gives aggregator 2 a share off its sharing (or a part that does not open):
    the deal still decodes around it, aggregator 2 proves its part key, and every
    aggregator rejects dealer 3 — so aggregator 2's result share stays consistent (without
    the complaint dealer 3 would be accepted and aggregator 2's share wrong)."""
    _, kps = committee
    boxes = [k.public for k in kps]
    plan = _plan()
    deals, _, _ = _run(plan, committee)
    deals[3] = _bad_part(plan, committee, deals[3], 2, garbage)
    shares, rounds, complaints = _round_trip(plan, committee, deals)
    assert [c.holder for c in complaints] == [2]
    assert decide_noise(plan, deals, rounds)[0] == [0, 1, 2, 3]  # no complaint heard
    accepted, rejected = decide_noise(plan, deals, rounds, COIN, complaints, boxes)
    assert accepted == [0, 1, 2] and "aggregator 2" in rejected[3]
    _released(plan, accepted, shares)  # every share consistent: reconstructs


def test_false_or_forged_complaints_reject_no_honest_dealer(committee) -> None:
    """One Byzantine aggregator (t = 1) publishes a wrong value for honest dealer 0 and proves
    its (correct) part key, or claims it could not open its part; a complaint renamed to
    another holder or with a bad proof proves nothing: dealer 0 stays accepted."""
    from kaires_fl.privacy.mechanism import complain

    _, kps = committee
    boxes = [k.public for k in kps]
    plan = _plan()
    deals, _, rounds = _run(plan, committee)
    F = plan.field
    lying = dict(rounds)
    z = rounds[1].z.array(F)
    z[0] = F.add(z[0], F.ones(()))
    lying[1] = msgspec.structs.replace(rounds[1], z=Elements.of(F, z))
    lie = complain(plan, deals[0], 1, _rk(kps[1]))
    renamed = msgspec.structs.replace(lie, holder=3)
    forged = msgspec.structs.replace(lie, proof=bytes(64))
    accepted, rejected = decide_noise(plan, deals, lying, COIN, [renamed, forged, lie], boxes)
    assert accepted == list(range(N)) and rejected == {}
    # right z, wrong verifier share, then a complaint: its proven part does not give
    # what it published, so it proves nothing against the dealer
    sly = dict(rounds)
    v = rounds[1].verifier.array(F)
    v[0, 0] = F.add(v[0, 0], F.ones(()))
    sly[1] = msgspec.structs.replace(rounds[1], verifier=Elements.of(F, v))
    accepted, rejected = decide_noise(plan, deals, sly, COIN, [lie], boxes)
    assert accepted == list(range(N)) and rejected == {}
    claiming = dict(rounds)
    claiming[2] = msgspec.structs.replace(rounds[2], unopened=(0,))
    lie2 = complain(plan, deals[0], 2, _rk(kps[2]))
    accepted, rejected = decide_noise(plan, deals, claiming, COIN, [lie2], boxes)
    assert accepted == list(range(N)) and rejected == {}


def test_withheld_round_and_one_liar_cannot_drop_an_honest_dealer(committee) -> None:
    """Attack (relay + one Byzantine aggregator, t = 1): the relay withholds honest
    aggregator 3's round-1 message (n − t = 3 remain, a legal quorum) and aggregator 1
    publishes a wrong z for honest dealer 0. Three values with one wrong do not decode at
    degree 1, which would reject dealer 0 and leave the release with less than the calibrated
    noise (aggregator 1 may deal none). Undecodable with fewer than 3t + 1 values is not
    proof against the dealer: nothing is decided. With every round present it decodes."""
    from kaires_fl.errors import ProtocolError

    plan = _plan()
    deals, _, rounds = _run(plan, committee, behaviours={1: "no_noise"})
    F = plan.field
    z = rounds[1].z.array(F)
    z[0] = F.add(z[0], F.ones(()))
    rounds[1] = msgspec.structs.replace(rounds[1], z=Elements.of(F, z))
    assert decide_noise(plan, deals, rounds)[0] == list(range(N))
    withheld = {i: r for i, r in rounds.items() if i != 3}
    with pytest.raises(ProtocolError, match="noise deal"):
        decide_noise(plan, deals, withheld)


def test_withheld_rounds_cannot_aim_a_complaint_at_an_honest_holder() -> None:
    """Attack (relay + t = 2 colluding aggregators 3, 4; n = 7): the relay withholds honest
    rounds 5 and 6 (n − t = 5 remain) and shows the colluders honest rounds 0 and 1; they
    publish values for honest dealer 0 on a degree-2 polynomial through those two. Four of
    five values then agree on a wrong sharing (one error is within what five values
    correct), so honest holder 2 would look off it and disclose its part key: with the
    colluders' two shares, t + 1 shares of dealer 0's noise. Below 3t + 1 values nobody is
    put in question and nothing is decided."""
    from kaires_fl.aggregation.aggregator import _interpolate_at
    from kaires_fl.errors import ProtocolError
    from kaires_fl.privacy.mechanism import noise_disputes

    n, t = 7, 2
    committee = make_committee(n)
    ids, kps = committee
    boxes = [k.public for k in kps]
    plan = plan_noise(DP(1.0, 1e-6), HistogramStats(np.arange(4.0)), n, t)
    deals = [deal_for(plan, JOB, d, ids[d], boxes) for d in range(n)]
    deals, _, rounds = settle_deals(plan, JOB, deals, committee, COIN)
    F = plan.field

    def row(i: int) -> np.ndarray:
        return np.concatenate([rounds[i].z.array(F)[:1], rounds[i].verifier.array(F)[0]])

    fake = F.random((1 + plan.flp.VERIFIER_LEN,))
    forged = _interpolate_at(F, [0, 1, 6], np.stack([row(0), row(1), fake]), [3, 4])
    present = {i: rounds[i] for i in range(5)}
    for k, i in enumerate((3, 4)):
        z, v = rounds[i].z.array(F), rounds[i].verifier.array(F)
        z[0], v[0] = forged[k][0], forged[k][1:]
        present[i] = msgspec.structs.replace(
            rounds[i], z=Elements.of(F, z), verifier=Elements.of(F, v)
        )
    assert 2 not in noise_disputes(plan, deals, present).get(0, set())
    with pytest.raises(ProtocolError, match="noise deal"):
        decide_noise(plan, deals, present)
    # every round relayed: the colluders' values are corrected, dealer 0 is accepted
    full = {**rounds, 3: present[3], 4: present[4]}
    assert noise_disputes(plan, deals, full).get(0) == {3, 4}
    assert decide_noise(plan, deals, full)[0] == list(range(n))
