"""Issue 9, secret management: each test plays one attacker with only its role's keys and
messages against honest trustees and an honest ledger, and fails on commit 40b7995."""

from __future__ import annotations

import sys
from pathlib import Path

import msgspec
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "secret_management"))

from trustee_world import ident, make_world

from kaires_fl import schema
from kaires_fl.crypto import elgamal
from kaires_fl.crypto.envelope import EnvelopeKeyPair
from kaires_fl.crypto.group import Point, Scalar, multi_scalar_mult
from kaires_fl.crypto.proofs import schnorr_prove
from kaires_fl.crypto.sign import H
from kaires_fl.crypto.vss import lagrange_coefficients
from kaires_fl.errors import AccessDenied, InvalidProof, LedgerError
from kaires_fl.ledger.contracts import DEFAULT_REGISTRY
from kaires_fl.ledger.darc import darc_key
from kaires_fl.ledger.jobs import job_key, sign_receipt
from kaires_fl.secret_management import (
    INPUTS_KIND,
    READ_KIND,
    WRITE_KIND,
    CoinRequest,
    ReleaseRequest,
    close_inputs,
    evidence_keys,
    inputs_key,
    prove_entries,
    read_key,
    read_payload,
    write_key,
)
from kaires_fl.secret_management.release import (
    Refusal,
    ReleaseResponse,
    SealedAnswer,
    open_answer,
    read_pok_context,
)
from kaires_fl.secret_management.trustee import collect_answers
from kaires_fl.secret_management.write import (
    WriteEntry,
    aggregator_slot,
    entry_ciphertext,
    make_write,
    write_label,
)

_P = 2**255 - 19
ALL = [aggregator_slot(i) for i in range(4)]


def _registry_with_state_override():
    """The default contracts plus ``adversary.put`` (writes any state entry): stands for
    a bypass of the job-creation defences, so the read contract and the trustees are
    tested on their own."""
    reg = DEFAULT_REGISTRY.copy()
    reg.register("adversary.put", lambda view, tx, env: dict(tx.payload))
    return reg


def _x25519_of(Y: Point) -> bytes | None:
    """The X25519 public key whose group key is Y (None if Y's sign bit is set)."""
    enc = Y.to_bytes()
    if enc[31] & 0x80:
        return None
    y = int.from_bytes(enc, "little")
    return ((1 + y) * pow(1 - y, -1, _P) % _P).to_bytes(32, "little")


def _write_with_U(w, who: str, job: str, slot: str, r: Scalar) -> str:
    """Attacker's own write for ``job`` whose ``slot`` ciphertext has U = r·G (all slots)."""
    lts, pid = w.committee.lts, w.pid(who)
    version = w.client.get(darc_key(pid))["version"]
    entry, _ = make_write(lts.X, lts.id, pid, version, job, ALL)
    label = write_label(lts.id, pid, version, job, slot)
    U = Point.base() * r
    K = Point.base() * Scalar.random()
    C = K + lts.X * r
    wrapped = elgamal._xor(b"\x07" * 32, elgamal._pad(K, label, U, C))
    proof = schnorr_prove(r, elgamal._write_context(label, lts.X, C, wrapped), statement=U)
    keys = tuple(
        (s, elgamal.Ciphertext(U, C, wrapped, proof) if s == slot else ct) for s, ct in entry.keys
    )
    payload = WriteEntry(lts.id, pid, version, job, keys).to_payload()
    return w.client.execute(w.providers[who], WRITE_KIND, payload).tx_id


