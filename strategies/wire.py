"""What Kaires puts in Flower messages: record keys and byte encodings.

Everything a provider needs travels in the train Message's ConfigRecord (``"config"``),
under keys prefixed ``kaires.``; everything it sends back travels in a ConfigRecord
``"kaires"`` of the reply. Nothing here imports Flower, so the encodings can be tested
and used on their own.

Server → client (``config``):

- ``kaires.phase``: ``"enrol"`` (send your key and signed policy) or ``"job"``;
- ``kaires.genesis``: the ledger's genesis block (bytes; the provider checks it against
  the chain id it trusts);
- ``kaires.consumer``: the consumer's Ed25519 key (hex);
- ``kaires.committee``: canonical JSON of the committee (``lts`` id, ``aggregators`` and
  ``aggregator_keys`` hex keys, Shamir ``degree``);
- ``kaires.job``: the job id; ``kaires.proofs``: :func:`encode_proofs` of the state proofs
  of ``job/<id>``, the LTS entry, the provider's own policy and its tx counter;
- ``kaires.weight-key``: the MetricRecord key of the provider's weight (``num-examples``).

Client → server (reply record ``kaires``):

- enrolment: ``public`` (hex), ``policy`` (policy id), ``policy-tx`` (:func:`encode_tx`);
- job: ``policy``, ``write-tx`` (the CALYPSO write, signed by the provider) and the
  sealed submission as :func:`submission_record`: ``submission`` (canonical JSON of the
  signed manifest), ``meas-parts`` and ``proof-parts`` (the sealed parts, one bytes value
  per aggregator). The parts travel as Flower's own bytes values, so neither side packs
  or unpacks megabytes (each copy of a 7 MB submission costs ≈ 5 ms on this machine).
  :func:`encode_submission` is the same content as one blob (files, other transports).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

from kaires_fl.errors import EncodingError, InvalidSubmission

PHASE = "kaires.phase"
GENESIS = "kaires.genesis"
CONSUMER = "kaires.consumer"
JOB = "kaires.job"
PROOFS = "kaires.proofs"
COMMITTEE = "kaires.committee"
WEIGHT_KEY = "kaires.weight-key"
REPLY = "kaires"
PHASE_ENROL = "enrol"
PHASE_JOB = "job"

_U32 = struct.Struct("<I")


def _pack(chunks: list[bytes]) -> bytes:
    # One join (one copy of each chunk): the parts of a submission are megabytes.
    framed: list[bytes] = []
    for c in chunks:
        framed += (_U32.pack(len(c)), c)
    return b"".join(framed)


def _unpack(data: bytes, what: str) -> list[bytes]:
    """The chunks of :func:`_pack` (each copied once out of ``data``, which is not copied)."""
    out, k = [], 0
    view = memoryview(data)
    while k < len(data):
        if k + 4 > len(data):
            raise EncodingError(f"truncated {what}")
        (n,) = _U32.unpack_from(view, k)
        k += 4
        if k + n > len(data):
            raise EncodingError(f"truncated {what}")
        out.append(bytes(view[k : k + n]))
        k += n
    return out


def encode_tx(tx: Any) -> bytes:
    """Canonical bytes of a signed ledger transaction."""
    from kaires_fl.ledger.encoding import canonical

    return canonical(tx.to_obj())


def decode_tx(data: bytes) -> Any:
    """Inverse of :func:`encode_tx`; EncodingError on malformed bytes (signatures are
    checked by the ledger when the tx is submitted)."""
    from kaires_fl.ledger.encoding import decode_canonical
    from kaires_fl.ledger.tx import Tx

    return Tx.from_obj(decode_canonical(bytes(data)))


SUBMISSION = "submission"
MEAS_PARTS = "meas-parts"
PROOF_PARTS = "proof-parts"


def _head(sub: Any) -> bytes:
    from kaires_fl.ledger.encoding import canonical

    n = len(sub.meas_parts)
    return bytes(
        canonical({"manifest": sub.manifest.to_obj(), "signature": sub.signature.hex(), "n": n})
    )


def encode_submission(sub: Any) -> bytes:
    """A sealed submission as one blob: canonical manifest + signature, then the parts."""
    return _pack([_head(sub), *sub.meas_parts, *sub.proof_parts])


def submission_record(sub: Any) -> dict[str, bytes | list[bytes]]:
    """A sealed submission as reply-record fields (module docstring); no part is copied."""
    return {
        SUBMISSION: _head(sub),
        MEAS_PARTS: list(sub.meas_parts),
        PROOF_PARTS: list(sub.proof_parts),
    }


def decode_submission(data: bytes | Mapping[str, Any]) -> Any:
    """Inverse of :func:`encode_submission` (bytes) and of :func:`submission_record`
    (a mapping with its three fields).

    Raises
    ------
    InvalidSubmission
        if the input is not a well-formed submission (the signature and part hashes are
        checked later, by ``SealedSubmission.check``).
    """
    from kaires_fl.aggregation.submission import Manifest, SealedSubmission
    from kaires_fl.ledger.encoding import decode_canonical

    try:
        if isinstance(data, Mapping):
            fields = [data[SUBMISSION]], list(data[MEAS_PARTS]), list(data[PROOF_PARTS])
            if not all(isinstance(c, bytes) for f in fields for c in f):
                raise EncodingError("the submission fields must be bytes values")
            if len(fields[1]) != len(fields[2]):
                raise EncodingError("as many proof parts as measurement parts are needed")
            chunks = [*fields[0], *fields[1], *fields[2]]
        else:
            chunks = _unpack(data, "submission")
        head = decode_canonical(chunks[0])
        n = int(head["n"])
        if len(chunks) != 1 + 2 * n:
            raise EncodingError(f"{len(chunks) - 1} parts for {n} aggregators")
        m = head["manifest"]
        manifest = Manifest(
            job=str(m["job"]),
            provider=str(m["provider"]),
            signer=str(m["signer"]),
            batch=int(m["batch"]),
            circuit=str(m["circuit"]),
            meas_parts=tuple(m["meas_parts"]),
            proof_parts=tuple(m["proof_parts"]),
            key_commits=tuple(m["key_commits"]),
            write=str(m["write"]),
        )
        return SealedSubmission(
            manifest,
            bytes.fromhex(head["signature"]),
            tuple(chunks[1 : 1 + n]),
            tuple(chunks[1 + n :]),
        )
    except (EncodingError, KeyError, TypeError, ValueError, IndexError) as exc:
        raise InvalidSubmission(
            f"malformed sealed submission in a Flower reply: {exc}; the client must reply "
            "with kaires_mod's encoding"
        ) from exc


def encode_proofs(proofs: Mapping[str, Any]) -> bytes:
    """Named state proofs (``StateProof``) as bytes."""
    from kaires_fl.ledger.encoding import canonical

    names = sorted(proofs)
    return _pack([canonical(names), *[proofs[k].to_bytes() for k in names]])


def decode_proofs(data: bytes) -> dict[str, Any]:
    """Inverse of :func:`encode_proofs`; EncodingError on malformed bytes."""
    from kaires_fl.ledger.audit import StateProof
    from kaires_fl.ledger.encoding import decode_canonical

    try:
        chunks = _unpack(data, "proofs")
        names = decode_canonical(chunks[0])
        if not isinstance(names, list) or len(names) != len(chunks) - 1:
            raise EncodingError("proof names do not match the proofs")
        return {str(k): StateProof.from_bytes(c) for k, c in zip(names, chunks[1:], strict=True)}
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise EncodingError(f"malformed ledger proofs: {exc}") from exc


__all__ = [
    "COMMITTEE",
    "CONSUMER",
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
    "decode_proofs",
    "decode_submission",
    "decode_tx",
    "encode_proofs",
    "encode_submission",
    "encode_tx",
    "submission_record",
]
