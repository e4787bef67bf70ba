"""Distributed key generation for the trustees (Pedersen commitments, Feldman extraction).

The protocol is Gennaro–Jarecki–Krawczyk–Rabin's DKG (J. Cryptology 2007), the secure
variant of Pedersen's DKG: a dealer cannot bias the collective key by withdrawing after
seeing the others' contributions, because everybody commits with *hiding* Pedersen
commitments first and only reveals the Feldman (public-key) commitments once the set of
qualified dealers ``QUAL`` is fixed.

Trustee ``j`` (0-based) sits at x = j + 1; every polynomial has degree ``t`` (threshold
t + 1). Rounds, over a reliable broadcast channel plus private channels (shares are
sealed to the recipient's X25519 key with :func:`~kaires_fl.crypto.envelope.seal_to`). In
process (:func:`run_dkg`) the broadcast is ideal; on a network (:class:`DkgNode`) it is
:mod:`~kaires_fl.secret_management.broadcast` (Dolev–Strong signed echo chains, agreement
for n ≥ 2t + 1), so a trustee that signs two different messages in one round is named
and, before QUAL is fixed, excluded:

1. **deal** — dealer d picks f_d, f'_d of degree t, broadcasts Pedersen commitments
   E_{d,k} = a_{d,k}·G + b_{d,k}·H and sends (f_d(j+1), f'_d(j+1)) sealed to each j.
2. **complain** — j checks s·G + s'·H = Σ_k (j+1)^k E_{d,k}; on a bad or missing share it
   broadcasts a complaint against d.
3. **justify** — d answers every complaint by publishing the share in clear; everyone
   checks it against E_d. A dealer that is silent in round 1, publishes malformed
   commitments, or leaves a complaint unanswered or answered wrongly is disqualified.
   ``QUAL`` is the rest: every honest trustee computes the same set from public data.
4. **extract** — each d in QUAL broadcasts Feldman commitments A_{d,k} = a_{d,k}·G; j checks
   s·G = Σ_k (j+1)^k A_{d,k} and on failure broadcasts its share pair as evidence.
5. **reconstruct** — for every d in QUAL that was silent in round 4 or whose extraction
   was proved wrong, the trustees publish their share pairs of f_d; each pair is checked
   against E_d and any t + 1 valid ones give f_d, hence A_{d,k}. Such dealers stay in QUAL
   (their contribution is fixed by round 1) but are named.

Result: X = Σ_{d∈QUAL} A_{d,0}, x_j = Σ_{d∈QUAL} f_d(j+1), X_j = Σ_k (j+1)^k Σ_d A_{d,k}.
With at most t faulty trustees and n ≥ 2t + 1, every honest trustee ends with the same X
and X_j, and x_j·G = X_j.

Faulty behaviours for tests and simulation are subclasses of :class:`DkgParticipant`
(:data:`BEHAVIOURS`); they deviate in exactly one protocol step each.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec

from kaires_fl import schema
from kaires_fl.crypto import vss
from kaires_fl.crypto.envelope import EnvelopeKeyPair, open_sealed, seal_to
from kaires_fl.crypto.group import H_POINT, L, Point, Scalar
from kaires_fl.crypto.sign import H, Identity
from kaires_fl.crypto.vss import commitment_at, evaluate, random_polynomial
from kaires_fl.errors import ConfigError, EncodingError, InvalidProof, ProtocolError
from kaires_fl.secret_management.broadcast import Equivocation, Relay, SignedEchoBroadcast

__all__ = [
    "BEHAVIOURS",
    "Complaint",
    "Deal",
    "DealShare",
    "DkgMessage",
    "DkgNode",
    "DkgParticipant",
    "DkgResult",
    "DkgWire",
    "Extraction",
    "ExtractionComplaint",
    "Justification",
    "Reveal",
    "check_dkg_params",
    "make_participants",
    "run_dkg",
    "run_dkg_on_network",
]

_SHARE_AAD = b"kaires-fl/dkg/share/v1"


def check_dkg_params(n: int, t: int) -> None:
    """Raise ConfigError unless 0 <= t and n >= 2t + 1 (honest majority, t + 1 to decrypt)."""
    if t < 0 or n < 2 * t + 1:
        raise ConfigError(
            f"DKG with n={n} trustees and threshold t={t}: need n >= 2t + 1 so that t faulty "
            "trustees can neither block nor learn the key; add trustees or lower t"
        )


def _interpolate_coeffs(points: Sequence[tuple[int, int]]) -> list[int]:
    """Coefficients (lowest first) of the unique polynomial through ``points`` (mod L)."""
    k = len(points)
    coeffs = [0] * k
    for j, (xj, yj) in enumerate(points):
        basis = [1]  # Π_{m≠j} (X − x_m), built up coefficient by coefficient
        den = 1
        for m, (xm, _) in enumerate(points):
            if m == j:
                continue
            basis = [
                ((basis[i - 1] if i > 0 else 0) - xm * (basis[i] if i < len(basis) else 0)) % L
                for i in range(len(basis) + 1)
            ]
            den = den * (xj - xm) % L
        scale = yj * pow(den, -1, L) % L
        for i in range(k):
            coeffs[i] = (coeffs[i] + scale * basis[i]) % L
    return coeffs


# --- messages --------------------------------------------------------------------------------


#: Most trustees a DKG message may describe (bounds every list in it).
MAX_TRUSTEES = 1024
_Points = Annotated[tuple[Point, ...], msgspec.Meta(max_length=MAX_TRUSTEES)]
_Pairs = Annotated[
    tuple[tuple[schema.Index, Scalar, Scalar], ...], msgspec.Meta(max_length=MAX_TRUSTEES)
]


def _pairs(shares: Mapping[int, tuple[Scalar, Scalar]]) -> tuple[tuple[int, Scalar, Scalar], ...]:
    return tuple((j, s, b) for j, (s, b) in sorted(shares.items()))


class _SharePairs:
    """``shares``: the (index → (share, blinding)) view of a message's ``pairs``."""

    pairs: tuple[tuple[int, Scalar, Scalar], ...]

    @property
    def shares(self) -> dict[int, tuple[Scalar, Scalar]]:
        if isinstance(self.pairs, Mapping):  # built in process from a mapping
            return dict(self.pairs)  # type: ignore[arg-type]
        return {j: (s, b) for j, s, b in self.pairs}


