"""Verification of Shamir-shared submissions (BFT Prio, step 5.3 of ``docs/protocol.md``).

Each aggregator i holds Shamir shares (point i + 1, degree t) of a batch of measurements and
of their FLP proofs. Because ``FlpBBCGGI19.query`` is affine in (measurement, proof) with
constants added in full, running it on aggregator i's shares yields aggregator i's Shamir
share of the verifier. The verifier shares are opened with ``sharing.robust_reconstruct``
(Reed–Solomon decoding: up to e wrong and c missing aggregators while n − c ≥ t + 1 + 2e,
naming the wrong ones) and ``decide`` runs on the opened verifier.

Opening the verifier reveals nothing beyond validity: it is exactly what the two-party
Prio3 verifiers exchange (circuit output, wire and gadget-polynomial values at a random
point masked by the wire seeds).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from kaires_fl.arith import sharing
from kaires_fl.arith.flp import FlpBBCGGI19
from kaires_fl.errors import ConfigError, EncodingError

__all__ = [
    "decide_opened",
    "open_verifiers",
    "query_shares",
    "share_submission",
    "verify_shared",
]


def share_submission(
    flp: FlpBBCGGI19,
    meas: np.ndarray,
    proof: np.ndarray,
    n: int,
    t: int,
    rng: np.random.Generator | None = None,
) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Shamir-share a batch of measurements ``(B, MEAS_LEN)`` and proofs ``(B, PROOF_LEN)``.

    Post: ``(meas_shares, proof_shares)``, each mapping aggregator ``i`` (0-based) to its
    share (same shape as the input). One sharing polynomial per coordinate.
    """
    F = flp.field
    ms = sharing.share(F, meas, n, t, rng=rng)
    ps = sharing.share(F, proof, n, t, rng=rng)
    return {i: ms[i] for i in range(n)}, {i: ps[i] for i in range(n)}


def query_shares(
    flp: FlpBBCGGI19,
    meas_share: np.ndarray,
    proof_share: np.ndarray,
    query_rand: np.ndarray,
    joint_rand: np.ndarray | None,
) -> np.ndarray:
    """One aggregator's verifier share ``(..., VERIFIER_LEN)`` from its shares.

    ``query_rand``/``joint_rand`` are public: the same for every aggregator (one vector for
    the batch, or one per record).
    """
    return flp.query(meas_share, proof_share, query_rand, joint_rand)


def open_verifiers(
    flp: FlpBBCGGI19, verifier_shares: Mapping[int, np.ndarray | None], n: int, t: int
) -> tuple[np.ndarray, list[int], list[int]]:
    """Open verifier shares robustly: ``(verifier, wrong, missing)``.

    ``wrong``: aggregators whose shares were off the degree-t codeword (or malformed);
    ``missing``: aggregators that sent nothing (absent or ``None``). Raises
    ``DecodingError`` when more are faulty than n − c ≥ t + 1 + 2e allows.
    """
    if n < t + 1:
        raise ConfigError(f"n = {n} aggregators cannot open a degree-{t} sharing")
    missing = sorted(i for i in range(n) if verifier_shares.get(i) is None)
    verifier, wrong = sharing.robust_reconstruct(flp.field, verifier_shares, n, t)
    return verifier, sorted(wrong), missing


def decide_opened(flp: FlpBBCGGI19, verifier: np.ndarray) -> np.ndarray:
    """Per-record acceptance ``(...)`` from the opened verifier ``(..., VERIFIER_LEN)``."""
    return flp.decide(verifier)


def verify_shared(
    flp: FlpBBCGGI19,
    meas_shares: Mapping[int, np.ndarray | None],
    proof_shares: Mapping[int, np.ndarray | None],
    query_rand: np.ndarray,
    joint_rand: np.ndarray | None,
    n: int,
    t: int,
) -> tuple[np.ndarray, list[int]]:
    """Query every present aggregator's shares, open robustly, decide.

    An aggregator with no measurement or proof share is treated as silent, one whose shares
    are malformed (wrong shape or dtype) as wrong. Returns ``(accept, faulty)``: ``accept``
    bool ``(B,)`` (leading batch shape of the shares) and ``faulty`` the sorted aggregators
    that were silent, malformed or sent a wrong verifier share.

    In a deployment each aggregator runs :func:`query_shares` itself and publishes the
    result; this convenience runs all of them in one process (simulation and tests).
    """
    ver_shares: dict[int, np.ndarray | None] = {}
    malformed: list[int] = []
    for i in range(n):
        m, p = meas_shares.get(i), proof_shares.get(i)
        if m is None or p is None:
            ver_shares[i] = None
            continue
        try:
            ver_shares[i] = query_shares(flp, m, p, query_rand, joint_rand)
        except EncodingError:  # wrong shape or dtype: that aggregator's shares are bad
            ver_shares[i] = None
            malformed.append(i)
    verifier, wrong, missing = open_verifiers(flp, ver_shares, n, t)
    return decide_opened(flp, verifier), sorted(set(wrong) | set(missing) | set(malformed))
