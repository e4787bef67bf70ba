"""Shamir sharing and robust reconstruction against a slow Python-int reference."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from shamir_reference import ref_interpolate_at

from kaires_fl.arith import sharing
from kaires_fl.arith.field import Field64, Field128
from kaires_fl.arith.sharing import (
    is_consistent,
    reconstruct,
    robust_open,
    robust_reconstruct,
    share,
)
from kaires_fl.errors import ConfigError, DecodingError, EncodingError

FIELDS = [Field64, Field128]
PARAMS = [(4, 1), (7, 2)]
VLEN = 6


# --- slow Python-int reference ---------------------------------------------------------------


def ref_robust(shares: dict[int, list[int]], t: int, p: int) -> tuple[list[int], list[int]] | None:
    """Brute-force decoder: a degree-t sharing within e_max errors of ``shares``, or None.

    Tries every (t+1)-subset of present parties; a party is wrong if any coordinate differs.
    """
    idx = sorted(shares)
    m = len(idx)
    e_max = (m - t - 1) // 2
    length = len(shares[idx[0]])
    for base in itertools.combinations(idx, t + 1):
        wrong = []
        for i in idx:
            for k in range(length):
                pts = [(b + 1, shares[b][k]) for b in base]
                if ref_interpolate_at(pts, i + 1, p) != shares[i][k]:
                    wrong.append(i)
                    break
        if len(wrong) <= e_max:
            secret = [
                ref_interpolate_at([(b + 1, shares[b][k]) for b in base], 0, p)
                for k in range(length)
            ]
            return secret, wrong
    return None


# --- helpers ---------------------------------------------------------------------------------


def nonzero(F: Any, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    return F.elements(rng.integers(1, 2**62, size=shape, dtype=np.int64))


def corrupt(F: Any, s: np.ndarray, mode: str, rng: np.random.Generator) -> np.ndarray:
    """``s`` plus a nonzero error in every coordinate ("all") or in one coordinate ("one")."""
    if mode == "all":
        return F.add(s, nonzero(F, s.shape, rng))
    delta = F.zeros(s.shape)
    k = tuple(int(rng.integers(0, d)) for d in s.shape)
    delta[k] = nonzero(F, (), rng)
    return F.add(s, delta)


def eq(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.all(a == b))


# --- sharing and plain reconstruction ---------------------------------------------------------


@pytest.mark.parametrize("F", FIELDS)
@pytest.mark.parametrize(("n", "t"), PARAMS)
def test_every_t_plus_1_subset_reconstructs(F: Any, n: int, t: int) -> None:
    rng = np.random.default_rng(n * 10 + t)
    secret = F.random((VLEN,), rng=rng)
    shares = share(F, secret, n, t, rng=rng)
    assert shares.shape == (n, VLEN)
    assert is_consistent(F, shares, t)
    ints = F.to_ints(shares)
    for size in range(t + 1, n + 1):
        for subset in itertools.combinations(range(n), size):
            got = reconstruct(F, {i: shares[i] for i in subset}, t)
            assert eq(got, secret), subset
    for subset in itertools.combinations(range(n), t + 1):
        ref = [
            ref_interpolate_at([(i + 1, ints[i][k]) for i in subset], 0, F.MODULUS)
            for k in range(VLEN)
        ]
        assert ref == F.to_ints(secret)


@pytest.mark.parametrize("F", FIELDS)
def test_shares_of_degree_t_not_less(F: Any) -> None:
    """t shares are not enough: the degree-(t−1) guess from t shares misses the secret."""
    rng = np.random.default_rng(7)
    secret = F.random((VLEN,), rng=rng)
    shares = share(F, secret, 7, 2, rng=rng)
    assert not eq(reconstruct(F, {0: shares[0], 1: shares[1]}, 1), secret)
    assert not is_consistent(F, shares, 1)


@pytest.mark.parametrize("F", FIELDS)
@pytest.mark.parametrize("shape", [(), (1,), (3, 4), (2, 0)])
def test_any_secret_shape(F: Any, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(3)
    secret = F.random(shape, rng=rng)
    shares = share(F, secret, 4, 1, rng=rng)
    assert shares.shape == (4, *shape)
    assert eq(reconstruct(F, {2: shares[2], 3: shares[3]}, 1), secret)
    got, bad = robust_reconstruct(F, {i: shares[i] for i in range(4)}, 4, 1)
    assert eq(got, secret) and bad == []


@pytest.mark.parametrize("F", FIELDS)
def test_t_zero_is_replication(F: Any) -> None:
    secret = F.elements([1, 2, F.MODULUS - 1])
    shares = share(F, secret, 3, 0)
    assert all(eq(shares[i], secret) for i in range(3))
    got, bad = robust_reconstruct(
        F, {0: shares[0], 1: F.add(shares[1], F.ones((3,))), 2: shares[2]}, 3, 0
    )
    assert eq(got, secret) and bad == [1]


def test_share_rejects_bad_parameters() -> None:
    F = Field64
    with pytest.raises(ConfigError, match="n ≥ t"):
        share(F, F.zeros((2,)), 2, 2)
    with pytest.raises(ConfigError, match="t must be"):
        share(F, F.zeros((2,)), 2, -1)
    with pytest.raises(EncodingError, match="elements"):
        share(F, np.zeros(2, dtype=np.float64), 4, 1)
    with pytest.raises(EncodingError):
        share(F, np.array([F.MODULUS], dtype=np.uint64), 4, 1)  # non-canonical
    with pytest.raises(DecodingError, match="needs t \\+ 1 = 3"):
        reconstruct(F, {0: F.zeros((2,)), 4: F.zeros((2,))}, 2)
    with pytest.raises(ConfigError, match="exceed"):
        robust_reconstruct(F, {0: F.zeros(2), 1: F.zeros(2), 9: F.zeros(2)}, 4, 1)


# --- robust reconstruction: every pattern within the bound ------------------------------------


def patterns(n: int, t: int) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Every (missing, wrong) pair of disjoint party sets with n − c ≥ t + 1 + 2e."""
    out: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    for c in range(n - t):
        for missing in itertools.combinations(range(n), c):
            rest = [i for i in range(n) if i not in missing]
            for e in range((n - c - t - 1) // 2 + 1):
                out.extend((missing, wrong) for wrong in itertools.combinations(rest, e))
    return out


@pytest.mark.parametrize("F", FIELDS)
@pytest.mark.parametrize(("n", "t"), PARAMS)
@pytest.mark.parametrize("mode", ["all", "one"])
def test_robust_corrects_every_pattern_within_bound(F: Any, n: int, t: int, mode: str) -> None:
    rng = np.random.default_rng(hash((n, t, mode)) % 2**32)
    pats = patterns(n, t)
    assert len(pats) == {(4, 1): 15, (7, 2): 274}[(n, t)]
    for missing, wrong in pats:
        secret = F.random((VLEN,), rng=rng)
        shares = share(F, secret, n, t, rng=rng)
        received: dict[int, np.ndarray | None] = {}
        for i in range(n):
            if i in missing:
                if i % 2:  # missing shares may be absent or None
                    received[i] = None
                continue
            received[i] = corrupt(F, shares[i], mode, rng) if i in wrong else shares[i]
        got, bad = robust_reconstruct(F, received, n, t)
        assert eq(got, secret), (missing, wrong)
        assert bad == list(wrong), (missing, wrong)


@pytest.mark.parametrize("F", FIELDS)
def test_robust_with_batched_leading_dims(F: Any) -> None:
    """A (B, m) batch is one secret: a party wrong in one entry of one row is named."""
    rng = np.random.default_rng(11)
    secret = F.random((3, 4), rng=rng)
    shares = share(F, secret, 7, 2, rng=rng)
    received = {i: shares[i] for i in range(7)}
    received[5] = shares[5].copy()
    received[5][2, 1] = F.add(received[5][2, 1], F.ones(()))
    received[0] = corrupt(F, shares[0], "all", rng)
    got, bad = robust_open(F, received, 7, 2)
    assert eq(got, secret) and bad == [0, 5]
    stacked = np.stack([received[i] for i in range(7)])  # share()'s layout is accepted too
    got, bad = robust_reconstruct(F, stacked, 7, 2)
    assert eq(got, secret) and bad == [0, 5]
    assert eq(reconstruct(F, shares, 2), secret)


# --- adversarial errors that cancel in the random combination ---------------------------------


class _CountDecodes:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = sharing._decode_word

        def counting(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(sharing, "_decode_word", counting)


def cancelling_error(F: Any, r: np.ndarray, rng: np.random.Generator, support: list[int]) -> Any:
    """A nonzero error on coordinates ``support`` whose combination with ``r`` is 0."""
    delta = F.zeros(r.shape)
    delta[support[:-1]] = nonzero(F, (len(support) - 1,), rng)
    partial = F.sum(F.mul(delta, r))
    delta[support[-1]] = F.neg(F.mul(partial, F.inv(r[support[-1]])))
    assert int(F.to_ints(F.sum(F.mul(delta, r)))) == 0
    return delta


@pytest.mark.parametrize("F", FIELDS)
@pytest.mark.parametrize("wrong", [(3,), (1, 4)])
def test_errors_cancelling_in_the_combination_are_caught(
    F: Any, wrong: tuple[int, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    n, t, seed = 7, 2, 2024
    rng = np.random.default_rng(5)
    secret = F.random((VLEN,), rng=rng)
    shares = share(F, secret, n, t, rng=rng)
    # The combination robust_reconstruct will draw from the same generator state.
    r = F.random((VLEN,), rng=np.random.default_rng(seed))
    received = {i: shares[i] for i in range(n)}
    supports = [[0, 5], [1, 2, 3, 4]]
    for w, support in zip(wrong, supports, strict=False):
        received[w] = F.add(shares[w], cancelling_error(F, r, rng, support))
    counter = _CountDecodes(monkeypatch)
    got, bad = robust_reconstruct(F, received, n, t, rng=np.random.default_rng(seed))
    assert counter.calls >= 2  # the combination missed them; the coordinate check did not
    assert eq(got, secret) and bad == list(wrong)


@pytest.mark.parametrize("F", FIELDS)
def test_cancelling_plus_plain_errors_over_the_bound_raise(
    F: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two cancelling parties and one plain one with n=7, t=2 (bound e ≤ 2): DecodingError."""
    rng = np.random.default_rng(9)
    secret = F.random((VLEN,), rng=rng)
    shares = share(F, secret, 7, 2, rng=rng)
    r = F.random((VLEN,), rng=np.random.default_rng(1))
    received = {i: shares[i] for i in range(7)}
    received[0] = F.add(shares[0], cancelling_error(F, r, rng, [0, 1]))
    received[2] = F.add(shares[2], cancelling_error(F, r, rng, [2, 3]))
    received[6] = corrupt(F, shares[6], "all", rng)
    with pytest.raises(DecodingError, match="7 of 7 shares present"):
        robust_reconstruct(F, received, 7, 2, rng=np.random.default_rng(1))


# --- beyond the bound --------------------------------------------------------------------------


@pytest.mark.parametrize("F", FIELDS)
@pytest.mark.parametrize(("n", "t"), PARAMS)
@pytest.mark.parametrize("mode", ["all", "one"])
def test_beyond_the_bound_raises(F: Any, n: int, t: int, mode: str) -> None:
    """e_max + 1 wrong shares among m ≥ t + 2 present: always DecodingError, never a value.

    (With m = t + 1 present shares there is no redundancy and nothing can be detected.)
    """
    rng = np.random.default_rng(n + t + len(mode))
    cases = 0
    for c in range(n - t - 1):
        m = n - c
        e = (m - t - 1) // 2 + 1
        for missing in itertools.combinations(range(n), c):
            rest = [i for i in range(n) if i not in missing]
            for wrong in itertools.combinations(rest, e):
                secret = F.random((VLEN,), rng=rng)
                shares = share(F, secret, n, t, rng=rng)
                received = {
                    i: corrupt(F, shares[i], mode, rng) if i in wrong else shares[i] for i in rest
                }
                with pytest.raises(DecodingError, match=f"{m} of {n} shares present"):
                    robust_reconstruct(F, received, n, t)
                assert not is_consistent(F, received, t)
                cases += 1
    assert cases > 0


@pytest.mark.parametrize("F", FIELDS)
def test_too_few_shares_raise(F: Any) -> None:
    shares = share(F, F.ones((3,)), 7, 2)
    with pytest.raises(DecodingError, match=r"2 of 7 shares present.*t \+ 1 = 3"):
        robust_reconstruct(F, {0: shares[0], 1: None, 5: shares[5]}, 7, 2)


@pytest.mark.parametrize("F", FIELDS)
def test_malformed_shares_count_as_missing_and_wrong(F: Any) -> None:
    rng = np.random.default_rng(4)
    secret = F.random((VLEN,), rng=rng)
    shares = share(F, secret, 7, 2, rng=rng)
    received: dict[int, Any] = {i: shares[i] for i in range(7)}
    received[1] = shares[1][:-1]  # wrong shape
    received[2] = np.zeros(VLEN, dtype=np.float64)  # not a field array
    bad_value = shares[3].copy()
    bad_value[0] = F.MODULUS if F is Field128 else np.uint64(F.MODULUS)  # non-canonical
    received[3] = bad_value
    # Three erasures (c = 3) leave m = 4 = t + 1 + 2·0: still decodable, nothing else wrong.
    got, bad = robust_reconstruct(F, received, 7, 2)
    assert eq(got, secret) and bad == [1, 2, 3]
    assert not is_consistent(F, received, 2)
    with pytest.raises(EncodingError, match=r"parties \[1, 2, 3\]"):
        reconstruct(F, received, 2)


# --- property test against the brute-force Python-int reference -------------------------------


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(1, 7))
    t = draw(st.integers(0, (n - 1) // 2))  # leave room for redundancy
    length = draw(st.integers(1, 3))
    edge = st.sampled_from([0, 1, 2, -1, -2])
    secret = draw(
        st.lists(st.one_of(edge, st.integers(0, 2**130)), min_size=length, max_size=length)
    )
    missing = draw(st.sets(st.integers(0, n - 1), max_size=2))
    present = [i for i in range(n) if i not in missing]
    wrong = draw(st.sets(st.sampled_from(present), min_size=1, max_size=3)) if present else set()
    how = draw(st.sampled_from(["all", "one", "forge"]))
    seed = draw(st.integers(0, 2**32 - 1))
    return dict(n=n, t=t, secret=secret, missing=missing, wrong=wrong, how=how, seed=seed)


@pytest.mark.parametrize("F", FIELDS)
@settings(max_examples=60, deadline=None)
@given(sc=scenarios())
def test_matches_brute_force_reference(F: Any, sc: dict[str, Any]) -> None:
    """Any corruption, inside or beyond the bound: value and bad set equal the reference's,
    and DecodingError exactly when the reference finds no sharing within e_max errors."""
    n, t, p = sc["n"], sc["t"], F.MODULUS
    rng = np.random.default_rng(sc["seed"])
    secret = F.elements(sc["secret"])
    shares = share(F, secret, n, t, rng=rng)
    if sc["how"] == "forge":
        # Colluders add a sharing of a nonzero value: beyond the bound this can form a
        # consistent wrong codeword, which the reference finds as well.
        offset = share(F, nonzero(F, secret.shape, rng), n, t, rng=rng)
    received: dict[int, np.ndarray] = {}
    for i in range(n):
        if i in sc["missing"]:
            continue
        s = shares[i]
        if i in sc["wrong"]:
            s = F.add(s, offset[i]) if sc["how"] == "forge" else corrupt(F, s, sc["how"], rng)
        received[i] = s
    ref_in = {i: F.to_ints(s) for i, s in received.items()}
    expected = ref_robust(ref_in, t, p) if len(received) >= t + 1 else None
    if expected is None:
        event("reference: undecodable")
        with pytest.raises(DecodingError):
            robust_reconstruct(F, received, n, t)
        return
    got, bad = robust_reconstruct(F, received, n, t)
    assert F.to_ints(got) == expected[0]
    assert bad == expected[1]
    within = len(set(received) & sc["wrong"]) <= (len(received) - t - 1) // 2
    event(f"decoded, {'within' if within else 'beyond'} the bound, {len(bad)} named")
    if within:
        assert eq(got, secret) and bad == sorted(set(received) & sc["wrong"])