class Deal(schema.Message, frozen=True):
    """Round 1 broadcast: the dealer's Pedersen commitments E_{d,0..t}."""

    dealer: schema.Index
    commitments: _Points


class DealShare(schema.Message, frozen=True):
    """Round 1, point to point: the share pair of ``recipient``, sealed to its X25519 key."""

    session: Annotated[bytes, msgspec.Meta(max_length=64)]
    dealer: schema.Index
    recipient: schema.Index
    sealed: Annotated[bytes, msgspec.Meta(max_length=256)]


class Complaint(schema.Message, frozen=True):
    """Round 2 broadcast: ``complainer`` got no valid share from ``dealer``."""

    complainer: schema.Index
    dealer: schema.Index


class Complaints(schema.Message, frozen=True):
    """Round 2 body: a trustee's complaints (possibly none)."""

    items: Annotated[tuple[Complaint, ...], msgspec.Meta(max_length=MAX_TRUSTEES)]


class Justification(_SharePairs, schema.Message, frozen=True):
    """Round 3 broadcast: the dealer's answer, the share pair in clear for each complainer
    (``pairs``: (complainer, share, blinding); :attr:`shares` maps them)."""

    dealer: schema.Index
    pairs: _Pairs

    @classmethod
    def of(cls, dealer: int, shares: Mapping[int, tuple[Scalar, Scalar]]) -> Justification:
        return cls(dealer, _pairs(shares))


class Extraction(schema.Message, frozen=True):
    """Round 4 broadcast: Feldman commitments A_k = a_k·G of a qualified dealer."""

    dealer: schema.Index
    commitments: _Points


class ExtractionComplaint(schema.Message, frozen=True):
    """Round 4 evidence: a share pair consistent with E_d but not with A_d."""

    complainer: schema.Index
    dealer: schema.Index
    share: Scalar
    blinding: Scalar


class ExtractionComplaints(schema.Message, frozen=True):
    """Round 5 body: a trustee's extraction complaints (possibly none)."""

    items: Annotated[tuple[ExtractionComplaint, ...], msgspec.Meta(max_length=MAX_TRUSTEES)]


class Reveal(_SharePairs, schema.Message, frozen=True):
    """Round 6 broadcast: a trustee's share pairs of the dealers to reconstruct
    (``pairs``: (dealer, share, blinding); :attr:`shares` maps them)."""

    sender: schema.Index
    pairs: _Pairs

    @classmethod
    def of(cls, sender: int, shares: Mapping[int, tuple[Scalar, Scalar]]) -> Reveal:
        return cls(sender, _pairs(shares))


@dataclass(frozen=True)
class DkgResult:
    """What a trustee keeps after the DKG.

    ``share`` is secret (x_j); everything else is public and identical at every honest
    trustee: ``public_key`` X, ``public_shares`` X_0..X_{n-1}, ``qual`` the qualified
    dealers, ``faulty`` the trustees named faulty with the reason, ``transcript`` a hash of
    the public outcome (compare it to detect disagreement).
    """

    index: int
    n: int
    t: int
    share: Scalar
    public_key: Point
    public_shares: tuple[Point, ...]
    qual: tuple[int, ...]
    faulty: Mapping[int, str]
    transcript: bytes


# --- one trustee -----------------------------------------------------------------------------


