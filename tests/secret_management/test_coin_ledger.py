"""The job coin through the trustees: gated by closed inputs, unique, faulty shares named."""

from __future__ import annotations

import pytest
from trustee_world import make_world

from kaires_fl.errors import AccessDenied
from kaires_fl.ledger.jobs import job_key
from kaires_fl.secret_management import CoinRequest, combine_coin, inputs_key, prove_entries


def test_no_coin_before_inputs_closed_then_one_coin():
    w = make_world(seed=11)
    job = w.create_job(["alice", "bob"])
    wa, _ = w.write("alice", job)
    with pytest.raises(AccessDenied, match="not closed"):
        w.committee.coin(w.client, job)
    ev = prove_entries(w.client, [job_key(job), inputs_key(job)])
    for tr in w.committee.trustees:
        with pytest.raises(AccessDenied, match="not closed"):
            tr.coin(CoinRequest(w.committee.lts.id, job, ev))
    root = w.close(job, [wa])
    seed, faulty = w.committee.coin(w.client, job)
    assert faulty == {} and len(seed) == 32
    # any t + 1 honest trustees give the same value
    ev = prove_entries(w.client, [job_key(job), inputs_key(job)])
    shares = {
        tr.index: tr.coin(CoinRequest(w.committee.lts.id, job, ev)) for tr in w.committee.trustees
    }
    pubs = dict(enumerate(w.committee.lts.public_shares))
    for pair in ((0, 1), (1, 3), (2, 3), (0, 2)):
        s, f = combine_coin({j: shares[j] for j in pair}, pubs, 1, w.committee.lts.id, job, root)
        assert s == seed and f == {}
    # another job gets another coin
    job2 = w.create_job(["alice"])
    wa2, _ = w.write("alice", job2)
    w.close(job2, [wa2])
    assert w.committee.coin(w.client, job2)[0] != seed


def test_no_coin_for_uncommitted_job_or_other_lts():
    w = make_world(seed=12)
    fake = "ab" * 32
    with pytest.raises(AccessDenied, match="not committed"):
        w.committee.coin(w.client, fake)
    job = w.create_job(["alice"])
    ev = prove_entries(w.client, [job_key(job), inputs_key(job)])
    with pytest.raises(AccessDenied, match="another LTS"):
        w.committee.trustees[0].coin(CoinRequest("cd" * 32, job, ev))


@pytest.mark.parametrize("faults", [{1: "wrong_share"}, {3: "wrong_proof"}, {0: "crash"}])
def test_coin_faulty_trustee_named(faults):
    w = make_world(seed=13, faults=faults)
    job = w.create_job(["alice"])
    wa, _ = w.write("alice", job)
    w.close(job, [wa])
    seed, faulty = w.committee.coin(w.client, job)
    assert set(faulty) == set(faults)
    # the coin is the one two honest trustees alone give
    ev = prove_entries(w.client, [job_key(job), inputs_key(job)])
    honest = [tr for tr in w.committee.trustees if tr.index not in faults][:2]
    shares = {tr.index: tr.coin(CoinRequest(w.committee.lts.id, job, ev)) for tr in honest}
    root = w.client.get(inputs_key(job))["root"]
    pubs = dict(enumerate(w.committee.lts.public_shares))
    assert combine_coin(shares, pubs, 1, w.committee.lts.id, job, root)[0] == seed
