"""Group laws, identity handling and point/scalar validation, against a Python-int reference."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl import bindings as nb

from kaires_fl.crypto.group import (
    H_POINT,
    L,
    Point,
    Scalar,
    hash_to_point,
    hash_to_scalar,
    lagrange_at_zero,
    multi_scalar_mult,
)
from kaires_fl.errors import EncodingError

# ---- slow reference: twisted Edwards -x^2 + y^2 = 1 + d x^2 y^2 over GF(2^255 - 19) ----
P = 2**255 - 19
D = -121665 * pow(121666, -1, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)


def ref_decode(b: bytes) -> tuple[int, int] | None:
    y = int.from_bytes(b, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    if y >= P:
        return None
    x2 = (y * y - 1) * pow(D * y * y + 1, -1, P) % P
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P:
        return None
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = P - x
    return x, y


def ref_encode(pt: tuple[int, int]) -> bytes:
    x, y = pt
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def ref_add(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    x1, y1 = a
    x2, y2 = b
    t = D * x1 * x2 * y1 * y2 % P
    return (
        (x1 * y2 + x2 * y1) * pow(1 + t, -1, P) % P,
        (y1 * y2 + x1 * x2) * pow(1 - t, -1, P) % P,
    )


def ref_mul(k: int, a: tuple[int, int]) -> tuple[int, int]:
    acc = (0, 1)
    while k:
        if k & 1:
            acc = ref_add(acc, a)
        a = ref_add(a, a)
        k >>= 1
    return acc


G = Point.base()
scalars = st.integers(min_value=0, max_value=L - 1)
FAST = settings(max_examples=25, deadline=None)


def test_base_point_matches_reference() -> None:
    gref = ref_decode(G.to_bytes())
    assert gref is not None
    assert gref[1] == 4 * pow(5, -1, P) % P  # y = 4/5
    assert ref_mul(L, gref) == (0, 1)


@FAST
@given(scalars, scalars)
def test_scalar_mult_and_add_match_reference(a: int, b: int) -> None:
    gref = ref_decode(G.to_bytes())
    assert gref is not None
    pa, pb = G * Scalar(a), G * Scalar(b)
    assert pa.to_bytes() == ref_encode(ref_mul(a, gref))
    assert (pa + pb).to_bytes() == ref_encode(ref_add(ref_mul(a, gref), ref_mul(b, gref)))
    # non-base multiplication path
    hb = ref_decode(H_POINT.to_bytes())
    assert hb is not None
    assert (H_POINT * Scalar(a)).to_bytes() == ref_encode(ref_mul(a, hb))


@FAST
@given(scalars, scalars, scalars)
def test_group_laws(a: int, b: int, c: int) -> None:
    A, B, C = G * Scalar(a), H_POINT * Scalar(b), G * Scalar(c)
    Z = Point.identity()
    assert A + B == B + A
    assert (A + B) + C == A + (B + C)
    assert A + Z == A and Z + A == A
    assert A - A == Z
    assert A + (-A) == Z
    assert A - B == A + (-B)
    assert Z - A == -A
    assert G * Scalar(a) + G * Scalar(c) == G * (Scalar(a) + Scalar(c))
    assert (G * Scalar(a)) * Scalar(c) == G * (Scalar(a) * Scalar(c))
    assert Scalar(a) * B == B * Scalar(a)


def test_identity_handling() -> None:
    Z = Point.identity()
    A = G * Scalar.random_nonzero()
    assert G * Scalar(0) == Z
    assert A * 0 == Z
    assert G * Scalar(L) == Z  # L reduces to 0
    assert Z * Scalar.random_nonzero() == Z
    assert -Z == Z
    assert Z.is_identity() and not A.is_identity()
    assert Point.from_bytes(Z.to_bytes()) == Z
    with pytest.raises(EncodingError, match="identity"):
        Point.from_bytes(Z.to_bytes(), allow_identity=False)
    assert G * Scalar(L - 1) == -G
    assert multi_scalar_mult([], []) == Z


@FAST
@given(scalars, scalars)
def test_scalar_field(a: int, b: int) -> None:
    sa, sb = Scalar(a), Scalar(b)
    assert int(sa + sb) == (a + b) % L
    assert int(sa - sb) == (a - b) % L
    assert int(sa * sb) == a * b % L
    assert int(-sa) == -a % L
    if a:
        assert sa * sa.inverse() == Scalar(1)
        assert int(sb / sa) == b * pow(a, -1, L) % L
    assert Scalar.from_bytes(sa.to_bytes()) == sa


def test_scalar_zero_has_no_inverse() -> None:
    with pytest.raises(ZeroDivisionError):
        Scalar(0).inverse()


@pytest.mark.parametrize("v", [L, L + 1, 2**256 - 1, 2**253])
def test_non_canonical_scalar_rejected(v: int) -> None:
    with pytest.raises(EncodingError, match="non-canonical scalar"):
        Scalar.from_bytes(v.to_bytes(32, "little"))


def test_scalar_wrong_length_rejected() -> None:
    with pytest.raises(EncodingError, match="32 bytes"):
        Scalar.from_bytes(b"\x01" * 31)


def test_scalar_edge_values() -> None:
    assert int(Scalar.from_bytes((L - 1).to_bytes(32, "little"))) == L - 1
    assert Scalar(L - 1) + 1 == Scalar(0)


# ---- invalid encodings -----------------------------------------------------------------
ORDER8 = bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a")


def _bad_encodings() -> dict[str, bytes]:
    bad = {
        "order-2 point (y = -1)": (P - 1).to_bytes(32, "little"),
        "identity with sign bit (x = -0)": (1 | (1 << 255)).to_bytes(32, "little"),
        "non-canonical identity y = p + 1": (P + 1).to_bytes(32, "little"),
        "non-canonical y = p": P.to_bytes(32, "little"),
        "order-8 point": ORDER8,
        "all 0xff": b"\xff" * 32,
    }
    # G + T8: on the curve but with a torsion component (outside the prime-order subgroup).
    bad["base point plus torsion"] = nb.crypto_core_ed25519_add(G.to_bytes(), ORDER8)
    # A y-coordinate with no x on the curve.
    for y in range(2, 1000):
        if ref_decode(y.to_bytes(32, "little")) is None:
            bad["off the curve"] = y.to_bytes(32, "little")
            break
    return bad


@pytest.mark.parametrize("name", list(_bad_encodings()))
def test_invalid_point_rejected(name: str) -> None:
    data = _bad_encodings()[name]
    with pytest.raises(EncodingError, match="invalid group element"):
        Point.from_bytes(data)


def test_point_wrong_length_rejected() -> None:
    with pytest.raises(EncodingError, match="32 bytes"):
        Point.from_bytes(G.to_bytes()[:31])


def test_random_bytes_agree_with_reference() -> None:
    """from_bytes accepts exactly canonical, on-curve, prime-order encodings (vs reference)."""
    accepted = 0
    for i in range(40):
        data = hashlib.sha256(b"rnd" + bytes([i])).digest()
        if i % 4 == 0:  # make sure valid encodings are exercised too
            data = (H_POINT * Scalar(int.from_bytes(data, "little"))).to_bytes()
        pt = ref_decode(data)
        ok = pt is not None and ref_mul(L, pt) == (0, 1) and pt != (0, 1)
        if ok:
            assert Point.from_bytes(data).to_bytes() == data
            accepted += 1
        else:
            with pytest.raises(EncodingError):
                Point.from_bytes(data)
    assert 10 <= accepted < 40


def test_points_cannot_be_built_unvalidated() -> None:
    with pytest.raises(TypeError):
        Point(b"\x00" * 32)


# ---- hashing, second generator, helpers --------------------------------------------------
def test_hash_to_point_and_second_generator() -> None:
    assert hash_to_point(b"a") == hash_to_point(b"a")
    assert hash_to_point(b"a") != hash_to_point(b"b")
    assert H_POINT != G and not H_POINT.is_identity()
    # valid prime-order element
    assert Point.from_bytes(H_POINT.to_bytes()) == H_POINT
    assert H_POINT * Scalar(L) == Point.identity()


def test_hash_to_scalar_domain_separation() -> None:
    a = hash_to_scalar(b"x", b"y", context=b"c1")
    assert a == hash_to_scalar(b"x", b"y", context=b"c1")
    assert a != hash_to_scalar(b"x", b"y", context=b"c2")
    assert a != hash_to_scalar(b"xy", context=b"c1")
    assert a != hash_to_scalar(b"x", b"y", b"", context=b"c1")
    assert hash_to_scalar(G, context=b"c") == hash_to_scalar(G.to_bytes(), context=b"c")


@FAST
@given(st.lists(scalars, min_size=1, max_size=4))
def test_multi_scalar_mult(ks: list[int]) -> None:
    pts = [hash_to_point(bytes([i])) for i in range(len(ks))]
    expect = Point.identity()
    for k, p in zip(ks, pts, strict=True):
        expect = expect + p * Scalar(k)
    assert multi_scalar_mult([Scalar(k) for k in ks], pts) == expect
    with pytest.raises(ValueError):
        multi_scalar_mult([Scalar(1)], [])


@FAST
@given(st.lists(scalars, min_size=1, max_size=5), st.data())
def test_lagrange_at_zero_interpolates(coeffs: list[int], data: st.DataObject) -> None:
    n = len(coeffs) + 2
    xs = data.draw(st.permutations(list(range(1, n + 1))))[: len(coeffs)]
    ys = [sum(c * pow(x, j, L) for j, c in enumerate(coeffs)) % L for x in xs]
    lam = lagrange_at_zero(xs)
    assert sum(int(la) * y for la, y in zip(lam, ys, strict=True)) % L == coeffs[0]
    # in the exponent
    assert multi_scalar_mult(lam, [G * Scalar(y) for y in ys]) == G * Scalar(coeffs[0])


def test_lagrange_rejects_bad_points() -> None:
    with pytest.raises(ValueError):
        lagrange_at_zero([1, 1])
    with pytest.raises(ValueError):
        lagrange_at_zero([0, 2])


# A point of order 8 (a torsion point): valid on the curve, outside the prime-order group.
_TORSION = bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05")


def test_unchecked_points_are_refused_by_scalar_multiplication() -> None:
    """What ``subgroup_check=False`` relies on: libsodium refuses bad points in a mult."""
    P = H_POINT * Scalar(12345)
    with pytest.raises(EncodingError):
        Point.from_bytes(_TORSION)
    T = Point.from_bytes(_TORSION, subgroup_check=False)
    mixed = P + T  # on the curve, with a torsion component
    with pytest.raises(EncodingError):
        Point.from_bytes(mixed.to_bytes())
    for bad in (T, mixed):
        with pytest.raises(EncodingError, match="refused the scalar multiplication"):
            _ = bad * Scalar(7)
    off_curve = bytes([2]) + bytes(31)  # y = 2 is not the y of a curve point
    with pytest.raises(EncodingError):
        Point.from_bytes(off_curve)
    raw = Point.from_bytes(off_curve, subgroup_check=False)
    with pytest.raises(EncodingError):
        _ = raw * Scalar(7)
    with pytest.raises(EncodingError):
        _ = raw + P
    # a valid point decoded without the check behaves exactly as a checked one
    unchecked = Point.from_bytes(P.to_bytes(), subgroup_check=False)
    assert unchecked == P and unchecked * Scalar(3) == P * Scalar(3)


def test_multi_scalar_mult_small_coefficients_match_reference() -> None:
    pts = [H_POINT * Scalar(7 + i) for i in range(3)]
    for ks in ([2, -1, 0], [3, -3, 1], [1, 1, 1], [-2, 5, -4], [6, -8, 3], [17, -1, 2**200]):
        scalars = [Scalar(k) for k in ks]
        want = Point.identity()
        for k, p in zip(ks, pts, strict=True):
            want = want + p * Scalar(k)  # reference: one libsodium multiplication each
        assert multi_scalar_mult(scalars, pts) == want
    # identity points and a scalar that cancels a point
    assert multi_scalar_mult([Scalar(2), Scalar(-2)], [pts[0], pts[0]]) == Point.identity()
    assert multi_scalar_mult([Scalar(2)], [Point.identity()]) == Point.identity()
