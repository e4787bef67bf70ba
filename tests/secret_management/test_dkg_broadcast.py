"""The DKG's reliable broadcast (signed echo chains) on the in-memory network: honest runs,
equivocating and crashed dealers, network faults, Byzantine relays, fuzzed messages."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kaires_fl import schema
from kaires_fl.crypto.group import Point
from kaires_fl.crypto.vss import recover_secret
from kaires_fl.errors import ConfigError
from kaires_fl.secret_management.broadcast import (
    BROADCAST_CONTEXT,
    Equivocation,
    Relay,
    SignedEchoBroadcast,
    Witness,
    statement,
)
from kaires_fl.secret_management.dkg import (
    Complaint,
    Deal,
    DkgMessage,
    DkgNode,
    DkgParticipant,
    Justification,
    Reveal,
    make_participants,
    run_dkg_on_network,
)
from kaires_fl.transport import LinkFaults, MemoryNetwork

DELTA = 0.05


def _world(n, t, *, behaviours=None, session=b"rb", seed=0, wire=True):
    net = MemoryNetwork(seed=seed, wire=wire)
    addrs = [f"t{j}" for j in range(n)]
    ps = make_participants(n, t, behaviours=behaviours, session=session)
    nodes = [DkgNode(p, net.endpoint(a), addrs, DELTA) for p, a in zip(ps, addrs, strict=True)]
    return net, addrs, ps, nodes


def _run(net, nodes, live=None):
    live = nodes if live is None else live
    for nd in live:
        nd.start()
    t = nodes[0].p.t
    net.run_until(lambda: all(nd.done for nd in live), DELTA * (6 * (t + 1) + 3))
    assert all(nd.done and nd.error is None for nd in live), [nd.error for nd in live]
    return {nd.p.index: nd.result for nd in live}


def _agree(results, honest, t):
    first = results[honest[0]]
    for j in honest:
        r = results[j]
        assert r.transcript == first.transcript
        assert r.public_key == first.public_key and r.qual == first.qual
        assert dict(r.faulty) == dict(first.faulty)
        assert Point.base() * r.share == first.public_shares[j]
    x = recover_secret({j: results[j].share for j in honest}, t)
    assert Point.base() * x == first.public_key
    return first


def _relay(identities, session, slot, sender, payload):
    """A relay of ``payload`` signed by ``identities`` (sender first): what a Byzantine
    trustee can build with its own key (and a colluder's)."""
    digest = hashlib.sha256(payload).digest()
    stmt = statement(session, slot, sender, digest)
    chain = tuple(Witness(j, ident.sign(BROADCAST_CONTEXT, stmt)) for j, ident in identities)
    return Relay(session, slot, sender, payload, chain)


@pytest.mark.parametrize("n,t", [(1, 0), (3, 1), (4, 1), (5, 2), (7, 2)])
def test_honest_dkg_over_the_broadcast(n, t):
    net, _, _, nodes = _world(n, t, seed=n)
    res = _run(net, nodes)
    first = _agree(res, list(range(n)), t)
    assert first.qual == tuple(range(n)) and not first.faulty
    assert all(nd.dropped == 0 for nd in nodes)


@pytest.mark.parametrize(
    "n,t,behaviours",
    [
        (3, 1, {0: "equivocate"}),
        (4, 1, {2: "equivocate"}),
        (7, 2, {1: "equivocate", 4: "bad_share"}),
        (7, 2, {3: "equivocate", 6: "equivocate"}),
    ],
)
def test_equivocating_dealer_excluded_same_key_everywhere(n, t, behaviours):
    net, _, _, nodes = _world(n, t, behaviours=behaviours, seed=11)
    res = _run(net, nodes)
    honest = [j for j in range(n) if j not in behaviours]
    first = _agree(res, honest, t)
    for d, b in behaviours.items():
        assert d not in first.qual
        if b == "equivocate":
            assert "equivocated in broadcast round 1" in first.faulty[d]
    assert set(first.qual) == set(range(n)) - set(behaviours)


@pytest.mark.parametrize(
    "signers,at,split",
    [
        ((5, 6), 0.06, True),  # sub-round 1, two signatures: accepted, relayed, seen by all
        ((5,), 0.0, True),  # sub-round 0, the sender's signature: accepted and relayed
        ((5,), 0.06, False),  # sub-round 1 with one signature: too short, refused
        ((5, 6), 0.11, False),  # last sub-round needs t + 1 = 3 signatures: refused
    ],
)
def test_late_equivocation_to_one_trustee_cannot_split_the_honest(signers, at, split):
    """Dealer 5 (with colluder 6) deals honestly to all and sends a second signed deal to
    trustee 0 only. Either every honest trustee learns of it (5 is excluded everywhere) or
    none accepts it (5's first deal stands everywhere): never a split."""
    n, t = 7, 2
    net, _, ps, nodes = _world(n, t, session=b"late", seed=5)
    other = schema.encode(DkgMessage(b"late", 1, 5, Deal(5, (Point.base(),) * (t + 1))))
    relay = _relay([(j, ps[j].identity) for j in signers], b"late", 1, 5, other)
    net.schedule(at, lambda: net.endpoint(f"t{signers[-1]}").send("t0", relay))
    res = _run(net, nodes)
    first = _agree(res, list(range(5)), t)
    if split:
        assert 5 not in first.qual and "equivocated" in first.faulty[5]
    else:
        assert first.qual == tuple(range(n)) and not first.faulty
        assert nodes[0].rb.rejected == 1


class _EquivocatesIn(DkgParticipant):
    """Honest but signs two versions of its round ``ROUND`` message (test behaviour)."""

    ROUND = 2

    def variants(self, rnd, body):
        if rnd != self.ROUND:
            return [body]
        alt = {
            2: (Complaint(self.index, 0),),
            3: Justification(self.index, ()),
            4: None,
            6: Reveal(self.index, ()),
        }[rnd]
        assert alt != body
        return [body, alt]


@pytest.mark.parametrize("rnd,excluded", [(2, True), (3, True), (4, False), (6, False)])
def test_equivocation_in_later_rounds(rnd, excluded):
    """Equivocating before QUAL is fixed (rounds 1–3) excludes a dealer; after (rounds 4–6)
    its contribution is fixed, so it is named and (round 4) reconstructed."""
    net, _, ps, nodes = _world(4, 1, session=b"later", seed=rnd)
    cls = type("Eq", (_EquivocatesIn,), {"ROUND": rnd})
    ps[3].__class__ = cls
    res = _run(net, nodes)
    first = _agree(res, [0, 1, 2], 1)
    assert f"equivocated in broadcast round {rnd}" in first.faulty[3]
    assert (3 not in first.qual) == excluded
    if rnd == 4:
        assert "reconstructed" in first.faulty[3]


def test_crashed_dealers_before_and_during_the_dkg():
    """Robustness: a trustee crashed before the DKG is silent (excluded); one crashing
    after it dealt keeps its fixed contribution, reconstructed from the others' shares."""
    net, _, _, nodes = _world(7, 2, session=b"crash", seed=2)
    net.crash("t6")
    net.schedule(0.16, lambda: net.crash("t5"))  # after round 1 (3 sub-rounds of 0.05)
    live = nodes[:6]
    for nd in live:
        nd.start()
    net.run_until(lambda: all(nd.done for nd in live[:5]), DELTA * 24)
    res = {nd.p.index: nd.result for nd in live[:5]}
    first = _agree(res, [0, 1, 2, 3, 4], 2)
    assert 6 not in first.qual and "silent in round 1" in first.faulty[6]
    assert 5 in first.qual and "reconstructed" in first.faulty[5]


def test_network_faults_between_honest_trustees_change_nothing():
    """Robustness: a dead link t0 → t1 (deal, share and round messages lost on it), and
    duplicates, reordering and delays below the sub-round on every link: the relays carry
    t0's messages to t1, its share is complained about and answered in public, nobody is
    named and every trustee ends with the same key."""
    net, _, _, nodes = _world(4, 1, session=b"faults", seed=9)
    net.set_faults(LinkFaults(duplicate=0.3, reorder=0.3, reorder_window=0.01, delay=(0, 0.02)))
    net.set_faults(LinkFaults(drop=1.0), src="t0", dst="t1")
    res = _run(net, nodes)
    first = _agree(res, [0, 1, 2, 3], 1)
    assert first.qual == (0, 1, 2, 3) and not first.faulty


def test_one_silent_link_per_sender_is_masked_by_relays():
    n, t = 5, 2
    net, _, _, nodes = _world(n, t, session=b"links", seed=1)
    for j in range(n):
        net.set_faults(LinkFaults(drop=1.0), src=f"t{j}", dst=f"t{(j + 1) % n}")
    res = _run(net, nodes)
    first = _agree(res, list(range(n)), t)
    assert first.qual == tuple(range(n)) and not first.faulty


def test_byzantine_relays_conflicting_echoes_are_refused():
    """Robustness: trustee 3 forwards every relay it sees with conflicting content — a
    different payload under the original chain, its own echo twice, its own valid echo on
    a different payload with the sender's signature copied. All are refused; nobody honest
    is named; the DKG completes with one key."""
    net, addrs, ps, nodes = _world(4, 1, session=b"echo", seed=7)
    evil = net.endpoint("t3")
    me = ps[3].identity
    sent: list[Relay] = []

    def spy(env):
        if env.src != "t3" and isinstance(env.payload, Relay) and len(sent) < 200:
            sent.append(env.payload)
        return True

    net.add_filter(spy)

    def attack():
        for r in list(sent):
            if r.sender == 3:
                continue
            bad_payload = Relay(r.session, r.slot, r.sender, r.payload + b"x", r.chain)
            w = Witness(3, me.sign(BROADCAST_CONTEXT, b"nonsense"))
            dup = Relay(r.session, r.slot, r.sender, r.payload, (*r.chain[:1], w, w))
            digest = hashlib.sha256(r.payload[:-1]).digest()
            mine = Witness(
                3, me.sign(BROADCAST_CONTEXT, statement(b"echo", r.slot, r.sender, digest))
            )
            copied = Relay(r.session, r.slot, r.sender, r.payload[:-1], (r.chain[0], mine))
            for m in (bad_payload, dup, copied):
                evil.broadcast(addrs[:3], m)
        sent.clear()

    for k in range(1, 13):
        net.schedule(0.05 * k - 0.02, attack)
    res = _run(net, nodes)
    first = _agree(res, [0, 1, 2, 3], 1)
    assert first.qual == (0, 1, 2, 3) and not first.faulty
    assert all(nd.rb.rejected > 0 for nd in nodes[:3])


def test_broadcast_unit_decisions_and_limits():
    ps = make_participants(3, 1, session=b"u")
    clock = [0.0]
    out: list[Relay] = []
    rb = [
        SignedEchoBroadcast(
            j,
            3,
            1,
            ps[j].identity,
            ps[j].peer_identities,
            b"u",
            out.append,
            lambda: clock[0],
            1.0,
            2,
        )
        for j in range(3)
    ]
    for b in rb:
        b.begin(0.0)
    a = _relay([(1, ps[1].identity)], b"u", 1, 1, b"A")
    b_ = _relay([(1, ps[1].identity)], b"u", 1, 1, b"B")
    assert rb[0].on_relay(a) and out and out[-1].chain[-1].signer == 0  # relayed, signed
    assert not rb[0].on_relay(a)  # known: ignored without verification
    assert rb[0].on_relay(b_)  # a second payload: proof of equivocation
    c = _relay([(1, ps[1].identity)], b"u", 1, 1, b"C")
    assert not rb[0].on_relay(c)  # two are enough
    for bad in (
        _relay([(1, ps[1].identity)], b"other", 1, 1, b"A"),  # another session
        _relay([(1, ps[1].identity)], b"u", 3, 1, b"A"),  # beyond the session's slots
        _relay([(2, ps[2].identity)], b"u", 1, 1, b"A"),  # chain does not start at the sender
        _relay([(1, ps[2].identity)], b"u", 2, 1, b"A"),  # forged: wrong key
    ):
        assert not rb[2].on_relay(bad)
    assert rb[2].rejected == 4
    clock[0] = 1.5  # sub-round 1 of slot 1: one signature is not enough
    assert not rb[2].on_relay(_relay([(1, ps[1].identity)], b"u", 1, 1, b"D"))
    clock[0] = 3.5  # sub-round 1 of slot 2: two distinct signers needed, the sender first
    twice = _relay([(1, ps[1].identity), (1, ps[1].identity)], b"u", 2, 1, b"E")
    swapped = _relay([(0, ps[0].identity), (1, ps[1].identity)], b"u", 2, 1, b"E")
    assert not rb[2].on_relay(twice) and not rb[2].on_relay(swapped)
    assert rb[2].rejected == 7
    long = _relay([(1, ps[1].identity), (0, ps[0].identity)], b"u", 2, 1, b"E")
    long = Relay(long.session, 2, 1, b"E", (*long.chain, Witness(2, b"junk")))
    sent_before = len(out)
    assert rb[2].on_relay(long)  # the two it needs verify; the rest is ignored
    assert len(out) == sent_before  # accepted in the last sub-round (k = t): not relayed
    out1 = rb[0].decide(1)
    assert isinstance(out1[1], Equivocation) and out1[0] is None and out1[2] is None
    assert "equivocated in broadcast round 1" in out1[1].reason
    assert not rb[0].on_relay(a)  # decided: too late
    with pytest.raises(ConfigError):
        SignedEchoBroadcast(
            0, 3, 1, ps[1].identity, ps[0].peer_identities, b"u", out.append, lambda: 0.0, 1.0, 2
        )
    with pytest.raises(ConfigError):
        SignedEchoBroadcast(
            0, 3, 3, ps[0].identity, ps[0].peer_identities, b"u", out.append, lambda: 0.0, 1.0, 2
        )


def test_node_needs_signing_keys():
    p = make_participants(4, 1)[0]
    bare = DkgParticipant(p.index, p.n, p.t, p.envelope_key, p.peer_keys, b"")
    with pytest.raises(ConfigError, match="identity"):
        DkgNode(bare, MemoryNetwork().endpoint("t0"), [f"t{j}" for j in range(4)])


def test_run_dkg_on_network_names_the_equivocator():
    net = MemoryNetwork(seed=6)
    ps = make_participants(4, 1, behaviours={1: "equivocate"}, session=b"r")
    res = run_dkg_on_network(net, ps, [f"t{j}" for j in range(4)])
    first = _agree(res, [0, 2, 3], 1)
    assert first.qual == (0, 2, 3)


# --- fuzz: arbitrary and mutated messages at a running node ------------------------------------

_OBJECTS = st.one_of(
    st.none(),
    st.integers(),
    st.text(max_size=20),
    st.binary(max_size=200),
    st.lists(st.integers(), max_size=4),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)
_EDITS = st.lists(
    st.tuples(st.integers(0, 10_000), st.integers(0, 255), st.sampled_from(["set", "del", "ins"])),
    min_size=1,
    max_size=6,
)


def _mutate(data: bytes, edits) -> bytes:
    b = bytearray(data)
    for pos, val, op in edits:
        if not b:
            break
        i = pos % len(b)
        if op == "set":
            b[i] = val
        elif op == "del":
            del b[i]
        else:
            b.insert(i, val)
    return bytes(b)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    junk=st.lists(_OBJECTS, max_size=4),
    edits=st.lists(_EDITS, min_size=1, max_size=8),
    times=st.lists(st.floats(0.0, 0.6), min_size=1, max_size=8),
    src=st.sampled_from(["t3", "t1", "stranger"]),
)
def test_fuzzed_messages_at_a_node_never_stop_the_dkg(junk, edits, times, src):
    """Robustness: arbitrary objects and bytes, and mutated copies of the run's own relays
    and shares, delivered to trustee 0 at any time from a trustee or a stranger address:
    the node never raises, every trustee completes and all agree on one key."""
    net, _, _, nodes = _world(4, 1, session=b"fz", seed=3, wire=False)
    seen: list[bytes] = []

    def spy(env):
        if len(seen) < 64:
            seen.append(schema.encode(env.payload))
        return True

    net.add_filter(spy)

    def inject(k):
        for obj in junk:
            nodes[0].on_message(src, obj)
        if seen:
            data = seen[(k * 7) % len(seen)]
            nodes[0].on_message(src, _mutate(data, edits[k % len(edits)]))
            nodes[0].on_message(src, data)  # a replay of a genuine message
        nodes[0].on_message(src, object())

    for k, at in enumerate(times):
        net.schedule(at, lambda k=k: inject(k))
    res = _run(net, nodes)
    _agree(res, [0, 1, 2, 3], 1)


@pytest.mark.parametrize("skew", [0.0, 0.01])
def test_agreed_start_time_and_clock_offsets_below_the_sub_round(skew):
    """The trustees hear of the DKG at different times and begin at the agreed time (plus
    a clock offset of up to 3·skew < round_time − latency): same key, nobody named."""
    net, _, _, nodes = _world(4, 1, session=b"at", seed=4)
    for k, nd in enumerate(nodes):
        net.schedule(0.03 * k, lambda nd=nd, k=k: nd.start(at=0.2 + skew * k))
    net.run_until(lambda: all(nd.done for nd in nodes), 2.0)
    assert all(nd.done and nd.error is None for nd in nodes)
    first = _agree({nd.p.index: nd.result for nd in nodes}, [0, 1, 2, 3], 1)
    assert first.qual == (0, 1, 2, 3) and not first.faulty
