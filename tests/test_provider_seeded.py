"""Which aggregators get a provider's shares as seeds: t distinct ones, spread over the
committee across providers (each seeded aggregator expands its shares with the XOF)."""

from __future__ import annotations

from collections import Counter

import numpy as np

from kaires_fl.aggregation.submission import FORMAT_SEED, SEED_SIZE, seal_parts
from kaires_fl.arith.circuits import SumVec
from kaires_fl.arith.flp import FlpBBCGGI19
from kaires_fl.crypto import envelope
from kaires_fl.roles.provider import seeded_aggregators


def test_t_distinct_aggregators_spread_over_the_committee() -> None:
    for n, t in ((4, 1), (7, 2), (10, 3), (1, 0)):
        picks = [seeded_aggregators("job", f"provider-{k:03d}", n, t) for k in range(200)]
        assert all(len(set(p)) == len(p) == t and all(0 <= j < n for j in p) for p in picks)
        if t:
            counts = Counter(j for p in picks for j in p)
            assert set(counts) == set(range(n)), counts  # not the first t for everyone
            assert max(counts.values()) < 2 * 200 * t / n, counts
    assert seeded_aggregators("job", "p", 4, 1) == seeded_aggregators("job", "p", 4, 1)


def test_a_part_sealed_for_the_chosen_aggregator_is_its_seed() -> None:
    flp = FlpBBCGGI19(SumVec(3, 4))
    meas = flp.valid.encode(np.random.default_rng(0).integers(0, 16, (2, 3)))
    for provider in ("a", "b", "c", "d", "e"):
        (j,) = seeded_aggregators("job", provider, 4, 1)
        parts = seal_parts(
            flp, meas, job="job", provider=provider, circuit="c", n=4, t=1, seeded=[j]
        )
        for i in range(4):
            plain = envelope.open_bulk(parts.keys[i], parts.meas_parts[i], _aad(provider, i))
            assert (plain[0] == FORMAT_SEED and len(plain) == 1 + SEED_SIZE) == (i == j)


def _aad(provider: str, i: int) -> bytes:
    from kaires_fl.aggregation.submission import _aad

    return _aad(b"meas", "job", provider, i)
