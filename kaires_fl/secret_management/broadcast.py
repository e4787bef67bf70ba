"""Reliable broadcast for the trustees: authenticated Dolev–Strong signed echo chains.

What the DKG needs from its "broadcast" is *agreement*: for every round and every sender,
all honest trustees end the round with the same outcome — the same value, or all "silent",
or all "equivocated" — even when the sender is faulty and sends different values to
different trustees, or sends to some only, or late. Point-to-point sends give none of it.

Why not Bracha (SEND / ECHO / READY)
    Bracha's broadcast, and the signed-echo ("consistent") broadcast with quorums of
    ⌈(n + t + 1)/2⌉, are asynchronous protocols: they need quorums that intersect in an
    honest party *and* that the n − t honest parties can fill alone, i.e. n ≥ 3t + 1. The
    trustees run with n ≥ 2t + 1 (e.g. n = 3, t = 1: a quorum of ⌈5/2⌉ = 3 is never reached
    when one trustee crashed), and asynchronous reliable broadcast is impossible for
    n ≤ 3t whatever the signatures. The DKG is a synchronous protocol anyway (a round ends
    on a timer; what has not arrived counts as silence), so the broadcast may use the same
    synchrony: with signatures, authenticated broadcast exists for any t < n.

The protocol (Dolev–Strong 1983), per instance (slot, sender), in t + 1 sub-rounds of
``delta`` seconds each starting at the slot's start time:

* the sender signs the statement (session, slot, sender, SHA-256(payload)) and sends
  the payload with that one-signature *chain* to everyone;
* a trustee that receives, during sub-round k (0-based), a payload whose chain starts
  with k + 1 valid signatures of distinct trustees, the sender's first, *accepts* it (if it
  had accepted fewer than two distinct payloads of this instance), and — if k < t —
  appends its own signature to those k + 1 and relays it to everyone at once;
* at the end of sub-round t it decides: no accepted payload → **silent**; one →
  **delivered**; two or more → **equivocated** (two payloads signed by the sender are the
  proof; the sender is named faulty).

Agreement: if an honest trustee accepts a payload during sub-round k < t, its relay
carries k + 2 signatures and reaches every honest trustee before the end of sub-round
k + 1, which accepts it then. A payload accepted during the last sub-round t carries t + 1
distinct signatures, so an honest trustee signed it earlier and relayed it to everyone.
Hence every payload one honest trustee accepts, every honest trustee accepts (each
relays its first two, which is all that "equivocated" needs) and the decisions agree.
Validity: an honest sender's payload is accepted by all in sub-round 0 and no other
payload can carry its signature. Assumptions: at most t faulty trustees, Ed25519
unforgeable, and ``delta`` larger than the network delay plus the clock offset between
trustees (the same synchrony the DKG's round timers assume).

Cost: t + 1 sub-rounds per broadcast round; in the fault-free case n relays of each of the
n payloads (n²(n − 1) messages per round), each checked by a hash lookup (an already
accepted payload is not verified again); each trustee verifies each sender's signature
once per instance. This is the broadcast the reference implementations approximate:
dedis/kyber's ``share/dkg`` runs over a ``Board`` that drand implements by re-broadcasting
every signed packet once and evicting a dealer seen with two different packets — without
the chain-length rule, so a dealer that equivocates late to one trustee only splits the
honest trustees; here it cannot.

Point-to-point messages (the sealed shares of the DKG) do not go through this module.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated

import msgspec

from kaires_fl import schema
from kaires_fl.crypto.sign import H, Identity, is_valid
from kaires_fl.errors import ConfigError

__all__ = [
    "BROADCAST_CONTEXT",
    "MAX_PAYLOAD_BYTES",
    "Equivocation",
    "Outcome",
    "Relay",
    "SignedEchoBroadcast",
    "Witness",
    "statement",
]

#: Domain separation of every broadcast signature.
BROADCAST_CONTEXT = b"kaires-fl/dkg/broadcast/v1"
#: Largest payload one broadcast instance carries. A DKG round message at the most
#: trustees the DKG allows (1024) is under 80 KiB; with at most two payloads kept per
#: (slot, sender), a faulty trustee can make another hold at most 2·slots·256 KiB.
MAX_PAYLOAD_BYTES = 256 * 2**10
#: Longest signature chain (t + 1 ≤ this).
MAX_CHAIN = 1024


class Witness(schema.Message, frozen=True):
    """``signer``'s signature over :func:`statement` for the relayed payload."""

    signer: schema.Index
    signature: schema.Signature


