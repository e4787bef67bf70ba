"""The trustee service: key release, dispute decryption and coin shares, each gated by the
ledger proof.

A :class:`Trustee` holds its DKG share x_j and the genesis block of the ledger, and
trusts nothing else. On a :class:`~.release.ReleaseRequest` it

1. verifies the evidence from the genesis block (certificate of 2f + 1 roster nodes,
   Merkle paths) and that it is fresh: the block's BFT time is at most
   :attr:`Trustee.max_evidence_age_s` older than the trustee's clock (or than the newest
   block it has verified, without a clock) — :class:`~kaires_fl.errors.InvalidProof`
   otherwise;
2. finds the committed read, the job, its closed inputs, the writes and checks them
   itself (:func:`.contracts.check_read`: job committed, inputs closed, reader and
   recipient key those of the job, every write in the inputs, under this LTS, for this
   job, of a provider the job includes, made under a policy version no later than the
   one the job was authorised under, covering every slot of the job; and the reader's
   proof of knowledge of its recipient key) — :class:`~kaires_fl.errors.AccessDenied`
   otherwise;
3. re-encrypts its share of each key to the recipient key named by the job, with one
   batched DLEQ proof for the whole read (:attr:`Trustee.batch_proofs`; a proof per share
   if False).

On a :class:`~.dispute.DisputeRequest` it checks the same evidence, the request's
signature by the read's signer (the job's aggregator of that slot) and answers with x_j·U
of that one ciphertext (:meth:`Trustee.dispute`). On a :class:`CoinRequest` it answers
only if the evidence shows the job's inputs closed, with its share of the coin on
(job, inputs root).

:class:`TrusteeNode` runs a trustee on a :class:`~kaires_fl.transport.base.Transport` as
a service boundary: it accepts schema messages or their encoded bytes, never dies on a
peer's message (any exception becomes a :class:`~.release.Refusal` or is dropped), and
seals release answers to the reader (:class:`~.release.SealedAnswer`).
:func:`collect_answers` is the requester's side on the in-memory network. Faulty trustees
for tests and simulation are the subclasses in :data:`TRUSTEE_BEHAVIOURS` (wrong shares,
wrong proofs, silence).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec

from kaires_fl import schema
from kaires_fl.crypto import elgamal
from kaires_fl.crypto.elgamal import ExponentShare
from kaires_fl.crypto.group import Point, Scalar
from kaires_fl.crypto.proofs import DLEQProof
from kaires_fl.crypto.sign import Identity
from kaires_fl.errors import AccessDenied, ConfigError, EncodingError, InvalidProof, KairesError
from kaires_fl.ledger.block import Genesis
from kaires_fl.ledger.jobs import job_key
from kaires_fl.secret_management.coin import CoinShare, coin_share
from kaires_fl.secret_management.contracts import (
    check_read,
    check_write_for_job,
    inputs_key,
    job_reader,
    read_key,
    write_key,
)
from kaires_fl.secret_management.dispute import (
    DISPUTE_CONTEXT,
    DisputeRequest,
    DisputeShare,
    dispute_share,
)
from kaires_fl.secret_management.dkg import DkgResult
from kaires_fl.secret_management.evidence import BlockCache, StateEvidence
from kaires_fl.secret_management.release import (
    LtsInfo,
    ReencryptedValue,
    Refusal,
    ReleaseRequest,
    ReleaseResponse,
    SealedAnswer,
    refusal,
    release_context,
    seal_answer,
    writes_from_evidence,
)
from kaires_fl.secret_management.write import check_slot, entry_U
from kaires_fl.transport.base import Transport

__all__ = [
    "DEFAULT_MAX_EVIDENCE_AGE_S",
    "TRUSTEE_BEHAVIOURS",
    "CoinRequest",
    "Trustee",
    "TrusteeNode",
    "collect_answers",
    "lts_payload",
    "make_trustee",
]

#: Oldest ledger evidence (seconds of BFT block time) a trustee acts on by default.
DEFAULT_MAX_EVIDENCE_AGE_S = 120.0


class CoinRequest(schema.Message, frozen=True):
    """Anyone → every trustee: the coin of ``job``, with evidence of its closed inputs."""

    lts: schema.Hex32
    job: schema.Hex32
    evidence: StateEvidence


#: Every request a trustee answers (what :meth:`TrusteeNode.on_message` decodes bytes as).
TrusteeRequest = ReleaseRequest | CoinRequest | DisputeRequest


def lts_payload(result: DkgResult, trustee_keys: Sequence[bytes]) -> dict[str, Any]:
    """Payload of the ``calypso.lts`` transaction registering a DKG's outcome.

    ``trustee_keys[j]`` is trustee j's Ed25519 public key; co-sign the transaction with
    every trustee whose :meth:`Trustee.approve_lts` accepts it (at least n − t).
    """
    if len(trustee_keys) != result.n:
        raise ConfigError(f"one Ed25519 key per trustee: got {len(trustee_keys)} for n={result.n}")
    return {
        "n": result.n,
        "t": result.t,
        "X": result.public_key.to_bytes().hex(),
        "shares": [p.to_bytes().hex() for p in result.public_shares],
        "trustees": [bytes(k).hex() for k in trustee_keys],
        "transcript": result.transcript.hex(),
    }


class Trustee:
    """One member of the secret-management cothority (honest behaviour).

    Parameters
    ----------
    result:
        This trustee's DKG outcome (its secret share x_j).
    lts:
        The registered LTS (its ledger entry decoded by :meth:`LtsInfo.from_entry`).
    genesis:
        The ledger's genesis block: the only thing trusted to check evidence.
    clock:
        Seconds on the trustee's clock (its transport's ``now``; :class:`TrusteeNode` sets
        it). Without one, evidence must be at most :attr:`max_evidence_age_s` older than
        the newest block this trustee has verified.
    max_evidence_age_s:
        Oldest evidence (BFT block time) acted on.
    """

    def __init__(
        self,
        result: DkgResult,
        lts: LtsInfo,
        genesis: Genesis,
        identity: Identity | None = None,
        *,
        clock: Callable[[], float] | None = None,
        max_evidence_age_s: float = DEFAULT_MAX_EVIDENCE_AGE_S,
    ) -> None:
        if lts.public_shares[result.index] != result.public_shares[result.index]:
            raise ConfigError(
                f"trustee {result.index}'s public share differs from the LTS entry: this LTS "
                "was not produced by this trustee's DKG"
            )
        if not max_evidence_age_s > 0:
            raise ConfigError(f"max_evidence_age_s must be > 0, got {max_evidence_age_s}")
        self.index = result.index
        self._share = result.share
        self.public_share = result.public_shares[result.index]
        self.lts = lts
        self.genesis = genesis
        self.identity = identity
        self.clock = clock
        self.max_evidence_age_s = float(max_evidence_age_s)
        self.blocks = BlockCache()
        self.released = 0
        self.disputed = 0

    #: One batched DLEQ proof per answer (True) or one proof per share (False).
    batch_proofs: bool = True

    # -- LTS ----------------------------------------------------------------------------
    @staticmethod
    def approve_lts(result: DkgResult, payload: Mapping[str, Any]) -> bool:
        """Whether ``payload`` registers exactly the key this trustee's DKG produced."""
        return (
            payload.get("X") == result.public_key.to_bytes().hex()
            and payload.get("shares") == [p.to_bytes().hex() for p in result.public_shares]
            and payload.get("t") == result.t
            and payload.get("transcript") == result.transcript.hex()
        )

    # -- checks -------------------------------------------------------------------------
    def _proven(self, evidence: Any, keys: Sequence[str]) -> dict[str, Any]:
        """Verify ``evidence`` (fresh, from the genesis block) and that it covers ``keys``."""
        if not isinstance(evidence, StateEvidence):
            raise InvalidProof(
                f"a request carries StateEvidence, got {type(evidence).__name__}: prove the "
                "entries with prove_entries"
            )
        now_ms = None if self.clock is None else self.clock() * 1000.0
        proven = evidence.verify(
            self.genesis,
            cache=self.blocks,
            now_ms=now_ms,
            max_age_ms=self.max_evidence_age_s * 1000.0,
        )
        self._proven_subset(proven, keys)
        return proven

    @staticmethod
    def _proven_subset(proven: Mapping[str, Any], keys: Sequence[str]) -> None:
        missing = [k for k in keys if k not in proven]
        if missing:
            raise InvalidProof(
                f"the ledger evidence does not cover {missing}: prove every entry the "
                "request depends on (see release.evidence_keys)"
            )

    def check_release(self, request: ReleaseRequest) -> tuple[dict[str, Any], dict[str, Any]]:
        """Steps 1–2 of the module docstring; returns (read entry, verified evidence).

        Raises
        ------
        InvalidProof
            if the evidence does not verify from the genesis block or is stale.
        AccessDenied
            if the ledger does not authorise the release (the message says why).
        """
        read, proven, _Y = self._check_release(request)
        return read, proven

    def _check_release(
        self, request: ReleaseRequest
    ) -> tuple[dict[str, Any], dict[str, Any], Point]:
        proven = self._proven(request.evidence, [read_key(request.read_id)])
        read = proven[read_key(request.read_id)]
        if read is None:
            raise AccessDenied(
                f"read {request.read_id[:16]}… is not committed on the ledger: commit a "
                "calypso.read transaction first (every release is recorded)"
            )
        if read["lts"] != self.lts.id:
            raise AccessDenied(f"read {request.read_id[:16]}… is for another LTS")
        job_id = read["job"]
        need = [job_key(job_id), inputs_key(job_id), *(write_key(w) for w in read["writes"])]
        self._proven_subset(proven, need)
        Y = check_read(
            read,
            proven[job_key(job_id)],
            proven[inputs_key(job_id)],
            {w: proven[write_key(w)] for w in read["writes"]},
            self.lts.id,
            [read["reader"]],
        )
        return read, proven, Y

    # -- release ------------------------------------------------------------------------
    def release(self, request: ReleaseRequest) -> ReleaseResponse | None:
        """Check the request (see :meth:`check_release`) and re-encrypt my shares.

        The shares come with one batched DLEQ proof (:attr:`batch_proofs`, default) or a
        DLEQ proof each.
        """
        return self._release(request)[0]

    def answer_release(self, request: ReleaseRequest) -> SealedAnswer | None:
        """:meth:`release` sealed to the reader's X25519 key (a refusal once the read is
        known is sealed too; AccessDenied/InvalidProof before that propagate)."""
        response, read = self._release(request)
        if response is None:
            return None
        return seal_answer(response, request.read_id, bytes.fromhex(read["recipient"]))

    def _release(self, request: ReleaseRequest) -> tuple[ReleaseResponse | None, dict[str, Any]]:
        read, proven, Y = self._check_release(request)
        writes = writes_from_evidence(proven, read["writes"])
        # U is not subgroup-checked on decoding, nor was Y: the first thing done with them
        # is multiplying U + Y by my share (and Y by the proof's challenge), which libsodium
        # refuses for any point outside the prime-order subgroup (a refusal), so x_j never
        # touches one.
        slot, order = read["slot"], list(read["writes"])
        bases = elgamal.reencryption_bases(
            [entry_U(writes[w], slot, subgroup_check=False) for w in order], Y
        )
        ctxs = [release_context(self.lts.id, read["job"], w, slot) for w in order]
        self.released += len(order)
        if self.batch_proofs:
            values, proof = self._reencrypt_batch(bases, Y, ctxs)
            shares = tuple((w, ReencryptedValue(v)) for w, v in zip(order, values, strict=True))
            return ReleaseResponse(self.index, request.read_id, shares, proof), read
        shares = tuple(
            (w, self._reencrypt(b, Y, c)) for w, b, c in zip(order, bases, ctxs, strict=True)
        )
        return ReleaseResponse(self.index, request.read_id, shares), read

    def _reencrypt_batch(
        self, bases: Sequence[Point], Y: Point, contexts: Sequence[bytes]
    ) -> tuple[list[Point], DLEQProof]:
        return elgamal.reencrypt_batch(self._share, bases, Y, contexts, self.public_share)

    def _reencrypt(self, base: Point, Y: Point, context: bytes) -> ReencryptedValue:
        s = elgamal.exponent_share(
            self._share, base, elgamal.reencryption_context(Y, context), self.public_share
        )
        return ReencryptedValue(s.value, s.proof)

    # -- dispute ------------------------------------------------------------------------
    def dispute(self, request: DisputeRequest) -> DisputeShare | None:
        """x_j·U of one (write, slot), for the aggregator of that slot (module docstring).

        Raises
        ------
        InvalidProof
            if the evidence does not verify, is stale, or the request is not signed by
            the read's signer.
        AccessDenied
            if the read, job, inputs or write do not authorise this dispute.
        """
        if request.lts != self.lts.id:
            raise AccessDenied(f"dispute under another LTS {request.lts[:16]}…")
        slot = check_slot(request.slot)
        if slot == "consumer":
            raise AccessDenied("disputes are for aggregator slots only")
        rk, jk, ik, wk = (
            read_key(request.read),
            job_key(request.job),
            inputs_key(request.job),
            write_key(request.write),
        )
        proven = self._proven(request.evidence, [rk, jk, ik, wk])
        read, job, inputs, write = proven[rk], proven[jk], proven[ik], proven[wk]
        if read is None or job is None or inputs is None or write is None:
            raise AccessDenied(
                "the dispute's read, job, closed inputs or write is not on the ledger"
            )
        if read["lts"] != self.lts.id or read["job"] != request.job or read["slot"] != slot:
            raise AccessDenied("the read is for another LTS, job or slot than the dispute")
        if job["status"] != "committed":
            raise AccessDenied(f"job {request.job[:16]}… is {job['status']}: disputes are over")
        signer, _key = job_reader(job, slot)
        if read["reader"] != signer:
            raise AccessDenied("the read was not committed by the job's aggregator of that slot")
        if not schema.verify(request, bytes.fromhex(signer), DISPUTE_CONTEXT):
            raise InvalidProof(
                "the dispute request is not signed by the job's aggregator of that slot"
            )
        if request.write not in read["writes"] or request.write not in inputs["writes"]:
            raise AccessDenied(
                f"write {request.write[:16]}… is not among the read's writes and the job's "
                "closed inputs"
            )
        check_write_for_job(request.write, write, job, slot, self.lts.id)
        U = entry_U(write, slot)
        self.disputed += 1
        return self._dispute_share(request, slot, U)

    def _dispute_share(self, request: DisputeRequest, slot: str, U: Point) -> DisputeShare:
        return dispute_share(
            self.index,
            self._share,
            self.public_share,
            self.lts.id,
            request.job,
            request.write,
            slot,
            U,
        )

    # -- coin ---------------------------------------------------------------------------
    def coin(self, request: CoinRequest) -> CoinShare | None:
        """My coin share for the job, only once the ledger shows its inputs closed."""
        if request.lts != self.lts.id:
            raise AccessDenied(f"coin requested under another LTS {request.lts[:16]}…")
        keys = [job_key(request.job), inputs_key(request.job)]
        proven = self._proven(request.evidence, keys)
        job, inputs = proven[keys[0]], proven[keys[1]]
        if job is None:
            raise AccessDenied(f"job {request.job[:16]}… is not committed: no coin")
        if inputs is None:
            raise AccessDenied(
                f"the inputs of job {request.job[:16]}… are not closed: the coin is only "
                "revealed after the submission set is fixed on the ledger"
            )
        return self._coin(request.job, inputs["root"])

    def _coin(self, job: str, root: str) -> CoinShare:
        return coin_share(self.index, self._share, self.public_share, self.lts.id, job, root)


