"""Single-slot dispute decryption: a publicly verifiable key of ONE slot of ONE write.

When aggregator i cannot open its part of a submission with the key the trustees released
to it, it must show everybody which key the provider actually wrote — without revealing
anything else (no y_i·X, no batched answers covering other writes, which would let anyone
unwrap those). It asks the trustees for a *dispute decryption* of that one ciphertext:

1. :func:`dispute_request` — aggregator i signs a :class:`DisputeRequest` naming the LTS,
   the job, its committed ``calypso.read``, the write and its own slot, with ledger
   evidence (read, job, closed inputs, write) proven at a recent final block.
2. Every trustee checks it on its own (:meth:`.trustee.Trustee.dispute`): evidence from
   the genesis block and fresh; the read committed, for this job and LTS, signed by the
   job's aggregator of that slot, who signed the request; the write among the job's
   closed inputs, usable by the job and naming the read; the job still running. It then
   answers the requester with a :class:`DisputeShare`: x_j·U of that slot's ciphertext
   with a Chaum–Pedersen proof against X_j bound to (LTS, job, write, slot).
3. The aggregator collects t_T + 1 valid shares into a :class:`WrittenKeyProof`
   (:func:`combine_dispute`); anyone holding the LTS entry and the write entry verifies
   it and recovers the written key with :func:`written_key`.

What it reveals: x·U for one (write, slot), i.e. the key the provider wrote for that
aggregator in that write, which the aggregator itself already holds. Nothing in it helps
with any other ciphertext (each share is x_j times that U only).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import msgspec

from kaires_fl import schema
from kaires_fl.crypto import elgamal
from kaires_fl.crypto.elgamal import ExponentShare
from kaires_fl.crypto.group import Point, multi_scalar_mult
from kaires_fl.crypto.proofs import DLEQProof
from kaires_fl.crypto.sign import H, Identity
from kaires_fl.crypto.vss import lagrange_coefficients
from kaires_fl.errors import EncodingError, InvalidProof, ProtocolError
from kaires_fl.ledger.jobs import job_key
from kaires_fl.secret_management.contracts import inputs_key, read_key, write_key
from kaires_fl.secret_management.evidence import StateEvidence, prove_entries
from kaires_fl.secret_management.release import LtsInfo
from kaires_fl.secret_management.write import check_slot, entry_ciphertext, entry_label

__all__ = [
    "DISPUTE_CONTEXT",
    "DisputeRequest",
    "DisputeShare",
    "WrittenKeyProof",
    "combine_dispute",
    "dispute_context",
    "dispute_evidence_keys",
    "dispute_request",
    "dispute_share",
    "verify_dispute_share",
    "written_key",
]

#: Signing context of a :class:`DisputeRequest` (the requester's Ed25519 identity).
DISPUTE_CONTEXT = b"kaires-fl/calypso/dispute-request/v1"
_SHARE_TAG = b"kaires-fl/calypso/dispute-share/v1"


class DisputeRequest(schema.Message, frozen=True):
    """Aggregator → every trustee: decrypt ``slot`` of ``write`` (one ciphertext) publicly.

    Signed (:data:`DISPUTE_CONTEXT`) by the aggregator's Ed25519 identity, which must be
    the signer of the committed read ``read`` and the job's aggregator for ``slot``.
    """

    lts: schema.Hex32
    job: schema.Hex32
    read: schema.Hex32
    write: schema.Hex32
    slot: schema.Label
    evidence: StateEvidence
    signature: schema.Signature = b""


class DisputeShare(schema.Message, frozen=True):
    """Trustee → requester: ``share`` = x_j·U of ``slot`` of ``write``, with ``proof`` that
    log_G X_j = log_U share, bound to (LTS, job, write, slot)."""

    write: schema.Hex32
    slot: schema.Label
    trustee: schema.Index
    share: Point
    proof: DLEQProof


class WrittenKeyProof(schema.Message, frozen=True):
    """t_T + 1 (or more) trustees' :class:`DisputeShare` s of one (write, slot)."""

    write: schema.Hex32
    slot: schema.Label
    shares: Annotated[tuple[DisputeShare, ...], msgspec.Meta(max_length=2**16)]


def dispute_evidence_keys(read_id: str, job_id: str, write_id: str) -> list[str]:
    """The state keys a dispute request proves (read, job, closed inputs, write)."""
    return [read_key(read_id), job_key(job_id), inputs_key(job_id), write_key(write_id)]


def dispute_request(
    ledger: Any,
    identity: Identity,
    lts_id: str,
    job_id: str,
    read_id: str,
    write_id: str,
    slot: str,
) -> DisputeRequest:
    """Aggregator step: the signed request, with evidence from ``ledger`` (a LedgerClient)."""
    check_slot(slot)
    evidence = prove_entries(ledger, dispute_evidence_keys(read_id, job_id, write_id))
    req = DisputeRequest(lts_id, job_id, read_id, write_id, slot, evidence)
    return schema.sign(req, identity, DISPUTE_CONTEXT)


def dispute_context(lts_id: str, job_id: str, write_id: str, slot: str) -> bytes:
    """What a dispute share's DLEQ proof is bound to."""
    return H(_SHARE_TAG, lts_id.encode(), job_id.encode(), write_id.encode(), slot.encode())


def dispute_share(
    trustee: int,
    secret_share: Any,
    public_share: Point,
    lts_id: str,
    job_id: str,
    write_id: str,
    slot: str,
    U: Point,
) -> DisputeShare:
    """Trustee step (after every check of :meth:`.trustee.Trustee.dispute`): x_j·U, proven."""
    es = elgamal.exponent_share(
        secret_share, U, dispute_context(lts_id, job_id, write_id, slot), public_share
    )
    return DisputeShare(write_id, slot, trustee, es.value, es.proof)