class Relay(schema.Message, frozen=True):
    """One broadcast instance's payload with its signature chain (the sender's first)."""

    session: Annotated[bytes, msgspec.Meta(max_length=64)]
    slot: schema.Index
    sender: schema.Index
    payload: Annotated[bytes, msgspec.Meta(max_length=MAX_PAYLOAD_BYTES)]
    chain: Annotated[tuple[Witness, ...], msgspec.Meta(min_length=1, max_length=MAX_CHAIN)]


@dataclass(frozen=True)
class Equivocation:
    """Proof that ``sender`` signed two different payloads for one ``slot``."""

    sender: int
    slot: int
    digests: tuple[bytes, bytes]

    @property
    def reason(self) -> str:
        a, b = (d.hex()[:12] for d in self.digests)
        return (
            f"equivocated in broadcast round {self.slot}: signed two different messages "
            f"(digests {a}…, {b}…)"
        )


#: A decided instance: the payload, None (silent) or an :class:`Equivocation`.
Outcome = bytes | None | Equivocation


def statement(session: bytes, slot: int, sender: int, digest: bytes) -> bytes:
    """What every signature of a chain covers: the instance and the payload's SHA-256."""
    return H(session, slot.to_bytes(4, "little"), sender.to_bytes(4, "little"), digest)


