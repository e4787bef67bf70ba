"""Property tests: every decoder and handler a peer reaches in secret management gives a
KairesError (or drops the message), never another exception, and the service survives."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trustee_world import make_world

from kaires_fl import schema
from kaires_fl.crypto.elgamal import Ciphertext, ExponentShare
from kaires_fl.crypto.proofs import DLEQProof, SchnorrProof
from kaires_fl.errors import EncodingError, KairesError
from kaires_fl.ledger.jobs import job_key
from kaires_fl.secret_management import (
    READ_KIND,
    CoinRequest,
    ReleaseRequest,
    evidence_keys,
    inputs_key,
    prove_entries,
    read_payload,
    write_key,
)
from kaires_fl.secret_management.coin import CoinShare
from kaires_fl.secret_management.dispute import (
    DisputeRequest,
    DisputeShare,
    WrittenKeyProof,
    combine_dispute,
    dispute_request,
    written_key,
)
from kaires_fl.secret_management.evidence import StateEvidence
from kaires_fl.secret_management.release import (
    Refusal,
    ReleaseResponse,
    SealedAnswer,
    open_answer,
)
from kaires_fl.secret_management.trustee import TrusteeRequest, collect_answers
from kaires_fl.secret_management.write import WriteEntry

SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
TYPES = [
    ReleaseRequest,
    ReleaseResponse,
    Refusal,
    SealedAnswer,
    CoinRequest,
    CoinShare,
    DisputeRequest,
    DisputeShare,
    WrittenKeyProof,
    StateEvidence,
    TrusteeRequest,
]


@pytest.fixture(scope="module")
def fw():
    w = make_world(seed=61)
    job = w.create_job(["alice"])
    wa, _ = w.write("alice", job)
    w.close(job, [wa])
    lts = w.committee.lts
    payload = read_payload(lts.id, job, "aggregator:0", w.agg_keys[0], [wa])
    rid = w.client.execute(w.aggregators[0], READ_KIND, payload).tx_id
    ev = prove_entries(w.client, evidence_keys(lts.id, rid, job, [wa]))
    coin_ev = prove_entries(w.client, [job_key(job), inputs_key(job)])
    dreq = dispute_request(w.client, w.aggregators[0], lts.id, job, rid, wa, "aggregator:0")
    ep = w.client.network.endpoint("fuzzer")
    answers = collect_answers(w.client.network, ep, w.committee.addresses, dreq)
    proof, _, _ = combine_dispute(
        answers, lts, w.client.get(write_key(wa)), job, wa, "aggregator:0"
    )
    sealed = collect_answers(w.client.network, ep, w.committee.addresses, ReleaseRequest(rid, ev))
    valid = {
        "release": ReleaseRequest(rid, ev),
        "coin": CoinRequest(lts.id, job, coin_ev),
        "dispute": dreq,
        "proof": proof,
        "sealed": sealed[0],
        "share": answers[0],
    }
    return w, job, wa, rid, valid


def _mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    b = bytearray(data)
    for kind, pos, val in edits:
        if not b:
            break
        i = pos % len(b)
        if kind == 0:
            b[i] = val
        elif kind == 1:
            del b[i:]
        elif kind == 2:
            b.insert(i, val)
        else:
            del b[i]
    return bytes(b)


EDITS = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 2**20), st.integers(0, 255)), min_size=1, max_size=6
)


@SETTINGS
@given(data=st.binary(max_size=512))
def test_decoders_on_arbitrary_bytes(data):
    for t in TYPES:
        with contextlib.suppress(EncodingError):
            schema.decode(data, t)
    for dec in (Ciphertext.from_bytes, SchnorrProof.from_bytes, DLEQProof.from_bytes):
        with contextlib.suppress(EncodingError):
            dec(data)
    with contextlib.suppress(EncodingError):
        ExponentShare.from_bytes(data)


@SETTINGS
@given(
    which=st.sampled_from(["release", "coin", "dispute", "proof", "sealed", "share"]), edits=EDITS
)
def test_decoders_on_mutated_messages(fw, which, edits):
    w, job, wa, _rid, valid = fw
    raw = _mutate(schema.encode(valid[which]), edits)
    for t in TYPES:
        try:
            msg = schema.decode(raw, t)
        except EncodingError:
            continue
        if isinstance(msg, StateEvidence):
            with contextlib.suppress(KairesError):
                msg.verify(w.client.genesis)
        elif isinstance(msg, WrittenKeyProof):
            with contextlib.suppress(KairesError):
                written_key(msg, w.committee.lts, w.client.get(write_key(wa)), job)
        elif isinstance(msg, SealedAnswer):
            with contextlib.suppress(KairesError):
                open_answer(msg, w.agg_keys[0])


@SETTINGS
@given(
    payload=st.one_of(
        st.binary(max_size=256),
        st.tuples(st.sampled_from(["release", "coin", "dispute"]), EDITS),
        st.sampled_from([None, 7, "x", 1.5, [], {}, ("a",)]),
    )
)
def test_trustee_node_survives_anything(fw, payload):
    w, _job, _wa, _rid, valid = fw
    node = w.committee.nodes[1]
    if isinstance(payload, tuple) and len(payload) == 2 and isinstance(payload[0], str):
        payload = _mutate(schema.encode(valid[payload[0]]), payload[1])
    node.on_message("fuzzer", payload)  # never raises
    w.client.network.run_until(lambda: False, 0.01)


def test_trustee_still_answers_after_fuzzing(fw):
    w, _job, _wa, _rid, valid = fw
    node = w.committee.nodes[1]
    for junk in (b"", b"\xc1", schema.encode(valid["proof"]), object(), valid["share"]):
        node.on_message("fuzzer", junk)
    got = []
    ep = w.client.network.endpoint("after-fuzz")
    ep.set_handler(lambda src, m: got.append(m))
    node.on_message("after-fuzz", schema.encode(valid["release"]))
    node.on_message("after-fuzz", valid["coin"])
    w.client.network.run_until(lambda: len(got) == 2, 1.0)
    assert isinstance(got[0], SealedAnswer) and isinstance(got[1], CoinShare)
    assert isinstance(open_answer(got[0], w.agg_keys[0]), ReleaseResponse)


@SETTINGS
@given(
    obj=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=70),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=6),
        max_leaves=20,
    )
)
def test_write_payload_decoder(obj):
    with contextlib.suppress(EncodingError):
        WriteEntry.from_payload(obj)


@SETTINGS
@given(data=st.binary(max_size=300), edits=EDITS)
def test_dkg_node_on_message_never_raises(data, edits):
    from kaires_fl.crypto.group import Scalar
    from kaires_fl.secret_management.dkg import DkgMessage, DkgNode, Reveal, make_participants
    from kaires_fl.transport.memory import MemoryNetwork

    net = MemoryNetwork(seed=1)
    addrs = [f"t{j}" for j in range(4)]
    node = DkgNode(make_participants(4, 1, session=b"f")[0], net.endpoint("t0"), addrs)
    valid = schema.encode(DkgMessage(b"f", 6, 1, Reveal.of(1, {0: (Scalar(1), Scalar(2))})))
    for msg in (data, _mutate(valid, edits), DkgMessage(b"f", 2, 1, "junk"), object()):
        node.on_message("t1", msg)
    assert all(isinstance(m, Reveal | None) or m is None for m in node.inbox[6].values())