def verify_dispute_share(
    share: DisputeShare, lts: LtsInfo, job_id: str, write_id: str, slot: str, U: Point
) -> None:
    """Raises InvalidProof unless ``share`` is trustee ``share.trustee``'s x_j·U for this
    (write, slot) of ``job_id``."""
    if not isinstance(share, DisputeShare):
        raise InvalidProof(f"not a dispute share: {type(share).__name__}")
    if share.write != write_id or share.slot != slot:
        raise InvalidProof("dispute share for another write or slot")
    if not 0 <= share.trustee < lts.n:
        raise InvalidProof(f"dispute share from unknown trustee {share.trustee}")
    if not isinstance(share.share, Point) or not isinstance(share.proof, DLEQProof):
        raise InvalidProof("malformed dispute share")
    elgamal.verify_exponent_share(
        ExponentShare(share.share, share.proof),
        U,
        lts.public_shares[share.trustee],
        dispute_context(lts.id, job_id, write_id, slot),
    )


def _valid_shares(
    shares: Mapping[int, DisputeShare | None] | tuple[DisputeShare, ...],
    lts: LtsInfo,
    job_id: str,
    write_id: str,
    slot: str,
    U: Point,
) -> tuple[dict[int, DisputeShare], dict[int, str]]:
    items = shares.items() if isinstance(shares, Mapping) else ((s.trustee, s) for s in shares)
    valid: dict[int, DisputeShare] = {}
    faulty: dict[int, str] = {}
    for j, sh in items:
        if sh is None:
            faulty[j] = "no dispute share (silent)"
            continue
        try:
            if sh.trustee != j:
                raise InvalidProof("answered for another trustee index")
            verify_dispute_share(sh, lts, job_id, write_id, slot, U)
        except (InvalidProof, EncodingError, ProtocolError, AttributeError, TypeError) as exc:
            faulty[j] = f"invalid dispute share: {exc}"
            continue
        if j in valid:
            faulty[j] = "two dispute shares from one trustee"
            continue
        valid[j] = sh
    return valid, faulty


def combine_dispute(
    shares: Mapping[int, DisputeShare | None],
    lts: LtsInfo,
    write_entry: Mapping[str, Any],
    job_id: str,
    write_id: str,
    slot: str,
) -> tuple[WrittenKeyProof, bytes, dict[int, str]]:
    """Requester step: verify the trustees' answers, keep t_T + 1 valid ones.

    Returns (the publishable proof, the written key, {trustee: why it was not used}).

    Raises
    ------
    ProtocolError
        if fewer than t_T + 1 shares are valid.
    """
    U = entry_ciphertext(write_entry, slot).U
    valid, faulty = _valid_shares(shares, lts, job_id, write_id, slot, U)
    if len(valid) < lts.t + 1:
        raise ProtocolError(
            f"dispute decryption needs t + 1 = {lts.t + 1} valid trustee shares, got "
            f"{len(valid)}; faulty: {faulty}"
        )
    chosen = tuple(valid[j] for j in sorted(valid)[: lts.t + 1])
    proof = WrittenKeyProof(write_id, slot, chosen)
    return proof, _unwrap(proof, lts, write_entry, sorted(valid)[: lts.t + 1]), faulty


def written_key(
    proof: WrittenKeyProof, lts: LtsInfo, write_entry: Mapping[str, Any], job_id: str
) -> bytes:
    """Verify ``proof`` against the LTS and the write's ledger entry; the key written there.

    Pre: ``write_entry`` is the ledger entry of write ``proof.write`` (its write proof was
    checked on commit; it is checked again here).

    Raises
    ------
    InvalidProof
        if fewer than t_T + 1 distinct trustees' shares verify, a share is for another
        write or slot, or the ciphertext's write proof fails.
    """
    try:
        if not isinstance(proof, WrittenKeyProof):
            raise InvalidProof(f"not a WrittenKeyProof: {type(proof).__name__}")
        slot = check_slot(proof.slot)
        ct = entry_ciphertext(write_entry, slot)
        elgamal.verify_ciphertext(ct, lts.X, entry_label(write_entry, slot))
        if len({s.trustee for s in proof.shares}) != len(proof.shares):
            raise InvalidProof("two shares from one trustee")
        valid, faulty = _valid_shares(proof.shares, lts, job_id, proof.write, slot, ct.U)
        if faulty or len(valid) < lts.t + 1:
            raise InvalidProof(
                f"{len(valid)} valid trustee shares of {lts.t + 1} needed ({faulty})"
            )
        return _unwrap(proof, lts, write_entry, sorted(valid)[: lts.t + 1])
    except (EncodingError, ProtocolError, KeyError, TypeError, ValueError) as exc:
        raise InvalidProof(f"written-key proof does not verify: {exc}") from exc
    except InvalidProof as exc:
        raise InvalidProof(
            f"written-key proof for write {str(getattr(proof, 'write', ''))[:16]}… does not "
            f"verify: {exc}"
        ) from None


def _unwrap(
    proof: WrittenKeyProof, lts: LtsInfo, write_entry: Mapping[str, Any], chosen: list[int]
) -> bytes:
    by = {s.trustee: s.share for s in proof.shares}
    xU = multi_scalar_mult(lagrange_coefficients(chosen), [by[j] for j in chosen])
    ct = entry_ciphertext(write_entry, proof.slot)
    return elgamal.recover_key(ct, xU, entry_label(write_entry, proof.slot))