@dataclass
class DkgParticipant:
    """The honest protocol of trustee ``index``; call the round methods in order.

    ``peer_keys[j]`` is trustee j's X25519 public key (for the private share channel);
    ``session`` binds sealed shares to this run. ``identity`` (Ed25519) and
    ``peer_identities`` (every trustee's public key) sign and check the reliable
    broadcast on a network (:class:`DkgNode`); the in-process driver does not need them.
    """

    index: int
    n: int
    t: int
    envelope_key: EnvelopeKeyPair
    peer_keys: Sequence[bytes]
    session: bytes = b""
    identity: Identity | None = field(default=None, repr=False)
    peer_identities: Sequence[bytes] = ()
    _sealed: dict[int, bytes] = field(default_factory=dict, repr=False)
    _equivocated: dict[int, int] = field(default_factory=dict, repr=False)
    _a: list[Scalar] = field(default_factory=list, repr=False)
    _pairs: list[tuple[Scalar, Scalar]] = field(default_factory=list, repr=False)
    _deals: dict[int, Deal] = field(default_factory=dict, repr=False)
    _mine: dict[int, tuple[Scalar, Scalar]] = field(default_factory=dict, repr=False)
    _complained: set[int] = field(default_factory=set, repr=False)
    _qual: list[int] = field(default_factory=list, repr=False)
    _disqualified: set[int] = field(default_factory=set, repr=False)
    _faulty: dict[int, str] = field(default_factory=dict, repr=False)
    _feldman: dict[int, tuple[Point, ...]] = field(default_factory=dict, repr=False)
    _to_reconstruct: set[int] = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        check_dkg_params(self.n, self.t)
        if not 0 <= self.index < self.n or len(self.peer_keys) != self.n:
            raise ConfigError(
                f"trustee index {self.index} with {len(self.peer_keys)} peer keys for "
                f"n={self.n}: give one X25519 key per trustee and an index in [0, n)"
            )

    def _aad(self, dealer: int, recipient: int) -> bytes:
        return H(
            _SHARE_AAD, self.session, dealer.to_bytes(4, "little"), recipient.to_bytes(4, "little")
        )

    # round 1 ----------------------------------------------------------------------------
    def deal(self) -> Deal | None:
        """Pick f, f' and return their Pedersen commitments (to broadcast); the sealed share
        pairs (to send point to point) are then :meth:`private_shares`."""
        self._a = random_polynomial(Scalar.random(), self.t)
        blind = random_polynomial(Scalar.random(), self.t)
        self._pairs = [(evaluate(self._a, j + 1), evaluate(blind, j + 1)) for j in range(self.n)]
        G = Point.base()
        commitments = tuple(G * a + H_POINT * b for a, b in zip(self._a, blind, strict=True))
        self._sealed = {j: self._seal_share(j) for j in range(self.n)}
        return Deal(self.index, commitments)

    def private_shares(self) -> dict[int, bytes]:
        """Recipient → its share pair sealed to its X25519 key (empty before :meth:`deal`)."""
        return dict(self._sealed)

    def variants(self, rnd: int, body: Any) -> list[Any]:
        """The round ``rnd`` message(s) to broadcast: one for an honest trustee (several
        only for the equivocating test behaviour)."""
        return [body]

    def note_equivocation(self, j: int, rnd: int, reason: str) -> None:
        """Record that trustee j signed two different messages in one broadcast round (the
        reliable broadcast decided so at every honest trustee): it is named faulty and, if
        QUAL is not fixed yet, disqualified as a dealer."""
        self._equivocated.setdefault(j, rnd)
        self._faulty.setdefault(j, reason)

    def _share_pair(self, j: int) -> tuple[Scalar, Scalar]:
        return self._pairs[j]

    def _seal_share(self, j: int) -> bytes:
        s, s2 = self._share_pair(j)
        return seal_to(self.peer_keys[j], s.to_bytes() + s2.to_bytes(), self._aad(self.index, j))

    # round 2 ----------------------------------------------------------------------------
    def receive_deals(
        self, deals: Mapping[int, Deal], shares: Mapping[int, bytes]
    ) -> list[Complaint]:
        """Check my share from every dealer; return complaints for the bad or missing ones.

        ``deals`` are the broadcast deals, ``shares[d]`` the sealed share dealer d sent me
        privately. Dealers with no deal or malformed commitments are disqualified outright
        (everyone sees the same broadcast, so no complaint is needed).
        """
        complaints = []
        for d in range(self.n):
            deal = deals.get(d)
            if deal is None:
                self._faulty.setdefault(d, "silent in round 1 (no deal broadcast)")
                continue
            if len(deal.commitments) != self.t + 1:
                self._faulty[d] = (
                    f"malformed deal: {len(deal.commitments)} commitments (want {self.t + 1})"
                )
                continue
            self._deals[d] = deal
            pair = self._open_share(d, shares.get(d))
            if pair is None or not self._pedersen_ok(deal, self.index, pair):
                complaints.append(Complaint(self.index, d))
                self._complained.add(d)
            else:
                self._mine[d] = pair
        return complaints

    def _open_share(self, dealer: int, sealed: bytes | None) -> tuple[Scalar, Scalar] | None:
        if sealed is None:
            return None
        try:
            raw = open_sealed(self.envelope_key, sealed, self._aad(dealer, self.index))
            if len(raw) != 64:
                return None
            return Scalar.from_bytes(raw[:32]), Scalar.from_bytes(raw[32:])
        except (InvalidProof, EncodingError):
            return None

    @staticmethod
    def _pedersen_ok(deal: Deal, j: int, pair: tuple[Scalar, Scalar]) -> bool:
        try:
            vss.verify_pedersen_share(deal.commitments, j, pair[0], pair[1])
        except InvalidProof:
            return False
        return True

    # round 3 ----------------------------------------------------------------------------
    def justify(self, complaints: Sequence[Complaint]) -> Justification | None:
        """As a dealer, answer every complaint against me with the share pair in clear."""
        against = sorted({c.complainer for c in complaints if c.dealer == self.index})
        if not against:
            return None
        return Justification.of(self.index, {j: self._share_pair(j) for j in against})

    def receive_justifications(
        self, complaints: Sequence[Complaint], justifications: Mapping[int, Justification]
    ) -> None:
        """Fix QUAL from the public complaints and answers (same at every honest trustee)."""
        by_dealer: dict[int, set[int]] = {}
        for c in complaints:
            if 0 <= c.dealer < self.n and 0 <= c.complainer < self.n:
                by_dealer.setdefault(c.dealer, set()).add(c.complainer)
        for d, complainers in sorted(by_dealer.items()):
            if d not in self._deals:
                continue
            just = justifications.get(d)
            for j in sorted(complainers):
                pair = None if just is None else just.shares.get(j)
                if pair is None:
                    self._disqualified.add(d)
                    self._faulty[d] = f"left the complaint of trustee {j} unanswered"
                    break
                if not self._pedersen_ok(self._deals[d], j, pair):
                    self._disqualified.add(d)
                    self._faulty[d] = (
                        f"answered the complaint of trustee {j} with a share that does not "
                        "match its commitments"
                    )
                    break
                if j == self.index:
                    self._mine[d] = pair
            # A complaint answered correctly names nobody: the dealer may have sent a bad
            # share privately and a good one publicly, so the complainer may be honest.
        self._qual = [
            d
            for d in sorted(self._deals)
            if d not in self._disqualified and d not in self._equivocated
        ]
        if len(self._qual) < self.t + 1:
            raise ProtocolError(
                f"DKG: only {len(self._qual)} qualified dealers (need t + 1 = {self.t + 1}); "
                "more than t trustees are faulty — replace them and run the DKG again"
            )

    # round 4 ----------------------------------------------------------------------------
    def extract(self) -> Extraction | None:
        """As a qualified dealer, broadcast the Feldman commitments a_k·G."""
        if self.index not in self._qual:
            return None
        G = Point.base()
        return Extraction(self.index, tuple(G * a for a in self._a))

    def check_extractions(self, extractions: Mapping[int, Extraction]) -> list[ExtractionComplaint]:
        """Check my shares against the Feldman commitments; return evidence for wrong ones."""
        evidence = []
        G = Point.base()
        for d in self._qual:
            ex = extractions.get(d)
            if ex is None or len(ex.commitments) != self.t + 1:
                continue  # handled publicly in receive_extraction_complaints
            s, s2 = self._mine[d]
            if G * s != commitment_at(ex.commitments, self.index):
                evidence.append(ExtractionComplaint(self.index, d, s, s2))
        return evidence

    def receive_extraction_complaints(
        self, extractions: Mapping[int, Extraction], evidence: Sequence[ExtractionComplaint]
    ) -> set[int]:
        """Decide (publicly) which qualified dealers must be reconstructed."""
        G = Point.base()
        self._to_reconstruct = set()
        for d in self._qual:
            ex = extractions.get(d)
            if ex is None:
                why = self._faulty[d] if self._equivocated.get(d) == 4 else "silent in round 4"
                self._faulty[d] = f"{why} (no Feldman commitments); reconstructed"
                self._to_reconstruct.add(d)
            elif len(ex.commitments) != self.t + 1:
                self._faulty[d] = "malformed Feldman commitments in round 4; reconstructed"
                self._to_reconstruct.add(d)
            else:
                self._feldman[d] = ex.commitments
        for ev in evidence:
            d = ev.dealer
            if d not in self._feldman or not 0 <= ev.complainer < self.n:
                continue
            pair = (ev.share, ev.blinding)
            ped = self._pedersen_ok(self._deals[d], ev.complainer, pair)
            feld = G * ev.share == commitment_at(self._feldman[d], ev.complainer)
            if ped and not feld:
                self._faulty[d] = (
                    f"Feldman commitments inconsistent with the share of trustee "
                    f"{ev.complainer}; reconstructed"
                )
                self._to_reconstruct.add(d)
                del self._feldman[d]
            elif not ped:
                self._faulty.setdefault(
                    ev.complainer, f"published a false extraction complaint against dealer {d}"
                )
        return set(self._to_reconstruct)

    # round 5 ----------------------------------------------------------------------------
    def reveal(self) -> Reveal | None:
        """Publish my share pairs of the dealers that must be reconstructed."""
        if not self._to_reconstruct:
            return None
        return Reveal.of(self.index, {d: self._mine[d] for d in sorted(self._to_reconstruct)})

    def finalize(self, reveals: Mapping[int, Reveal]) -> DkgResult:
        """Reconstruct what is needed and compute x_j, X and every X_j.

        Raises
        ------
        ProtocolError
            if fewer than t + 1 valid share pairs exist for a dealer to reconstruct, or my
            share does not match my public share (more than t faulty trustees).
        """
        G = Point.base()
        missing = [d for d in self._qual if d not in self._mine]
        if missing:
            raise ProtocolError(
                f"DKG: trustee {self.index} holds no valid share from qualified dealers "
                f"{missing}; its complaints were lost — run the DKG again"
            )
        for d in sorted(self._to_reconstruct):
            pts: list[tuple[int, int]] = []
            for j in sorted(reveals):
                pair = reveals[j].shares.get(d)
                if pair is None or not 0 <= j < self.n:
                    continue
                if self._pedersen_ok(self._deals[d], j, pair):
                    pts.append((j + 1, pair[0].value))
                if len(pts) == self.t + 1:
                    break
            if len(pts) < self.t + 1:
                raise ProtocolError(
                    f"DKG: only {len(pts)} valid shares to reconstruct dealer {d} (need "
                    f"{self.t + 1}); more than t trustees are faulty — run the DKG again"
                )
            self._feldman[d] = tuple(G * c for c in _interpolate_coeffs(pts))
        total = [Point.identity()] * (self.t + 1)
        share = Scalar(0)
        for d in self._qual:
            for k in range(self.t + 1):
                total[k] = total[k] + self._feldman[d][k]
            share = share + self._mine[d][0]
        public_shares = tuple(commitment_at(total, j) for j in range(self.n))
        if G * share != public_shares[self.index]:
            raise ProtocolError(
                f"DKG: trustee {self.index}'s share does not match its public share; the "
                "transcript is inconsistent (more than t faulty trustees) — run the DKG again"
            )
        transcript = H(
            b"kaires-fl/dkg/transcript/v1",
            self.session,
            *(p.to_bytes() for p in (total[0], *public_shares)),
            bytes(self._qual),
        )
        return DkgResult(
            index=self.index,
            n=self.n,
            t=self.t,
            share=share,
            public_key=total[0],
            public_shares=public_shares,
            qual=tuple(self._qual),
            faulty=dict(sorted(self._faulty.items())),
            transcript=transcript,
        )


