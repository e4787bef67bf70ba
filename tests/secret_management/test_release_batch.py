"""Batched re-encryption proofs in a release: bad shares are still located and named."""

from __future__ import annotations

import dataclasses

import msgspec
import pytest
from trustee_world import make_world

from kaires_fl.crypto.elgamal import RecipientKey
from kaires_fl.crypto.group import L, Scalar
from kaires_fl.errors import ProtocolError
from kaires_fl.secret_management import (
    READ_KIND,
    ReleaseRequest,
    combine_release,
    evidence_keys,
    prove_entries,
    read_key,
    read_payload,
)
from kaires_fl.secret_management.release import ReencryptedValue, lagrange_at


def _three_writes(faults, seed, n_trustees=4, t=1):
    w = make_world(n_trustees=n_trustees, t=t, faults=faults, seed=seed)
    job = w.create_job(["alice", "bob"])
    written = dict([w.write("alice", job), w.write("bob", job), w.write("alice", job)])
    w.close(job, list(written))
    return w, job, written


def _answers(w, job, ids, slot=0):
    payload = read_payload(w.committee.lts.id, job, f"aggregator:{slot}", w.agg_keys[slot], ids)
    read_id = w.client.execute(w.aggregators[slot], READ_KIND, payload).tx_id
    ev = prove_entries(w.client, evidence_keys(w.committee.lts.id, read_id, job, ids))
    req = ReleaseRequest(read_id, ev)
    answers = {tr.index: tr.release(req) for tr in w.committee.trustees}
    writes = {i: w.client.get(f"calypso/write/{i}") for i in ids}
    return read_id, w.client.get(read_key(read_id)), writes, answers


def test_one_wrong_share_in_a_batch_is_located_and_named():
    w, job, written = _three_writes({2: "wrong_one_share"}, seed=11)
    ids = list(written)
    res = w.committee.release(w.client, w.aggregators[1], w.agg_keys[1], job, "aggregator:1", ids)
    assert res.keys == {i: written[i]["aggregator:1"] for i in ids}
    assert set(res.faulty) == {2}
    assert f"1 of 3 writes, first {ids[-1][:16]}" in res.faulty[2]


def test_forged_batch_proof_named_as_such_and_wrong_shares_everywhere():
    w, job, written = _three_writes(
        {0: "wrong_proof", 3: "wrong_share"}, seed=12, n_trustees=7, t=2
    )
    ids = list(written)
    res = w.committee.release(w.client, w.aggregators[0], w.agg_keys[0], job, "aggregator:0", ids)
    assert res.keys == {i: written[i]["aggregator:0"] for i in ids}
    assert set(res.faulty) == {0, 3}
    assert "shares are right" in res.faulty[0]
    assert "3 of 3 writes" in res.faulty[3]


def test_per_share_proofs_still_accepted_and_checked():
    w, job, written = _three_writes({1: "wrong_share"}, seed=13)
    for tr in w.committee.trustees:
        tr.batch_proofs = False
    ids = list(written)
    res = w.committee.release(w.client, w.aggregators[2], w.agg_keys[2], job, "aggregator:2", ids)
    assert res.keys == {i: written[i]["aggregator:2"] for i in ids}
    assert set(res.faulty) == {1} and "DLEQ proof for write" in res.faulty[1]


def test_tampered_batch_answers_are_named():
    w, job, written = _three_writes(None, seed=14)
    ids = list(written)
    read_id, read, writes, answers = _answers(w, job, ids)
    rcpt = RecipientKey.from_x25519(w.agg_keys[0])
    a0, a1, a3 = answers[0], answers[1], answers[3]
    s = a0.shares
    bad = dict(answers)
    # reordered shares (the batch proof covers the read's order), a value swapped in from
    # another trustee, and a share that is not a point
    bad[0] = msgspec.structs.replace(a0, shares=(s[1], s[0], s[2]))
    bad[1] = msgspec.structs.replace(a1, shares=(a1.shares[0], a0.shares[1], a1.shares[2]))
    bad[3] = msgspec.structs.replace(a3, shares=(*a3.shares[:2], (ids[2], ReencryptedValue(b"x"))))
    with pytest.raises(ProtocolError, match="t \\+ 1"):
        combine_release(bad, read_id, read, writes, w.committee.lts, rcpt)
    bad[3] = a3
    res = combine_release(bad, read_id, read, writes, w.committee.lts, rcpt)
    assert set(res.faulty) == {0, 1}
    assert "exactly one share per write" in res.faulty[0]
    assert "1 of 3 writes" in res.faulty[1]
    assert res.keys == {i: written[i]["aggregator:0"] for i in ids}
    # too few verified trustees to locate: still named, nothing recovered
    only = {0: answers[0], 1: bad[1], 2: None, 3: None}
    with pytest.raises(ProtocolError, match="too few verified"):
        combine_release(only, read_id, read, writes, w.committee.lts, rcpt)
    # the fast mode stops after t + 1 trustees verify, and recovers the same keys
    fast = combine_release(answers, read_id, read, writes, w.committee.lts, rcpt, verify_all=False)
    assert fast.keys == res.keys and fast.faulty == {}