# --- faulty trustees -------------------------------------------------------------------------


class WrongShareTrustee(Trustee):
    """Passes every check, then returns wrong values (with proofs for the right ones)."""

    def _reencrypt_batch(
        self, bases: Sequence[Point], Y: Point, contexts: Sequence[bytes]
    ) -> tuple[list[Point], DLEQProof]:
        values, proof = super()._reencrypt_batch(bases, Y, contexts)
        return [v + Point.base() for v in values], proof

    def _reencrypt(self, base: Point, Y: Point, context: bytes) -> ReencryptedValue:
        s = super()._reencrypt(base, Y, context)
        return ReencryptedValue(s.value + Point.base(), s.proof)

    def _dispute_share(self, request: DisputeRequest, slot: str, U: Point) -> DisputeShare:
        s = super()._dispute_share(request, slot, U)
        return msgspec.structs.replace(s, share=s.share + Point.base())

    def _coin(self, job: str, root: str) -> CoinShare:
        c = super()._coin(job, root)
        return msgspec.structs.replace(
            c, share=ExponentShare(c.share.value + Point.base(), c.share.proof)
        )


class OneWrongShareTrustee(Trustee):
    """Returns one wrong value (the last write's) among right ones, with the honest proof."""

    def _reencrypt_batch(
        self, bases: Sequence[Point], Y: Point, contexts: Sequence[bytes]
    ) -> tuple[list[Point], DLEQProof]:
        values, proof = super()._reencrypt_batch(bases, Y, contexts)
        return [*values[:-1], values[-1] + Point.base()], proof


