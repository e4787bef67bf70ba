"""The trustee service: key release and coin shares, each gated by the ledger proof.

A :class:`Trustee` holds its DKG share x_j and the genesis block of the ledger, and
trusts nothing else. On a :class:`~.release.ReleaseRequest` it

1. verifies the evidence from the genesis block (certificate of 2f + 1 roster nodes,
   Merkle paths) — :class:`~kaires_fl.errors.InvalidProof` otherwise;
2. finds the committed read, the job, its closed inputs, the writes and checks them
   itself (:func:`.contracts.check_read`: job committed, inputs closed, reader and
   recipient key those of the job, every write in the inputs, under this LTS, for this
   job, of a provider the job includes, made under a policy version no later than the
   one the job was authorised under) — :class:`~kaires_fl.errors.AccessDenied` otherwise;
3. re-encrypts its share of each key to the recipient key named by the job, with one
   batched DLEQ proof for the whole read (:attr:`Trustee.batch_proofs`; a proof per share
   if False), and answers the reader directly.

On a :class:`CoinRequest` it answers only if the evidence shows the job's inputs closed,
with its share of the coin on (job, inputs root).

:class:`TrusteeNode` runs a trustee on a :class:`~kaires_fl.transport.base.Transport`
(refusals travel back as :class:`~.release.Refusal`); :func:`collect_answers` is the
reader's side on the in-memory network. Faulty trustees for tests and simulation are the
subclasses in :data:`TRUSTEE_BEHAVIOURS` (wrong shares, wrong proofs, silence).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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
    inputs_key,
    read_key,
    write_key,
)
from kaires_fl.secret_management.dkg import DkgResult
from kaires_fl.secret_management.evidence import StateEvidence
from kaires_fl.secret_management.release import (
    LtsInfo,
    ReencryptedValue,
    Refusal,
    ReleaseRequest,
    ReleaseResponse,
    release_context,
    writes_from_evidence,
)
from kaires_fl.secret_management.write import entry_U
from kaires_fl.transport.base import Transport

__all__ = [
    "TRUSTEE_BEHAVIOURS",
    "CoinRequest",
    "Trustee",
    "TrusteeNode",
    "collect_answers",
    "lts_payload",
    "make_trustee",
]


@dataclass(frozen=True)
class CoinRequest:
    """Anyone → every trustee: the coin of ``job``, with evidence of its closed inputs."""

    lts: str
    job: str
    evidence: StateEvidence


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
    """

    def __init__(
        self,
        result: DkgResult,
        lts: LtsInfo,
        genesis: Genesis,
        identity: Identity | None = None,
    ) -> None:
        if lts.public_shares[result.index] != result.public_shares[result.index]:
            raise ConfigError(
                f"trustee {result.index}'s public share differs from the LTS entry: this LTS "
                "was not produced by this trustee's DKG"
            )
        self.index = result.index
        self._share = result.share
        self.public_share = result.public_shares[result.index]
        self.lts = lts
        self.genesis = genesis
        self.identity = identity
        self.released = 0

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
    def _proven(self, evidence: StateEvidence, keys: Sequence[str]) -> dict[str, Any]:
        proven = evidence.verify(self.genesis)
        missing = [k for k in keys if k not in proven]
        if missing:
            raise InvalidProof(
                f"the ledger evidence does not cover {missing}: prove every entry the "
                "request depends on (see release.evidence_keys)"
            )
        return proven

    def check_release(self, request: ReleaseRequest) -> tuple[dict[str, Any], dict[str, Any]]:
        """Steps 1–2 of the module docstring; returns (read entry, verified evidence).

        Raises
        ------
        InvalidProof
            if the evidence does not verify from the genesis block.
        AccessDenied
            if the ledger does not authorise the release (the message says why).
        """
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
        check_read(
            read,
            proven[job_key(job_id)],
            proven[inputs_key(job_id)],
            {w: proven[write_key(w)] for w in read["writes"]},
            self.lts.id,
            [read["reader"]],
        )
        return read, proven

    @staticmethod
    def _proven_subset(proven: Mapping[str, Any], keys: Sequence[str]) -> None:
        missing = [k for k in keys if k not in proven]
        if missing:
            raise InvalidProof(
                f"the ledger evidence does not cover {missing}: prove every entry the "
                "request depends on (see release.evidence_keys)"
            )

    # -- release ------------------------------------------------------------------------
    def release(self, request: ReleaseRequest) -> ReleaseResponse | None:
        """Check the request (see :meth:`check_release`) and re-encrypt my shares.

        The shares come with one batched DLEQ proof (:attr:`batch_proofs`, default) or a
        DLEQ proof each.
        """
        read, proven = self.check_release(request)
        writes = writes_from_evidence(proven, read["writes"])
        # U and Y are not subgroup-checked on decoding: the first thing done with them is
        # multiplying U + Y by my share, and libsodium refuses that for any point outside
        # the prime-order subgroup (EncodingError, a refusal), so x_j never touches one.
        try:
            Y = elgamal.recipient_point_from_x25519(
                bytes.fromhex(read["recipient"]), subgroup_check=False
            )
        except (EncodingError, ValueError) as exc:
            raise AccessDenied(f"the job's recipient key is unusable: {exc}") from exc
        slot, order = read["slot"], list(read["writes"])
        bases = elgamal.reencryption_bases(
            [entry_U(writes[w], slot, subgroup_check=False) for w in order], Y
        )
        ctxs = [release_context(self.lts.id, read["job"], w, slot) for w in order]
        self.released += len(order)
        if self.batch_proofs:
            values, proof = self._reencrypt_batch(bases, Y, ctxs)
            return ReleaseResponse(
                self.index,
                request.read_id,
                tuple((w, ReencryptedValue(v)) for w, v in zip(order, values, strict=True)),
                proof,
            )
        return ReleaseResponse(
            self.index,
            request.read_id,
            tuple(
                (w, self._reencrypt(b, Y, c)) for w, b, c in zip(order, bases, ctxs, strict=True)
            ),
        )

    def _reencrypt_batch(
        self, bases: Sequence[Point], Y: Point, contexts: Sequence[bytes]
    ) -> tuple[list[Point], DLEQProof]:
        return elgamal.reencrypt_batch(self._share, bases, Y, contexts, self.public_share)

    def _reencrypt(self, base: Point, Y: Point, context: bytes) -> ExponentShare:
        return elgamal.exponent_share(
            self._share, base, elgamal.reencryption_context(Y, context), self.public_share
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

    def _reencrypt(self, base: Point, Y: Point, context: bytes) -> ExponentShare:
        s = super()._reencrypt(base, Y, context)
        return dataclasses.replace(s, value=s.value + Point.base())

    def _coin(self, job: str, root: str) -> CoinShare:
        c = super()._coin(job, root)
        return dataclasses.replace(
            c, share=dataclasses.replace(c.share, value=c.share.value + Point.base())
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
    def _forge(s: ExponentShare) -> ExponentShare:
        return dataclasses.replace(s, proof=DLEQProof(Scalar.random(), Scalar.random()))

    def _reencrypt_batch(
        self, bases: Sequence[Point], Y: Point, contexts: Sequence[bytes]
    ) -> tuple[list[Point], DLEQProof]:
        values, _proof = super()._reencrypt_batch(bases, Y, contexts)
        return values, DLEQProof(Scalar.random(), Scalar.random())

    def _reencrypt(self, base: Point, Y: Point, context: bytes) -> ExponentShare:
        return self._forge(super()._reencrypt(base, Y, context))

    def _coin(self, job: str, root: str) -> CoinShare:
        c = super()._coin(job, root)
        return dataclasses.replace(c, share=self._forge(c.share))


class SilentTrustee(Trustee):
    """Never answers (crashed or withholding)."""

    def release(self, request: ReleaseRequest) -> ReleaseResponse | None:
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
) -> Trustee:
    """A trustee with the given :data:`TRUSTEE_BEHAVIOURS` behaviour."""
    cls = TRUSTEE_BEHAVIOURS.get(behaviour)
    if cls is None:
        raise ConfigError(
            f"unknown trustee behaviour {behaviour!r}; use one of {sorted(TRUSTEE_BEHAVIOURS)}"
        )
    return cls(result, lts, genesis, identity)


# --- on a transport --------------------------------------------------------------------------


class TrusteeNode:
    """Runs ``trustee`` on ``transport``: answers each request to its sender."""

    def __init__(self, trustee: Trustee, transport: Transport) -> None:
        self.trustee = trustee
        self.transport = transport
        transport.set_handler(self.on_message)

    def on_message(self, src: str, msg: Any) -> None:
        answer: Any
        try:
            if isinstance(msg, ReleaseRequest):
                answer = self.trustee.release(msg)
            elif isinstance(msg, CoinRequest):
                answer = self.trustee.coin(msg)
            else:
                return
        except KairesError as exc:
            rid = msg.read_id if isinstance(msg, ReleaseRequest) else msg.job
            answer = Refusal(self.trustee.index, rid, type(exc).__name__, str(exc))
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            # A malformed request (wrong types inside) must not stop the service.
            rid = str(getattr(msg, "read_id", getattr(msg, "job", "")))
            answer = Refusal(self.trustee.index, rid, "InvalidProof", f"malformed request: {exc!r}")
        if answer is not None:
            self.transport.send(src, answer)


def collect_answers(
    network: Any,
    endpoint: Transport,
    trustees: Sequence[str],
    request: ReleaseRequest | CoinRequest,
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