# --- faulty behaviours (tests, simulation) ---------------------------------------------------


class SilentDealer(DkgParticipant):
    """Sends nothing at all (crashed before the DKG)."""

    def deal(self) -> Deal | None:
        return None

    def receive_deals(
        self, deals: Mapping[int, Deal], shares: Mapping[int, bytes]
    ) -> list[Complaint]:
        return []

    def justify(self, complaints: Sequence[Complaint]) -> Justification | None:
        return None

    def extract(self) -> Extraction | None:
        return None

    def reveal(self) -> Reveal | None:
        return None


class BadShareDealer(DkgParticipant):
    """Sends a wrong share to its successor and repeats the same wrong share when accused."""

    def _victim(self) -> int:
        return (self.index + 1) % self.n

    def _share_pair(self, j: int) -> tuple[Scalar, Scalar]:
        s, s2 = super()._share_pair(j)
        return (s + 1, s2) if j == self._victim() else (s, s2)


class UnansweringDealer(BadShareDealer):
    """Sends a wrong share to its successor and ignores the complaint."""

    def justify(self, complaints: Sequence[Complaint]) -> Justification | None:
        return None


class BadExtractionDealer(DkgParticipant):
    """Deals correctly, then publishes Feldman commitments to another polynomial."""

    def extract(self) -> Extraction | None:
        ex = super().extract()
        if ex is None:
            return None
        return Extraction(self.index, (ex.commitments[0] + Point.base(), *ex.commitments[1:]))


