"""Resharing the collective key to a new trustee set without changing X.

Old trustees (threshold t + 1) hand their secret to a new set of n' trustees with
threshold t' + 1 (n' ≥ 2t' + 1); X stays the same, so every write made to it remains
readable, and the old shares become useless together with the new ones (proactive
security, as in CALYPSO's resharing / Desmedt–Jajodia redistribution).

1. **deal** — old trustee j Feldman-shares its own x_j among the new trustees: polynomial
   g_j of degree t' with g_j(0) = x_j, commitments C_{j,m} = g_{j,m}·G and a sealed share
   g_j(k+1) for each new trustee k. Everyone checks C_{j,0} = X_j (the public share
   registered in the LTS): a dealer cannot substitute another secret.
2. **complain / justify** — as in the DKG (:mod:`.dkg`): a new trustee complains about a
   bad or missing share, the dealer publishes it, everyone checks it. Dealers that are
   silent, substitute their secret, or fail a complaint are excluded and named.
3. **combine** — the t + 1 qualified dealers with the lowest indices, D, are used by
   everyone: x'_k = Σ_{j∈D} λ_j g_j(k+1), X'_k = Σ_{j∈D} λ_j Σ_m (k+1)^m C_{j,m} and
   Σ_{j∈D} λ_j C_{j,0} = Σ λ_j X_j = X (checked).

The new set registers itself with a ``calypso.lts.reshare`` transaction that keeps the
LTS id and X and replaces the public shares and trustee keys
(:mod:`.contracts`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated

import msgspec

from kaires_fl import schema
from kaires_fl.crypto.envelope import EnvelopeKeyPair, open_sealed, seal_to
from kaires_fl.crypto.group import Point, Scalar, multi_scalar_mult
from kaires_fl.crypto.sign import H
from kaires_fl.crypto.vss import commitment_at, evaluate, lagrange_coefficients, random_polynomial
from kaires_fl.errors import ConfigError, EncodingError, InvalidProof, ProtocolError
from kaires_fl.secret_management.dkg import (
    MAX_TRUSTEES,
    Complaint,
    DkgResult,
    Justification,
    check_dkg_params,
)
from kaires_fl.secret_management.release import LtsInfo

__all__ = ["ReshareDeal", "ReshareDealer", "ReshareReceiver", "run_reshare"]

_AAD = b"kaires-fl/reshare/share/v1"


def _aad(session: bytes, dealer: int, recipient: int) -> bytes:
    return H(_AAD, session, dealer.to_bytes(4, "little"), recipient.to_bytes(4, "little"))


class ReshareDeal(schema.Message, frozen=True):
    """Old trustee ``dealer``'s broadcast: Feldman commitments and sealed new shares."""

    dealer: schema.Index
    commitments: Annotated[tuple[Point, ...], msgspec.Meta(max_length=MAX_TRUSTEES)]
    sealed_shares: Annotated[
        tuple[Annotated[bytes, msgspec.Meta(max_length=256)], ...],
        msgspec.Meta(max_length=MAX_TRUSTEES),
    ]


@dataclass
class ReshareDealer:
    """Old trustee: reshares its x_j to ``new_keys`` (X25519 public keys) with threshold t'."""

    old: DkgResult
    new_t: int
    new_keys: Sequence[bytes]
    session: bytes = b""
    _shares: list[Scalar] = field(default_factory=list, repr=False)

    def deal(self) -> ReshareDeal | None:
        coeffs = random_polynomial(self.old.share, self.new_t)
        self._shares = [evaluate(coeffs, k + 1) for k in range(len(self.new_keys))]
        G = Point.base()
        sealed = tuple(
            seal_to(pk, self._share_for(k).to_bytes(), _aad(self.session, self.old.index, k))
            for k, pk in enumerate(self.new_keys)
        )
        return ReshareDeal(self.old.index, tuple(G * c for c in coeffs), sealed)

    def _share_for(self, k: int) -> Scalar:
        return self._shares[k]

    def justify(self, complaints: Sequence[Complaint]) -> Justification | None:
        ks = sorted({c.complainer for c in complaints if c.dealer == self.old.index})
        if not ks:
            return None
        return Justification.of(self.old.index, {k: (self._share_for(k), Scalar(0)) for k in ks})


