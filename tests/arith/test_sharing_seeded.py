"""Seeded (compressed) Shamir sharing against a slow Python-int reference.

``share_seeded`` fixes the shares of t parties by seeds and completes the degree-t sharing
from the secret; these tests check that it is an ordinary Shamir sharing (reconstructs,
consistent, same polynomial as the reference), that the completion is a bijection for every
secret (so any t shares are uniform and independent of the secret, exhaustively on a tiny
field), and that robust reconstruction still corrects wrong shares.
"""

from __future__ import annotations

import itertools
import secrets
from collections import Counter
from typing import Any, ClassVar

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shamir_reference import ref_eval, ref_interpolate_at
from twin_checks import edge_array

from kaires_fl.arith import sharing
from kaires_fl.arith.field import Field64, Field128
from kaires_fl.errors import ConfigError, EncodingError

FIELDS = [Field64, Field128]
PARAMS = [(4, 1), (7, 2), (3, 0)]


class Field7(Field128):
    """A tiny prime field (generic object-array arithmetic) for exhaustive counting."""

    MODULUS: ClassVar[int] = 7
    NAME: ClassVar[bytes] = b"Field7"


@settings(max_examples=40, deadline=None)
@given(
    field=st.sampled_from(FIELDS),
    nt=st.sampled_from(PARAMS),
    length=st.integers(1, 5),
    data=st.data(),
)
def test_seeded_sharing_is_a_shamir_sharing_of_the_secret(
    field: Any, nt: tuple[int, int], length: int, data: Any
) -> None:
    n, t = nt
    p = field.MODULUS
    secret_ints = data.draw(st.lists(st.integers(0, p - 1), min_size=length, max_size=length))
    secret = field.elements(secret_ints)
    parties = data.draw(st.permutations(range(n)))[:t]
    seeds = {j: secrets.token_bytes(32) for j in parties}
    out = sharing.share_seeded(field, secret, seeds, n, t, b"ctx")
    assert out.shape == (n, length)
    for j in parties:  # a seeded party's share is what its seed expands to
        want = sharing.seeded_share(field, seeds[j], (length,), sharing.seed_context(b"ctx", j))
        assert np.array_equal(out[j], want)
    assert np.array_equal(sharing.reconstruct(field, out, t), secret)
    assert sharing.is_consistent(field, out, t)
    # Slow reference: the polynomial through (0, secret) and the seeded points, per coordinate.
    for c in range(length):
        pts = [(0, secret_ints[c])] + [(j + 1, int(out[j, c])) for j in parties]
        for i in range(n):
            assert int(out[i, c]) == ref_interpolate_at(pts, i + 1, p)


@settings(max_examples=25, deadline=None)
@given(field=st.sampled_from(FIELDS), data=st.data())
def test_completion_recovers_any_reference_polynomial(field: Any, data: Any) -> None:
    """Completing from t points of any reference polynomial gives that polynomial's shares:
    the completion inverts the map coefficients → t points, so uniform seeded shares give
    exactly :func:`share`'s distribution."""
    n, t = data.draw(st.sampled_from(PARAMS))
    p = field.MODULUS
    coeffs = data.draw(st.lists(st.integers(0, p - 1), min_size=t + 1, max_size=t + 1))
    fixed = data.draw(st.permutations(range(n)))[:t]
    known = {j: field.elements([ref_eval(coeffs, j + 1, p)]) for j in fixed}
    out = sharing.complete_sharing(field, field.elements([coeffs[0]]), known, n, t)
    assert [int(v) for v in out[:, 0]] == [ref_eval(coeffs, i + 1, p) for i in range(n)]


@pytest.mark.parametrize(("n", "t"), [(4, 1), (4, 2), (5, 2)])
def test_any_t_shares_are_uniform_for_every_secret_exhaustively(n: int, t: int) -> None:
    """On GF(7), over every value of the t fixed (seeded, uniform) shares: for each secret
    and each set of t parties, every t-tuple of their shares occurs exactly once."""
    F = Field7
    p = F.MODULUS
    fixed = list(range(t))
    for secret in range(p):
        rows = []
        for vals in itertools.product(range(p), repeat=t):
            known = {j: F.elements([v]) for j, v in zip(fixed, vals, strict=True)}
            out = sharing.complete_sharing(F, F.elements([secret]), known, n, t)
            rows.append([int(v) for v in out[:, 0]])
        for T in itertools.combinations(range(n), t):
            seen = Counter(tuple(r[i] for i in T) for r in rows)
            assert len(seen) == p**t and set(seen.values()) == {1}, (secret, T)


def test_a_seed_expands_to_uniform_elements_statistically() -> None:
    """Coarse check of the XOF share: Field64 elements' top bits are balanced."""
    v = sharing.seeded_share(Field64, bytes(32), (20000,), b"x")
    top = (v >> np.uint64(62)).astype(int)
    counts = np.bincount(top, minlength=4)
    # p ≈ 2^64 − 2^32: the four quarters are equally likely; 6 sigma bounds
    assert all(abs(c - 5000) < 6 * np.sqrt(20000 * 0.25 * 0.75) for c in counts), counts