class SilentExtractionDealer(DkgParticipant):
    """Deals correctly, then stays silent from round 4 on (withdraws after seeing QUAL)."""

    def extract(self) -> Extraction | None:
        return None

    def reveal(self) -> Reveal | None:
        return None


class FalseComplainer(DkgParticipant):
    """Complains against every other dealer (whose public answers will be valid)."""

    def receive_deals(
        self, deals: Mapping[int, Deal], shares: Mapping[int, bytes]
    ) -> list[Complaint]:
        super().receive_deals(deals, shares)
        return [Complaint(self.index, d) for d in range(self.n) if d != self.index]


class EquivocatingDealer(DkgParticipant):
    """Signs two different deals in round 1 (its real commitments to half of the trustees,
    commitments to another polynomial to the others) over the network broadcast; in
    process (an ideal broadcast) only the first is delivered."""

    def variants(self, rnd: int, body: Any) -> list[Any]:
        if rnd != 1 or not isinstance(body, Deal):
            return [body]
        other = Deal(body.dealer, (body.commitments[0] + Point.base(), *body.commitments[1:]))
        return [body, other]


#: Behaviour name -> participant class, for :func:`run_dkg` and the simulation's ``faults``.
BEHAVIOURS: dict[str, type[DkgParticipant]] = {
    "honest": DkgParticipant,
    "crash": SilentDealer,
    "silent": SilentDealer,
    "bad_share": BadShareDealer,
    "byzantine": BadShareDealer,
    "no_justification": UnansweringDealer,
    "bad_extraction": BadExtractionDealer,
    "silent_extraction": SilentExtractionDealer,
    "false_complaint": FalseComplainer,
    "equivocate": EquivocatingDealer,
}