@dataclass
class ReshareReceiver:
    """New trustee ``index`` of ``new_n`` (threshold ``new_t`` + 1) receiving from ``lts``."""

    index: int
    new_n: int
    new_t: int
    lts: LtsInfo
    envelope_key: EnvelopeKeyPair
    session: bytes = b""
    _deals: dict[int, ReshareDeal] = field(default_factory=dict, repr=False)
    _mine: dict[int, Scalar] = field(default_factory=dict, repr=False)
    _faulty: dict[int, str] = field(default_factory=dict, repr=False)
    _qual: list[int] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        check_dkg_params(self.new_n, self.new_t)
        if not 0 <= self.index < self.new_n:
            raise ConfigError(f"new trustee index {self.index} is outside 0..{self.new_n - 1}")

    def receive_deals(self, deals: Mapping[int, ReshareDeal]) -> list[Complaint]:
        complaints = []
        for j in range(self.lts.n):
            d = deals.get(j)
            if d is None:
                self._faulty[j] = "silent (no reshare deal)"
                continue
            if len(d.commitments) != self.new_t + 1 or len(d.sealed_shares) != self.new_n:
                self._faulty[j] = "malformed reshare deal"
                continue
            if d.commitments[0] != self.lts.public_shares[j]:
                self._faulty[j] = "reshared another secret (C_0 is not its public share X_j)"
                continue
            self._deals[j] = d
            s = self._open(d)
            if s is None or Point.base() * s != commitment_at(d.commitments, self.index):
                complaints.append(Complaint(self.index, j))
            else:
                self._mine[j] = s
        return complaints

    def _open(self, d: ReshareDeal) -> Scalar | None:
        try:
            raw = open_sealed(
                self.envelope_key,
                d.sealed_shares[self.index],
                _aad(self.session, d.dealer, self.index),
            )
            return Scalar.from_bytes(raw)
        except (InvalidProof, EncodingError):
            return None

    def receive_justifications(
        self, complaints: Sequence[Complaint], justifications: Mapping[int, Justification]
    ) -> None:
        bad: set[int] = set()
        for c in complaints:
            j, k = c.dealer, c.complainer
            if j not in self._deals or j in bad or not 0 <= k < self.new_n:
                continue
            just = justifications.get(j)
            pair = None if just is None else just.shares.get(k)
            if pair is None or Point.base() * pair[0] != commitment_at(
                self._deals[j].commitments, k
            ):
                bad.add(j)
                self._faulty[j] = f"did not answer the complaint of new trustee {k} correctly"
            elif k == self.index:
                self._mine[j] = pair[0]
        self._qual = [j for j in sorted(self._deals) if j not in bad]
        if len(self._qual) < self.lts.t + 1:
            raise ProtocolError(
                f"reshare: only {len(self._qual)} old trustees dealt correctly (need "
                f"t + 1 = {self.lts.t + 1}); retry with more old trustees online"
            )

    def finalize(self) -> DkgResult:
        """x'_k, X'_k for every new trustee, and the check that X is unchanged."""
        used = self._qual[: self.lts.t + 1]
        lam = lagrange_coefficients(used)
        share = Scalar(sum(la.value * self._mine[j].value for la, j in zip(lam, used, strict=True)))
        comb = [
            multi_scalar_mult(lam, [self._deals[j].commitments[m] for j in used])
            for m in range(self.new_t + 1)
        ]
        if comb[0] != self.lts.X:
            raise ProtocolError("reshare: the combined constant term is not X; abort")
        public_shares = tuple(commitment_at(comb, k) for k in range(self.new_n))
        if Point.base() * share != public_shares[self.index]:
            raise ProtocolError(f"reshare: new trustee {self.index}'s share is inconsistent")
        transcript = H(
            b"kaires-fl/reshare/transcript/v1",
            self.session,
            *(p.to_bytes() for p in (self.lts.X, *public_shares)),
            bytes(used),
        )
        return DkgResult(
            index=self.index,
            n=self.new_n,
            t=self.new_t,
            share=share,
            public_key=self.lts.X,
            public_shares=public_shares,
            qual=tuple(used),
            faulty=dict(sorted(self._faulty.items())),
            transcript=transcript,
        )


class _WrongSecretDealer(ReshareDealer):
    """Reshares a fresh random secret instead of its share."""

    def deal(self) -> ReshareDeal | None:
        real = self.old
        self.old = DkgResult(
            real.index,
            real.n,
            real.t,
            Scalar.random(),
            real.public_key,
            real.public_shares,
            real.qual,
            real.faulty,
            real.transcript,
        )
        try:
            return super().deal()
        finally:
            self.old = real


class _BadShareDealer(ReshareDealer):
    """Sends new trustee 0 a wrong share and repeats it when accused."""

    def _share_for(self, k: int) -> Scalar:
        return self._shares[k] + (1 if k == 0 else 0)


class _SilentDealer(ReshareDealer):
    def deal(self) -> ReshareDeal | None:
        return None


#: Old-trustee behaviours for tests and simulation.
RESHARE_BEHAVIOURS: dict[str, type[ReshareDealer]] = {
    "honest": ReshareDealer,
    "crash": _SilentDealer,
    "silent": _SilentDealer,
    "bad_share": _BadShareDealer,
    "wrong_secret": _WrongSecretDealer,
}


def run_reshare(
    old: Mapping[int, DkgResult],
    lts: LtsInfo,
    new_n: int,
    new_t: int,
    *,
    behaviours: Mapping[int, str] | None = None,
    new_keys: Sequence[EnvelopeKeyPair] | None = None,
    session: bytes = b"",
) -> dict[int, DkgResult]:
    """Reference driver: the old trustees in ``old`` reshare to ``new_n`` new trustees.

    Returns every new trustee's result (they agree on X, the public shares and the
    dealers named faulty).
    """
    behaviours = dict(behaviours or {})
    keys = (
        list(new_keys)
        if new_keys is not None
        else [EnvelopeKeyPair.generate() for _ in range(new_n)]
    )
    pubs = [k.public for k in keys]
    dealers = [
        RESHARE_BEHAVIOURS[behaviours.get(j, "honest")](res, new_t, pubs, session)
        for j, res in sorted(old.items())
    ]
    receivers = [ReshareReceiver(k, new_n, new_t, lts, keys[k], session) for k in range(new_n)]
    deals = {d.old.index: deal for d in dealers if (deal := d.deal()) is not None}
    complaints = [c for r in receivers for c in r.receive_deals(deals)]
    justs = {d.old.index: j for d in dealers if (j := d.justify(complaints)) is not None}
    for r in receivers:
        r.receive_justifications(complaints, justs)
    return {r.index: r.finalize() for r in receivers}