def test_related_key_reencryption_cannot_unwrap_a_victims_key():
    """Privacy: an attacker who names a recipient key Y = U_victim − r·G in its own job and
    writes U = r·G there would get x·U_victim (the victim's key) from the trustees; the
    calypso.read contract refuses its read without a proof of knowledge of log Y, and every
    trustee refuses it even when the read is on the ledger without that check."""
    w = make_world(seed=31, registry=_registry_with_state_override())
    lts = w.committee.lts
    # the victim (alice) writes her keys for a job of the honest consumer
    job_v = w.create_job(["alice"])
    wv, kv = w.write("alice", job_v)
    U_victim = entry_ciphertext(w.client.get(write_key(wv)), "aggregator:0").U
    # the attacker (mallory): its own policy and job, naming itself as aggregator 0 with Y
    mallory = ident("provider", "mallory")
    w.providers["mallory"] = mallory
    w.create_policy("mallory", [mallory])
    job_a = w.create_job(["mallory"], consumer=mallory)
    while True:
        r = Scalar.random_nonzero()
        Y = U_victim - Point.base() * r
        y_x25519 = _x25519_of(Y)
        if y_x25519 is not None:
            break
    assert elgamal.recipient_point_from_x25519(y_x25519) == Y
    job = dict(w.client.get(job_key(job_a)))
    job["aggregators"] = [mallory.public.hex(), *job["aggregators"][1:]]
    job["params"] = {
        **job["params"],
        "aggregator_keys": [y_x25519.hex(), *job["params"]["aggregator_keys"][1:]],
    }
    w.client.execute(mallory, "adversary.put", {job_key(job_a): job})
    wa = _write_with_U(w, "mallory", job_a, "aggregator:0", r)
    close_inputs(w.client, mallory, job_a, [H(b"m", wa.encode()).hex()], [wa])

    # the attack is real: what the trustees would return combines to the victim's key
    res = w.committee.results
    chosen = sorted(res)[: lts.t + 1]
    U_a = Point.base() * r
    xU = multi_scalar_mult(
        lagrange_coefficients(chosen), [(U_a + Y) * res[j].share for j in chosen]
    )
    ct_v = entry_ciphertext(w.client.get(write_key(wv)), "aggregator:0")
    label_v = write_label(lts.id, w.pid("alice"), ct_version(w, "alice"), job_v, "aggregator:0")
    assert elgamal.recover_key(ct_v, xU, label_v) == kv["aggregator:0"]

    # 1. the read contract refuses every proof the attacker can make
    other = EnvelopeKeyPair.generate()
    base = read_payload(lts.id, job_a, "aggregator:0", y_x25519, [wa], pok=b"\x00" * 64)
    wrong_key = read_payload(lts.id, job_a, "aggregator:0", other, [wa])
    forged = {
        **wrong_key,
        "recipient": y_x25519.hex(),
        "pok": schnorr_prove(
            Scalar.random(), read_pok_context(lts.id, job_a, "aggregator:0", y_x25519.hex(), [wa])
        )
        .to_bytes()
        .hex(),
    }
    for payload in (base, forged):
        with pytest.raises(LedgerError, match="proof of knowledge"):
            w.client.execute(mallory, READ_KIND, payload)
    with pytest.raises(LedgerError, match="recipient key"):
        w.client.execute(mallory, READ_KIND, wrong_key)  # a key it knows is not the job's

    # 2. a read on the ledger without the check (crafted state): every trustee refuses
    read_id = H(b"crafted read").hex()
    crafted = {**forged, "reader": mallory.public.hex(), "height": w.client.height}
    w.client.execute(mallory, "adversary.put", {read_key(read_id): crafted})
    ev = prove_entries(w.client, evidence_keys(lts.id, read_id, job_a, [wa]))
    for tr in w.committee.trustees:
        before = tr.released
        with pytest.raises(AccessDenied, match="proof of knowledge"):
            tr.release(ReleaseRequest(read_id, ev))
        assert tr.released == before
    ep = w.client.network.endpoint("mallory")
    answers = collect_answers(
        w.client.network, ep, w.committee.addresses, ReleaseRequest(read_id, ev)
    )
    assert all(
        isinstance(a, Refusal) and "proof of knowledge" in a.reason for a in answers.values()
    )


def ct_version(w, who: str) -> int:
    return w.client.get(darc_key(w.pid(who)))["version"]


def test_trustee_answers_travel_sealed_to_the_reader():
    """Privacy: the network (and the coordinator relaying) sees no re-encrypted share: every
    trustee's answer is sealed to the reader's X25519 key and bound to the read and the
    trustee; nobody else opens it and a relabelled envelope does not open."""
    w = make_world(seed=32)
    job = w.create_job(["alice", "bob"])
    wa, ka = w.write("alice", job)
    wb, _ = w.write("bob", job)
    w.close(job, [wa, wb])
    seen: list = []

    def spy(env) -> bool:
        if env.src in w.committee.addresses:
            seen.append(env.payload)
        return True

    remove = w.client.network.add_filter(spy)
    try:
        res = w.committee.release(
            w.client, w.aggregators[1], w.agg_keys[1], job, "aggregator:1", [wa, wb]
        )
    finally:
        remove()
    assert res.keys[wa] == ka["aggregator:1"]
    assert len(seen) == 4 and all(isinstance(m, SealedAnswer) for m in seen)
    assert not any(isinstance(m, ReleaseResponse) for m in seen)
    for m in seen:
        with pytest.raises(InvalidProof):
            open_answer(m, w.agg_keys[2])  # another aggregator of the same job
        with pytest.raises(InvalidProof):
            open_answer(msgspec.structs.replace(m, trustee=(m.trustee + 1) % 4), w.agg_keys[1])
        assert isinstance(open_answer(m, w.agg_keys[1]), ReleaseResponse)


