"""decide_job's opening of verifier shares (``aggregator._open_consistent``, the
``_kernels.open_shares`` kernel) and the fold of truncated shares (``fold_truncated``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kaires_fl.aggregation import aggregator as agg
from kaires_fl.arith import _kernels as kern
from kaires_fl.arith import circuits as cc
from kaires_fl.arith import flp as flp_mod
from kaires_fl.arith import sharing
from kaires_fl.arith.field import Field64, Field128
from kaires_fl.arith.flp import FlpBBCGGI19
from kaires_fl.arith.pine import L2BoundPine
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


@pytest.mark.parametrize(
    "valid",
    [
        cc.Sum(9),
        cc.SumVec(37, 3),
        cc.Histogram(20),
        cc.LinearRegressionRecord(4, 6),
        cc.BoundedL2Vec(10, 4, 1.0),
        L2BoundPine(12, 6, 1.0, checks=5),
    ],
    ids=repr,
)
@pytest.mark.parametrize("B", [0, 1, 2, 33])
def test_fold_of_truncated_shares_equals_the_sum_of_truncates(valid: Any, B: int) -> None:
    """T(Σ m) + (B − 1)·T(0) = Σ T(m) on arbitrary field elements (shares), every circuit."""
    flp = FlpBBCGGI19(valid)
    F = valid.field
    meas = F.random((B, valid.MEAS_LEN), rng=np.random.default_rng(B))
    want = F.sum(valid.truncate(meas), axis=0) if B else F.zeros((valid.OUTPUT_LEN,))
    assert np.array_equal(agg.fold_truncated(flp, meas), want)
    np.testing.assert_array_equal(flp_mod.sum_records(F, meas), F.sum(meas, axis=0))


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32), st.integers(0, 40), st.integers(0, 9))
def test_sum_cols_kernel_equals_twin(seed: int, R: int, K: int) -> None:
    rng = np.random.default_rng(seed)
    edges = np.array([0, 1, Field64.MODULUS - 1, 2**32 - 1, 2**32, 2**63], np.uint64)
    a = np.where(
        rng.random((R, K)) < 0.5,
        edges[rng.integers(0, len(edges), (R, K))],
        rng.integers(0, Field64.MODULUS, (R, K), dtype=np.uint64),
    )
    tk = kern.tiered("_k_sum_cols")
    o1, o2 = np.empty(K, np.uint64), np.empty(K, np.uint64)
    tk.kernel(a, o1)
    tk.twin(a, o2)
    assert (
        o1.tolist()
        == o2.tolist()
        == [int(sum(int(x) for x in a[:, k]) % Field64.MODULUS) for k in range(K)]
    )