class WrongProofTrustee(Trustee):
    """Returns the right values with forged proofs."""

    @staticmethod
    def _forged() -> DLEQProof:
        return DLEQProof(Scalar.random(), Scalar.random())

    def _reencrypt_batch(
        self, bases: Sequence[Point], Y: Point, contexts: Sequence[bytes]
    ) -> tuple[list[Point], DLEQProof]:
        values, _proof = super()._reencrypt_batch(bases, Y, contexts)
        return values, self._forged()

    def _reencrypt(self, base: Point, Y: Point, context: bytes) -> ReencryptedValue:
        return ReencryptedValue(super()._reencrypt(base, Y, context).value, self._forged())

    def _dispute_share(self, request: DisputeRequest, slot: str, U: Point) -> DisputeShare:
        s = super()._dispute_share(request, slot, U)
        return msgspec.structs.replace(s, proof=self._forged())

    def _coin(self, job: str, root: str) -> CoinShare:
        c = super()._coin(job, root)
        return msgspec.structs.replace(c, share=ExponentShare(c.share.value, self._forged()))


class SilentTrustee(Trustee):
    """Never answers (crashed or withholding)."""

    def release(self, request: ReleaseRequest) -> ReleaseResponse | None:
        return None

    def answer_release(self, request: ReleaseRequest) -> SealedAnswer | None:
        return None

    def dispute(self, request: DisputeRequest) -> DisputeShare | None:
        return None

    def coin(self, request: CoinRequest) -> CoinShare | None:
        return None