class SignedEchoBroadcast:
    """One trustee's side of the broadcast instances of a session.

    Parameters
    ----------
    index, n, t:
        This trustee, the number of trustees and the fault bound (t < n).
    identity, peer_keys:
        This trustee's Ed25519 identity and every trustee's public key (``peer_keys[index]``
        is ``identity.public``).
    session:
        Binds every signature to this run.
    send_all:
        ``send_all(relay)`` sends a :class:`Relay` to every other trustee.
    now:
        The transport clock (seconds).
    delta:
        Sub-round length; slot ``s`` (1-based) covers
        [start + (s − 1)(t + 1)·delta, start + s(t + 1)·delta).
    slots:
        Number of slots of the session (relays for other slots are rejected, which bounds
        the memory a faulty trustee can make this one spend to 2·n·slots payloads).
    """

    def __init__(
        self,
        index: int,
        n: int,
        t: int,
        identity: Identity,
        peer_keys: Sequence[bytes],
        session: bytes,
        send_all: Callable[[Relay], None],
        now: Callable[[], float],
        delta: float,
        slots: int,
    ) -> None:
        if not (0 <= t < n and 0 <= index < n and len(peer_keys) == n):
            raise ConfigError(
                f"broadcast with index {index}, n={n}, t={t} and {len(peer_keys)} keys: need "
                "0 <= t < n, 0 <= index < n and one public key per trustee"
            )
        if bytes(peer_keys[index]) != identity.public:
            raise ConfigError(
                f"trustee {index}'s signing key is not the one the others know it by "
                "(peer_keys[index]); use the identity from the committee description"
            )
        if delta <= 0:
            raise ConfigError(f"broadcast sub-round length must be > 0 s, got {delta}")
        self.index, self.n, self.t = index, n, t
        self.identity = identity
        self.keys = [bytes(k) for k in peer_keys]
        self.session = session
        self.send_all = send_all
        self.now = now
        self.delta = delta
        self.slots = slots
        self.start: float | None = None
        # (slot, sender) -> digest -> payload, in acceptance order (at most two kept)
        self._accepted: dict[tuple[int, int], dict[bytes, bytes]] = {}
        self._decided: set[int] = set()
        self.rejected = 0

    # schedule ---------------------------------------------------------------------------
    def begin(self, start: float) -> None:
        """Fix the start of slot 1 (this trustee's clock)."""
        self.start = start

    def slot_end(self, slot: int) -> float:
        """When ``slot`` is decided (pre: :meth:`begin` was called)."""
        assert self.start is not None
        return self.start + slot * (self.t + 1) * self.delta

    def _sub_round(self, slot: int) -> int | None:
        """The current sub-round of ``slot`` (0 before it starts); None once decided."""
        if slot in self._decided:
            return None
        if self.start is None:
            return 0
        begin = self.start + (slot - 1) * (self.t + 1) * self.delta
        k = int((self.now() - begin) // self.delta)
        return min(max(k, 0), self.t)

    # send ---------------------------------------------------------------------------------
    def _witness(self, slot: int, sender: int, digest: bytes) -> Witness:
        sig = self.identity.sign(BROADCAST_CONTEXT, statement(self.session, slot, sender, digest))
        return Witness(self.index, sig)

    def broadcast(self, slot: int, payload: bytes) -> None:
        """Start this trustee's instance of ``slot`` with ``payload`` (accepted locally)."""
        digest = hashlib.sha256(payload).digest()
        relay = Relay(
            self.session, slot, self.index, payload, (self._witness(slot, self.index, digest),)
        )
        self._accepted.setdefault((slot, self.index), {}).setdefault(digest, payload)
        self.send_all(relay)

    def send_variants(
        self, slot: int, payloads: Sequence[bytes], send_to: Callable[[int, Relay], None]
    ) -> None:
        """Faulty behaviour for tests and simulation: sign several payloads for one slot and
        send ``payloads[j % len(payloads)]`` to trustee j (an equivocating sender)."""
        relays = []
        for p in payloads:
            digest = hashlib.sha256(p).digest()
            relays.append(
                Relay(self.session, slot, self.index, p, (self._witness(slot, self.index, digest),))
            )
        for j in range(self.n):
            if j != self.index:
                send_to(j, relays[j % len(relays)])

    # receive ------------------------------------------------------------------------------
    def on_relay(self, relay: Relay) -> bool:
        """Process one relay (schema-valid); returns whether it was accepted.

        Invalid relays (another session, an unknown slot or sender, a short or forged chain,
        a chain that repeats a signer) are counted in :attr:`rejected` and change nothing. A
        payload already accepted (or a third one) is ignored before any signature check, so
        each trustee verifies each accepted payload's chain once.
        """
        slot, sender, chain = relay.slot, relay.sender, relay.chain
        if relay.session != self.session or not 1 <= slot <= self.slots or not 0 <= sender < self.n:
            self.rejected += 1
            return False
        k = self._sub_round(slot)
        if k is None:
            return False  # decided: too late
        key = (slot, sender)
        got = self._accepted.get(key)
        digest = hashlib.sha256(relay.payload).digest()
        if got is not None and (digest in got or len(got) >= 2):
            return False  # nothing new to learn (an honest echo of what we hold)
        # k + 1 distinct valid signatures, the sender's first, are what sub-round k needs;
        # anything after them is neither checked nor forwarded.
        prefix = chain[: k + 1]
        signers = [w.signer for w in prefix]
        if (
            len(prefix) < k + 1
            or signers[0] != sender
            or len(set(signers)) != len(signers)
            or any(s >= self.n for s in signers)
        ):
            self.rejected += 1
            return False
        stmt = statement(self.session, slot, sender, digest)
        for w in prefix:
            if not is_valid(self.keys[w.signer], BROADCAST_CONTEXT, stmt, w.signature):
                self.rejected += 1
                return False
        self._accepted.setdefault(key, {})[digest] = relay.payload
        if k < self.t and self.index not in signers:
            chain2 = (*prefix, self._witness(slot, sender, digest))
            self.send_all(msgspec.structs.replace(relay, chain=chain2))
        return True

    # decide -------------------------------------------------------------------------------
    def decide(self, slot: int) -> dict[int, Outcome]:
        """Close ``slot``: every sender's outcome (the same at every honest trustee)."""
        self._decided.add(slot)
        out: dict[int, Outcome] = {}
        for sender in range(self.n):
            got = self._accepted.get((slot, sender))
            if not got:
                out[sender] = None
            elif len(got) == 1:
                out[sender] = next(iter(got.values()))
            else:
                a, b = sorted(got)[:2]
                out[sender] = Equivocation(sender, slot, (a, b))
        return out
