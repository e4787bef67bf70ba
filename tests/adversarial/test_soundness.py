"""Adversarial tests of FLP soundness (issue 9, finding 16): a provider grinds its
Fiat–Shamir joint randomness offline, with only its own measurement, shares and hashes.

The provider controls everything the joint randomness is hashed from, so it can try
candidate submissions until one has joint randomness that makes its invalid measurement's
circuit output vanish; the query randomness (the coin, fixed after the inputs close) it
cannot grind. ``soundness_bound`` must predict that attack — we run it against a
deliberately weakened parameter set (joint randomness drawn from 16 values, a "small
field" for the offline part) and compare — and the default parameters must keep every
circuit at ≤ 2^-64 against q = 2^64 hash evaluations.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from kaires_fl.arith import circuits as cc
from kaires_fl.arith import verify
from kaires_fl.arith.field import Field64
from kaires_fl.arith.flp import FlpBBCGGI19, choose_proofs, soundness_bound

F = Field64
p = F.MODULUS
#: The weakened joint randomness: each element is drawn from S = {0, 1, …, 15}.
SPACE = 16


def sqrt_mod_p(a: int) -> int | None:
    """A square root of a mod p (Tonelli–Shanks), or None if a is not a square."""
    a %= p
    if a == 0:
        return 0
    if pow(a, (p - 1) // 2, p) != 1:
        return None
    q, s = p - 1, 0
    while q % 2 == 0:
        q, s = q // 2, s + 1
    z = next(z for z in range(2, 100) if pow(z, (p - 1) // 2, p) == p - 1)
    m, c, t, r = s, pow(z, q, p), pow(a, q, p), pow(a, (q + 1) // 2, p)
    while t != 1:
        i, t2 = 0, t
        while t2 != 1:
            t2, i = t2 * t2 % p, i + 1
        b = pow(c, 1 << (m - i - 1), p)
        m, c, t, r = i, b * b % p, t * b * b % p, r * b % p
    return r


def crafted_measurement() -> tuple[np.ndarray, int]:
    """An invalid SumVec(4, 1, chunk 2) measurement whose first call's range check
    r·e_0 + r²·e_1 vanishes at r ∈ {0, r0} for some r0 ∈ S: e_0 = 2 (entry 2), e_1 =
    x(x − 1) = −2/r0. Its circuit output then vanishes for exactly 2 of the 16 values,
    the degree (chunk_length = 2) that ``joint_rand_degree`` allows."""
    for r0 in range(1, SPACE):
        inv = pow(r0, -1, p)
        root = sqrt_mod_p(1 - 8 * inv)  # x = (1 ± √(1 − 8/r0)) / 2
        if root is not None:
            x = (1 + root) * pow(2, -1, p) % p
            assert (x * (x - 1) + 2 * inv) % p == 0
            return F.elements([2, x, 0, 0]), r0
    raise AssertionError("no r0 in S with a square discriminant")


def weak_joint_rand(flp: FlpBBCGGI19, seeds: list[bytes]) -> np.ndarray:
    """The weakened Fiat–Shamir derivation: the real one, reduced into S."""
    real = np.stack([flp.derive_joint_rand(s) for s in seeds])
    return real % np.uint64(SPACE)  # canonical elements < 16


def grind(flp: FlpBBCGGI19, meas: np.ndarray, trials: int, q: int, tag: bytes) -> np.ndarray:
    """Run ``trials`` independent grinding attacks of q hash evaluations each: attempt i of
    trial n hashes a fresh candidate submission (new share randomness: seed n‖i) and keeps
    it if every repetition's circuit output vanishes. Returns, per trial, the index of the
    first vanishing attempt or −1."""
    valid = flp.valid
    seeds = [
        tag + n.to_bytes(4, "little") + i.to_bytes(4, "little")
        for n in range(trials)
        for i in range(q)
    ]
    jr = weak_joint_rand(flp, seeds)  # (trials·q, JOINT_RAND_LEN)
    ok = np.ones(len(seeds), dtype=bool)
    m = np.broadcast_to(meas, (len(seeds), meas.shape[-1]))
    for rep in range(flp.proofs):
        ok &= valid.check(m, jr[:, rep * valid.JOINT_RAND_LEN : (rep + 1) * valid.JOINT_RAND_LEN])
    ok = ok.reshape(trials, q)
    return np.where(ok.any(axis=1), ok.argmax(axis=1), -1)


@pytest.mark.parametrize(("proofs", "q"), [(1, 4), (2, 16), (3, 64)])
def test_bound_predicts_grinding_attack_on_weakened_joint_randomness(proofs: int, q: int) -> None:
    """Robustness: a provider grinding its joint randomness (q hashes) against a weakened
    parameter set succeeds about as often as soundness_bound predicts, and every success
    is an invalid measurement accepted by honest aggregators verifying Shamir shares with
    query randomness it could not choose."""
    valid = cc.SumVec(4, 1, chunk_length=2)
    flp = FlpBBCGGI19(valid, proofs=proofs)
    meas, _ = crafted_measurement()
    assert not valid.check(meas, F.elements([1, 1])).any()  # invalid: entry 2, not a bit
    trials = 800
    first = grind(flp, meas, trials, q, f"grind-{proofs}".encode())
    rate = float(np.mean(first >= 0))
    # the attack's exact success: per attempt every repetition vanishes w.p. (2/16)^k
    exact = 1 - (1 - (2 / SPACE) ** proofs) ** q
    bound = soundness_bound(
        valid, proofs, offline_queries_log2=math.log2(q), joint_rand_space=SPACE
    ).error
    sigma = math.sqrt(exact * (1 - exact) / trials)
    assert abs(rate - exact) < 4 * sigma, (rate, exact)
    assert exact <= bound <= 1.3 * exact  # the formula is an upper bound, and a tight one
    assert rate <= bound + 4 * sigma

    # every success passes honest verification on Shamir shares (n = 4, t = 1) …
    wins = np.flatnonzero(first >= 0)
    seeds = [
        f"grind-{proofs}".encode()
        + int(n).to_bytes(4, "little")
        + int(first[n]).to_bytes(4, "little")
        for n in wins
    ]
    jr = weak_joint_rand(flp, seeds)
    B = len(wins)
    batch = np.broadcast_to(meas, (B, meas.shape[-1])).copy()
    proof = flp.prove(batch, flp.random_prove_rand((B,)), jr)
    rng = np.random.default_rng(proofs)
    ms, ps = verify.share_submission(flp, batch, proof, 4, 1, rng=rng)
    qr = flp.derive_query_rand(b"coin after inputs closed " + bytes([proofs]))
    accept, faulty = verify.verify_shared(flp, ms, ps, qr, jr, 4, 1)
    assert accept.all() and faulty == []
    # … and a submission whose joint randomness does not vanish is refused
    miss = [f"miss-{proofs}".encode() + bytes([i]) for i in range(64)]
    jr_miss = weak_joint_rand(flp, miss)
    vanish = np.ones(64, dtype=bool)
    for rep in range(proofs):
        vanish &= valid.check(np.broadcast_to(meas, (64, 4)), jr_miss[:, rep * 2 : (rep + 1) * 2])
    jr_miss = jr_miss[~vanish]
    B = jr_miss.shape[0]
    batch = np.broadcast_to(meas, (B, 4)).copy()
    proof = flp.prove(batch, flp.random_prove_rand((B,)), jr_miss)
    assert not flp.decide(flp.query(batch, proof, qr, jr_miss)).any()


@pytest.mark.parametrize("valid", cc.doc_circuits(), ids=repr)
def test_default_parameters_meet_2_to_minus_64_against_grinding(valid: cc.Valid) -> None:
    """Robustness: with the default number of proofs every circuit up to 10^6-entry model
    updates accepts an invalid measurement with probability ≤ 2^-64 even after 2^64
    offline hash evaluations; one proof fewer does not (for circuits with joint
    randomness the offline term decides, as in draft-irtf-cfrg-vdaf-12)."""
    flp = FlpBBCGGI19(valid)
    assert flp.proofs == choose_proofs(valid)
    assert flp.soundness().error_log2 <= -64
    if flp.proofs > 1:
        assert soundness_bound(valid, flp.proofs - 1).error_log2 > -64
    if valid.JOINT_RAND_LEN:
        # per proof, grinding targets δ = chunk/|F|: one element per gadget call
        assert flp.soundness().joint_rand_error == pytest.approx(valid.chunk_length / p)


def test_one_joint_randomness_element_per_call_limits_grinding() -> None:
    """Robustness: the crafted measurement's circuit output vanishes only where the
    per-call polynomial r·e_0 + r²·e_1 does — 2 values of the first call's element, and
    never through the other calls' elements (the old scheme weighed all checks by powers
    of one element, so T checks gave up to T roots)."""
    valid = cc.SumVec(4, 1, chunk_length=2)
    meas, r0 = crafted_measurement()
    grid = np.array([[a, b] for a in range(SPACE) for b in range(SPACE)], dtype=np.uint64)
    out = valid.check(np.broadcast_to(meas, (len(grid), 4)), F.elements(grid))
    vanish = {tuple(int(v) for v in row) for row in grid[out]}
    assert vanish == {(a, b) for a in (0, r0) for b in range(SPACE)}
    assert valid.joint_rand_degree() == 2


@pytest.mark.parametrize("length", [100_000, 1_000_000])
def test_flower_model_update_circuit_meets_2_to_minus_64(length: int) -> None:
    """Robustness: the circuit Flower clients actually prove for a model update
    (WeightedBoundedL2Vec, at the default frac_bits and at auto_frac_bits) is ≤ 2^-64
    against 2^64 offline hash evaluations with its default number of proofs, and its
    declared layout is the one the bound assumes (one joint-randomness element per call)."""
    from kaires_fl.strategies.fedavg import auto_frac_bits
    from kaires_fl.strategies.update import DEFAULT_FRAC_BITS, WeightedBoundedL2Vec

    for f in {DEFAULT_FRAC_BITS, auto_frac_bits(length)}:
        valid = WeightedBoundedL2Vec(length, f)
        valid.check_layout()
        flp = FlpBBCGGI19(valid)
        bound = flp.soundness()
        assert bound.error_log2 <= -64, (valid, bound)
        assert bound.joint_rand_error == pytest.approx(valid.chunk_length / p)
        assert valid.GADGET_CALLS[0] == valid.JOINT_RAND_LEN
