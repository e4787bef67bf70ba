"""Shamir sharing of whole vectors and robust reconstruction (BFT Prio).

Party ``i`` (0-based) holds ``f(i + 1)`` where ``f`` has degree ``t`` and ``f(0)`` is the
secret. A secret may have any shape (a scalar, a vector of length ``m``, a batch of vectors
``(B, m)``, ...): every coordinate gets its own polynomial, and all coordinates are shared,
reconstructed and decoded together, so a party is either right everywhere or named wrong.

Robust reconstruction is Reed–Solomon decoding. First every coordinate of the present shares
is checked to lie on one degree-``t`` polynomial (interpolate from ``t + 1`` shares, evaluate
at the others: one matrix product); honest rounds stop there and interpolate the secret (one
more product). Otherwise, since a faulty node is wrong in many coordinates at once, the wrong
parties are located once, by Berlekamp–Welch on a random linear combination of the
coordinates, and the check is repeated on the remaining shares. If it still fails (errors that
cancel in the combination: probability 1/p for a fresh combination, but never trusted), the
first disagreeing coordinate is decoded on its own and its wrong parties are added; this
repeats at most ``e + 1`` times. The answer is therefore always the unique degree-``t``
codeword within ``e_max = (n − c − t − 1) // 2`` errors of the present shares, or a
:class:`~kaires_fl.errors.DecodingError`; decoding costs O(n³) small field operations (Python
loops over n only, never over the vector length).

Bound: with ``c`` shares missing (absent, ``None`` or malformed) and ``e`` wrong, decoding
succeeds while ``n − c ≥ t + 1 + 2e``. Beyond it, wrong shares that do not conspire are
detected (``DecodingError``) except with probability about ``n/p``; shares from more than
``(n − c − t − 1) / 2`` colluding parties can form another codeword, which no decoder can tell
apart — that is why BFT Prio requires ``n ≥ 3t + 1`` with at most ``t`` faulty aggregators.

Field elements are arrays of ``F`` (:mod:`kaires_fl.arith.field`), used through its public
API — but for the completion of a seeded Field64 sharing, one pass of the kernel
``complete_rows`` (:mod:`kaires_fl.arith._kernels`, no temporaries; other fields take a
matrix product); a share is ``None``/absent when missing, or any array of ``F`` of the
secret's shape (a stacked ``(n, *shape)`` array from :func:`share` is accepted in place of a
mapping).
"""

from __future__ import annotations

import functools
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from kaires_fl.arith import _kernels as kern
from kaires_fl.arith.poly import lagrange_coefficients
from kaires_fl.errors import ConfigError, DecodingError, EncodingError

__all__ = [
    "complete_sharing",
    "is_consistent",
    "reconstruct",
    "robust_open",
    "robust_reconstruct",
    "seeded_share",
    "share",
    "share_seeded",
]

Shares = Mapping[int, "np.ndarray | None"] | np.ndarray


# --- helpers ---------------------------------------------------------------------------------


