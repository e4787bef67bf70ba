"""Circuits: completeness (hypothesis), soundness (hundreds of invalid inputs), encodings."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kaires_fl.arith import circuits as cc
from kaires_fl.arith.field import Field64
from kaires_fl.arith.flp import FlpBBCGGI19, Valid
from kaires_fl.errors import ConfigError, EncodingError

F = Field64
p = F.MODULUS
RNG = np.random.default_rng(7)


def run_flp(valid: Valid, meas: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Honest prover on ``meas`` (valid or not), fresh randomness, decisions ``(B,)``."""
    flp = FlpBBCGGI19(valid)
    B = meas.shape[0]
    jr = F.random((flp.JOINT_RAND_LEN,), rng=rng)
    qr = F.random((B, flp.QUERY_RAND_LEN), rng=rng)  # per record this time
    proof = flp.prove(meas, F.random((B, flp.PROVE_RAND_LEN), rng=rng), jr)
    return flp.decide(flp.query(meas, proof, qr, jr))


def assert_all_rejected(valid: Valid, bad: np.ndarray, rng: np.random.Generator) -> None:
    assert bad.shape[0] >= 200
    assert not valid.check(bad, F.random((valid.JOINT_RAND_LEN,), rng=rng)).any()
    dec = run_flp(valid, bad, rng)
    assert not dec.any(), (
        f"{int(dec.sum())} invalid inputs accepted, e.g. #{np.flatnonzero(dec)[0]}"
    )


def nonbit(rng: np.random.Generator, n: int) -> np.ndarray:
    """Field elements that are not bits: small (2..9), p−1, or uniform."""
    kind = rng.integers(0, 3, n)
    small = F.elements(rng.integers(2, 10, n))
    uni = F.random((n,), rng=rng)
    uni = np.where(uni < 2, F.elements(2), uni)
    return np.where(kind == 0, small, np.where(kind == 1, F.elements(p - 1), uni))


def set_random(meas: np.ndarray, cols: np.ndarray, vals: np.ndarray) -> np.ndarray:
    out = meas.copy()
    out[np.arange(meas.shape[0]), cols] = vals
    return out


# ------------------------------------------------------------------- completeness


@settings(max_examples=15, deadline=None)
@given(st.data())
def test_completeness_every_circuit(data: st.DataObject) -> None:
    seed = data.draw(st.integers(0, 2**32))
    rng = np.random.default_rng(seed)
    B = data.draw(st.integers(1, 6))
    draw = data.draw
    circuits: list[Valid] = [
        cc.Count(),
        cc.Sum(draw(st.integers(1, 40))),
        cc.SumVec(draw(st.integers(1, 30)), draw(st.integers(1, 8))),
        cc.Histogram(draw(st.integers(1, 40))),
        cc.LinearRegressionRecord(draw(st.integers(1, 6)), draw(st.integers(1, 14))),
        cc.BoundedL2Vec(
            draw(st.integers(1, 20)), draw(st.integers(2, 12)), draw(st.floats(0.25, 4.0))
        ),
    ]
    for valid in circuits:
        meas = valid.encode(random_valid(valid, B, rng))
        assert valid.check(meas, F.random((valid.JOINT_RAND_LEN,), rng=rng)).all()
        assert run_flp(valid, meas, rng).all(), valid


def random_valid(valid: Valid, B: int, rng: np.random.Generator) -> object:
    """Random valid measurements of a circuit, including the extremes."""
    if isinstance(valid, cc.Count):
        return rng.integers(0, 2, B)
    if isinstance(valid, cc.Sum):
        v = rng.integers(0, 2**valid.bits, B, dtype=np.uint64)
        v[0] = 2**valid.bits - 1
        return v
    if isinstance(valid, cc.SumVec):
        v = rng.integers(0, 2**valid.bits, (B, valid.length))
        v[0] = 2**valid.bits - 1
        return v
    if isinstance(valid, cc.Histogram):
        return rng.integers(0, valid.length, B)
    if isinstance(valid, cc.LinearRegressionRecord):
        v = rng.integers(0, 2**valid.bits, (B, valid.d + 1))
        v[0] = 2**valid.bits - 1
        return v
    if isinstance(valid, cc.BoundedL2Vec):
        x = rng.normal(size=(B, valid.length))
        x /= np.linalg.norm(x, axis=-1, keepdims=True)
        x *= valid.bound * rng.uniform(0, 1, (B, 1)) * (1 - 2**-valid.frac_bits)
        x = np.clip(x, -valid.offset / 2**valid.frac_bits, valid.offset / 2**valid.frac_bits)
        # the norm must also hold after rounding: scale down until it does
        a = np.round(x * 2**valid.frac_bits)
        over = (a**2).sum(-1) > valid.norm_int
        x[over] *= 0.5
        return x
    raise AssertionError(valid)


