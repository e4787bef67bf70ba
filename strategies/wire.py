"""What Kaires puts in Flower messages: record keys and typed schema messages.

Everything a provider needs travels in the train Message's ConfigRecord (``"config"``),
under keys prefixed ``kaires.``; everything it sends back travels in a ConfigRecord
``"kaires"`` of the reply. Every structured value is a :class:`kaires_fl.schema.Message`
(canonical MessagePack; decoding validates every field's type, range and size), except
the ledger's own records (the genesis block, transactions and state proofs, in the
ledger's canonical encoding). Every decoder here raises :class:`~kaires_fl.errors.
EncodingError` (or its :class:`~kaires_fl.errors.InvalidSubmission` sibling for
submissions) on bytes from a peer — never another exception. Nothing here imports Flower.

Server → client (``config``):

- ``kaires.phase``: ``"enrol"`` (send your key and signed policy) or ``"job"``;
- ``kaires.genesis``: the ledger's genesis block (bytes; the provider checks it against
  the chain id it trusts);
- ``kaires.consumer``: the consumer's Ed25519 key (hex);
- ``kaires.committee``: :class:`CommitteeDescription` (``lts`` id, ``aggregators`` and
  ``aggregator_keys`` hex keys, Shamir ``degree``);
- ``kaires.challenge``: at enrolment, 32 fresh random bytes per node, which the provider
  signs with the node id (:class:`Enrolment`), so another node cannot replay its reply;
- ``kaires.job``: the job id; ``kaires.proofs``: :func:`encode_proofs` of the state proofs
  of ``job/<id>``, the LTS entry, the provider's own policy and its tx counter;
- ``kaires.weight-key``: the MetricRecord key of the provider's num-examples.

Client → server (reply record ``kaires``):

- enrolment: ``enrolment`` = :class:`Enrolment` (public key, policy id, the signed
  ``darc.create``, the signature of the challenge);
- job: ``policy``, ``write-tx`` (the CALYPSO write, signed by the provider) and the
  sealed submission as :func:`submission_record`: ``submission`` (:class:`SubmissionHead`:
  the signed manifest), ``meas-parts`` and ``proof-parts`` (the sealed parts, one bytes
  value per aggregator). The parts travel as Flower's own bytes values, so neither side
  packs or unpacks megabytes (each copy of a 7 MB submission costs ≈ 5 ms on this
  machine). :func:`encode_submission` is the whole submission as one blob (the schema
  encoding of :class:`~kaires_fl.aggregation.submission.SealedSubmission`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import msgspec

from kaires_fl import schema
from kaires_fl.errors import EncodingError, InvalidSubmission

PHASE = "kaires.phase"
GENESIS = "kaires.genesis"
CONSUMER = "kaires.consumer"
JOB = "kaires.job"
PROOFS = "kaires.proofs"
COMMITTEE = "kaires.committee"
WEIGHT_KEY = "kaires.weight-key"
CHALLENGE = "kaires.challenge"
REPLY = "kaires"
ENROLMENT = "enrolment"
PHASE_ENROL = "enrol"
PHASE_JOB = "job"

#: Most aggregators a committee description may name.
MAX_MEMBERS = 256
#: Most state proofs one job message may carry.
MAX_PROOFS = 16

_Keys = Annotated[tuple[schema.Hex32, ...], msgspec.Meta(min_length=1, max_length=MAX_MEMBERS)]
_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:/-]+\Z")]


class CommitteeDescription(schema.Message, frozen=True):
    """The aggregation committee and LTS a ServerApp names (providers pin them)."""

    lts: _Id
    aggregators: _Keys  # Ed25519 keys, hex, in index order
    aggregator_keys: _Keys  # X25519 keys, hex, same order
    degree: schema.Index  # Shamir degree t

    def as_dict(self) -> dict[str, Any]:
        return {
            "lts": self.lts,
            "aggregators": list(self.aggregators),
            "aggregator_keys": list(self.aggregator_keys),
            "degree": self.degree,
        }


class Enrolment(schema.Message, frozen=True):
    """A provider's enrolment reply: its key, its policy id, the ``darc.create`` it signed
    (ledger encoding) and its signature of (chain, challenge, node id)."""

    public: schema.Hex32
    policy: _Id
    policy_tx: schema.Blob
    signature: schema.Signature


class ProofBundle(schema.Message, frozen=True):
    """Named ledger state proofs (each in the ledger's encoding)."""

    proofs: Annotated[
        dict[Annotated[str, msgspec.Meta(max_length=32)], schema.Blob],
        msgspec.Meta(max_length=MAX_PROOFS),
    ]


def _decode(data: Any, type_: Any, what: str) -> Any:
    if not isinstance(data, bytes):
        raise EncodingError(f"{what} must be bytes, got {type(data).__name__}")
    try:
        return schema.decode(data, type_)
    except EncodingError as exc:
        raise EncodingError(f"malformed {what}: {exc}") from None


def encode_committee(desc: Mapping[str, Any]) -> bytes:
    """A committee description (``lts``, ``aggregators``, ``aggregator_keys``, ``degree``)
    as :class:`CommitteeDescription` bytes."""
    return schema.encode(
        CommitteeDescription(
            lts=str(desc["lts"]),
            aggregators=tuple(desc["aggregators"]),
            aggregator_keys=tuple(desc["aggregator_keys"]),
            degree=int(desc["degree"]),
        )
    )


def decode_committee(data: Any) -> dict[str, Any]:
    """Inverse of :func:`encode_committee` (as a dict); EncodingError on anything else,
    including unequally many Ed25519 and X25519 keys."""
    desc = _decode(data, CommitteeDescription, "committee description")
    if len(desc.aggregators) != len(desc.aggregator_keys):
        raise EncodingError("a committee names as many X25519 as Ed25519 aggregator keys")
    return desc.as_dict()


def encode_enrolment(public: str, policy: str, policy_tx: bytes, signature: bytes) -> bytes:
    """An :class:`Enrolment` as bytes."""
    return schema.encode(Enrolment(public, policy, bytes(policy_tx), bytes(signature)))


def decode_enrolment(data: Any) -> Enrolment:
    """Inverse of :func:`encode_enrolment`; EncodingError on anything else."""
    return _decode(data, Enrolment, "enrolment")


def encode_tx(tx: Any) -> bytes:
    """Canonical bytes of a signed ledger transaction."""
    from kaires_fl.ledger.encoding import canonical

    return canonical(tx.to_obj())


def decode_tx(data: Any) -> Any:
    """Inverse of :func:`encode_tx`; EncodingError on malformed bytes (signatures are
    checked by the ledger when the tx is submitted)."""
    from kaires_fl.ledger.encoding import decode_canonical
    from kaires_fl.ledger.tx import Tx

    if not isinstance(data, bytes):
        raise EncodingError(f"a transaction must be bytes, got {type(data).__name__}")
    tx = Tx.from_obj(decode_canonical(data))
    if not isinstance(tx.payload, dict):
        raise EncodingError("a transaction payload must be a mapping")
    return tx


SUBMISSION = "submission"
MEAS_PARTS = "meas-parts"
PROOF_PARTS = "proof-parts"


def _head_type() -> Any:
    """``SubmissionHead``: a sealed submission without its parts (the signed manifest and
    its signature). Built on first use: the manifest type lives in the aggregation package,
    which this module does not import when it is loaded."""
    from kaires_fl.aggregation.submission import Manifest

    return msgspec.defstruct(
        "SubmissionHead",
        [("manifest", Manifest), ("signature", schema.Signature)],
        bases=(schema.Message,),
        frozen=True,
        tag="SubmissionHead",
    )


_HEAD: list[Any] = []


def _head_cls() -> Any:
    if not _HEAD:
        _HEAD.append(_head_type())
    return _HEAD[0]


def encode_submission(sub: Any) -> bytes:
    """A sealed submission as one blob (its schema encoding)."""
    return schema.encode(sub)


def submission_record(sub: Any) -> dict[str, bytes | list[bytes]]:
    """A sealed submission as reply-record fields (module docstring); no part is copied."""
    return {
        SUBMISSION: schema.encode(_head_cls()(sub.manifest, sub.signature)),
        MEAS_PARTS: list(sub.meas_parts),
        PROOF_PARTS: list(sub.proof_parts),
    }


def decode_submission(data: Any) -> Any:
    """Inverse of :func:`encode_submission` (bytes) and of :func:`submission_record`
    (a mapping with its three fields).

    Raises
    ------
    InvalidSubmission
        if the input is not a well-formed submission, never another exception (the
        signature and part hashes are checked later, by ``SealedSubmission.check``).
    """
    from kaires_fl.aggregation.submission import SealedSubmission

    try:
        if isinstance(data, Mapping):
            head = _decode(data.get(SUBMISSION), _head_cls(), "submission head")
            meas, proof = data.get(MEAS_PARTS), data.get(PROOF_PARTS)
            if not isinstance(meas, list | tuple) or not isinstance(proof, list | tuple):
                raise EncodingError("the submission parts must be lists of bytes values")
            if not all(isinstance(c, bytes) for c in [*meas, *proof]):
                raise EncodingError("the submission fields must be bytes values")
            n = len(head.manifest.meas_parts)
            if len(meas) != n or len(proof) != n:
                raise EncodingError(
                    f"{len(meas)} + {len(proof)} parts for a manifest naming {n} aggregators"
                )
            return SealedSubmission(head.manifest, head.signature, tuple(meas), tuple(proof))
        sub = _decode(data, SealedSubmission, "sealed submission")
        n = len(sub.manifest.meas_parts)
        if len(sub.meas_parts) != n or len(sub.proof_parts) != n:
            raise EncodingError(f"the parts do not match a manifest naming {n} aggregators")
        return sub
    except EncodingError as exc:
        raise InvalidSubmission(
            f"malformed sealed submission in a Flower reply: {exc}; the client must reply "
            "with kaires_mod's encoding"
        ) from None


def encode_proofs(proofs: Mapping[str, Any]) -> bytes:
    """Named state proofs (``StateProof``) as :class:`ProofBundle` bytes."""
    return schema.encode(ProofBundle({k: bytes(p.to_bytes()) for k, p in proofs.items()}))


def decode_proofs(data: Any) -> dict[str, Any]:
    """Inverse of :func:`encode_proofs`; EncodingError on malformed bytes."""
    from kaires_fl.ledger.audit import StateProof

    bundle = _decode(data, ProofBundle, "ledger proofs")
    return {k: StateProof.from_bytes(v) for k, v in bundle.proofs.items()}


__all__ = [
    "CHALLENGE",
    "COMMITTEE",
    "CONSUMER",
    "ENROLMENT",
    "GENESIS",
    "JOB",
    "MEAS_PARTS",
    "PHASE",
    "PHASE_ENROL",
    "PHASE_JOB",
    "PROOFS",
    "PROOF_PARTS",
    "REPLY",
    "SUBMISSION",
    "WEIGHT_KEY",
    "CommitteeDescription",
    "Enrolment",
    "ProofBundle",
    "decode_committee",
    "decode_enrolment",
    "decode_proofs",
    "decode_submission",
    "decode_tx",
    "encode_committee",
    "encode_enrolment",
    "encode_proofs",
    "encode_submission",
    "encode_tx",
    "submission_record",
]
