"""decide_job's chunked opening of verifier shares (``aggregator._open_consistent``)."""

from __future__ import annotations

import numpy as np
import pytest

from kaires_fl.aggregation import aggregator as agg
from kaires_fl.arith import sharing
from kaires_fl.arith.field import Field64, Field128


@pytest.mark.parametrize("F", [Field64, Field128], ids=lambda F: F.__name__)
@pytest.mark.parametrize("n,t", [(4, 1), (7, 2), (3, 0)])
def test_chunked_opening_equals_reconstruct_and_catches_a_wrong_last_coordinate(
    F: type, n: int, t: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several chunks and a partial last one: the secret of consistent shares, None when
    any one coordinate of any share (base or checked, first or last chunk) is off."""
    monkeypatch.setattr(agg, "OPEN_CHUNK", 16)
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
