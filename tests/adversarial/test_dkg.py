"""Issue 10, the DKG over the network: each test plays a faulty trustee (or a stranger) with
only its own keys and messages against honest trustees running :class:`DkgNode`.

On commit 40b7995 the DKG's "broadcast" was point to point: a dealer sending different
commitments to different trustees made them compute different QUAL sets and keys (the
first test would end with two transcripts there).
"""

from __future__ import annotations

import hashlib

from kaires_fl import schema
from kaires_fl.crypto.group import Point
from kaires_fl.crypto.vss import recover_secret
from kaires_fl.secret_management.broadcast import BROADCAST_CONTEXT, Relay, Witness, statement
from kaires_fl.secret_management.dkg import (
    Deal,
    DealShare,
    DkgMessage,
    DkgNode,
    Justification,
    make_participants,
)
from kaires_fl.transport import MemoryNetwork

DELTA = 0.05


def _signed(identity, index, session, slot, body):
    """A one-signature relay of my own round message: all a trustee can sign alone."""
    payload = schema.encode(DkgMessage(session, slot, index, body))
    stmt = statement(session, slot, index, hashlib.sha256(payload).digest())
    return Relay(
        session, slot, index, payload, (Witness(index, identity.sign(BROADCAST_CONTEXT, stmt)),)
    )


def _honest_nodes(n, t, session, seed):
    net = MemoryNetwork(seed=seed, wire=True)
    addrs = [f"t{j}" for j in range(n)]
    ps = make_participants(n, t, session=session)
    return net, addrs, ps


def _finish(net, nodes, t):
    for nd in nodes:
        nd.start()
    net.run_until(lambda: all(nd.done for nd in nodes), DELTA * (6 * (t + 1) + 3))
    assert all(nd.done and nd.error is None for nd in nodes), [nd.error for nd in nodes]
    results = [nd.result for nd in nodes]
    assert len({r.transcript for r in results}) == 1
    first = results[0]
    x = recover_secret({r.index: r.share for r in results}, t)
    assert Point.base() * x == first.public_key
    return first


def test_equivocating_dealer_is_excluded_everywhere_not_a_split():
    """Robustness: dealer 3 signs commitments to its real polynomial for trustee 0 and
    commitments to another one for trustees 1 and 2, sends every trustee a share of the real
    polynomial, and answers the complaints of 1 and 2 with real shares. Point to point, 0
    would keep 3 in QUAL and 1, 2 would drop it (two keys). Over the reliable broadcast,
    0 relays what it got, every honest trustee holds both signed deals, names 3 as an
    equivocator and excludes it: one key, from the honest dealers."""
    n, t, session = 4, 1, b"adv-eq"
    net, addrs, ps = _honest_nodes(n, t, session, seed=21)
    nodes = [
        DkgNode(p, net.endpoint(a), addrs, DELTA) for p, a in zip(ps[:3], addrs[:3], strict=True)
    ]
    atk, ep = ps[3], net.endpoint("t3")
    deal_a = atk.deal()
    shares = atk.private_shares()
    deal_b = Deal(3, (deal_a.commitments[0] + Point.base(), *deal_a.commitments[1:]))

    def round1():
        for j in range(3):
            ep.send(addrs[j], DealShare(session, 3, j, shares[j]))
        ep.send("t0", _signed(atk.identity, 3, session, 1, deal_a))
        for j in (1, 2):
            ep.send(addrs[j], _signed(atk.identity, 3, session, 1, deal_b))

    def round3():  # answer 1's and 2's complaints with the real shares
        just = Justification.of(3, {j: atk._share_pair(j) for j in (1, 2)})
        ep.broadcast(addrs[:3], _signed(atk.identity, 3, session, 3, just))

    net.schedule(0.0, round1)
    net.schedule(2 * (t + 1) * DELTA + 0.001, round3)
    first = _finish(net, nodes, t)
    assert first.qual == (0, 1, 2)
    assert "equivocated in broadcast round 1" in first.faulty[3]


def test_a_trustee_cannot_frame_an_honest_dealer_as_equivocator():
    """Fairness: trustee 3 builds a second "deal of dealer 0" and signs it with its own key
    in dealer 0's place (it has no other), and relays it with its own echo appended. The
    chain does not verify under dealer 0's key: refused everywhere; dealer 0 stays in QUAL
    and is named by nobody."""
    n, t, session = 4, 1, b"adv-frame"
    net, addrs, ps = _honest_nodes(n, t, session, seed=22)
    nodes = [DkgNode(p, net.endpoint(a), addrs, DELTA) for p, a in zip(ps, addrs, strict=True)]
    me = ps[3].identity
    fake = schema.encode(DkgMessage(session, 1, 0, Deal(0, (Point.base(), Point.base()))))
    stmt = statement(session, 1, 0, hashlib.sha256(fake).digest())
    sig = me.sign(BROADCAST_CONTEXT, stmt)
    framed = [
        Relay(session, 1, 0, fake, (Witness(0, sig),)),
        Relay(session, 1, 0, fake, (Witness(0, sig), Witness(3, sig))),
    ]
    ep = net.endpoint("t3")
    for at in (0.0, 0.03, 0.06):
        net.schedule(at, lambda: [ep.broadcast(addrs[:3], r) for r in framed])
    first = _finish(net, nodes, t)
    assert first.qual == (0, 1, 2, 3) and not first.faulty
    assert all(nd.rb.rejected >= 2 for nd in nodes[:3])


def test_a_trustee_cannot_send_shares_in_another_dealers_name():
    """Robustness: trustee 3 sends every trustee a garbage share "from dealer 0" before
    dealer 0's own arrives. Shares are taken only from their dealer's address: dealer 0's
    real shares are used, nobody complains, nobody is named."""
    n, t, session = 4, 1, b"adv-share"
    net, addrs, ps = _honest_nodes(n, t, session, seed=23)
    nodes = [DkgNode(p, net.endpoint(a), addrs, DELTA) for p, a in zip(ps, addrs, strict=True)]
    ep = net.endpoint("t3")
    for j in range(3):
        ep.send(addrs[j], DealShare(session, 0, j, b"\x00" * 100))
    first = _finish(net, nodes, t)
    assert first.qual == (0, 1, 2, 3) and not first.faulty
    assert all(nd.dropped >= 1 for nd in nodes[:3])


def test_a_stranger_cannot_inject_round_messages():
    """Robustness: an address outside the committee replays genuine relays and shares it
    overheard: refused at the boundary (only trustees relay); the DKG is unchanged."""
    n, t, session = 4, 1, b"adv-stranger"
    net, addrs, ps = _honest_nodes(n, t, session, seed=24)
    nodes = [DkgNode(p, net.endpoint(a), addrs, DELTA) for p, a in zip(ps, addrs, strict=True)]
    heard: list = []
    net.add_filter(lambda env: heard.append(env.payload) or True)
    stranger = net.endpoint("mallory")
    for at in (0.02, 0.12, 0.22):
        net.schedule(at, lambda: [stranger.broadcast(addrs, m) for m in list(heard)[:20]])
    first = _finish(net, nodes, t)
    assert first.qual == (0, 1, 2, 3) and not first.faulty
    assert all(nd.dropped >= 20 for nd in nodes)