def make_participants(
    n: int,
    t: int,
    *,
    behaviours: Mapping[int, str] | None = None,
    envelope_keys: Sequence[EnvelopeKeyPair] | None = None,
    session: bytes = b"",
    identities: Sequence[Identity] | None = None,
) -> list[DkgParticipant]:
    """One participant per trustee; ``behaviours`` maps an index to a :data:`BEHAVIOURS` name.

    ``envelope_keys`` (X25519) and ``identities`` (Ed25519, signing the network broadcast)
    are generated when not given.
    """
    check_dkg_params(n, t)
    behaviours = dict(behaviours or {})
    for i, b in behaviours.items():
        if b not in BEHAVIOURS or not 0 <= i < n:
            raise ConfigError(
                f"DKG behaviour {b!r} for trustee {i}: use an index in [0, {n}) and one of "
                f"{sorted(BEHAVIOURS)}"
            )
    keys = (
        list(envelope_keys)
        if envelope_keys is not None
        else [EnvelopeKeyPair.generate() for _ in range(n)]
    )
    ids = list(identities) if identities is not None else [Identity.generate() for _ in range(n)]
    if len(keys) != n or len(ids) != n:
        raise ConfigError(
            f"{len(keys)} envelope keys and {len(ids)} identities for {n} trustees: give one each"
        )
    peers = [k.public for k in keys]
    pubs = tuple(i.public for i in ids)
    return [
        BEHAVIOURS[behaviours.get(i, "honest")](i, n, t, keys[i], peers, session, ids[i], pubs)
        for i in range(n)
    ]


def _ideal_broadcast(
    participants: Sequence[DkgParticipant], rnd: int, sent: Mapping[int, Any]
) -> dict[int, Any]:
    """What the reliable broadcast decides in process for round ``rnd`` (sender → body):
    a sender whose :meth:`~DkgParticipant.variants` differ is named at every participant
    and counts as silent, as on the network; None bodies are dropped."""
    out = {}
    for p in participants:
        if p.index not in sent:
            continue
        body = sent[p.index]
        variants = p.variants(rnd, body)
        if any(v != variants[0] for v in variants[1:]):
            for q in participants:
                q.note_equivocation(
                    p.index, rnd, f"equivocated in broadcast round {rnd}: signed two messages"
                )
        elif body is not None:
            out[p.index] = body
    return out


def run_dkg(participants: Sequence[DkgParticipant]) -> dict[int, DkgResult]:
    """Run the six rounds in-process over an ideal synchronous broadcast (the reference
    driver).

    Every broadcast is delivered unchanged to everyone, a missing message counts as
    silence at the end of its round, and a sender with two versions of a message is named
    as the network broadcast would name it. Returns the result of every trustee that
    finished (faulty ones may fail or finish; honest ones agree).
    """
    ps = list(participants)
    deals = _ideal_broadcast(ps, 1, {p.index: p.deal() for p in ps})
    sealed = {p.index: p.private_shares() for p in ps}
    raised = {
        p.index: tuple(
            p.receive_deals(deals, {d: s[p.index] for d, s in sealed.items() if p.index in s})
        )
        for p in ps
    }
    complaints = [c for cs in _ideal_broadcast(ps, 2, raised).values() for c in cs]
    justs = _ideal_broadcast(ps, 3, {p.index: p.justify(complaints) for p in ps})
    active = []
    for p in ps:
        try:
            p.receive_justifications(complaints, justs)
            active.append(p)
        except ProtocolError:
            if not isinstance(p, SilentDealer):
                raise
    extractions = _ideal_broadcast(active, 4, {p.index: p.extract() for p in active})
    found = {p.index: tuple(p.check_extractions(extractions)) for p in active}
    evidence = [ev for evs in _ideal_broadcast(active, 5, found).values() for ev in evs]
    for p in active:
        p.receive_extraction_complaints(extractions, evidence)
    reveals = _ideal_broadcast(active, 6, {p.index: p.reveal() for p in active})
    return {p.index: p.finalize(reveals) for p in active if not isinstance(p, SilentDealer)}


# --- on a transport ----------------------------------------------------------------------------


#: What a DKG round message may carry.
DkgBody = Deal | Complaints | Justification | Extraction | ExtractionComplaints | Reveal | None
#: What a :class:`DkgNode` accepts from a peer.
DkgWire = Relay | DealShare