def test_a_write_must_cover_every_aggregator_slot():
    """Robustness: a provider cannot omit one aggregator's key (which made that honest
    aggregator's batched read fail and blamed it): the write contract refuses a job write
    missing a slot or naming a slot beyond the job's aggregators, and an offline write
    missing a slot cannot be put in a job's inputs."""
    w = make_world(seed=33)
    lts, pid = w.committee.lts, w.pid("alice")
    job = w.create_job(["alice", "bob"])
    v = ct_version(w, "alice")
    for slots in (ALL[:3], [*ALL, "aggregator:4"], ALL[1:]):
        entry, _ = make_write(lts.X, lts.id, pid, v, job, slots)
        with pytest.raises(LedgerError, match="one key for each"):
            w.client.execute(w.providers["alice"], WRITE_KIND, entry.to_payload())
    offline, _ = make_write(lts.X, lts.id, pid, v, "", ALL[:3])
    wid = w.client.execute(w.providers["alice"], WRITE_KIND, offline.to_payload()).tx_id
    with pytest.raises(LedgerError, match="one key for each"):
        w.close(job, [wid])
    full, _ = make_write(lts.X, lts.id, pid, v, job, [*ALL, "consumer"])
    ok = w.client.execute(w.providers["alice"], WRITE_KIND, full.to_payload()).tx_id
    w.close(job, [ok])


def test_inputs_are_closed_by_the_consumer_or_a_2t_plus_1_quorum():
    """Fairness: one Byzantine aggregator (or t + 1 of them) cannot close a job's inputs
    with a subset of its choosing (or none); the consumer, or 2t + 1 aggregators
    co-signing, can — and aggregators never with an empty set."""
    w = make_world(seed=34)
    job = w.create_job(["alice", "bob"])
    wa, _ = w.write("alice", job)
    wb, _ = w.write("bob", job)
    payload = {"job": job, "manifests": [H(b"m", wa.encode()).hex()], "writes": [wa]}
    a = w.aggregators
    for signers in ([a[0]], [a[0], a[1]]):
        with pytest.raises(LedgerError, match="2t \\+ 1"):
            w.client.execute(signers[0], INPUTS_KIND, payload, cosigners=signers[1:])
    empty = {"job": job, "manifests": [], "writes": []}
    with pytest.raises(LedgerError, match="empty"):
        w.client.execute(a[0], INPUTS_KIND, empty, cosigners=a[1:3])
    unequal = {**payload, "manifests": []}
    with pytest.raises(LedgerError, match="one manifest per write"):
        w.client.execute(w.consumer, INPUTS_KIND, unequal)
    both = {
        "job": job,
        "manifests": [H(b"m", x.encode()).hex() for x in (wa, wb)],
        "writes": [wa, wb],
    }
    w.client.execute(a[0], INPUTS_KIND, both, cosigners=a[1:3])
    assert w.client.get(inputs_key(job))["writes"] == sorted([wa, wb])


def test_stale_evidence_is_refused_after_the_job_ended():
    """Access control: a reader holding ledger evidence from before its job's receipt (the
    job is over, its keys no longer released) and a provider's revocation cannot replay
    it: the trustees refuse evidence whose certified block is older than their bound,
    and fresh evidence shows the job ended."""
    w = make_world(seed=35)
    job = w.create_job(["alice"])
    wa, _ = w.write("alice", job)
    w.close(job, [wa])
    lts = w.committee.lts
    payload = read_payload(lts.id, job, "aggregator:0", w.agg_keys[0], [wa])
    read_id = w.client.execute(w.aggregators[0], READ_KIND, payload).tx_id
    old = prove_entries(w.client, evidence_keys(lts.id, read_id, job, [wa]))
    for tr in w.committee.trustees:
        tr.max_evidence_age_s = 2.0
        assert tr.release(ReleaseRequest(read_id, old)) is not None  # fresh: released
    receipt = {
        "status": "failed",
        "accepted": [],
        "rejected": [],
        "faulty": [],
        "result_hash": "00" * 32,
    }
    sigs = dict(sign_receipt(a, w.client.chain, job, receipt) for a in w.aggregators[:3])
    w.client.execute(
        w.consumer, "job.receipt", {"job": job, "receipt": receipt, "signatures": sigs}
    )
    w.evolve_policy("alice", [])  # and alice revokes every grant
    w.client.network.run_for(3.0)
    w.evolve_policy("bob", [w.consumer])  # a new final block
    fresh = prove_entries(w.client, evidence_keys(lts.id, read_id, job, [wa]))
    for tr in w.committee.trustees:
        before = tr.released
        with pytest.raises(InvalidProof, match="stale"):
            tr.release(ReleaseRequest(read_id, old))
        with pytest.raises(AccessDenied, match="no longer released"):
            tr.release(ReleaseRequest(read_id, fresh))
        assert tr.released == before