def test_lagrange_at_reference():
    def f(x: int) -> int:  # 3 + 5x + 7x^2, through the points 1, 2, 4
        return 3 + 5 * x + 7 * x * x

    xs = [1, 2, 4]
    for x in (0, 3, 5):
        lam = lagrange_at(xs, x)
        assert sum(int(c) * f(xi) for c, xi in zip(lam, xs, strict=True)) % L == f(x)


def test_ledger_write_decoding_leaves_U_check_to_the_write_proof():
    from kaires_fl.crypto.group import Point
    from kaires_fl.crypto.proofs import SchnorrProof
    from kaires_fl.errors import EncodingError, InvalidProof
    from kaires_fl.secret_management import make_write, verify_write
    from kaires_fl.secret_management.write import WriteEntry

    torsion = Point.from_bytes(
        bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
        subgroup_check=False,
    )
    X = Point.base() * Scalar(99)
    entry, _ = make_write(X, "lts", "pol", 1, "job", ["aggregator:0"])
    payload = entry.to_payload()
    verify_write(WriteEntry.from_payload(payload, check_U=False), X)  # honest: fine
    ct = entry.keys[0][1]
    bad_ct = dataclasses.replace(
        ct, U=Point.from_bytes((ct.U + torsion).to_bytes(), subgroup_check=False)
    )
    bad = {**payload, "keys": [["aggregator:0", bad_ct.to_bytes().hex()]]}
    with pytest.raises(EncodingError):
        WriteEntry.from_payload(bad)  # checked decoding refuses it
    unchecked = WriteEntry.from_payload(bad, check_U=False)
    with pytest.raises(EncodingError, match="refused the scalar multiplication"):
        verify_write(unchecked, X)  # and so does the write proof's multiplication of U
    zero = dataclasses.replace(bad_ct, proof=SchnorrProof(Scalar(0), Scalar(1)))
    with pytest.raises(InvalidProof) as info:
        verify_write(dataclasses.replace(unchecked, keys=(("aggregator:0", zero),)), X)
    assert "zero challenge" in str(info.value.__cause__)


@pytest.mark.parametrize(
    ("faults", "opened"),
    [(None, 2), ({0: "byzantine"}, 4)],  # 4 trustees, t_T = 1
)
def test_an_aggregator_opens_only_the_answers_it_still_needs(monkeypatch, faults, opened):
    """The fast path needs t_T + 1 answers: once it has the keys, the later sealed answers
    are not opened (nor decoded); a wrong share among the first sends it to every answer."""
    import numpy as np

    import kaires_fl.aggregation.job as job_mod
    from kaires_fl.simulation import LocalCommittee
    from kaires_fl.statistics import LinearRegressionStats

    calls: list[str] = []
    real = job_mod.open_answer
    monkeypatch.setattr(
        job_mod, "open_answer", lambda msg, kp: (calls.append(msg.read), real(msg, kp))[1]
    )
    rng = np.random.default_rng(3)
    X = rng.uniform(-1, 1, size=(40, 3))
    y = X @ np.array([0.5, -0.25, 0.125])
    stat = LinearRegressionStats(3, [-1.0, 1.0], [-2.0, 2.0], max_rows=20)
    data = {f"p{i}": (X[i * 20 : (i + 1) * 20], y[i * 20 : (i + 1) * 20]) for i in range(2)}
    committee = LocalCommittee(faults=None if faults is None else {"trustee": faults})
    result = committee.run_job(stat, data)
    assert result.report["status"] == "done" and len(result.report["accepted"]) == 2
    reads = set(calls)
    assert len(reads) == 4 and all(calls.count(r) == opened for r in reads)
