"""Single-slot dispute decryption (interface A): request, trustee checks, proof, verification."""

from __future__ import annotations

import msgspec
import pytest
from trustee_world import make_world

from kaires_fl import schema
from kaires_fl.crypto.group import Point
from kaires_fl.errors import AccessDenied, InvalidProof, ProtocolError
from kaires_fl.secret_management import READ_KIND, read_payload, write_key
from kaires_fl.secret_management.dispute import (
    DisputeRequest,
    DisputeShare,
    WrittenKeyProof,
    combine_dispute,
    dispute_request,
    written_key,
)
from kaires_fl.secret_management.trustee import collect_answers


@pytest.fixture(scope="module")
def dispute_world():
    w = make_world(seed=41, faults={3: "wrong_share"})
    job = w.create_job(["alice", "bob"])
    wa, ka = w.write("alice", job)
    wb, kb = w.write("bob", job)
    w.close(job, [wa, wb])
    lts = w.committee.lts
    reads = {}
    for i in (0, 1):
        payload = read_payload(lts.id, job, f"aggregator:{i}", w.agg_keys[i], [wa, wb])
        reads[i] = w.client.execute(w.aggregators[i], READ_KIND, payload).tx_id
    return w, job, {wa: ka, wb: kb}, reads


def _ask(w, req, name="disputer"):
    ep = w.client.network.endpoint(name)
    return collect_answers(w.client.network, ep, w.committee.addresses, req)


def test_dispute_reveals_the_written_key_of_one_slot(dispute_world):
    w, job, written, reads = dispute_world
    lts = w.committee.lts
    wa = sorted(written)[0]
    req = dispute_request(w.client, w.aggregators[1], lts.id, job, reads[1], wa, "aggregator:1")
    answers = _ask(w, schema.encode(req))  # over the wire form
    entry = w.client.get(write_key(wa))
    proof, key, faulty = combine_dispute(answers, lts, entry, job, wa, "aggregator:1")
    assert key == written[wa]["aggregator:1"]
    assert set(faulty) == {3}  # the wrong-share trustee is named, not used
    # anyone verifies the published proof from the ledger entries alone
    back = schema.decode(schema.encode(proof), WrittenKeyProof)
    assert written_key(back, lts, entry, job) == written[wa]["aggregator:1"]
    # the proof opens nothing else: another slot or write of the same job
    other = sorted(written)[1]
    with pytest.raises(InvalidProof):
        written_key(back, lts, w.client.get(write_key(other)), job)
    with pytest.raises(InvalidProof):
        written_key(msgspec.structs.replace(back, slot="aggregator:0"), lts, entry, job)


def test_written_key_proof_tampering_is_detected(dispute_world):
    w, job, written, reads = dispute_world
    lts = w.committee.lts
    wa = sorted(written)[0]
    req = dispute_request(w.client, w.aggregators[0], lts.id, job, reads[0], wa, "aggregator:0")
    entry = w.client.get(write_key(wa))
    proof, _, _ = combine_dispute(_ask(w, req), lts, entry, job, wa, "aggregator:0")
    s0 = proof.shares[0]
    cases = [
        msgspec.structs.replace(proof, shares=proof.shares[:1]),  # t shares only
        msgspec.structs.replace(proof, shares=(s0, s0)),  # one trustee twice
        msgspec.structs.replace(
            proof,
            shares=(msgspec.structs.replace(s0, share=s0.share + Point.base()), *proof.shares[1:]),
        ),
        msgspec.structs.replace(
            proof, shares=(msgspec.structs.replace(s0, trustee=3), *proof.shares[1:])
        ),
    ]
    for bad in cases:
        with pytest.raises(InvalidProof):
            written_key(bad, lts, entry, job)
    with pytest.raises(InvalidProof):
        written_key(proof, lts, entry, "ab" * 32)  # bound to the job


def test_dispute_refusals(dispute_world):
    w, job, written, reads = dispute_world
    lts = w.committee.lts
    wa = sorted(written)[0]
    honest = [tr for tr in w.committee.trustees if tr.index != 3]

    def refused(req, exc=(AccessDenied, InvalidProof)):
        for tr in honest:
            with pytest.raises(exc):
                tr.dispute(req)

    good = dispute_request(w.client, w.aggregators[0], lts.id, job, reads[0], wa, "aggregator:0")
    # signed by someone else than the read's signer
    refused(dispute_request(w.client, w.aggregators[1], lts.id, job, reads[0], wa, "aggregator:0"))
    # another slot than the read's (aggregator 0 asking for aggregator 1's key)
    refused(dispute_request(w.client, w.aggregators[0], lts.id, job, reads[0], wa, "aggregator:1"))
    # the consumer slot, a write outside the read, an altered signed field
    refused(msgspec.structs.replace(good, slot="consumer"))
    refused(
        dispute_request(
            w.client, w.aggregators[0], lts.id, job, reads[0], "cd" * 32, "aggregator:0"
        )
    )
    refused(msgspec.structs.replace(good, write=sorted(written)[1]))
    refused(msgspec.structs.replace(good, lts="ef" * 32))
    # unsigned
    refused(msgspec.structs.replace(good, signature=b""))
    # the honest request is answered with a share that verifies
    share = honest[0].dispute(good)
    assert isinstance(share, DisputeShare) and share.write == wa


def test_combine_needs_t_plus_1_valid_shares(dispute_world):
    w, job, written, reads = dispute_world
    lts = w.committee.lts
    wa = sorted(written)[0]
    req = dispute_request(w.client, w.aggregators[0], lts.id, job, reads[0], wa, "aggregator:0")
    answers = _ask(w, req)
    entry = w.client.get(write_key(wa))
    only = {0: answers[0], 1: None, 2: None, 3: answers[3]}
    with pytest.raises(ProtocolError):
        combine_dispute(only, lts, entry, job, wa, "aggregator:0")
    assert isinstance(req, DisputeRequest)