# ------------------------------------------------------------------- soundness


def test_count_rejects_non_bits() -> None:
    valid = cc.Count()
    assert_all_rejected(valid, nonbit(RNG, 300)[:, None], RNG)


def test_sum_rejects_non_bits() -> None:
    valid = cc.Sum(16)
    meas = valid.encode(RNG.integers(0, 2**16, 300))
    bad = set_random(meas, RNG.integers(0, 16, 300), nonbit(RNG, 300))
    assert_all_rejected(valid, bad, RNG)


def test_sumvec_rejects_non_bits_and_out_of_range() -> None:
    valid = cc.SumVec(40, 3)
    meas = valid.encode(RNG.integers(0, 8, (300, 40)))
    bad = set_random(meas, RNG.integers(0, valid.MEAS_LEN, 300), nonbit(RNG, 300))
    assert_all_rejected(valid, bad, RNG)
    # an entry of 8 = 2^bits written with a "bit" of value 2 in the top position
    bad2 = meas.copy()
    j = RNG.integers(0, 40, 300)
    bad2[np.arange(300), 3 * j] = F.elements(0)
    bad2[np.arange(300), 3 * j + 1] = F.elements(0)
    bad2[np.arange(300), 3 * j + 2] = F.elements(2)
    assert_all_rejected(valid, bad2, RNG)


def test_histogram_rejects_two_hot_zero_hot_and_non_bits() -> None:
    valid = cc.Histogram(12)
    meas = valid.encode(RNG.integers(0, 12, 300))
    two_hot = set_random(meas, RNG.integers(0, 12, 300), F.ones((300,)))
    two_hot = two_hot[F.sum(two_hot, axis=-1) == 2]
    zero_hot = F.zeros((100, 12))
    # entries 2 and p−1 (−1): the sum is 1, but they are not bits
    fake = F.zeros((200, 12))
    i = RNG.integers(0, 6, 200)
    fake[np.arange(200), i] = F.elements(2)
    fake[np.arange(200), i + 6] = F.elements(p - 1)
    assert_all_rejected(valid, np.concatenate([two_hot, zero_hot, fake]), RNG)


def test_linreg_rejects_non_bits_wrong_products_and_consistent_out_of_range() -> None:
    d, bits = 5, 6
    valid = cc.LinearRegressionRecord(d, bits)
    vals = RNG.integers(0, 64, (300, d + 1))
    meas = valid.encode(vals)
    K = valid.n_bits
    bad_bits = set_random(meas, RNG.integers(0, K, 300), nonbit(RNG, 300))
    cols = RNG.integers(K, valid.MEAS_LEN, 300)
    wrong = F.add(meas[np.arange(300), cols], F.elements(RNG.integers(1, 2**40, 300)))
    bad_prod = set_random(meas, cols, wrong)
    # out of range but self-consistent: the top "bit" of one value is 2 and every product
    # is recomputed from the resulting value z (an x_i of 2^(bits+1)-ish)
    bad_range = []
    for r in range(200):
        z = [int(v) for v in vals[r]]
        i = int(RNG.integers(0, d + 1))
        bits_r = [int(b) for b in meas[r, :K]]
        bits_r[i * bits + bits - 1] = 2
        z[i] = sum(bits_r[i * bits + k] << k for k in range(bits))
        iu = np.triu_indices(d + 1)
        prods = [z[a] * z[b] for a, b in zip(*iu, strict=True)]
        bad_range.append(bits_r + prods)
    assert_all_rejected(valid, np.concatenate([bad_bits, bad_prod, F.elements(bad_range)]), RNG)


def test_bounded_l2_rejects_norm_over_bound_out_of_range_and_non_bits() -> None:
    valid = cc.BoundedL2Vec(8, 6, 1.0)
    A, N, eb, nb = valid.offset, valid.norm_int, valid.entry_bits, valid.norm_bits
    rows = []
    for _ in range(300):
        # entries in range, squared norm over the bound: slack would be negative, so the
        # best a cheater can do is write the low bits of (N − Σa²) mod p
        a = RNG.integers(-A, A + 1, 8)
        while (a**2).sum() <= N:
            a = RNG.integers(-A, A + 1, 8)
        e = a + A
        slack = (N - int((a**2).sum())) % p
        row = [int(e[i] >> k) & 1 for i in range(8) for k in range(eb)]
        row += [(slack >> k) & 1 for k in range(nb)]
        rows.append(row)
    over = F.elements(rows)
    # an entry beyond the offset range (|a| > A) that the bits can still express
    big = []
    for _ in range(100):
        e = RNG.integers(0, 2 * A + 1, 8)
        e[RNG.integers(0, 8)] = 2**eb - 1  # > 2A: |a| > bound
        a = e - A
        slack = (N - int((a**2).sum())) % p
        row = [int(e[i] >> k) & 1 for i in range(8) for k in range(eb)]
        row += [(slack >> k) & 1 for k in range(nb)]
        big.append(row)
    ok = valid.encode(np.full((100, 8), 0.1))
    nonbits = set_random(ok, RNG.integers(0, valid.MEAS_LEN, 100), nonbit(RNG, 100))
    assert_all_rejected(valid, np.concatenate([over, F.elements(big), nonbits]), RNG)