def test_malformed_coin_request_does_not_kill_the_trustee():
    """Robustness: an unauthenticated coin request whose evidence names view −1 (and other
    undecodable or mistyped requests, as objects or bytes) is refused or dropped; every
    trustee still answers a valid request afterwards."""
    w = make_world(seed=36)
    job = w.create_job(["alice"])
    wa, _ = w.write("alice", job)
    w.close(job, [wa])
    lts = w.committee.lts
    ev = prove_entries(w.client, [job_key(job), inputs_key(job)])
    blk = schema.decode(schema.encode(ev), type(ev)).block
    import json

    o = json.loads(blk)
    o["cert"]["view"] = -1
    bad_block = json.dumps(o, sort_keys=True, separators=(",", ":")).encode()
    bad_ev = msgspec.structs.replace(ev, block=bad_block)
    bad = [
        CoinRequest(lts.id, job, bad_ev),
        schema.encode(CoinRequest(lts.id, job, bad_ev)),
        CoinRequest(lts.id, job, "not evidence"),
        b"\x00\x01garbage",
        schema.encode(ev),
        "hello",
        None,
    ]
    ep = w.client.network.endpoint("someone")
    for msg in bad:
        answers = collect_answers(w.client.network, ep, w.committee.addresses, msg, 0.2)
        assert all(a is None or isinstance(a, Refusal) for a in answers.values())
    good = collect_answers(
        w.client.network, ep, w.committee.addresses, CoinRequest(lts.id, job, ev)
    )
    assert all(type(a).__name__ == "CoinShare" for a in good.values())


def test_a_byzantine_dkg_peer_cannot_stop_honest_trustees():
    """Robustness: a trustee that sends mistyped round bodies in every round (an integer
    where the complaints go, wrong field types, undecodable bytes) is dropped at each honest
    node's boundary; the honest trustees finish the DKG, agree, and name it only as silent
    (on the old code the integer body crashed every honest node's round step)."""
    from kaires_fl.crypto.group import Scalar
    from kaires_fl.secret_management.dkg import (
        DkgMessage,
        DkgNode,
        Justification,
        Reveal,
        make_participants,
    )
    from kaires_fl.transport.memory import MemoryNetwork

    net = MemoryNetwork(seed=8)
    addrs = [f"t{j}" for j in range(4)]
    ps = make_participants(4, 1, session=b"byz")
    nodes = [DkgNode(p, net.endpoint(a), addrs) for p, a in zip(ps[:3], addrs[:3], strict=True)]
    bad = net.endpoint("t3")
    junk = [
        DkgMessage(b"byz", 2, 3, 12345),
        DkgMessage(b"byz", 3, 3, Justification(3, "not pairs")),
        DkgMessage(b"byz", 5, 3, [1, 2]),
        DkgMessage(b"byz", 6, 3, Reveal(3, ((0, "x", Scalar(1)),))),
        b"\x93\x01\x02",
        schema.encode(DkgMessage(b"byz", 1, 3, None))[:-1],
    ]
    for nd in nodes:
        nd.start()
    for k in range(7):
        net.schedule(0.05 * k + 0.01, lambda: [bad.broadcast(addrs[:3], m) for m in junk])
    net.run_until(lambda: all(nd.done for nd in nodes), 1.0)
    assert all(nd.done and nd.error is None for nd in nodes)
    results = [nd.result for nd in nodes]
    assert len({r.transcript for r in results}) == 1
    assert results[0].qual == (0, 1, 2)
    assert set(results[0].faulty) == {3} and "silent" in results[0].faulty[3]
    assert all(nd.dropped >= len(junk) for nd in nodes)
