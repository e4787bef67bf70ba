"""Trustees on the in-memory transport: lost links, crashes, garbage requests."""

from __future__ import annotations

from trustee_world import make_world

from kaires_fl.secret_management import Refusal, ReleaseRequest
from kaires_fl.secret_management.trustee import collect_answers
from kaires_fl.transport import LinkFaults


def _job(w):
    job = w.create_job(["alice"])
    wa, ka = w.write("alice", job)
    w.close(job, [wa])
    return job, wa, ka


def test_release_with_a_dropped_link_and_a_crashed_trustee_node():
    w = make_world(n_trustees=7, t=2, seed=21)
    job, wa, ka = _job(w)
    net = w.client.network
    net.set_faults(LinkFaults(drop=1.0), src=w.committee.addresses[1])
    net.crash(w.committee.addresses[5])
    res = w.committee.release(w.client, w.aggregators[2], w.agg_keys[2], job, "aggregator:2", [wa])
    assert res.keys[wa] == ka["aggregator:2"]
    assert set(res.faulty) == {1, 5}
    assert all("silent" in r for r in res.faulty.values())
    net.set_faults(None, src=w.committee.addresses[1])


def test_release_survives_delays_and_duplicates():
    w = make_world(seed=22)
    job, wa, ka = _job(w)
    net = w.client.network
    for a in w.committee.addresses:
        net.set_faults(LinkFaults(delay=(0.01, 0.05), duplicate=0.5, reorder=0.5), src=a)
    sent = net.stats["sent"]
    res = w.committee.release(w.client, w.aggregators[0], w.agg_keys[0], job, "aggregator:0", [wa])
    assert res.keys[wa] == ka["aggregator:0"] and res.faulty == {}
    assert net.stats["sent"] > sent


def test_garbage_requests_get_refusals_and_the_service_keeps_running():
    w = make_world(seed=23)
    job, wa, ka = _job(w)
    ep = w.client.network.endpoint("garbage-sender")
    answers = collect_answers(
        w.client.network, ep, w.committee.addresses, ReleaseRequest("ab" * 32, None)
    )
    assert all(isinstance(a, Refusal) for a in answers.values())
    answers = collect_answers(w.client.network, ep, w.committee.addresses, "hello")
    assert all(a is None for a in answers.values())
    res = w.committee.release(w.client, w.aggregators[1], w.agg_keys[1], job, "aggregator:1", [wa])
    assert res.keys[wa] == ka["aggregator:1"]