# ------------------------------------------------------------------- encodings


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 20))
def test_encode_truncate_decode_round_trip(seed: int, B: int) -> None:
    rng = np.random.default_rng(seed)
    c = cc.Count()
    v = rng.integers(0, 2, B)
    assert c.decode(F.sum(c.truncate(c.encode(v)), axis=0), B) == int(v.sum())
    s = cc.Sum(20)
    v = rng.integers(0, 2**20, B)
    assert s.decode(F.sum(s.truncate(s.encode(v)), axis=0), B) == int(v.sum())
    sv = cc.SumVec(7, 5)
    v = rng.integers(0, 32, (B, 7))
    assert sv.decode(F.sum(sv.truncate(sv.encode(v)), axis=0), B) == v.sum(0).tolist()
    h = cc.Histogram(9)
    v = rng.integers(0, 9, B)
    assert (
        h.decode(F.sum(h.truncate(h.encode(v)), axis=0), B) == np.bincount(v, minlength=9).tolist()
    )
    lr = cc.LinearRegressionRecord(3, 10)
    x = rng.integers(0, 1024, (B, 3))
    y = rng.integers(0, 1024, B)
    out = lr.decode(F.sum(lr.truncate(lr.encode_xy(x, y)), axis=0), B)
    X = x.astype(object)
    Y = y.astype(object)
    assert out["sum_x"] == X.sum(0).tolist()
    assert out["sum_y"] == int(Y.sum())
    assert out["xtx"] == (X.T @ X).tolist()
    assert out["xty"] == (X.T @ Y).tolist()
    assert out["sum_yy"] == int((Y * Y).sum())
    assert out["count"] == B
    bl = cc.BoundedL2Vec(5, 10, 2.0)
    g = rng.uniform(-0.8, 0.8, (B, 5))
    total = bl.decode(F.sum(bl.truncate(bl.encode(g)), axis=0), B)
    assert np.allclose(total, np.round(g * 1024).sum(0) / 1024)


def test_truncate_commutes_with_shamir_shares() -> None:
    from kaires_fl.arith import sharing

    lr = cc.LinearRegressionRecord(2, 5)
    meas = lr.encode(RNG.integers(0, 32, (4, 3)))
    shares = sharing.share(F, meas, 4, 1)
    out_shares = {i: lr.truncate(shares[i]) for i in range(4)}
    assert np.array_equal(sharing.reconstruct(F, out_shares, 1), lr.truncate(meas))


def test_invalid_measurements_raise_encoding_errors() -> None:
    with pytest.raises(EncodingError):
        cc.Count().encode(2)
    with pytest.raises(EncodingError):
        cc.Sum(4).encode(16)
    with pytest.raises(EncodingError):
        cc.Sum(4).encode(-1)
    with pytest.raises(EncodingError):
        cc.Sum(4).encode(1.5)
    with pytest.raises(EncodingError):
        cc.SumVec(3, 2).encode([1, 2])
    with pytest.raises(EncodingError):
        cc.Histogram(3).encode(3)
    with pytest.raises(EncodingError):
        cc.LinearRegressionRecord(2, 4).encode([1, 2, 16])
    with pytest.raises(EncodingError):
        cc.BoundedL2Vec(2, 4, 1.0).encode([0.8, 0.8])  # norm 1.13 > 1
    with pytest.raises(EncodingError):
        cc.BoundedL2Vec(2, 4, 1.0).encode([np.nan, 0.0])


def test_parameters_that_could_wrap_are_refused() -> None:
    with pytest.raises(ConfigError):
        cc.LinearRegressionRecord(3, 32)  # products of 64 bits
    with pytest.raises(ConfigError):
        cc.BoundedL2Vec(2**20, 24, 1.0)  # 2^20 · 2^50 > p
    with pytest.raises(ConfigError):
        cc.Sum(64)
    lr = cc.LinearRegressionRecord(14, 14)
    assert lr.max_measurements() * (2**14 - 1) ** 2 < p
    assert (lr.max_measurements() + 1) * (2**14 - 1) ** 2 >= p
