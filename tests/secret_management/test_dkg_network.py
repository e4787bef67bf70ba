"""The DKG over the in-memory transport: rounds with timeouts, lost and crashed trustees."""

from __future__ import annotations

import pytest

from kaires_fl import schema
from kaires_fl.crypto.group import Point
from kaires_fl.crypto.vss import recover_secret
from kaires_fl.secret_management.broadcast import Relay, Witness
from kaires_fl.secret_management.dkg import (
    Deal,
    DkgMessage,
    make_participants,
    run_dkg_on_network,
)
from kaires_fl.transport import LinkFaults, MemoryNetwork


def _agree(results, honest, t):
    first = results[honest[0]]
    for j in honest:
        assert results[j].transcript == first.transcript
        assert Point.base() * results[j].share == first.public_shares[j]
    x = recover_secret({j: results[j].share for j in honest}, t)
    assert Point.base() * x == first.public_key
    return first


@pytest.mark.parametrize(
    "n,t,behaviours,named",
    [
        (4, 1, {}, set()),
        (4, 1, {2: "bad_share"}, {2}),
        (7, 2, {0: "no_justification", 4: "bad_extraction"}, {0, 4}),
    ],
)
def test_dkg_over_the_network(n, t, behaviours, named):
    net = MemoryNetwork(seed=n)
    addrs = [f"t{j}" for j in range(n)]
    res = run_dkg_on_network(
        net, make_participants(n, t, behaviours=behaviours, session=b"s"), addrs
    )
    honest = [j for j in range(n) if j not in behaviours]
    first = _agree(res, honest, t)
    assert set(first.faulty) == named


def test_dkg_network_crash_and_lost_messages():
    net = MemoryNetwork(seed=3)
    addrs = [f"t{j}" for j in range(7)]
    net.crash("t6")  # crashed before the DKG: silent dealer
    # every message from t5 is lost: t5 is silent to the others
    net.set_faults(LinkFaults(drop=1.0), src="t5")
    # duplicates and delays below the round time are harmless
    net.set_faults(LinkFaults(duplicate=0.5, delay=(0.0, 0.02)), src="t1")
    res = run_dkg_on_network(net, make_participants(7, 2, session=b"s2"), addrs)
    honest = [0, 1, 2, 3, 4]
    first = _agree(res, honest, 2)
    assert set(first.faulty) == {5, 6}
    assert set(first.qual) == set(honest)


def test_dkg_node_ignores_spoofed_senders():
    """A malformed deal claiming to come from dealer 0 (sent by someone else, and first)
    would get dealer 0 excluded if it were accepted."""
    net = MemoryNetwork(seed=4)
    addrs = [f"t{j}" for j in range(4)]
    ps = make_participants(4, 1, session=b"s3")
    mallory = net.endpoint("mallory")
    bogus = schema.encode(DkgMessage(b"s3", 1, 0, Deal(0, ())))
    forged = Relay(b"s3", 1, 0, bogus, (Witness(0, b"\x01" * 64),))
    mallory.broadcast(addrs, DkgMessage(b"s3", 1, 0, Deal(0, ())))  # bare: never accepted
    mallory.broadcast(addrs, forged)  # not a trustee address
    net.endpoint("t3").broadcast(addrs[:3], forged)  # a trustee relaying a forged chain
    res = run_dkg_on_network(net, ps, addrs)
    first = _agree(res, [0, 1, 2, 3], 1)
    assert first.faulty == {} and first.qual == (0, 1, 2, 3)


def test_committee_with_network_dkg_registers_and_releases():
    from trustee_world import make_world

    from kaires_fl.secret_management import TrusteeCommittee

    w = make_world(seed=41)
    c = TrusteeCommittee.setup(
        w.client, 4, 1, dkg_faults={3: "bad_share"}, name="net-trustee", network_dkg=True
    )
    assert set(c.dkg_faulty) == {3}
    w.committee = c
    job = w.create_job(["alice"])
    wa, ka = w.write("alice", job)
    w.close(job, [wa])
    res = c.release(w.client, w.aggregators[0], w.agg_keys[0], job, "aggregator:0", [wa])
    assert res.keys[wa] == ka["aggregator:0"]