@settings(max_examples=30, deadline=None)
@given(field=st.sampled_from(FIELDS), data=st.data())
def test_robust_reconstruction_corrects_wrong_seeded_or_full_shares(field: Any, data: Any) -> None:
    """n = 7, t = 2 corrects e ≤ 2 wrong shares, seeded holders (0, 1) or full ones alike."""
    n, t = 7, 2
    secret = field.random((9,))
    seeds = {0: secrets.token_bytes(32), 1: secrets.token_bytes(32)}
    out = sharing.share_seeded(field, secret, seeds, n, t)
    bad = sorted(data.draw(st.sets(st.integers(0, n - 1), min_size=1, max_size=2)))
    shares = {i: out[i].copy() for i in range(n)}
    for i in bad:
        k = data.draw(st.integers(0, 8))
        shares[i][k] = field.add(shares[i][k], field.elements(data.draw(st.integers(1, 99))))
    got, wrong = sharing.robust_reconstruct(field, shares, n, t)
    assert np.array_equal(got, secret) and wrong == bad


def test_seeded_sharing_refuses_wrong_inputs() -> None:
    F = Field64
    s = F.elements([1, 2])
    with pytest.raises(ConfigError):
        sharing.complete_sharing(F, s, {}, 4, 1)  # t = 1 needs one fixed share
    with pytest.raises(ConfigError):
        sharing.complete_sharing(F, s, {4: s}, 4, 1)  # party out of range
    with pytest.raises(EncodingError):
        sharing.complete_sharing(F, s, {0: F.elements([1])}, 4, 1)  # shape
    with pytest.raises(ConfigError):
        sharing.complete_sharing(Field7, Field7.elements([1]), {0: Field7.elements([2])}, 7, 1)
    with pytest.raises(EncodingError):
        sharing.seeded_share(F, b"short", (2,))
    # different contexts and different parties give independent streams
    a = sharing.seeded_share(F, bytes(32), (4,), sharing.seed_context(b"c", 0))
    b = sharing.seeded_share(F, bytes(32), (4,), sharing.seed_context(b"c", 1))
    assert not np.array_equal(a, b)


# ------------------------------------------------------------ the fused completion kernel

P64 = Field64.MODULUS


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    nt=st.sampled_from([(2, 1), (4, 1), (7, 2), (10, 3), (5, 4)]),
    length=st.integers(0, 2100),  # across COMPLETE_TILE = 1024 boundaries
    col=st.integers(0, 3),
)
def test_complete_rows_kernel_and_twin_against_python_ints(
    seed: int, nt: tuple[int, int], length: int, col: int
) -> None:
    """``_kernels.complete_rows`` and its numpy twin write the same rows as Python ints
    (rows[d, col + j] = w[r, 0]·secret[j] + Σ_k w[r, k + 1]·rows[src[k], col + j] mod p),
    on arrays rich in edge values, and touch nothing else."""
    from kaires_fl.arith import _kernels as kern
    from kaires_fl.arith import _twins

    n, t = nt
    rng = np.random.default_rng(seed)

    parties = rng.permutation(n)
    src, dst = np.sort(parties[:t]), np.sort(parties[t:])
    w = edge_array(rng, (n - t, t + 1))
    secret = edge_array(rng, (length,))
    rows = edge_array(rng, (n, col + length + 2))
    want = rows.astype(object)
    for r, d in enumerate(dst):
        for j in range(length):
            acc = int(w[r, 0]) * int(secret[j])
            acc += sum(int(w[r, k + 1]) * int(rows[src[k], col + j]) for k in range(t))
            want[d, col + j] = acc % P64
    for fn in (kern.tiered("complete_rows").kernel, _twins.complete_rows):
        got = rows.copy()
        fn(w.copy(), secret.copy(), got, col, src.astype(np.int64), dst.astype(np.int64))
        assert got.astype(object).tolist() == want.tolist(), fn


@pytest.mark.parametrize("field", FIELDS)
def test_share_seeded_into_rows_writes_only_its_columns(field: Any) -> None:
    """``out``/``col``: the same shares as a fresh sharing, written into the given columns
    of ``out`` (returned as a view of them); the other columns are left as they were."""
    n, t = 5, 2
    secret = field.random((3, 4))
    seeds = {1: secrets.token_bytes(32), 3: secrets.token_bytes(32)}
    plain = sharing.share_seeded(field, secret, seeds, n, t, b"ctx")
    out = field.random((n, 1 + 12 + 2))
    before = out.copy()
    got = sharing.share_seeded(field, secret, seeds, n, t, b"ctx", out=out, col=1)
    assert got.shape == (n, 3, 4) and np.array_equal(got, plain)
    assert np.array_equal(out[:, 1:13].reshape(n, 3, 4), plain)
    assert np.array_equal(out[:, [0, 13, 14]], before[:, [0, 13, 14]])
    if field is Field64:
        assert np.shares_memory(got, out)
    for bad in (out[:, :10], out.T.copy().T, out.astype(object) if field is Field64 else None):
        if bad is None:
            continue
        with pytest.raises(ConfigError, match="out must be"):
            sharing.share_seeded(field, secret, seeds, n, t, b"ctx", out=bad, col=1)
    with pytest.raises(ConfigError, match="exactly t"):
        sharing.share_seeded(field, secret, {1: bytes(32)}, n, t)
