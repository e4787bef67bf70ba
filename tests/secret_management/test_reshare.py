"""Resharing to a new trustee set keeps X; bad old dealers are named; old writes stay readable."""

from __future__ import annotations

import pytest
from trustee_world import make_world

from kaires_fl.crypto.group import Point
from kaires_fl.crypto.vss import recover_secret
from kaires_fl.errors import LedgerError, ProtocolError
from kaires_fl.secret_management import LtsInfo, lts_key
from kaires_fl.secret_management.contracts import RESHARE_KIND
from kaires_fl.secret_management.dkg import make_participants, run_dkg
from kaires_fl.secret_management.reshare import run_reshare


def _lts(results, t):
    r = results[min(results)]
    return LtsInfo("lts", t, r.public_key, r.public_shares, ())


@pytest.mark.parametrize(
    "n,t,new_n,new_t,behaviours,named",
    [
        (4, 1, 7, 2, {}, set()),
        (4, 1, 4, 1, {0: "silent"}, {0}),
        (7, 2, 4, 1, {1: "bad_share", 5: "wrong_secret"}, {1, 5}),
        (4, 1, 5, 2, {3: "bad_share"}, {3}),
    ],
)
def test_reshare_keeps_key(n, t, new_n, new_t, behaviours, named):
    old = run_dkg(make_participants(n, t))
    new = run_reshare(old, _lts(old, t), new_n, new_t, behaviours=behaviours)
    first = new[0]
    assert set(first.faulty) == named
    x_old = recover_secret({j: r.share for j, r in old.items()}, t)
    for r in new.values():
        assert r.public_key == old[0].public_key
        assert r.public_shares == first.public_shares and r.transcript == first.transcript
        assert Point.base() * r.share == r.public_shares[r.index]
    shares = {k: r.share for k, r in new.items()}
    assert recover_secret(shares, new_t) == x_old
    assert recover_secret(dict(list(shares.items())[-(new_t + 1) :]), new_t) == x_old
    # an old share mixed with new ones is useless
    mixed = {0: old[0].share} | {k: shares[k] for k in range(1, new_t + 1)}
    assert recover_secret(mixed, new_t) != x_old


def test_reshare_needs_t_plus_1_good_old_dealers():
    old = run_dkg(make_participants(4, 1))
    with pytest.raises(ProtocolError, match="dealt correctly"):
        run_reshare(
            old, _lts(old, 1), 4, 1, behaviours={0: "silent", 1: "silent", 2: "wrong_secret"}
        )


def test_committee_reshare_on_ledger_old_writes_readable():
    w = make_world(seed=31)
    job = w.create_job(["alice"])
    wa, ka = w.write("alice", job)
    w.close(job, [wa])
    old = w.committee
    new = old.reshare(w.client, 7, 2, faults={6: "wrong_share"}, reshare_faults={2: "bad_share"})
    assert new.lts.id == old.lts.id and new.lts.X == old.lts.X and new.lts.n == 7
    assert w.client.get(lts_key(old.lts.id))["epoch"] == 1
    assert 2 in new.dkg_faulty
    w.committee = new
    res = new.release(w.client, w.aggregators[1], w.agg_keys[1], job, "aggregator:1", [wa])
    assert res.keys[wa] == ka["aggregator:1"] and set(res.faulty) == {6}
    # the old committee no longer answers
    with pytest.raises(ProtocolError):
        old.release(w.client, w.aggregators[2], w.agg_keys[2], job, "aggregator:2", [wa])


def test_reshare_contract_rejects_a_wrong_key_or_signers():
    w = make_world(seed=32)
    c = w.committee
    entry = w.client.get(lts_key(c.lts.id))
    other = run_dkg(make_participants(4, 1))[0]
    payload = {
        "id": c.lts.id,
        "n": 4,
        "t": 1,
        "shares": [p.to_bytes().hex() for p in other.public_shares],
        "trustees": entry["trustees"],
        "transcript": "00",
    }
    ids = c.identities
    with pytest.raises(LedgerError, match="do not interpolate to X"):
        w.ledger.client().execute(ids[0], RESHARE_KIND, payload, cosigners=ids[1:])
    payload["shares"] = entry["shares"]
    with pytest.raises(LedgerError, match="signatures"):
        w.ledger.client().execute(ids[0], RESHARE_KIND, payload, cosigners=ids[1:2])
