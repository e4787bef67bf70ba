"""The model_update statistic and the message encodings (no Flower run, no committee)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kaires_fl.strategies import wire
from kaires_fl.strategies.fedavg import auto_frac_bits
from kaires_fl.strategies.update import (
    ModelUpdateStats,
    WeightedL2BoundPine,
    flatten,
    over_norm_measurements,
    proven_bound,
    unflatten,
)

from kaires_fl.aggregation.job import flp_for
from kaires_fl.aggregation.submission import seal_parts, sign_manifest
from kaires_fl.arith.field import Field64
from kaires_fl.crypto.sign import Identity
from kaires_fl.errors import ConfigError, EncodingError, InvalidSubmission
from kaires_fl.statistics import KINDS, from_params


def test_registered_and_rebuilt_from_params() -> None:
    s = ModelUpdateStats(50, clip_norm=2.0, weight_cap=100, frac_bits=12)
    assert KINDS["model_update"] is ModelUpdateStats
    kind, params = s.spec()
    assert from_params(kind, params) == s


def test_vector_is_clipped_weighted_and_encodable() -> None:
    s = ModelUpdateStats(1000, clip_norm=2.0, weight_cap=100, frac_bits=10)
    big = np.full(1000, 5.0)  # norm 158 ≫ C
    v = s.vector(big, 50)
    assert np.linalg.norm(v) <= 0.5 + 1e-12  # weight 1/2 times at most norm 1
    # w = min(n, W)/W in steps of 2^-f, at most 1 − 2^-f (the circuit's largest weight)
    assert s.weight(250) == s.weight(100) == 1 - 2**-10 and s.weight(0) == 0.0
    meas = s.measurements(big, 250)  # rounding cannot push it over the bound
    assert meas.shape == (1, s.meas_len)
    # A small update passes through unclipped (up to the fixed-point step).
    d = np.linspace(-0.01, 0.01, 1000)
    np.testing.assert_allclose(s.vector(d, 100) * 2.0 / s.weight(100), d, atol=1e-15)
    out = s.circuit.truncate(s.measurements(d, 100))
    dec = s.decode(out[0], 1)
    np.testing.assert_allclose(dec["sum"] / dec["weight"], d, atol=2.0 * 2.0**-10)
    assert dec["weight"] == s.weight(100)


def test_bad_parameters_and_inputs() -> None:
    with pytest.raises(ConfigError):
        ModelUpdateStats(0)
    with pytest.raises(ConfigError):
        ModelUpdateStats(10, clip_norm=-1)
    with pytest.raises(ConfigError):
        ModelUpdateStats(10, weight_cap=float("inf"))
    s = ModelUpdateStats(10)
    with pytest.raises(EncodingError):
        s.vector(np.zeros(11), 1)
    with pytest.raises(EncodingError):
        s.vector(np.full(10, np.nan), 1)
    with pytest.raises(ConfigError):
        s.weight(-1)


def test_auto_frac_bits_fits_field() -> None:
    for length in (10, 650, 10_000, 1_000_000):
        f = auto_frac_bits(length)
        ModelUpdateStats(length, frac_bits=f)  # raises ConfigError if it could wrap
        if f < 20:
            with pytest.raises(ConfigError):
                ModelUpdateStats(length, frac_bits=f + 1)


def test_over_norm_measurement_fails_only_the_norm_check() -> None:
    s = ModelUpdateStats(64, frac_bits=8)
    flp = flp_for(s)
    F = Field64
    meas = over_norm_measurements(s)
    jr = F.random((1, flp.JOINT_RAND_LEN))
    proof = flp.prove(meas, flp.random_prove_rand((1,)), jr)
    qr = F.random((1, flp.QUERY_RAND_LEN))
    verifier = flp.query(meas, proof, qr, jr)
    assert not bool(np.asarray(flp.decide(verifier))[0])
    honest = s.measurements(np.full(64, 0.1), 1.0)
    proof = flp.prove(honest, flp.random_prove_rand((1,)), jr)
    assert bool(np.asarray(flp.decide(flp.query(honest, proof, qr, jr)))[0])


def test_flatten_unflatten_round_trip() -> None:
    like = [np.zeros((3, 4), dtype=np.float32), np.zeros(5)]
    v = np.arange(17, dtype=np.float64)
    back = unflatten(v, like)
    assert [b.shape for b in back] == [(3, 4), (5,)] and back[0].dtype == np.float32
    np.testing.assert_array_equal(flatten(back), v)
    with pytest.raises(EncodingError):
        unflatten(np.zeros(16), like)


def test_submission_and_tx_encodings_round_trip_and_reject_garbage() -> None:
    s = ModelUpdateStats(8, frac_bits=8)
    flp = flp_for(s)
    parts = seal_parts(
        flp, s.measurements(np.ones(8) * 0.1, 1), job="j", provider="p", circuit="c", n=4, t=1
    )
    ident = Identity.from_seed(b"\x01" * 32)
    sub = sign_manifest(ident, parts, job="j", provider="p", circuit="c", write="w")
    back = wire.decode_submission(wire.encode_submission(sub))
    assert back == sub
    back.check(4)
    blob = bytearray(wire.encode_submission(sub))
    blob[-1] ^= 1  # a tampered part decodes but fails the signed manifest
    with pytest.raises(InvalidSubmission):
        wire.decode_submission(bytes(blob)).check(4)
    for bad in (b"", b"\x05\x00\x00\x00ab", wire.encode_submission(sub)[:-3]):
        with pytest.raises(InvalidSubmission):
            wire.decode_submission(bad)
    rec = wire.submission_record(sub)
    assert wire.decode_submission(rec) == sub
    assert rec[wire.MEAS_PARTS][0] is sub.meas_parts[0]  # the parts are not copied
    wire.decode_submission(rec).check(4)
    tampered = dict(rec, **{wire.PROOF_PARTS: [*rec[wire.PROOF_PARTS][:-1], b"\0" * 64]})
    with pytest.raises(InvalidSubmission):
        wire.decode_submission(tampered).check(4)
    for bad in (
        dict(rec, **{wire.MEAS_PARTS: rec[wire.MEAS_PARTS][:3]}),  # 3 + 4 parts
        dict(rec, **{wire.MEAS_PARTS: ["str", *rec[wire.MEAS_PARTS][1:]]}),
        {k: v for k, v in rec.items() if k != wire.PROOF_PARTS},
        dict(rec, **{wire.SUBMISSION: b"{}"}),
    ):
        with pytest.raises(InvalidSubmission):
            wire.decode_submission(bad)
    with pytest.raises(EncodingError):
        wire.decode_tx(b"{not json")
    with pytest.raises(EncodingError):
        wire.decode_proofs(b"\x01\x00\x00")


def test_proven_bound_saves_one_bit_per_entry_and_stays_at_most_one() -> None:
    for f in (1, 8, 20):
        s = ModelUpdateStats(100, frac_bits=f, norm_proof="bits")
        c = s.circuit
        assert c.bound == proven_bound(f) < 1.0
        assert c.entry_bits == f + 1 and c.offset == 2**f - 1
        # entries, then the weight (f bits), then the slack ω² − Σ a² (≤ 2f bits)
        assert c.norm_bits == ((2**f - 1) ** 2).bit_length() <= 2 * f
        # then the two flag bits (clipped, capped), summed as counts
        assert 100 * (f + 1) + f + c.norm_bits + 2 == c.MEAS_LEN and c.OUTPUT_LEN == 103
    with pytest.raises(ConfigError):
        ModelUpdateStats(10, frac_bits=0)
    # The largest vector the clipping lets through still encodes (rounding cannot push it
    # over the proven bound), and its entries fill the range.
    s = ModelUpdateStats(4, frac_bits=8, norm_proof="bits")
    v = s.vector(np.array([100.0, 0.0, 0.0, 0.0]), 1.0)
    assert abs(v[0] - (proven_bound(8) - 2 * 2.0**-9)) < 1e-9  # room: w − √4·2^-(f+1)
    s.measurements(np.array([100.0, 0.0, 0.0, 0.0]), 1.0)
    d = np.full(4, 5.0)  # every entry large: clipped by the norm, each at ≈ 1/2
    e = s.circuit.truncate(s.measurements(d, 1.0))
    a = np.asarray(Field64.to_ints(e[0][:4]), dtype=np.int64) - s.circuit.offset
    omega = int(Field64.to_ints(e[0][4:])[0])
    assert omega == 2**8 - 1 and int(np.sum(a * a)) <= omega**2


@pytest.mark.parametrize("norm_proof", ["bits", "pine"])
@settings(max_examples=40, deadline=None)
@given(
    entries=st.lists(st.integers(-15, 15), min_size=6, max_size=6),
    omega=st.integers(0, 15),
    slack=st.integers(0, 2**8 - 1),
    flags=st.lists(st.integers(0, 1), min_size=2, max_size=2),
    metric=st.integers(0, 15),
    metric_slack=st.integers(0, 15),
)
def test_weighted_circuit_accepts_exactly_norm_at_most_weight(
    norm_proof: str,
    entries: list[int],
    omega: int,
    slack: int,
    flags: list[int],
    metric: int,
    metric_slack: int,
) -> None:
    """Robustness (#12): for any values a provider can put in the measurement (entries a,
    weight ω, slack s, f = 4, two flags, one declared train metric c with slack d), the
    circuit — the bit one and PINE — holds iff Σ a² + s = ω² and c + d = ω — so an
    accepted measurement has ‖v‖ ≤ w and a weighted metric c ≤ w; in particular no
    weight-0 submission carries a vector or a metric."""
    stat = ModelUpdateStats(6, frac_bits=4, metrics=[("loss", 0.0, 1.0)], norm_proof=norm_proof)
    c = stat.circuit
    assert isinstance(c, WeightedL2BoundPine) == (norm_proof == "pine")
    F = Field64
    a = np.array(entries, dtype=np.int64)
    f = c.frac_bits

    def bits_of(v: np.ndarray | int, n: int) -> np.ndarray:
        return (
            (np.asarray(v, dtype=np.uint64)[..., None] >> np.arange(n, dtype=np.uint64)) & 1
        ).reshape(-1)

    if isinstance(c, WeightedL2BoundPine):  # entries as signed field elements
        head = np.array([v % F.MODULUS for v in entries], dtype=np.uint64)
    else:  # entries as the bits of a + offset
        head = bits_of((a + c.offset).astype(np.uint64), c.entry_bits)
    tail = [
        bits_of(omega, c.weight_bits),
        bits_of(slack, c.norm_bits),
        np.array(flags, dtype=np.uint64),
        bits_of(metric, f),
        bits_of(metric_slack, f),
    ]
    meas = F.elements(np.concatenate([head, *tail])[None, :])
    jr = F.random((1, c.JOINT_RAND_LEN))
    fits = (
        int(np.sum(a * a)) + slack == omega * omega
        and slack < 2**c.norm_bits
        and metric + metric_slack == omega
    )
    assert bool(c.check(meas, jr)[0]) == fits
    if fits:
        out = c.decode(c.truncate(meas)[0], 1)
        assert list(out[7:9]) == flags and out[9] <= out[6]
        np.testing.assert_array_equal(out[:6], a / 2**f)
        assert np.linalg.norm(out[:6]) <= out[6] + 1e-12


def test_weighted_aggregate_carries_the_sum_of_weights() -> None:
    s = ModelUpdateStats(16, clip_norm=1.0, weight_cap=10, frac_bits=12)
    rng = np.random.default_rng(3)
    ups = [rng.normal(size=16) * 0.1 for _ in range(3)]
    ns = [2, 5, 40]
    meas = np.concatenate([s.measurements(u, n) for u, n in zip(ups, ns, strict=True)])
    total = Field64.sum(s.circuit.truncate(meas), axis=0)
    dec = s.decode(total, 3)
    assert dec["weight"] == sum(s.weight(n) for n in ns)
    want = sum(s.weight(n) * u for u, n in zip(ups, ns, strict=True))
    np.testing.assert_allclose(dec["sum"], want, atol=3 * 2.0**-12)
