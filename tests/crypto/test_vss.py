"""Feldman and Pedersen VSS: valid dealings verify, bad shares are caught, subsets agree."""

from __future__ import annotations

from itertools import combinations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kaires_fl.crypto import vss
from kaires_fl.crypto.group import H_POINT, L, Point, Scalar
from kaires_fl.errors import ConfigError, InvalidProof, ProtocolError

G = Point.base()


@settings(max_examples=8, deadline=None)
@given(st.integers(min_value=0, max_value=L - 1), st.integers(min_value=0, max_value=3))
def test_feldman_valid_dealing(secret: int, t: int) -> None:
    n = 3 * t + 1
    d = vss.deal(Scalar(secret), t, n)
    assert len(d.shares) == n and len(d.commitments) == t + 1
    assert vss.public_key(d.commitments) == G * Scalar(secret)
    for i, s in enumerate(d.shares):
        vss.verify_share(d.commitments, i, s)
        assert vss.public_share(d.commitments, i) == G * s
    assert vss.verify_shares(d.commitments, dict(enumerate(d.shares))) == []


def test_shares_match_python_int_polynomial() -> None:
    coeffs = [Scalar(5), Scalar(7), Scalar(L - 1)]
    for x in range(1, 6):
        assert int(vss.evaluate(coeffs, x)) == (5 + 7 * x - x * x) % L


def test_every_subset_recovers_the_same_secret() -> None:
    t, n = 2, 7
    secret = Scalar.random()
    d = vss.deal(secret, t, n)
    pubs = {i: vss.public_share(d.commitments, i) for i in range(n)}
    for subset in combinations(range(n), t + 1):
        assert vss.recover_secret({i: d.shares[i] for i in subset}, t) == secret
    for subset in list(combinations(range(n), t + 1))[:5]:
        assert vss.recover_public({i: pubs[i] for i in subset}, t) == G * secret
    # t shares are not enough
    with pytest.raises(ProtocolError, match="t \\+ 1"):
        vss.recover_secret({0: d.shares[0], 1: d.shares[1]}, t)


def test_feldman_bad_share_detected_and_named() -> None:
    t, n = 1, 4
    d = vss.deal(Scalar.random(), t, n)
    bad_share = d.shares[2] + 1
    with pytest.raises(InvalidProof, match="party 2"):
        vss.verify_share(d.commitments, 2, bad_share)
    with pytest.raises(InvalidProof):
        vss.verify_share(d.commitments, 1, d.shares[2])  # right value, wrong party
    shares = dict(enumerate(d.shares))
    shares[2] = bad_share
    shares[0] = Scalar.random()
    assert vss.verify_shares(d.commitments, shares) == [0, 2]
    # a tampered commitment invalidates shares
    tampered = [d.commitments[0], d.commitments[1] + G]
    assert vss.verify_shares(tampered, dict(enumerate(d.shares))) == [0, 1, 2, 3]


def test_pedersen_dealing_and_bad_shares() -> None:
    t, n = 1, 4
    secret = Scalar.random()
    d = vss.deal_pedersen(secret, t, n)
    for i in range(n):
        vss.verify_pedersen_share(d.commitments, i, d.shares[i], d.blindings[i])
    shares, blinds = dict(enumerate(d.shares)), dict(enumerate(d.blindings))
    assert vss.verify_shares(d.commitments, shares, blinds) == []
    # the commitment to the secret hides it: C_0 != secret·G, C_0 = secret·G + b_0·H
    assert d.commitments[0] != G * secret
    b0 = vss.recover_secret(blinds, t)
    assert d.commitments[0] == vss.pedersen_commit(secret, b0) == G * secret + H_POINT * b0
    assert vss.recover_secret(shares, t) == secret
    with pytest.raises(InvalidProof, match="Pedersen share of party 3"):
        vss.verify_pedersen_share(d.commitments, 3, d.shares[3], d.blindings[3] + 1)
    with pytest.raises(InvalidProof):
        vss.verify_pedersen_share(d.commitments, 3, d.shares[3] + 1, d.blindings[3])
    blinds[1] = blinds[1] + 1
    assert vss.verify_shares(d.commitments, shares, blinds) == [1]
    # Pedersen blinding matters: checking as Feldman fails
    assert vss.verify_shares(d.commitments, shares) != []
    assert H_POINT != G


def test_bad_parameters() -> None:
    with pytest.raises(ConfigError):
        vss.deal(Scalar(1), 3, 3)
    with pytest.raises(ConfigError):
        vss.deal_pedersen(Scalar(1), -1, 3)
    with pytest.raises(ProtocolError):
        vss.verify_shares([G], {0: Scalar(1)}, {1: Scalar(1)})


def test_lagrange_coefficients_for_parties() -> None:
    lam = vss.lagrange_coefficients([0, 2])  # x = 1, 3
    # f(x) = a + b x: f(0) = (3 f(1) - f(3)) / 2
    half = Scalar(2).inverse()
    assert lam == [Scalar(3) * half, -half]