#: Behaviour name → trustee class (``faults={"trustee": {j: name}}`` in simulations).
TRUSTEE_BEHAVIOURS: dict[str, type[Trustee]] = {
    "honest": Trustee,
    "byzantine": WrongShareTrustee,
    "wrong_share": WrongShareTrustee,
    "wrong_one_share": OneWrongShareTrustee,
    "wrong_proof": WrongProofTrustee,
    "crash": SilentTrustee,
    "silent": SilentTrustee,
}


def make_trustee(
    result: DkgResult,
    lts: LtsInfo,
    genesis: Genesis,
    behaviour: str = "honest",
    identity: Identity | None = None,
    **options: Any,
) -> Trustee:
    """A trustee with the given :data:`TRUSTEE_BEHAVIOURS` behaviour (``options``: the
    keyword arguments of :class:`Trustee`)."""
    cls = TRUSTEE_BEHAVIOURS.get(behaviour)
    if cls is None:
        raise ConfigError(
            f"unknown trustee behaviour {behaviour!r}; use one of {sorted(TRUSTEE_BEHAVIOURS)}"
        )
    return cls(result, lts, genesis, identity, **options)


# --- on a transport --------------------------------------------------------------------------


class TrusteeNode:
    """Runs ``trustee`` on ``transport`` as a service boundary; answers each request to its
    sender.

    ``on_message`` accepts a :data:`TrusteeRequest` object or its schema encoding (bytes).
    Anything else, anything undecodable and any exception while handling a request is
    answered by a :class:`~.release.Refusal` (when the request names what it is about) or
    dropped, and counted in :attr:`refused`; the node goes on serving. Requests are not
    authenticated by the transport (the ledger evidence and, for a dispute, the request's
    signature are what authorise them), so no sender is recorded as faulty here. Release
    answers are sealed to the reader (:class:`~.release.SealedAnswer`) when
    :attr:`seal_answers` is True (the default).
    """

    #: Seal release answers to the read's X25519 key (interface B).
    seal_answers: bool = True

    def __init__(self, trustee: Trustee, transport: Transport) -> None:
        self.trustee = trustee
        self.transport = transport
        self.refused = 0
        if trustee.clock is None:
            trustee.clock = transport.now
        transport.set_handler(self.on_message)

    def on_message(self, src: str, msg: Any) -> None:
        """Handle one request from ``src`` (never raises)."""
        try:
            answer = self._answer(src, msg)
        except Exception as exc:  # the service boundary: never die on a peer
            self.refused += 1
            try:
                answer = self._refusal(msg, exc)
            except Exception:  # a request that cannot even be named is dropped
                answer = None
        if answer is None:
            return
        try:
            self.transport.send(src, answer)
        except Exception:  # a transport failure must not stop the service
            self.refused += 1

    def _answer(self, src: str, msg: Any) -> Any:
        if isinstance(msg, bytes | bytearray | memoryview):
            msg = schema.decode(bytes(msg), TrusteeRequest)
        if isinstance(msg, ReleaseRequest):
            if self.seal_answers:
                try:
                    return self.trustee.answer_release(msg)
                except KairesError as exc:
                    return self._refusal(msg, exc)
            return self.trustee.release(msg)
        if isinstance(msg, CoinRequest):
            return self.trustee.coin(msg)
        if isinstance(msg, DisputeRequest):
            return self.trustee.dispute(msg)
        raise EncodingError(
            f"a trustee answers release, dispute and coin requests, not {type(msg).__name__}"
        )

    def _refusal(self, msg: Any, exc: BaseException) -> Refusal | None:
        about = getattr(msg, "read_id", None) or getattr(msg, "read", None)
        if isinstance(msg, CoinRequest):
            about = msg.job
        if not isinstance(about, str):
            return None  # nothing to name: an undecodable message is dropped
        if not isinstance(exc, KairesError):
            exc = InvalidProof(f"malformed request: {type(exc).__name__}: {exc}")
        return refusal(self.trustee.index, about, exc)


def collect_answers(
    network: Any,
    endpoint: Transport,
    trustees: Sequence[str],
    request: Any,
    timeout: float = 1.0,
) -> dict[int, Any]:
    """Send ``request`` to every trustee address and wait (simulated time) for answers.

    ``network`` is a :class:`~kaires_fl.transport.memory.MemoryNetwork`. Answers are
    keyed by the *sender's address* position in ``trustees`` (a trustee cannot answer
    for another); a trustee that has not answered within ``timeout`` maps to None.
    """
    index = {a: j for j, a in enumerate(trustees)}
    got: dict[int, Any] = {}

    def on_message(src: str, msg: Any) -> None:
        j = index.get(src)
        if j is not None and j not in got:
            got[j] = msg

    endpoint.set_handler(on_message)
    endpoint.broadcast(trustees, request)
    network.run_until(lambda: len(got) == len(trustees), timeout)
    endpoint.set_handler(None)
    return {j: got.get(j) for j in range(len(trustees))}
