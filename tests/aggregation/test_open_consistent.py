"""decide_job's chunked opening of verifier shares (``aggregator._open_consistent``)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kaires_fl.aggregation import aggregator as agg
from kaires_fl.arith import _kernels as kern
from kaires_fl.arith import sharing
from kaires_fl.arith.field import Field64, Field128
from kaires_fl.arith.poly import lagrange_coefficients


@pytest.mark.parametrize("F", [Field64, Field128], ids=lambda F: F.__name__)
@pytest.mark.parametrize("n,t", [(4, 1), (7, 2), (3, 0)])
def test_chunked_opening_equals_reconstruct_and_catches_a_wrong_last_coordinate(
    F: type, n: int, t: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several chunks and a partial last one: the secret of consistent shares, None when
    any one coordinate of any share (base or checked, first or last chunk) is off."""
    monkeypatch.setattr(agg, "OPEN_CHUNK", 16)  # Field128's chunks (Field64: next test)
    rng = np.random.default_rng(n)
    secret = F.random((9, 7), rng=rng)  # 63 elements: chunks of 16, 16, 16, 15
    sh = sharing.share(F, secret, n, t)
    shares = {i: sh[i] for i in range(n)}
    got = agg._open_consistent(F, shares, t)
    assert got is not None and got.shape == secret.shape and np.array_equal(got, secret)
    assert np.array_equal(got, sharing.reconstruct(F, shares, t))
    for j in range(n):
        for pos in ((0, 0), (8, 6), (4, 2)):
            bad = dict(shares)
            bad[j] = shares[j].copy()
            bad[j][pos] = F.add(bad[j][pos], F.ones(()))
            opened = agg._open_consistent(F, bad, t)
            if t + 1 == n:  # no share to check against: any t + 1 values are consistent
                assert opened is not None
            else:
                assert opened is None, (j, pos)


def test_opening_of_empty_shares() -> None:
    F = Field64
    shares = {i: np.zeros((0, 4), np.uint64) for i in range(4)}
    got = agg._open_consistent(F, shares, 1)
    assert got is not None and got.shape == (0, 4)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32), st.integers(0, 20000), st.sampled_from([(4, 1), (7, 2), (5, 1)]))
def test_open_shares_kernel_equals_twin(seed: int, n_el: int, nt: tuple[int, int]) -> None:
    """The fused kernel and its numpy twin: same opening, same verdict (also with one
    share off by one at a random coordinate), across tile boundaries."""
    F = Field64
    n, t = nt
    rng = np.random.default_rng(seed)
    secret = F.random((n_el,), rng=rng)
    sh = sharing.share(F, secret, n, t)
    xs = F.elements(list(range(1, t + 2)))
    W = np.stack([lagrange_coefficients(F, xs, F.elements(x)) for x in [0, *range(t + 2, n + 1)]])
    tk = kern.tiered("open_shares")
    for bad in (None, int(rng.integers(0, n))):
        ys = [sh[i].copy() for i in range(n)]
        if bad is not None and n_el:
            ys[bad][int(rng.integers(0, n_el))] ^= np.uint64(1)
        o1, o2 = np.empty(n_el, np.uint64), np.empty(n_el, np.uint64)
        ok1 = tk.kernel(tuple(ys), W, o1)
        ok2 = tk.twin(tuple(ys), W, o2)
        assert ok1 == ok2 == (bad is None or n_el == 0)
        if ok1:
            assert np.array_equal(o1, secret) and np.array_equal(o2, secret)