class DkgMessage(schema.Message, frozen=True):
    """One round's message of one trustee (``body`` may be None): the payload its sender
    signs and the reliable broadcast (:mod:`.broadcast`) delivers. Never sent bare."""

    session: Annotated[bytes, msgspec.Meta(max_length=64)]
    round: schema.Index
    sender: schema.Index
    body: DkgBody


class DkgNode:
    """Runs a :class:`DkgParticipant` on a transport, in synchronous rounds.

    Every round message goes through the reliable broadcast
    (:class:`~.broadcast.SignedEchoBroadcast`, signed with the participant's ``identity``):
    a round lasts t + 1 sub-rounds of ``round_time`` seconds, after which every honest
    trustee holds the same outcome for every sender — its message, silence, or proof that
    it signed two different messages (then it is named faulty; in rounds 1–3 it is also
    excluded from QUAL, later it counts as silent). So an equivocating dealer is excluded
    and the DKG completes with the same key at every honest trustee. The sealed shares of
    round 1 go point to point (:class:`DealShare`); one that does not arrive within round 1
    is complained about and answered in public as any bad share.

    Relays are accepted from any trustee address (their signatures say who vouches for
    what); a :class:`DealShare` only from its dealer's address. ``on_message`` never
    raises; ``on_done(result | None, error | None)`` is called once at the end.
    """

    ROUNDS = 6

    def __init__(
        self,
        participant: DkgParticipant,
        transport: Any,
        addresses: Sequence[str],
        round_time: float = 0.05,
        on_done: Any = None,
    ) -> None:
        p = participant
        if p.identity is None or len(p.peer_identities) != p.n or len(addresses) != p.n:
            raise ConfigError(
                f"DKG node {p.index}: needs its Ed25519 identity, the {p.n} trustees' public "
                f"keys and {p.n} addresses (got {len(p.peer_identities)} keys, "
                f"{len(addresses)} addresses); build participants with make_participants("
                "identities=...)"
            )
        self.p = participant
        self.t = transport
        self.addresses = list(addresses)
        self._index_of = {a: j for j, a in enumerate(self.addresses)}
        self.round_time = round_time
        self.on_done = on_done
        self.rb = SignedEchoBroadcast(
            p.index,
            p.n,
            p.t,
            p.identity,
            p.peer_identities,
            p.session,
            self._send_all,
            transport.now,
            round_time,
            self.ROUNDS,
        )
        self.inbox: dict[int, dict[int, Any]] = {r: {} for r in range(1, self.ROUNDS + 1)}
        self._shares: dict[int, bytes] = {}
        self._round = 1
        self.result: DkgResult | None = None
        self.error: Exception | None = None
        self.done = False
        self._complaints: list[Complaint] = []
        self._extractions: dict[int, Extraction] = {}
        self._dropped = 0
        transport.set_handler(self.on_message)

    @property
    def dropped(self) -> int:
        """Messages refused so far (undecodable, foreign, forged, mistyped)."""
        return self._dropped + self.rb.rejected

    # network -----------------------------------------------------------------------------
    def on_message(self, src: str, msg: Any) -> None:
        """Handle one peer message (bytes, a :class:`~.broadcast.Relay` or a
        :class:`DealShare`); never raises.

        Every message is validated by the schema (an object is re-decoded from its
        encoding); anything else, and anything from a non-trustee address, is dropped and
        counted in :attr:`dropped`.
        """
        try:
            sender = self._index_of.get(src) if isinstance(src, str) else None
            if sender is None or self.done:
                self._dropped += 1
                return
            raw = msg if isinstance(msg, bytes | bytearray | memoryview) else schema.encode(msg)
            msg = schema.decode(bytes(raw), DkgWire)
            if isinstance(msg, Relay):
                self.rb.on_relay(msg)
            elif (
                msg.session == self.p.session
                and msg.dealer == sender
                and msg.recipient == self.p.index
                and self._round == 1
            ):
                self._shares.setdefault(sender, msg.sealed)
            else:
                self._dropped += 1
        except Exception:  # the service boundary: a peer's message never stops the node
            self._dropped += 1

    def _send_all(self, relay: Relay) -> None:
        me = self.addresses[self.p.index]
        self.t.broadcast([a for a in self.addresses if a != me], relay)

    def _payload(self, rnd: int, body: Any) -> bytes:
        if isinstance(body, list | tuple):
            items = tuple(body)
            body = ExtractionComplaints(items) if rnd == 5 else Complaints(items)
        return schema.encode(DkgMessage(self.p.session, rnd, self.p.index, body))

    def _send(self, rnd: int, body: Any) -> None:
        """Broadcast my round ``rnd`` message reliably."""
        bodies = self.p.variants(rnd, body)
        if len(bodies) == 1:
            self.rb.broadcast(rnd, self._payload(rnd, body))
        else:  # the equivocating test behaviour
            self.rb.send_variants(
                rnd,
                [self._payload(rnd, b) for b in bodies],
                lambda j, relay: self.t.send(self.addresses[j], relay),
            )

    def _deliver(self, rnd: int) -> None:
        """Close broadcast round ``rnd``: fill ``inbox[rnd]``, name equivocators."""
        for sender, out in self.rb.decide(rnd).items():
            if isinstance(out, Equivocation):
                self.p.note_equivocation(sender, rnd, out.reason)
            elif out is not None:
                try:
                    m: DkgMessage = schema.decode(out, DkgMessage)
                except EncodingError:
                    continue  # a signed but malformed message counts as silence
                if m.session == self.p.session and m.round == rnd and m.sender == sender:
                    self.inbox[rnd][sender] = m.body

    # rounds ------------------------------------------------------------------------------
    def start(self, at: float | None = None) -> None:
        """Begin round 1 at transport time ``at`` (now if None or past).

        Round 1 deals: broadcast the commitments, send the sealed shares point to point;
        each later round starts when the previous one's broadcast is decided. On a real
        network every trustee should be given the same ``at`` (an agreed start, e.g. a
        ledger block time): the broadcast's sub-rounds assume the trustees' clocks differ
        by less than ``round_time`` minus the network delay, and a trustee that starts
        late is, to the others, a slow one.
        """
        now = self.t.now()
        begin = now if at is None else at
        self.rb.begin(begin)
        if begin > now:
            self.t.call_later(begin - now, self._deal)
        else:
            self._deal()

    def _deal(self) -> None:
        deal = self.p.deal()
        for j, sealed in self.p.private_shares().items():
            if j == self.p.index:
                self._shares[j] = sealed
            else:
                self.t.send(self.addresses[j], DealShare(self.p.session, self.p.index, j, sealed))
        self._send(1, deal)
        self._schedule()

    def _schedule(self) -> None:
        delay = self.rb.slot_end(self._round) - self.t.now()
        self.t.call_later(max(delay, 0.0), self._step)

    def _step(self) -> None:
        if self.done:
            return
        try:
            self._deliver(self._round)
            self._advance()
        except ProtocolError as exc:
            self._finish(None, exc)
        except Exception as exc:  # a bug or an unforeseen input ends this run, named
            self._finish(None, ProtocolError(f"DKG round {self._round} failed: {exc!r}"))

    def _advance(self) -> None:
        self._round += 1
        r = self._round
        inbox = self.inbox
        if r == 2:
            deals = {d: m for d, m in inbox[1].items() if isinstance(m, Deal) and m.dealer == d}
            shares = dict(self._shares)
            self._send(2, tuple(self.p.receive_deals(deals, shares)))
        elif r == 3:
            self._complaints = [
                c
                for sender, cs in sorted(inbox[2].items())
                for c in (cs.items if isinstance(cs, Complaints) else ())
                if c.complainer == sender
            ]
            self._send(3, self.p.justify(self._complaints))
        elif r == 4:
            justs = {
                d: j for d, j in inbox[3].items() if isinstance(j, Justification) and j.dealer == d
            }
            self.p.receive_justifications(self._complaints, justs)
            self._send(4, self.p.extract())
        elif r == 5:
            self._extractions = {
                d: e for d, e in inbox[4].items() if isinstance(e, Extraction) and e.dealer == d
            }
            self._send(5, tuple(self.p.check_extractions(self._extractions)))
        elif r == 6:
            evidence = [
                ev
                for sender, evs in sorted(inbox[5].items())
                for ev in (evs.items if isinstance(evs, ExtractionComplaints) else ())
                if ev.complainer == sender
            ]
            self.p.receive_extraction_complaints(self._extractions, evidence)
            self._send(6, self.p.reveal())
        else:
            reveals = {s: m for s, m in inbox[6].items() if isinstance(m, Reveal) and m.sender == s}
            self._finish(self.p.finalize(reveals), None)
            return
        self._schedule()

    def _finish(self, result: DkgResult | None, error: Exception | None) -> None:
        self.result, self.error, self.done = result, error, True
        if self.on_done is not None:
            self.on_done(result, error)


def run_dkg_on_network(
    network: Any,
    participants: Sequence[DkgParticipant],
    addresses: Sequence[str],
    *,
    round_time: float = 0.05,
    timeout: float | None = None,
) -> dict[int, DkgResult]:
    """Run the DKG with one :class:`DkgNode` per participant on a ``MemoryNetwork``.

    Returns the results of the trustees that finished (crashed or failing ones are absent).
    """
    nodes = [
        DkgNode(p, network.endpoint(a), addresses, round_time)
        for p, a in zip(participants, addresses, strict=True)
    ]
    live = [nd for nd, a in zip(nodes, addresses, strict=True) if a not in network.crashed]
    for nd in live:
        nd.start()
    t = participants[0].t if participants else 0
    limit = timeout if timeout is not None else round_time * (DkgNode.ROUNDS * (t + 1) + 3)
    network.run_until(lambda: all(nd.done for nd in live), limit)
    for a in addresses:
        network.endpoint(a).set_handler(None)
    return {nd.p.index: nd.result for nd in live if nd.result is not None}
