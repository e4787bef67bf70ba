"""The secret-management cothority: CALYPSO's Long-Term Secrets on the Kaires ledger.

A committee of n trustees (threshold t + 1, n ≥ 2t + 1) holds a collective key X from a
DKG (:mod:`.dkg`, Gennaro et al.'s Pedersen/Feldman DKG with complaints; bad dealers are
excluded and named). Providers CALYPSO-write per-aggregator keys to X, bound to their
policy and the job (:mod:`.write`); the ledger checks the write proof on commit
(:mod:`.contracts`). A reader named by a committed job commits a read, and **every**
trustee checks the (fresh) ledger evidence and the reader's proof of knowledge of its key
itself before re-encrypting its shares to the reader's key with one batched DLEQ proof per
read, sealed to the reader (:mod:`.trustee`); the reader verifies each trustee's batch,
locates and names the bad shares and combines any t + 1 (:mod:`.release`). A single
(write, slot) key can be decrypted publicly for a dispute (:mod:`.dispute`). The trustees
also run a threshold VRF giving each job a coin once its inputs are closed (:mod:`.coin`).

Old trustees after a reshare: :meth:`TrusteeCommittee.reshare` stops the old nodes, but
their DKG shares are not erased by the protocol (an operator must delete them); t + 1 old
shares still reconstruct x. Proactive refresh with verified erasure is not implemented.

Public API (what the aggregation, provider and consumer roles call)
-------------------------------------------------------------------
Importing this package registers the ledger contracts ``calypso.lts``,
``calypso.lts.reshare``, ``calypso.write``, ``calypso.inputs`` and ``calypso.read`` in the
ledger's default registry. ``client`` is a
:class:`kaires_fl.ledger.LedgerClient`; trustees run on ``client.network``::

    committee = TrusteeCommittee.setup(client, n=4, t=1, *, faults=None, dkg_faults=None,
                                       name="trustee", seed=b"", network_dkg=False)
    # DKG (in process, or over client.network in timed rounds) + LTS on the ledger + nodes
    committee.lts                     # LtsInfo(id, t, X, public_shares, trustees)
    committee.dkg_faulty              # {trustee: reason} named by the DKG

    # the job must name aggregator i's X25519 key: job_payload(..., params={
    #     "aggregator_keys": [hex X25519 public key per aggregator], ...})
    # (the consumer's key is the job's consumer_key)

    # provider (step 2.3): one write carries every aggregator's key
    write_id, keys = provider_write(client, provider: Identity, committee.lts,
                                    policy: str, job_id: str,
                                    [aggregator_slot(i) for i in range(n_aggs)])
    # keys: {"aggregator:<i>": 32-byte key}; write_id goes in the manifest

    # consumer (or 2t + 1 aggregators co-signing) (step 3): inputs closed
    root = close_inputs(client, signer: Identity, job_id, manifests: [hex], writes: [ids])

    # aggregator i (step 4): one batched release for all its keys
    res = committee.release(client, reader: Identity, reader_key: EnvelopeKeyPair,
                            job_id, aggregator_slot(i), write_ids, *, timeout=1.0)
    res.keys[write_id] -> bytes ; res.faulty -> {trustee: reason} ; res.refused

    # a reader's own read (what an aggregator service does): the payload proves knowledge
    # of its key; answers arrive as SealedAnswer, opened with open_answer(msg, keypair)
    payload = read_payload(lts.id, job_id, slot, keypair, write_ids)

    # dispute decryption of one (write, slot): see kaires_fl.secret_management.dispute
    req = dispute_request(client, identity, lts.id, job_id, read_id, write_id, slot)
    proof, key, faulty = combine_dispute(shares, lts, write_entry, job_id, write_id, slot)
    key = written_key(proof, lts, write_entry, job_id)      # anyone, InvalidProof if bad

    # coin (step 5.1)
    seed, faulty = committee.coin(client, job_id, *, timeout=1.0)   # 32-byte seed

    # hand the key to a new trustee set (same LTS id and X; old writes stay readable)
    committee = committee.reshare(client, new_n, new_t, *, faults=None,
                                  reshare_faults=None, name="trustee-next", seed=b"")

Errors: :class:`~kaires_fl.errors.LedgerError` when the ledger refuses a write or read
(the reason says which check failed), :class:`~kaires_fl.errors.AccessDenied` when the
trustees refuse, :class:`~kaires_fl.errors.ProtocolError` when fewer than t + 1 valid
shares arrive, :class:`~kaires_fl.errors.InvalidProof` for forged evidence or proofs.

Lower level: :func:`run_dkg` / :func:`make_participants` (DKG), :func:`run_reshare`,
:func:`make_write` / :func:`verify_write`, :func:`read_payload`, :func:`combine_release`,
:class:`Trustee` (``release(ReleaseRequest)``, ``coin(CoinRequest)``), :func:`combine_coin`,
:func:`prove_entries` (ledger evidence).
"""

from __future__ import annotations

from kaires_fl.secret_management import contracts as contracts  # registers the contracts
from kaires_fl.secret_management.coin import CoinShare, coin_share, combine_coin
from kaires_fl.secret_management.committee import TrusteeCommittee, close_inputs, provider_write
from kaires_fl.secret_management.contracts import (
    INPUTS_KIND,
    LTS_KIND,
    READ_KIND,
    WRITE_KIND,
    check_read,
    inputs_key,
    inputs_root,
    lts_key,
    read_key,
    write_key,
)
from kaires_fl.secret_management.dispute import (
    DisputeRequest,
    DisputeShare,
    WrittenKeyProof,
    combine_dispute,
    dispute_request,
    written_key,
)
from kaires_fl.secret_management.dkg import DkgResult, make_participants, run_dkg
from kaires_fl.secret_management.evidence import StateEvidence, prove_entries
from kaires_fl.secret_management.release import (
    LtsInfo,
    Refusal,
    ReleaseRequest,
    ReleaseResponse,
    ReleaseResult,
    SealedAnswer,
    combine_release,
    evidence_keys,
    open_answer,
    read_payload,
)
from kaires_fl.secret_management.reshare import run_reshare
from kaires_fl.secret_management.trustee import (
    TRUSTEE_BEHAVIOURS,
    CoinRequest,
    Trustee,
    TrusteeNode,
    lts_payload,
    make_trustee,
)
from kaires_fl.secret_management.write import (
    WriteEntry,
    aggregator_slot,
    make_write,
    verify_write,
)

__all__ = [
    "INPUTS_KIND",
    "LTS_KIND",
    "READ_KIND",
    "TRUSTEE_BEHAVIOURS",
    "WRITE_KIND",
    "CoinRequest",
    "CoinShare",
    "DisputeRequest",
    "DisputeShare",
    "DkgResult",
    "LtsInfo",
    "Refusal",
    "ReleaseRequest",
    "ReleaseResponse",
    "ReleaseResult",
    "SealedAnswer",
    "StateEvidence",
    "Trustee",
    "TrusteeCommittee",
    "TrusteeNode",
    "WriteEntry",
    "WrittenKeyProof",
    "aggregator_slot",
    "check_read",
    "close_inputs",
    "coin_share",
    "combine_coin",
    "combine_dispute",
    "combine_release",
    "dispute_request",
    "evidence_keys",
    "inputs_key",
    "inputs_root",
    "lts_key",
    "lts_payload",
    "make_participants",
    "make_trustee",
    "make_write",
    "open_answer",
    "prove_entries",
    "provider_write",
    "read_key",
    "read_payload",
    "run_dkg",
    "run_reshare",
    "verify_write",
    "write_key",
    "written_key",
]
