"""Fixed-point and integer encoders: round trips within the rounding bound, sums, bounds."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kaires_fl.arith.encoding import FixedPointEncoder, IntegerEncoder
from kaires_fl.arith.field import Field64, Field128
from kaires_fl.errors import ConfigError, EncodingError

FIELDS = [Field64, Field128]
SETTINGS = settings(max_examples=30, deadline=None)


@pytest.mark.parametrize("F", FIELDS)
@SETTINGS
@given(data=st.data())
def test_fixed_point_round_trip_within_bound(F: type, data: st.DataObject) -> None:
    frac = data.draw(st.integers(0, 30))
    max_abs = data.draw(st.floats(0, 1e6))
    enc = FixedPointEncoder.for_range(F, max_abs, frac, max_summands=100)
    xs = data.draw(st.lists(st.floats(-max_abs, max_abs), min_size=1, max_size=8))
    e = enc.encode(xs)
    assert e.dtype == F.DTYPE
    # every encoding passes the bits range check a circuit applies
    assert all(0 <= v < 2**enc.bits for v in F.to_ints(e))
    err = np.abs(enc.decode(e) - np.array(xs))
    assert np.all(err <= enc.rounding_error + 1e-12 * max(1.0, max_abs))


@pytest.mark.parametrize("F", FIELDS)
def test_fixed_point_sum_of_many(F: type) -> None:
    n = 5000
    enc = FixedPointEncoder.for_range(F, 1.0, 20, max_summands=n, length=7)
    rng = np.random.default_rng(5)
    x = rng.uniform(-1.0, 1.0, size=(n, 7))
    x[0] = -1.0
    x[1] = 1.0
    s = F.sum(enc.encode(x), axis=0)
    got = enc.decode_sum(s, n)
    assert np.all(np.abs(got - x.sum(axis=0)) <= n * enc.rounding_error)
    # exact: the decoded sum equals the sum of the quantised values
    q = np.rint(x * 2**20).astype(np.int64).sum(axis=0)
    assert list(enc.decode_sum_ints(s, n)) == list(q)


@pytest.mark.parametrize("F", FIELDS)
def test_extreme_values_sum_without_wrap(F: type) -> None:
    p = F.MODULUS
    bits = 20
    n = p >> bits  # the largest allowed count
    enc = IntegerEncoder(F, bits, max_summands=n)
    lo, hi = enc.encode([-(2 ** (bits - 1))]), enc.encode([2 ** (bits - 1) - 1])
    # n copies of the extremes, summed as field elements, decode exactly
    assert list(enc.decode_sum(F.mul(lo, n), n)) == [-(2 ** (bits - 1)) * n]
    assert list(enc.decode_sum(F.mul(hi, n), n)) == [(2 ** (bits - 1) - 1) * n]
    with pytest.raises(ConfigError, match="could wrap"):
        IntegerEncoder(F, bits, max_summands=n + 1)


@pytest.mark.parametrize("F", FIELDS)
@pytest.mark.parametrize(("bits", "summands"), [(64, 1), (40, 2**30), (63, 4)])
def test_config_rejects_wrapping_parameters(F: type, bits: int, summands: int) -> None:
    would_wrap = summands * 2**bits > F.MODULUS
    if would_wrap:
        with pytest.raises(ConfigError, match="could wrap"):
            FixedPointEncoder(F, 10, bits, summands)
    else:
        enc = FixedPointEncoder(F, 10, bits, summands)
        assert enc.max_summands * 2**enc.bits <= F.MODULUS
    assert would_wrap == (F is Field64)


@pytest.mark.parametrize("F", FIELDS)
def test_out_of_range_values_rejected(F: type) -> None:
    enc = FixedPointEncoder(F, frac_bits=8, bits=12, max_summands=10)
    assert enc.x_min == -8.0
    assert enc.x_max == 8.0 - 2**-8
    enc.encode([enc.x_min, enc.x_max])
    with pytest.raises(ConfigError, match=r"value 1 .* outside the representable range"):
        enc.encode([0.0, 8.0])
    with pytest.raises(ConfigError, match="outside"):
        enc.encode([-8.01])
    with pytest.raises(ConfigError, match="finite"):
        enc.encode([0.0, float("nan")])
    ienc = IntegerEncoder(F, 4, 10)
    with pytest.raises(ConfigError, match=r"value 2 \(8\)"):
        ienc.encode([0, 7, 8])
    with pytest.raises(ConfigError, match="not an integer"):
        ienc.encode([1.5])


@pytest.mark.parametrize("F", FIELDS)
def test_length_and_parameter_checks(F: type) -> None:
    enc = FixedPointEncoder(F, 8, 16, 10, length=3)
    with pytest.raises(ConfigError, match="length 3"):
        enc.encode([1.0, 2.0])
    with pytest.raises(ConfigError):
        FixedPointEncoder(F, -1, 16, 10)
    with pytest.raises(ConfigError):
        IntegerEncoder(F, 0, 10)
    with pytest.raises(ConfigError):
        IntegerEncoder(F, 8, 0)
    with pytest.raises(ConfigError):
        FixedPointEncoder.for_range(F, float("inf"), 8, 10)
    with pytest.raises(ConfigError, match="max_summands"):
        enc.decode_sum(F.zeros((3,)), 11)


@pytest.mark.parametrize("F", FIELDS)
def test_impossible_sum_rejected(F: type) -> None:
    enc = IntegerEncoder(F, 8, 100)
    s = F.sum(enc.encode([[1, 2]] * 3), axis=0)
    assert list(enc.decode_sum(s, 3)) == [3, 6]
    with pytest.raises(EncodingError, match="exceeds"):
        enc.decode_sum(F.add(s, F.elements([0, 255 * 3])), 3)  # over what 3 values can give
    with pytest.raises(EncodingError, match="exceeds"):
        enc.decode_sum(F.elements([F.MODULUS - 1]), 3)  # a "negative" field sum
    # boundary: three all-ones 8-bit encodings are the largest possible sum
    assert list(enc.decode_sum(F.elements([3 * 255]), 3)) == [3 * 127]
    with pytest.raises(EncodingError, match="exceeds"):
        enc.decode_sum(F.elements([3 * 255 + 1]), 3)


@pytest.mark.parametrize("F", FIELDS)
@SETTINGS
@given(data=st.data())
def test_integer_encoder_sums(F: type, data: st.DataObject) -> None:
    bits = data.draw(st.integers(1, 59))  # 16·2^59 ≤ p in both fields
    enc = IntegerEncoder(F, bits, max_summands=16)
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    vals = data.draw(
        st.lists(st.lists(st.integers(lo, hi), min_size=3, max_size=3), min_size=1, max_size=16)
    )
    s = F.sum(enc.encode(vals), axis=0)
    assert list(enc.decode_sum(s, len(vals))) == [sum(c) for c in zip(*vals, strict=True)]


def test_wide_encoder_in_field128() -> None:
    enc = IntegerEncoder(Field128, 100, max_summands=2**20)
    vals = [-(2**99), 2**99 - 1, 12345]
    s = Field128.sum(Field128.mul(enc.encode(vals), 1000), axis=None)
    assert int(enc.decode_sum(s, 3000).reshape(-1)[0]) == 1000 * sum(vals)
