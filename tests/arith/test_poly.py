"""NTT, evaluation, interpolation, multiplication and Lagrange weights vs Python ints."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kaires_fl.arith.field import Field64, Field128
from kaires_fl.arith.poly import intt, lagrange_coefficients, ntt, poly_eval, poly_interp, poly_mul
from kaires_fl.errors import ConfigError

FIELDS = [Field64, Field128]
SETTINGS = settings(max_examples=25, deadline=None)


def horner(c: list[int], x: int, p: int) -> int:
    acc = 0
    for ci in reversed(c):
        acc = (acc * x + ci) % p
    return acc


@pytest.mark.parametrize("F", FIELDS)
@pytest.mark.parametrize("log_n", [0, 1, 2, 3, 5, 7])
def test_ntt_matches_naive_evaluation(F: type, log_n: int) -> None:
    p = F.MODULUS
    n = 2**log_n
    a = F.random((2, 3, n), rng=np.random.default_rng(log_n))
    A = ntt(F, a)
    w = F.to_ints(F.root_of_unity(n))
    for batch, row in zip(F.to_ints(A.reshape(-1, n)), F.to_ints(a.reshape(-1, n)), strict=True):
        assert batch == [horner(row, pow(w, k, p), p) for k in range(n)]
    assert F.to_ints(intt(F, A)) == F.to_ints(a)


@pytest.mark.parametrize("F", FIELDS)
def test_ntt_large_round_trip(F: type) -> None:
    n = 4096 if F is Field64 else 512
    a = F.random(n, rng=np.random.default_rng(1))
    A = ntt(F, a)
    assert F.to_ints(intt(F, A)) == F.to_ints(a)
    w = F.root_of_unity(n)
    k = 37
    assert F.to_ints(A[k]) == F.to_ints(poly_eval(F, a, F.pow(w, k)))


@pytest.mark.parametrize("F", FIELDS)
def test_ntt_rejects_bad_length(F: type) -> None:
    with pytest.raises(ConfigError, match="power of two"):
        ntt(F, F.zeros((6,)))


@pytest.mark.parametrize("F", FIELDS)
@SETTINGS
@given(data=st.data())
def test_poly_eval_broadcasts(F: type, data: st.DataObject) -> None:
    p = F.MODULUS
    d = data.draw(st.integers(0, 8))
    coeffs = [data.draw(st.lists(st.integers(0, p - 1), min_size=d, max_size=d)) for _ in range(3)]
    xs = data.draw(st.lists(st.integers(0, p - 1), min_size=4, max_size=4))
    C, X = F.elements(coeffs), F.elements(xs)
    # one polynomial, many points
    assert F.to_ints(poly_eval(F, C[0], X)) == [horner(coeffs[0], x, p) for x in xs]
    # batch of polynomials, one point each / a shared point / an outer product
    assert F.to_ints(poly_eval(F, C, X[:3])) == [
        horner(c, x, p) for c, x in zip(coeffs, xs[:3], strict=True)
    ]
    assert F.to_ints(poly_eval(F, C, X[0])) == [horner(c, xs[0], p) for c in coeffs]
    assert F.to_ints(poly_eval(F, C[:, None, :], X)) == [
        [horner(c, x, p) for x in xs] for c in coeffs
    ]


@pytest.mark.parametrize("F", FIELDS)
@SETTINGS
@given(data=st.data())
def test_interp_then_eval(F: type, data: st.DataObject) -> None:
    p = F.MODULUS
    n = data.draw(st.integers(1, 9))
    xs = data.draw(st.lists(st.integers(0, p - 1), min_size=n, max_size=n, unique=True))
    ys = [data.draw(st.lists(st.integers(0, p - 1), min_size=n, max_size=n)) for _ in range(2)]
    X, Y = F.elements(xs), F.elements(ys)
    c = poly_interp(F, X, Y)
    assert c.shape == (2, n)
    assert F.to_ints(poly_eval(F, c[:, None, :], X)) == ys
    # Lagrange weights reproduce the value at a fresh point and at the nodes
    at = data.draw(st.integers(0, p - 1))
    w = lagrange_coefficients(F, X, F.elements(at))
    assert F.to_ints(F.dot(Y, w)) == [horner(r, at, p) for r in F.to_ints(c)]
    assert F.to_ints(lagrange_coefficients(F, X, X)) == [
        [int(i == j) for j in range(n)] for i in range(n)
    ]


@pytest.mark.parametrize("F", FIELDS)
def test_interp_rejects_duplicate_points(F: type) -> None:
    with pytest.raises(ConfigError, match="distinct"):
        poly_interp(F, F.elements([1, 2, 1]), F.elements([4, 5, 6]))
    with pytest.raises(ConfigError, match="distinct"):
        lagrange_coefficients(F, F.elements([3, 3]), F.elements(0))


def test_interp_on_roots_of_unity_equals_intt() -> None:
    F = Field64
    n = 16
    w = F.to_ints(F.root_of_unity(n))
    xs = F.elements([pow(w, k, F.MODULUS) for k in range(n)])
    ys = F.random(n, rng=np.random.default_rng(3))
    assert F.to_ints(poly_interp(F, xs, ys)) == F.to_ints(intt(F, ys))


@pytest.mark.parametrize("F", FIELDS)
@pytest.mark.parametrize(("la", "lb"), [(1, 1), (3, 5), (70, 65), (130, 64), (200, 1)])
def test_poly_mul(F: type, la: int, lb: int) -> None:
    p = F.MODULUS
    rng = np.random.default_rng(la * 1000 + lb)
    a = F.random((2, la), rng=rng)
    b = F.random(lb, rng=rng)
    r = poly_mul(F, a, b)
    pb = F.to_ints(b)
    for row_a, row_r in zip(F.to_ints(a), F.to_ints(r), strict=True):
        ref = [0] * (la + lb - 1)
        for i, x in enumerate(row_a):
            for j, y in enumerate(pb):
                ref[i + j] = (ref[i + j] + x * y) % p
        assert row_r == ref