def _eq(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise equality of canonical field arrays, as a bool array."""
    return np.asarray(a == b, dtype=bool)


def _is_field_array(F: Any, a: object) -> bool:
    """Whether ``a`` is an array of canonical elements of ``F`` (values in ``[0, p)``)."""
    if not isinstance(a, np.ndarray) or a.dtype != F.DTYPE:
        return False
    if not a.size:
        return True
    # A faulty party's value ≥ p would otherwise silently alias another element.
    if a.dtype.kind == "u":
        return int(a.max()) < F.MODULUS
    try:
        return bool(np.all(a >= 0) and np.all(a < F.MODULUS))
    except TypeError:  # an object array holding something other than ints
        return False


def _os_seed() -> int:
    return int.from_bytes(os.urandom(32), "little")


def _points(F: Any, idx: Iterable[int]) -> np.ndarray:
    """Evaluation points x = i + 1 of the 0-based parties ``idx``."""
    return F.elements([int(i) + 1 for i in idx])


def _vandermonde(F: Any, xs: np.ndarray, k: int) -> np.ndarray:
    """``V[i, j] = xs[i] ** j`` for ``j < k``; shape ``(len(xs), k)``."""
    cols = [F.ones(xs.shape)]
    for _ in range(1, k):
        cols.append(F.mul(cols[-1], xs))
    return np.stack(cols[:k], axis=1)


@functools.lru_cache(maxsize=1024)
def _weights(F: Any, xs: tuple[int, ...], targets: tuple[int, ...]) -> np.ndarray:
    """``W`` with ``W @ f(xs) = f(targets)`` for every ``f`` of degree < len(xs); shape
    ``(len(targets), len(xs))``. Cached and read-only; points are ints (x = party + 1, or 0)."""
    W = lagrange_coefficients(F, F.elements(list(xs)), F.elements(list(targets)))
    W.flags.writeable = False
    return W


# --- small linear algebra over F (sizes ≤ n; loops over n only) ------------------------------


def _solve(F: Any, A: np.ndarray, b: np.ndarray) -> np.ndarray | None:
    """Some solution ``x`` of ``A x = b`` (free variables 0), or ``None`` if inconsistent."""
    r, c = A.shape
    M = np.concatenate([A, b[:, None]], axis=1)
    zero = F.zeros(())
    pivots: list[int] = []
    row = 0
    for col in range(c):
        if row == r:
            break
        nonzero = ~_eq(M[row:, col], zero)
        if not nonzero.any():
            continue
        p = row + int(np.argmax(nonzero))
        if p != row:
            M[[row, p]] = M[[p, row]]
        M[row] = F.mul(M[row], F.inv(M[row, col]))
        factors = M[:, col].copy()
        factors[row] = zero
        M = F.sub(M, F.mul(factors[:, None], M[row][None, :]))
        pivots.append(col)
        row += 1
    if not _eq(M[row:, c], zero).all():
        return None
    x = F.zeros((c,))
    for i, col in enumerate(pivots):
        x[col] = M[i, c]
    return x


def _poly_divmod_monic(F: Any, num: np.ndarray, den: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quotient and remainder of ``num / den`` (coefficients lowest first, ``den`` monic)."""
    num = num.copy()
    d = den.shape[0]
    dq = num.shape[0] - d
    q = F.zeros((max(dq + 1, 0),))
    for k in range(dq, -1, -1):
        lead = num[k + d - 1]
        q[k] = lead
        num[k : k + d] = F.sub(num[k : k + d], F.mul(lead, den))
    return q, num[: d - 1]


def _decode_word(
    F: Any, xs: np.ndarray, ys: np.ndarray, t: int, e: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """Berlekamp–Welch: the degree-``t`` ``f`` within ``e`` errors of ``(xs, ys)``, or ``None``.

    Pre: ``len(xs) ≥ t + 1 + 2e``. Post: returns ``(coeffs of f, wrong: bool mask)`` with
    ``wrong.sum() ≤ e``; ``None`` when no such ``f`` exists.
    """
    V = _vandermonde(F, xs, t + e + 1)  # Q has degree ≤ t + e; E is monic of degree e
    A = np.concatenate([V, F.neg(F.mul(ys[:, None], V[:, :e]))], axis=1)
    sol = _solve(F, A, F.mul(ys, V[:, e]) if e else ys)
    if sol is None:
        return None
    Q = sol[: t + e + 1]
    E = np.concatenate([sol[t + e + 1 :], F.ones((1,))])
    f, rem = _poly_divmod_monic(F, Q, E)
    if not _eq(rem, F.zeros(())).all():
        return None
    wrong = ~_eq(F.dot(V[:, : t + 1], f), ys)
    if int(wrong.sum()) > e:
        return None
    return f, wrong


# --- public API ------------------------------------------------------------------------------


def _check_params(n: int | None, t: int) -> None:
    if not isinstance(t, (int, np.integer)) or t < 0:
        raise ConfigError(f"degree t must be an integer ≥ 0, got {t!r}")
    if n is not None and (not isinstance(n, (int, np.integer)) or n < t + 1):
        raise ConfigError(
            f"n = {n!r} parties cannot hold a degree-{t} sharing: need n ≥ t + 1 = {t + 1} "
            "(and n ≥ 3t + 1 for BFT robustness); raise n or lower t"
        )


def share(
    F: Any, secret: np.ndarray, n: int, t: int, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Shamir-share ``secret`` (any shape) among ``n`` parties with degree ``t``.

    Pre: ``secret`` is an array of ``F``; ``n ≥ t + 1``. ``rng`` (tests only) seeds the
    coefficients; by default they come from the field's CSPRNG.
    Post: ``out[i] = f(i + 1)``, shape ``(n, *secret.shape)``; any ``t`` rows are uniform and
    independent of the secret.
    """
    _check_params(n, t)
    if n >= F.MODULUS:
        raise ConfigError(f"n = {n} points do not fit in a field of size {F.MODULUS}")
    if not _is_field_array(F, secret):
        raise EncodingError(
            "secret must be a canonical array of the field "
            f"({F.__name__}); convert it with {F.__name__}.elements(values)"
        )
    shape = secret.shape
    flat = secret.reshape(1, -1)  # (1, L)
    L = flat.shape[1]
    coeffs = np.concatenate([flat, F.random((t, L), rng=rng)], axis=0)  # (t+1, L)
    V = _vandermonde(F, _points(F, range(n)), t + 1)  # (n, t+1)
    return F.matmul(V, coeffs).reshape((n, *shape))


def seeded_share(F: Any, seed: bytes, shape: tuple[int, ...], context: bytes = b"") -> np.ndarray:
    """The share a 32-byte ``seed`` stands for: ``F.expand_seed(seed, shape, context)``.

    Pre: ``seed`` is uniformly random and secret to its holder. Post: uniform elements of
    ``F`` (AES-256-CTR keystream, rejection sampling), a deterministic function of its
    arguments, so the holder of the seed and anyone it later discloses the seed to compute
    the same share.
    """
    if len(seed) != 32:
        raise EncodingError(f"a share seed has 32 bytes, got {len(seed)}")
    return F.expand_seed(seed, shape, context)


def complete_sharing(
    F: Any, secret: np.ndarray, known: Mapping[int, np.ndarray], n: int, t: int
) -> np.ndarray:
    """The shares of every party given the secret and ``t`` parties' shares already fixed.

    Pre: ``known`` maps ``t`` distinct 0-based parties (``< n``) to arrays of ``F`` of the
    secret's shape. Post: ``out[i] = f(i + 1)``, shape ``(n, *secret.shape)``, for the unique
    ``f`` of degree ≤ t with ``f(0) = secret`` and ``f(j + 1) = known[j]``: the degree-t
    polynomial is fixed by t + 1 points. When the ``known`` shares are uniform and
    independent of the secret, ``out`` is distributed exactly as :func:`share`'s output (the
    map from ``t`` free coefficients to ``t`` points other than 0 is a bijection).
    """
    _check_completion(F, secret, known, n, t)
    if any(not _is_field_array(F, v) or v.shape != secret.shape for v in known.values()):
        raise EncodingError(
            f"secret and fixed shares must be canonical {F.__name__} arrays of one shape"
        )
    rows = np.empty((n, secret.size), dtype=F.DTYPE)
    fixed = sorted(int(j) for j in known)
    for j in fixed:
        rows[j] = known[j].reshape(-1)
    _complete_rows(F, secret, rows, 0, fixed)
    return rows.reshape((n, *secret.shape))


def _check_completion(F: Any, secret: np.ndarray, fixed: Iterable[int], n: int, t: int) -> None:
    """Pre-conditions shared by :func:`complete_sharing` and :func:`share_seeded`."""
    _check_params(n, t)
    if n >= F.MODULUS:
        raise ConfigError(f"n = {n} points do not fit in a field of size {F.MODULUS}")
    parties = sorted(int(j) for j in fixed)
    if len(parties) != t or len(set(parties)) != t or any(not 0 <= j < n for j in parties):
        raise ConfigError(
            f"a degree-{t} sharing is completed from exactly t = {t} distinct parties' shares "
            f"in [0, {n}); got parties {parties}"
        )
    if not _is_field_array(F, secret):
        raise EncodingError(
            f"the secret must be a canonical {F.__name__} array; convert it with "
            f"{F.__name__}.elements(values)"
        )


def _fused(F: Any) -> bool:
    """Whether ``F`` is Field64 (uint64 elements modulo the kernels' prime)."""
    dtype, modulus = F.DTYPE, F.MODULUS
    return bool(dtype == np.uint64 and modulus == int(kern.P))


def _complete_rows(
    F: Any, secret: np.ndarray, rows: np.ndarray, col: int, fixed: list[int]
) -> None:
    """Complete a degree-t sharing in columns ``col .. col + secret.size`` of ``rows``
    (n, width): the rows of the sorted parties ``fixed`` (t of them) hold their shares, every
    other row receives f(i + 1) for the f through (0, secret) and (j + 1, rows[j]).
    Field64: one fused kernel pass, no temporaries; other fields: a matrix product.
    """
    n = rows.shape[0]
    others = [i for i in range(n) if i not in fixed]
    if not others:
        return
    W = _weights(F, (0, *(j + 1 for j in fixed)), tuple(i + 1 for i in others))  # (n−t, t+1)
    flat = np.ascontiguousarray(secret).reshape(-1)
    cols = slice(col, col + flat.size)
    if _fused(F):
        if flat.flags.writeable:  # one numba specialisation: the secret typed read-only
            flat = flat.view()
            flat.flags.writeable = False
        src, dst = np.array(fixed, np.int64), np.array(others, np.int64)
        kern.complete_rows(W.copy(), flat, rows, col, src, dst)
        return
    Y = np.concatenate([flat[None, :], rows[fixed, cols]])  # (t + 1, L)
    rows[others, cols] = F.matmul(W, Y)


def share_seeded(
    F: Any,
    secret: np.ndarray,
    seeds: Mapping[int, bytes],
    n: int,
    t: int,
    context: bytes = b"",
    *,
    out: np.ndarray | None = None,
    col: int = 0,
) -> np.ndarray:
    """Shamir-share ``secret`` with the shares of ``t`` parties expanded from 32-byte seeds.

    Pre: ``seeds`` maps ``t`` distinct parties to fresh uniformly random 32-byte seeds.
    ``out`` (optional): a C-contiguous ``(n, width)`` array of ``F`` to write the shares
    into, in its columns ``col .. col + secret.size`` (e.g. after a header word, so that a
    row is a ready-made plaintext).
    Post: ``out[j] = seeded_share(F, seeds[j], secret.shape, context_j)`` for the seeded
    parties (``context_j = context + j`` as 4 little-endian bytes) and the other rows complete
    the degree-t sharing of ``secret`` (:func:`complete_sharing`); returned with shape
    ``(n, *secret.shape)`` (a view of ``out`` when given). Only those n − t rows need to
    travel; a seeded party gets its seed instead of its share.
    """
    _check_completion(F, secret, seeds, n, t)
    L = secret.size
    if out is None:
        rows, col = np.empty((n, L), dtype=F.DTYPE), 0
    else:
        rows = out
        if (
            rows.dtype != F.DTYPE
            or rows.ndim != 2
            or rows.shape[0] != n
            or not rows.flags.c_contiguous
            or not rows.flags.writeable
            or not 0 <= col <= rows.shape[1] - L
        ):
            raise ConfigError(
                f"out must be a writable C-contiguous ({n}, ≥ {col + L}) {F.__name__} array"
            )
    fixed = sorted(int(j) for j in seeds)
    for j in fixed:
        rows[j, col : col + L] = seeded_share(F, seeds[j], (L,), seed_context(context, j))
    _complete_rows(F, secret, rows, col, fixed)
    return rows[:, col : col + L].reshape((n, *secret.shape))


def seed_context(context: bytes, party: int) -> bytes:
    """The XOF context of party ``party``'s seeded share (binds the party's index)."""
    return bytes(context) + int(party).to_bytes(4, "little")


def _as_array(F: Any, s: Any) -> Any:
    """Scalar shares (``shares[i]`` of a 1-D sharing) as 0-d arrays; anything else unchanged."""
    if isinstance(s, np.generic):
        return np.asarray(s)
    if np.dtype(object) == F.DTYPE and isinstance(s, int):
        out = np.empty((), dtype=object)
        out[()] = s
        return out
    return s


def _present(F: Any, shares: Shares) -> tuple[list[int], list[np.ndarray], list[int]]:
    """Sorted present indices, their arrays, and indices of malformed shares."""
    items: list[tuple[int, Any]]
    if isinstance(shares, np.ndarray):
        items = [(i, shares[i, ...]) for i in range(shares.shape[0])]
    else:
        items = sorted((int(i), _as_array(F, s)) for i, s in shares.items() if s is not None)
    for i, _ in items:
        if i < 0 or i + 1 >= F.MODULUS:
            raise ConfigError(f"share index {i} is not a party index (0-based, ≥ 0)")
    valid = [_is_field_array(F, s) for _, s in items]
    ok = [item for item, v in zip(items, valid, strict=True) if v]
    malformed = [i for (i, _), v in zip(items, valid, strict=True) if not v]
    if ok:
        # A faulty party may send a share of the wrong shape: treat it like a malformed share.
        counts = Counter(s.shape for _, s in ok).most_common()
        if len(counts) > 1 and counts[0][1] == counts[1][1]:
            raise DecodingError(
                f"the shares disagree on their shape ({dict(counts)}) with no majority; "
                "check that every party shares the same vector"
            )
        good_shape = counts[0][0]
        malformed += [i for i, s in ok if s.shape != good_shape]
        ok = [(i, s) for i, s in ok if s.shape == good_shape]
    return [i for i, _ in ok], [s for _, s in ok], sorted(malformed)


def reconstruct(F: Any, shares: Shares, t: int) -> np.ndarray:
    """The secret from ``t + 1`` shares (the lowest present indices are used).

    Pre: the used shares are honest (use :func:`robust_reconstruct` otherwise); ``shares`` maps
    0-based party index to share (``None`` = missing) or is a stacked array ``(n, *shape)``.
    Post: ``f(0)`` of the degree-``t`` polynomial through the used shares.
    """
    _check_params(None, t)
    idx, arrays, malformed = _present(F, shares)
    if malformed:
        raise EncodingError(
            f"shares of parties {malformed} are not canonical {F.__name__} arrays of the common "
            "shape; drop them or use robust_reconstruct, which tolerates them"
        )
    if len(idx) < t + 1:
        raise DecodingError(
            f"{len(idx)} share(s) present but a degree-{t} sharing needs t + 1 = {t + 1}; "
            "collect more shares"
        )
    shape = arrays[0].shape
    Y = np.stack(arrays[: t + 1]).reshape(t + 1, -1)
    w = _weights(F, tuple(i + 1 for i in idx[: t + 1]), (0,))
    return F.matmul(w, Y)[0].reshape(shape)


def is_consistent(F: Any, shares: Shares, t: int) -> bool:
    """Whether every coordinate of the present shares lies on one degree-``t`` polynomial.

    Missing (``None``) shares are ignored; malformed ones make the answer ``False``.
    """
    _check_params(None, t)
    idx, arrays, malformed = _present(F, shares)
    if malformed:
        return False
    if len(idx) <= t + 1:
        return True
    Y = np.stack(arrays).reshape(len(arrays), -1)
    W = _weights(F, tuple(i + 1 for i in idx[: t + 1]), tuple(i + 1 for i in idx[t + 1 :]))
    return bool(_eq(F.matmul(W, Y[: t + 1]), Y[t + 1 :]).all())


def _decoding_error(n: int, m: int, t: int, e_max: int, why: str) -> DecodingError:
    return DecodingError(
        f"robust reconstruction failed: {m} of {n} shares present (c = {n - m} missing or "
        f"malformed); degree t = {t} corrects at most e = {e_max} wrong share(s) since "
        f"n − c ≥ t + 1 + 2e must hold, and {why}. Collect the missing shares (or more "
        "parties' shares) and retry; do not use any value from this round"
    )


def robust_reconstruct(
    F: Any, shares: Shares, n: int, t: int, *, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, list[int]]:
    """The secret and the sorted 0-based parties whose shares were wrong.

    Pre: ``shares`` maps party index (``0 ≤ i < n``) to its share, missing shares absent or
    ``None`` (or a stacked array ``(n, *shape)``); shares may have any common shape and are
    decoded together (a party wrong in one coordinate is wrong). A share that is not a
    canonical ``F`` array of the majority shape counts as missing and its party as wrong.
    ``rng`` (tests only) draws the random combination used to locate wrong parties (default:
    seeded from the OS; it is only drawn when the shares are not all consistent).
    Post: with ``c`` missing and ``e`` wrong shares and ``n − c ≥ t + 1 + 2e``, returns the
    shared secret and exactly the wrong parties. Otherwise raises ``DecodingError`` unless the
    present shares are within ``(n − c − t − 1) // 2`` errors of another degree-``t``
    sharing (only colluding parties beyond the bound can arrange that).
    """
    _check_params(n, t)
    idx, arrays, malformed = _present(F, shares)
    if any(i >= n for i in [*idx, *malformed]):
        raise ConfigError(f"share indices {sorted(set(idx + malformed))} exceed n − 1 = {n - 1}")
    m = len(idx)
    e_max = (m - t - 1) // 2
    if m < t + 1:
        raise _decoding_error(n, m, t, 0, f"fewer than t + 1 = {t + 1} shares are present")
    shape = arrays[0].shape
    Y = np.stack(arrays).reshape(len(arrays), -1)  # (m, L)
    L = Y.shape[1]
    xs = _points(F, idx)

    wrong = np.zeros(m, dtype=bool)
    combined = False
    while True:
        good = np.flatnonzero(~wrong)
        base, rest = good[: t + 1], good[t + 1 :]
        if not L or not rest.size:
            break
        W = _weights(F, tuple(idx[k] + 1 for k in base), tuple(idx[k] + 1 for k in rest))
        agree = _eq(F.matmul(W, Y[base]), Y[rest]).all(axis=0)  # (L,)
        if agree.all():
            break
        if not combined:
            # Locate the wrong parties once, on a random combination of all coordinates. Its
            # unpredictability only saves work (errors cancelling in it are caught by this
            # coordinate check on the next pass), so a fast generator seeded by the OS will do.
            combined = True
            gen = rng if rng is not None else np.random.default_rng(_os_seed())
            r = F.random((L,), rng=gen)
            z = np.stack([F.sum(F.mul(Y[k], r)) for k in range(m)])  # m ≤ n rows
            decoded = _decode_word(F, xs, z, t, e_max)
            if decoded is None:
                raise _decoding_error(n, m, t, e_max, "the shares are farther than that")
            wrong = decoded[1]
            continue
        # Errors cancelled in the combination: decode the first disagreeing coordinate alone.
        j = int(np.argmin(agree))
        decoded = _decode_word(F, xs, Y[:, j], t, e_max)
        if decoded is None or not (decoded[1] & ~wrong).any():
            raise _decoding_error(n, m, t, e_max, f"coordinate {j} is farther than that")
        wrong |= decoded[1]
        if int(wrong.sum()) > e_max:
            raise _decoding_error(n, m, t, e_max, "more shares than that are wrong")
    w = _weights(F, tuple(idx[k] + 1 for k in base), (0,))
    secret = F.matmul(w, Y[base])[0].reshape(shape)
    bad = sorted([idx[k] for k in np.flatnonzero(wrong)] + malformed)
    return secret, bad


#: The opening used by BFT verification: identical to :func:`robust_reconstruct`.
robust_open = robust_reconstruct
