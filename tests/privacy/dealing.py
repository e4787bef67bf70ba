"""The dealing steps the noise tests share: a committee's keys, and the deals checked,
opened by every aggregator and turned into its noise round."""

from __future__ import annotations

from typing import Any

from kaires_fl.crypto.elgamal import RecipientKey
from kaires_fl.crypto.envelope import EnvelopeKeyPair
from kaires_fl.crypto.sign import Identity
from kaires_fl.privacy.mechanism import check_deals, noise_round, open_deal

Committee = tuple[list[Identity], list[EnvelopeKeyPair]]


def make_committee(n: int) -> Committee:
    """``n`` members' signing identities and envelope key pairs."""
    return [Identity.generate() for _ in range(n)], [EnvelopeKeyPair.generate() for _ in range(n)]


def settle_deals(
    plan: Any, job: str, deals: list[Any], committee: Committee, coin: bytes
) -> tuple[list[Any], dict[int, dict[int, Any]], dict[int, Any]]:
    """``check_deals`` (signers: the committee's identities), then every aggregator i opens
    its part of each kept deal and computes its noise round: (kept deals, shares[i][dealer],
    rounds[i])."""
    ids, kps = committee
    deals = check_deals(plan, job, deals, [i.public.hex() for i in ids])
    rk = [RecipientKey.from_x25519(k) for k in kps]
    n = len(ids)
    shares = {i: {d.dealer: open_deal(plan, d, i, rk[i]) for d in deals} for i in range(n)}
    rounds = {i: noise_round(plan, coin, deals, shares[i]) for i in range(n)}
    return deals, shares, rounds
