"""The trustees' threshold VRF: a common coin for a job, fixed once its inputs are closed.

For a job with closed inputs (root ρ on the ledger), the coin's base is
H_p = hash_to_point(job, ρ). Trustee j returns x_j·H_p with a DLEQ proof against its
public share X_j (:func:`kaires_fl.crypto.elgamal.exponent_share`); any t + 1 valid
shares combine (Lagrange in the exponent) to x·H_p, which is unique — every set of
t + 1 valid shares gives the same point — and unpredictable to anyone holding at most
t shares. The seed is H(job, ρ, x·H_p), 32 bytes.

Trustees answer only once the ledger shows the job's inputs closed (they verify the
ledger proof themselves, :mod:`kaires_fl.secret_management.trustee`), so a provider —
even colluding with t aggregators and t trustees — fixes its submission before anyone
can know the coin.
"""

from __future__ import annotations

from collections.abc import Mapping

from kaires_fl import schema
from kaires_fl.crypto import elgamal
from kaires_fl.crypto.elgamal import ExponentShare
from kaires_fl.crypto.group import Point, Scalar, hash_to_point
from kaires_fl.crypto.sign import H

__all__ = ["CoinShare", "coin_base", "coin_context", "coin_seed", "coin_share", "combine_coin"]

_BASE_TAG = b"kaires-fl/coin/base/v1"
_CTX_TAG = b"kaires-fl/coin/context/v1"
_SEED_TAG = b"kaires-fl/coin/seed/v1"


def coin_base(lts_id: str, job_id: str, root: str) -> Point:
    """H_p(job, inputs root) under LTS ``lts_id``: nobody knows its discrete log."""
    return hash_to_point(H(_BASE_TAG, lts_id.encode(), job_id.encode(), root.encode()))


def coin_context(lts_id: str, job_id: str, root: str) -> bytes:
    return H(_CTX_TAG, lts_id.encode(), job_id.encode(), root.encode())


class CoinShare(schema.Message, frozen=True):
    """Trustee ``trustee``'s coin share for ``job`` (with inputs root ``root``)."""

    trustee: schema.Index
    job: schema.Hex32
    root: schema.Hex32
    share: ExponentShare


def coin_share(
    trustee: int, secret_share: Scalar, public_share: Point, lts_id: str, job_id: str, root: str
) -> CoinShare:
    """Trustee step (after checking that the inputs are closed with this root)."""
    base = coin_base(lts_id, job_id, root)
    ctx = coin_context(lts_id, job_id, root)
    return CoinShare(
        trustee, job_id, root, elgamal.exponent_share(secret_share, base, ctx, public_share)
    )


def coin_seed(lts_id: str, job_id: str, root: str, value: Point) -> bytes:
    """The 32-byte coin from x·H_p."""
    return H(_SEED_TAG, lts_id.encode(), job_id.encode(), root.encode(), value.to_bytes())


def combine_coin(
    shares: Mapping[int, CoinShare | None],
    public_shares: Mapping[int, Point],
    t: int,
    lts_id: str,
    job_id: str,
    root: str,
) -> tuple[bytes, dict[int, str]]:
    """The coin from any t + 1 valid shares; returns (seed, faulty trustees with reasons).

    Every share is verified; a share for another job or root, with a wrong value or a
    wrong proof is named, a missing one (None) is named as silent.

    Raises
    ------
    ProtocolError
        if fewer than t + 1 shares are valid.
    """
    faulty: dict[int, str] = {}
    usable: dict[int, ExponentShare | None] = {}
    for j, cs in shares.items():
        if cs is None:
            faulty[j] = "no coin share (silent)"
        elif not isinstance(cs, CoinShare) or not isinstance(cs.share, ExponentShare):
            faulty[j] = f"answered with a {type(cs).__name__}, not a coin share"
        elif cs.trustee != j or cs.job != job_id or cs.root != root:
            faulty[j] = "coin share made for another trustee, job or inputs root"
        else:
            usable[j] = cs.share
    base = coin_base(lts_id, job_id, root)
    value, bad = elgamal.combine_exponent(
        usable, base, public_shares, t, coin_context(lts_id, job_id, root)
    )
    for j in bad:
        faulty[j] = "coin share fails its DLEQ proof (wrong value or proof)"
    return coin_seed(lts_id, job_id, root, value), dict(sorted(faulty.items()))
