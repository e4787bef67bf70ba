"""Field64 and Field128 against a Python-int reference (hypothesis), incl. edge values."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from kaires_fl.arith import _kernels as kern
from kaires_fl.arith.field import Field64, Field128
from kaires_fl.errors import ConfigError, EncodingError

FIELDS = [Field64, Field128]
P64 = Field64.MODULUS
P128 = Field128.MODULUS

EDGES = {
    Field64: [0, 1, 2, P64 - 1, P64 - 2, P64 - 2**32, 2**32, 2**32 - 1, 2**32 + 1, 2**63,
              (P64 - 1) // 2, 2**96 % P64, 2**48],
    Field128: [0, 1, 2, P128 - 1, P128 - 2, 2**64, 2**64 - 1, 2**127, P128 - 2**64,
               (P128 - 1) // 2, 2**66],
}  # fmt: skip

SETTINGS = settings(max_examples=40, deadline=None)


def elem(F: type) -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from(EDGES[F]), st.integers(0, F.MODULUS - 1))


def vec(F: type, min_size: int = 0, max_size: int = 12) -> st.SearchStrategy[list[int]]:
    return st.lists(elem(F), min_size=min_size, max_size=max_size)


def pairs(F: type) -> st.SearchStrategy[tuple[list[int], list[int]]]:
    return st.integers(0, 12).flatmap(lambda n: st.tuples(vec(F, n, n), vec(F, n, n)))


@pytest.mark.parametrize("F", FIELDS)
def test_dtype_and_constants(F: type) -> None:
    p = F.MODULUS
    assert F.zeros((2, 3)).dtype == F.DTYPE
    assert F.to_ints(F.zeros((2,))) == [0, 0]
    assert F.to_ints(F.ones((2,))) == [1, 1]
    assert p.bit_length() <= 8 * F.ENCODED_SIZE
    # the modulus is prime enough for the 2-adic structure used by the NTT
    assert (p - 1) % F.GEN_ORDER == 0
    assert pow(F.GENERATOR, F.GEN_ORDER // 2, p) == p - 1


@pytest.mark.parametrize("F", FIELDS)
@SETTINGS
@given(data=st.data())
def test_elements_reduce_any_integer(F: type, data: st.DataObject) -> None:
    p = F.MODULUS
    xs = data.draw(st.lists(st.integers(-(2**200), 2**200), max_size=10))
    assert F.to_ints(F.elements(xs)) == [x % p for x in xs]
    small = data.draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=10))
    assert F.to_ints(F.elements(np.array(small, dtype=np.int64))) == [x % p for x in small]
    big = data.draw(st.lists(st.integers(0, 2**64 - 1), max_size=10))
    assert F.to_ints(F.elements(np.array(big, dtype=np.uint64))) == [x % p for x in big]


@pytest.mark.parametrize("F", FIELDS)
def test_elements_from_numpy_scalars_and_byte_orders(F: type) -> None:
    p = F.MODULUS
    top = 2**64 - 1
    assert F.to_ints(F.elements(np.array([top, 5], dtype=">u8"))) == [top % p, 5]
    assert F.to_ints(F.elements(np.uint64(top))) == top % p
    assert F.to_ints(F.elements(np.int8(-3))) == p - 3
    assert F.to_ints(F.elements([True, False])) == [1, 0]
    # numpy would turn this list into float64; the exact path must be taken instead
    assert F.to_ints(F.elements([-1, 2**63])) == [p - 1, 2**63 % p]


@pytest.mark.parametrize("F", FIELDS)
def test_elements_rejects_floats(F: type) -> None:
    with pytest.raises(EncodingError, match="integers"):
        F.elements([1.5, 2])
    with pytest.raises(EncodingError, match="integers"):
        F.elements(np.array([1.0]))


@pytest.mark.parametrize("F", FIELDS)
@SETTINGS
@given(data=st.data())
def test_add_sub_mul_neg_against_reference(F: type, data: st.DataObject) -> None:
    p = F.MODULUS
    a, b = data.draw(pairs(F))
    A, B = F.elements(a), F.elements(b)
    assert F.to_ints(F.add(A, B)) == [(x + y) % p for x, y in zip(a, b, strict=True)]
    assert F.to_ints(F.sub(A, B)) == [(x - y) % p for x, y in zip(a, b, strict=True)]
    assert F.to_ints(F.mul(A, B)) == [(x * y) % p for x, y in zip(a, b, strict=True)]
    assert F.to_ints(F.neg(A)) == [(-x) % p for x in a]


@pytest.mark.parametrize("F", FIELDS)
def test_all_edge_pairs(F: type) -> None:
    p = F.MODULUS
    e = EDGES[F]
    a = [x for x in e for _ in e]
    b = [y for _ in e for y in e]
    A, B = F.elements(a), F.elements(b)
    assert F.to_ints(F.mul(A, B)) == [x * y % p for x, y in zip(a, b, strict=True)]
    assert F.to_ints(F.add(A, B)) == [(x + y) % p for x, y in zip(a, b, strict=True)]
    assert F.to_ints(F.sub(A, B)) == [(x - y) % p for x, y in zip(a, b, strict=True)]


@pytest.mark.parametrize("F", FIELDS)
@SETTINGS
@given(data=st.data())
def test_broadcasting(F: type, data: st.DataObject) -> None:
    p = F.MODULUS
    col = data.draw(vec(F, 3, 3))
    row = data.draw(vec(F, 4, 4))
    s = data.draw(elem(F))
    C = F.elements(col)[:, None]
    R = F.elements(row)
    S = F.elements(s)
    assert F.to_ints(F.mul(C, R)) == [[x * y % p for y in row] for x in col]
    assert F.to_ints(F.sub(C, R)) == [[(x - y) % p for y in row] for x in col]
    assert F.to_ints(F.sub(S, R)) == [(s - y) % p for y in row]
    assert F.to_ints(F.sub(R, S)) == [(y - s) % p for y in row]
    assert F.to_ints(F.add(S, R)) == [(s + y) % p for y in row]
    assert F.to_ints(F.mul(R, s)) == [(s * y) % p for y in row]
    assert F.to_ints(F.mul(S, S)) == s * s % p
    # non-contiguous views
    M = F.elements([row, row[::-1]])
    assert F.to_ints(F.add(M.T, M.T)) == [
        [2 * x % p for x in r] for r in zip(row, row[::-1], strict=True)
    ]


@pytest.mark.parametrize("F", FIELDS)
@SETTINGS
@given(data=st.data())
def test_inv_and_pow(F: type, data: st.DataObject) -> None:
    p = F.MODULUS
    a = [x for x in data.draw(vec(F, 1)) if x != 0] or [1]
    e = data.draw(st.integers(-(2**130), 2**130))
    A = F.elements(a)
    assert F.to_ints(F.inv(A)) == [pow(x, -1, p) for x in a]
    assert F.to_ints(F.pow(A, e)) == [pow(x, e, p) for x in a]
    z = F.elements([0, 0, 1])
    assert F.to_ints(F.pow(z, 0)) == [1, 1, 1]
    assert F.to_ints(F.pow(z, abs(e) + 1)) == [0, 0, 1]
    assert F.to_ints(F.pow(z, (p - 1) * 3)) == [0, 0, 1]


@pytest.mark.parametrize("F", FIELDS)
def test_inv_zero_raises(F: type) -> None:
    with pytest.raises(ZeroDivisionError, match="element 2"):
        F.inv(F.elements([1, 5, 0, 3]))
    with pytest.raises(ZeroDivisionError):
        F.pow(F.elements([0]), -1)


@pytest.mark.parametrize("F", FIELDS)
@SETTINGS
@given(data=st.data())
def test_sum_prod(F: type, data: st.DataObject) -> None:
    p = F.MODULUS
    rows = data.draw(st.integers(1, 4))
    cols = data.draw(st.integers(0, 6))
    m = [data.draw(vec(F, cols, cols)) for _ in range(rows)]
    M = F.elements(m)
    assert F.to_ints(F.sum(M)) == sum(map(sum, m)) % p
    assert F.to_ints(F.sum(M, axis=0)) == [sum(c) % p for c in zip(*m, strict=True)]
    assert F.to_ints(F.sum(M, axis=-1)) == [sum(r) % p for r in m]
    ref = []
    for r in m:
        acc = 1
        for x in r:
            acc = acc * x % p
        ref.append(acc)
    assert F.to_ints(F.prod(M, axis=1)) == ref


@pytest.mark.parametrize("F", FIELDS)
def test_sum_carries(F: type) -> None:
    p = F.MODULUS
    n = 5000
    A = F.elements([p - 1] * n)
    assert F.to_ints(F.sum(A)) == (p - 1) * n % p
    T = F.elements(np.arange(24).reshape(2, 3, 4))
    assert F.to_ints(F.sum(T, axis=(0, 2))) == [
        sum(x for x in range(24) if (x // 4) % 3 == j) for j in range(3)
    ]


def _matmul_ref(a: list[list[int]], b: list[list[int]], p: int) -> list[list[int]]:
    return [
        [sum(x * y for x, y in zip(r, c, strict=True)) % p for c in zip(*b, strict=True)] for r in a
    ]


@pytest.mark.parametrize("F", FIELDS)
@SETTINGS
@given(data=st.data())
def test_dot_matmul(F: type, data: st.DataObject) -> None:
    p = F.MODULUS
    m, k, n = (data.draw(st.integers(1, 5)) for _ in range(3))
    a = [data.draw(vec(F, k, k)) for _ in range(m)]
    b = [data.draw(vec(F, n, n)) for _ in range(k)]
    A, B = F.elements(a), F.elements(b)
    ref = _matmul_ref(a, b, p)
    assert F.to_ints(F.matmul(A, B)) == ref
    assert F.to_ints(F.dot(A, B)) == ref
    # 1-D cases, like np.dot / np.matmul
    assert F.to_ints(F.dot(A[0], B)) == ref[0]
    assert F.to_ints(F.matmul(A, B[:, 0])) == [r[0] for r in ref]
    assert F.to_ints(F.dot(A[0], A[0])) == sum(x * x for x in a[0]) % p
    # stacked: batch axes broadcast
    S = np.stack([A, F.neg(A)])
    out = F.to_ints(F.matmul(S, B))
    assert out[0] == ref
    assert out[1] == [[(-x) % p for x in r] for r in ref]
    # dot contracts last axis of a with the first of b (tensordot, axes=1)
    assert F.to_ints(F.dot(S, B)) == out


@pytest.mark.parametrize("k", [1, 2, 8, 9, 12])
def test_matmul_wide_paths_against_ints(k: int) -> None:
    # wide b: the small-k addmod path (k ≤ 8) and the column tiles (k > 8, n > tile)
    F = Field64
    rng = np.random.default_rng(k)
    A = F.random((3, k), rng=rng)
    A[0, 0] = F.elements(P64 - 1)
    A[1] = F.ones((k,))  # the copy / add path of unit coefficients
    B = F.random((k, 2500), rng=rng)
    B[:, -1] = F.elements(P64 - 1)
    a, b = F.to_ints(A), F.to_ints(B)
    got = F.to_ints(F.matmul(A, B))
    cols = [0, 1, 1023, 1024, 2047, 2048, 2499]
    for i in range(3):
        assert [got[i][j] for j in cols] == [
            sum(a[i][t] * b[t][j] for t in range(k)) % P64 for j in cols
        ]


def test_matmul_large_k_carries() -> None:
    F = Field64
    k = 3000
    A = F.elements([[P64 - 1] * k])
    B = F.elements([[P64 - 1]] * k)
    assert F.to_ints(F.matmul(A, B)) == [[k % P64]]


@pytest.mark.parametrize("F", FIELDS)
def test_matmul_shape_errors(F: type) -> None:
    with pytest.raises(ConfigError, match="inner dimensions"):
        F.matmul(F.zeros((2, 3)), F.zeros((2, 3)))
    with pytest.raises(ConfigError, match="first axis"):
        F.dot(F.zeros((2, 3)), F.zeros((2,)))


@pytest.mark.parametrize("F", FIELDS)
def test_random(F: type) -> None:
    p = F.MODULUS
    a = F.random((50, 4))
    assert a.shape == (50, 4)
    assert a.dtype == F.DTYPE
    vals = [x for r in F.to_ints(a) for x in r]
    assert all(0 <= x < p for x in vals)
    assert len(set(vals)) == len(vals)  # collisions have negligible probability
    # the top bits are used: a uniform sample of 200 has max above p/2 w.p. 1 − 2^-200
    assert max(vals) > p // 2
    r1 = F.random(5, rng=np.random.default_rng(7))
    r2 = F.random(5, rng=np.random.default_rng(7))
    assert F.to_ints(r1) == F.to_ints(r2)
    assert F.random(0).shape == (0,)


def test_csprng_bytes_large_requests() -> None:
    from kaires_fl.arith.field import csprng_bytes

    a, b = csprng_bytes(1 << 16), csprng_bytes(1 << 16)
    assert len(a) == len(b) == 1 << 16
    assert a != b  # a fresh key per call
    bits = np.unpackbits(np.frombuffer(a, np.uint8))
    assert abs(bits.mean() - 0.5) < 0.01  # 2^19 bits: 14 standard deviations
    assert len(csprng_bytes(10)) == 10
    big = Field64.random((3000,))  # served by the keystream
    assert np.all(big < np.uint64(Field64.MODULUS)) and len(np.unique(big)) == 3000


@pytest.mark.parametrize("F", FIELDS)
def test_from_seed(F: type) -> None:
    a = F.from_seed(b"seed", (3, 4), context=b"ctx")
    assert a.shape == (3, 4)
    assert F.to_ints(a) == F.to_ints(F.from_seed(b"seed", (3, 4), context=b"ctx"))
    # prefix-consistent and separated by seed, context and field
    assert F.to_ints(F.from_seed(b"seed", 5, b"ctx")) == F.to_ints(a.reshape(-1)[:5])
    assert F.to_ints(F.from_seed(b"seed", 12, b"ctx2")) != F.to_ints(a.reshape(-1))
    assert F.to_ints(F.from_seed(b"seeD", 12, b"ctx")) != F.to_ints(a.reshape(-1))
    other = Field128 if F is Field64 else Field64
    assert other.to_ints(other.from_seed(b"seed", 3, b"ctx")) != F.to_ints(a.reshape(-1)[:3])


@pytest.mark.parametrize("F", FIELDS)
def test_rejection_sampling_drops_out_of_range(F: type) -> None:
    size = F.ENCODED_SIZE
    raw = b"".join(
        v.to_bytes(size, "little") for v in [F.MODULUS, 5, 2 ** (8 * size) - 1, F.MODULUS - 1]
    )
    assert F.to_ints(F._accept(raw)) == [5, F.MODULUS - 1]


@pytest.mark.parametrize("F", FIELDS)
@SETTINGS
@given(data=st.data())
def test_encode_decode_round_trip(F: type, data: st.DataObject) -> None:
    xs = data.draw(vec(F))
    A = F.elements(xs)
    enc = F.encode(A)
    assert len(enc) == F.ENCODED_SIZE * len(xs)
    assert enc == b"".join(x.to_bytes(F.ENCODED_SIZE, "little") for x in xs)
    assert F.to_ints(F.decode(enc)) == xs
    if len(xs) % 2 == 0 and xs:
        assert F.decode(enc, (2, len(xs) // 2)).shape == (2, len(xs) // 2)


@pytest.mark.parametrize("F", FIELDS)
@pytest.mark.parametrize("bad", [0, 1])
def test_decode_rejects_noncanonical(F: type, bad: int) -> None:
    size = F.ENCODED_SIZE
    values = [F.MODULUS, 2 ** (8 * size) - 1]
    good = F.encode(F.elements([1, 2, 3]))
    tampered = good + values[bad].to_bytes(size, "little") + good
    with pytest.raises(EncodingError, match="element 3 is not canonical"):
        F.decode(tampered)


@pytest.mark.parametrize("F", FIELDS)
def test_decode_rejects_wrong_length(F: type) -> None:
    enc = F.encode(F.elements([1, 2, 3]))
    with pytest.raises(EncodingError, match="multiple"):
        F.decode(enc[:-1])
    with pytest.raises(EncodingError, match="expected"):
        F.decode(enc, shape=(4,))


@pytest.mark.parametrize("F", FIELDS)
def test_root_of_unity(F: type) -> None:
    p = F.MODULUS
    log = F.GEN_ORDER.bit_length() - 1
    for k in [0, 1, 2, 5, 10, log]:
        n = 2**k
        w = F.to_ints(F.root_of_unity(n))
        assert pow(w, n, p) == 1
        if n > 1:
            assert pow(w, n // 2, p) == p - 1  # principal: order exactly n
    for bad in [0, 3, 2 * F.GEN_ORDER]:
        with pytest.raises(ConfigError):
            F.root_of_unity(bad)


def test_read_only_inputs_reuse_the_compiled_kernels() -> None:
    """A read-only input (a cached table, a broadcast view) gets the same answer and no
    second numba specialisation (each costs ~0.3–1 s of compilation on a cold cache)."""
    from kaires_fl.arith import _kernels as kern

    rng = np.random.default_rng(5)
    a = Field64.random(9, rng=rng)
    A = Field64.random((3, 4), rng=rng)
    B = Field64.random((4, 6), rng=rng)
    want = (Field64.mul(a, a), Field64.add(a, a[:1]), Field64.sum(a), Field64.matmul(A, B))
    kernels = (kern.mul_vv, kern.add_vs, kern.sum_rows, kern.matmul_few_terms)
    before = [len(k.signatures) for k in kernels]
    ro, Aro, Bro = a.copy(), A.copy(), B.copy()
    for x in (ro, Aro, Bro):
        x.flags.writeable = False
    got = (Field64.mul(ro, a), Field64.add(ro, ro[:1]), Field64.sum(ro), Field64.matmul(Aro, Bro))
    for w, g in zip(want, got, strict=True):
        np.testing.assert_array_equal(w, g)
    np.testing.assert_array_equal(Field64.matmul(np.broadcast_to(A, (2, 3, 4)), B)[1], want[3])
    assert [len(k.signatures) for k in kernels] == before


U64 = st.integers(0, 2**64 - 1)


@njit
def _scalar_ops(x: np.ndarray, out: np.ndarray) -> None:  # compiled once, on first use
    out[0] = kern.reduce128(x[0], x[1])
    out[1] = kern.mulmod(x[0], x[1])
    out[2] = kern.combine_split(x[1], x[0])
    out[3] = kern.reduce_split_sums(x[0], x[1])
    out[4] = kern.addmod(x[2], x[3])
    out[5] = kern.submod(x[2], x[3])
    out[6] = kern.powmod(x[2], x[0])


@settings(max_examples=300, deadline=None)
@given(hi=U64, lo=U64, a=st.integers(0, Field64.MODULUS - 1), b=st.integers(0, Field64.MODULUS - 1))
def test_scalar_intrinsics_against_python_ints(hi: int, lo: int, a: int, b: int) -> None:
    """The LLVM-emitting scalar operations inside a kernel, on any 64-bit inputs (reduce128,
    mulmod, combine_split) or canonical ones (addmod, submod), against Python integers."""
    p = Field64.MODULUS
    out = np.zeros(7, dtype=np.uint64)
    _scalar_ops(np.array([hi, lo, a, b], dtype=np.uint64), out)
    assert [int(v) for v in out] == [
        (hi * 2**64 + lo) % p,
        hi * lo % p,
        (hi * 2**32 + lo) % p,
        (hi * 2**32 + lo) % p,
        (a + b) % p,
        (a - b) % p,
        pow(a, hi, p),
    ]
