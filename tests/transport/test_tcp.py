"""TCP transport on loopback: authentication, refusals, reconnection, services unchanged.

Ports are picked at run time (listen on port 0, read it back), every network is closed in
``finally``, deadlines are generous (the machine may be loaded).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kaires_fl import wire
from kaires_fl.aggregation.job import ReceiptDraft
from kaires_fl.crypto.sign import H, Identity
from kaires_fl.errors import ConfigError
from kaires_fl.ledger.client import make_genesis
from kaires_fl.ledger.consensus import Status, TxGossip
from kaires_fl.ledger.node import LedgerConfig, LedgerNode
from kaires_fl.ledger.store import Store
from kaires_fl.ledger.tx import make_tx
from kaires_fl.transport.tcp import TcpNetwork, client_address

DEADLINE = 8.0
FAST = {"backoff": (0.02, 0.2), "handshake_timeout": 2.0}


def ident(name: str) -> Identity:
    return Identity.from_seed(H(b"tcp-test", name.encode()))


def start(names: list[str], accept_clients: bool = False, **kw) -> dict[str, TcpNetwork]:
    """One listening network per node name (sharing one reactor), peers pinned."""
    nets: dict[str, TcpNetwork] = {}
    try:
        for n in names:
            reactor = next(iter(nets.values())).reactor if nets else None
            nets[n] = TcpNetwork(
                ident(n),
                ("127.0.0.1", 0),
                group=b"test-group",
                accept_clients=accept_clients,
                reactor=reactor,
                **{**FAST, **kw},
            )
        peers = {n: ("127.0.0.1", nets[n].port, ident(n).public, [f"{n}-addr"]) for n in names}
        for net in nets.values():
            net.set_peers(peers)
    except BaseException:
        close(nets)
        raise
    return nets


def close(nets: dict[str, TcpNetwork]) -> None:
    # Networks sharing a reactor: close the owner (the first) last.
    for net in reversed(list(nets.values())):
        net.close()


@contextlib.contextmanager
def network(names: list[str], **kw) -> Iterator[dict[str, TcpNetwork]]:
    nets = start(names, **kw)
    try:
        yield nets
    finally:
        close(nets)


def inbox(net: TcpNetwork, address: str) -> list[tuple[str, object]]:
    got: list[tuple[str, object]] = []
    net.endpoint(address).set_handler(lambda src, m: got.append((src, m)))
    return got


def check_still_serves(nets: dict[str, TcpNetwork], a: str = "a", b: str = "b") -> None:
    """A good peer is still served after an attack on ``a``."""
    got = inbox(nets[a], f"{a}-addr")
    before = len(got)
    nets[b].endpoint(f"{b}-addr").send(f"{a}-addr", Status(99, 1))
    assert nets[a].run_until(lambda: len(got) > before, DEADLINE)
    assert got[-1] == (f"{b}-addr", Status(99, 1))


def test_two_endpoints_exchange_both_ways():
    with network(["a", "b"]) as nets:
        ga, gb = inbox(nets["a"], "a-addr"), inbox(nets["b"], "b-addr")
        ea, eb = nets["a"].endpoint("a-addr"), nets["b"].endpoint("b-addr")
        ea.send("b-addr", Status(1, 0))
        eb.send("a-addr", Status(2, 1))
        big = ReceiptDraft("ab" * 32, os.urandom(2**20))
        ea.send("b-addr", big)
        assert nets["a"].run_until(lambda: len(ga) == 1 and len(gb) == 2, DEADLINE)
        assert ga == [("b-addr", Status(2, 1))]
        assert gb[0] == ("a-addr", Status(1, 0)) and gb[1] == ("a-addr", big)
        assert ea.now() == pytest.approx(time.time(), abs=5.0)  # Unix seconds, monotonic


def test_local_delivery_and_timers():
    with network(["a"]) as nets:
        net = nets["a"]
        got = inbox(net, "a-addr")
        fired: list[float] = []
        ep = net.endpoint("a-addr")
        t0 = ep.now()
        ep.call_later(0.05, lambda: fired.append(ep.now()))
        ep.call_later(0.01, lambda: fired.append(-1.0)).cancel()
        ep.send("a-addr", Status(5, 0))
        assert net.run_until(lambda: fired and got, DEADLINE)
        assert fired[0] - t0 >= 0.05 and got == [("a-addr", Status(5, 0))]
        net.run_for(0.05)
        assert fired == fired[:1]


def test_endpoint_addresses_are_the_nodes_own():
    with network(["a", "b"]) as nets, pytest.raises(ConfigError, match="not an address of node"):
        nets["a"].endpoint("b-addr")


def test_wrong_pinned_key_refused(caplog):
    """Authentication: a node answering with another key than the pinned one is refused."""
    caplog.set_level(logging.INFO, logger="kaires.net")
    with network(["a", "b"]) as nets:
        got = inbox(nets["b"], "b-addr")
        peers = dict(nets["a"].peers)
        wrong = ident("mallory").public
        peers["b"] = ("127.0.0.1", peers["b"].port, wrong, ["b-addr"])
        nets["a"].set_peers(peers)
        nets["a"].endpoint("a-addr").send("b-addr", Status(1, 0))
        nets["a"].run_until(lambda: nets["a"].stats["connect_failures"] >= 2, DEADLINE)
        assert nets["a"].stats["connect_failures"] >= 2 and not got
        assert "not its pinned key" in caplog.text
        # b does not know a's key under that name either way: nothing was delivered.
        assert nets["b"].stats["delivered"] == 0


def test_unknown_peer_refused_then_client_accepted(caplog):
    """Authentication: an unpinned key is refused on a committee-only port; with clients
    accepted it may only speak as client-<its key> and gets its reply on its connection."""
    caplog.set_level(logging.INFO, logger="kaires.net")
    with network(["a", "b"]) as nets:
        stranger = TcpNetwork(
            ident("stranger"),
            None,
            nets["a"].peers,
            group=b"test-group",
            reactor=nets["a"].reactor,
            **FAST,
        )
        try:
            addr = client_address(ident("stranger").public)
            stranger.endpoint(addr).send("a-addr", Status(1, 0))
            nets["a"].run_until(lambda: nets["a"].stats["handshake_refused"] >= 1, DEADLINE)
            assert nets["a"].stats["handshake_refused"] >= 1
            assert "unknown peer key" in caplog.text
            check_still_serves(nets)
        finally:
            stranger.close()
    with network(["a", "b"], accept_clients=True) as nets:
        a = nets["a"].endpoint("a-addr")
        a.set_handler(lambda src, m: a.send(src, Status(m.height + 1, 0)))
        client = TcpNetwork(
            ident("client"),
            None,
            nets["a"].peers,
            group=b"test-group",
            reactor=nets["a"].reactor,
            **FAST,
        )
        try:
            addr = client_address(ident("client").public) + "/reader-1"
            got = inbox(client, addr)
            client.endpoint(addr).send("a-addr", Status(7, 0))
            assert nets["a"].run_until(lambda: got, DEADLINE)
            assert got == [("a-addr", Status(8, 0))]
            with pytest.raises(ConfigError, match="client's addresses"):
                client.endpoint("b-addr")
        finally:
            client.close()


def test_garbage_bytes_refused(caplog):
    """Robustness: garbage on a node's port is refused and logged; the node keeps serving."""
    caplog.set_level(logging.INFO, logger="kaires.net")
    with network(["a", "b"]) as nets:
        with socket.create_connection(("127.0.0.1", nets["a"].port), timeout=5) as s:
            s.sendall(os.urandom(4096))
            nets["a"].run_until(lambda: nets["a"].stats["handshake_refused"] >= 1, DEADLINE)
        assert nets["a"].stats["handshake_refused"] == 1
        assert "refused connection" in caplog.text
        check_still_serves(nets)


def _rogue_connection(nets: dict[str, TcpNetwork], attacker: str, target: str):
    """An authenticated connection of ``attacker`` (its own key) to ``target``."""
    net = nets[attacker]
    return net.reactor.submit(net._dial(net.peers[target]), timeout=DEADLINE)


def _wait(net: TcpNetwork, key: str, n: int = 1) -> None:
    assert net.run_until(lambda: net.stats[key] >= n, DEADLINE), (key, dict(net.stats))


def test_oversize_frame_closes_the_connection(caplog):
    """Robustness: a peer announcing a frame over the limit is cut off before it is read."""
    caplog.set_level(logging.INFO, logger="kaires.net")
    with network(["a", "b"]) as nets:
        conn = _rogue_connection(nets, "b", "a")
        header = (wire.MAX_FRAME_BYTES + 17).to_bytes(4, "big")
        nets["b"].reactor.loop.call_soon_threadsafe(conn.writer.write, header)
        _wait(nets["a"], "bad_frames")
        assert "bad frame" in caplog.text and "outside" in caplog.text
        check_still_serves(nets)


def test_undecodable_and_forged_frames_close_the_connection(caplog):
    """Robustness: an authenticated peer's undecodable frame, or bytes injected into the
    stream without the session key, close that connection only."""
    caplog.set_level(logging.INFO, logger="kaires.net")
    with network(["a", "b"]) as nets:
        conn = _rogue_connection(nets, "b", "a")
        nets["b"].reactor.loop.call_soon_threadsafe(conn.write, b"\x93\xa1x\xa1y\xc0garbage")
        _wait(nets["a"], "bad_frames")
        conn = _rogue_connection(nets, "b", "a")
        forged = wire.encode_frame("b-addr", "a-addr", Status(1, 1))
        raw = len(forged).to_bytes(4, "big") + forged + bytes(16)  # no session key
        nets["b"].reactor.loop.call_soon_threadsafe(conn.writer.write, raw)
        _wait(nets["a"], "bad_frames", 2)
        assert "does not authenticate" in caplog.text
        check_still_serves(nets)


def test_spoofed_source_dropped(caplog):
    """Authentication: node b may not send as node c's address, nor a client as a node."""
    caplog.set_level(logging.INFO, logger="kaires.net")
    with network(["a", "b", "c"], accept_clients=True) as nets:
        got = inbox(nets["a"], "a-addr")
        conn = _rogue_connection(nets, "b", "a")
        frame = wire.encode_frame("c-addr", "a-addr", Status(1, 2))
        nets["b"].reactor.loop.call_soon_threadsafe(conn.write, frame)
        _wait(nets["a"], "spoofed")
        client = TcpNetwork(ident("client"), None, nets["a"].peers, group=b"test-group", **FAST)
        try:
            cconn = client.reactor.submit(client._dial(client.peers["a"]), timeout=DEADLINE)
            frame = wire.encode_frame("b-addr", "a-addr", Status(1, 1))
            client.reactor.loop.call_soon_threadsafe(cconn.write, frame)
            _wait(nets["a"], "spoofed", 2)
        finally:
            client.close()
        assert not got and "claiming src" in caplog.text
        check_still_serves(nets)


def test_handler_exception_is_contained(caplog):
    caplog.set_level(logging.INFO, logger="kaires.net")
    with network(["a", "b"]) as nets:
        calls: list[int] = []

        def boom(src: str, m: object) -> None:
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("service bug")

        nets["a"].endpoint("a-addr").set_handler(boom)
        eb = nets["b"].endpoint("b-addr")
        eb.send("a-addr", Status(1, 1))
        eb.send("a-addr", Status(2, 1))
        assert nets["a"].run_until(lambda: len(calls) == 2, DEADLINE)
        assert nets["a"].stats["handler_errors"] == 1 and "raised" in caplog.text


def test_reconnects_after_peer_restart(caplog):
    """Liveness: a peer closed and reopened on the same port is reached again."""
    caplog.set_level(logging.INFO, logger="kaires.net")
    with network(["a", "b"]) as nets:
        check_still_serves(nets, "b", "a")
        port = nets["b"].port
        nets["b"].close()
        b2 = TcpNetwork(
            ident("b"),
            ("127.0.0.1", port),
            nets["a"].peers,
            group=b"test-group",
            reactor=nets["a"].reactor,
            **FAST,
        )
        nets["b"] = b2
        got = inbox(b2, "b-addr")
        ea = nets["a"].endpoint("a-addr")
        deadline = time.monotonic() + DEADLINE
        while not got and time.monotonic() < deadline:  # a first message may hit the old socket
            ea.send("b-addr", Status(3, 0))
            nets["a"].run_until(lambda: bool(got), 0.2)
        assert got and got[0] == ("a-addr", Status(3, 0))
        assert nets["a"].stats["connections_out"] >= 2


def test_port_in_use_is_a_config_error():
    with network(["a"]) as nets, pytest.raises(ConfigError, match="cannot listen"):
        TcpNetwork(ident("x"), ("127.0.0.1", nets["a"].port))


def test_ledger_over_tcp_commits_client_transactions():
    """The services run unchanged: a 4-node ledger over TCP commits a client's transactions."""
    names = [f"n{i}" for i in range(4)]
    ids = [ident(n) for n in names]
    sender = ident("sender")
    genesis = make_genesis(
        [i.public for i in ids], balances={sender.public: 10**6}, registration=False
    )
    nets: dict[str, TcpNetwork] = {}
    nodes: list[LedgerNode] = []
    client = None
    try:
        for n in names:
            reactor = next(iter(nets.values())).reactor if nets else None
            nets[n] = TcpNetwork(
                ident(n), ("127.0.0.1", 0), accept_clients=True, reactor=reactor, **FAST
            )
        addresses = [f"ledger-{i}" for i in range(4)]
        peers = {
            n: ("127.0.0.1", nets[n].port, ids[i].public, [addresses[i]])
            for i, n in enumerate(names)
        }
        for net in nets.values():
            net.set_peers(peers)
        committed: set[str] = set()
        for i, n in enumerate(names):
            nd = LedgerNode(
                i,
                ids[i],
                genesis,
                nets[n].endpoint(addresses[i]),
                Store(),
                addresses,
                config=LedgerConfig(max_block_txs=1000),
            )
            nd.on_commit.append(lambda node, block, cert: committed.update(t.id for t in block.txs))
            nodes.append(nd)
        client = TcpNetwork(sender, None, peers, reactor=nets["n0"].reactor, **FAST)
        ep = client.endpoint(client_address(sender.public))
        to = ident("receiver").public.hex()
        txs = [
            make_tx(genesis.chain_id, "coin.transfer", {"to": to, "amount": 1}, c, sender)
            for c in range(1, 201)
        ]
        t0 = time.perf_counter()
        ep.broadcast(addresses, TxGossip(tuple(txs)))
        ids_ = {t.id for t in txs}
        assert nets["n0"].run_until(lambda: ids_ <= committed, DEADLINE)
        dt = time.perf_counter() - t0
        nets["n0"].run_until(lambda: all(nd.height == nodes[0].height for nd in nodes), DEADLINE)
        assert len({nd.store.block(nd.height)[0].hash for nd in nodes}) == 1
        print(f"4-node TCP ledger: {len(txs) / dt:.0f} tx/s (200 txs, loaded machine)")
    finally:
        for nd in nodes:
            nd.stop()
            nd.store.close()
        if client is not None:
            client.close()
        close(nets)


def test_send_never_raises_and_full_queue_drops(caplog):
    """Backpressure: messages to an unreachable peer queue up to the bound, then are dropped
    and counted; send never raises."""
    caplog.set_level(logging.INFO, logger="kaires.net")
    with network(["a", "b"], queue_limit=5) as nets:
        nets["b"].close()
        ea = nets["a"].endpoint("a-addr")
        for i in range(20):
            ea.send("b-addr", Status(i, 0))
        ea.send("nowhere", Status(1, 0))
        ea.send("b-addr", {"not": "a message"})  # not encodable: dropped, logged
        _wait(nets["a"], "dropped_queue_full", 15)
        _wait(nets["a"], "unroutable")
        assert nets["a"].stats["unencodable"] == 1
        assert "queue to b full" in caplog.text and "not sent" in caplog.text


def test_silent_connection_times_out(caplog):
    """Robustness: a connection that never completes its handshake is closed after the
    handshake timeout; one over the pending bound is refused at once."""
    caplog.set_level(logging.INFO, logger="kaires.net")
    with network(["a", "b"], handshake_timeout=0.3, max_pending=2) as nets:
        socks = [
            socket.create_connection(("127.0.0.1", nets["a"].port), timeout=5) for _ in range(3)
        ]
        try:
            _wait(nets["a"], "handshake_refused", 3)
            assert "handshakes already pending" in caplog.text
        finally:
            for s in socks:
                s.close()
        check_still_serves(nets)


def test_client_cannot_relay_through_a_node():
    """Authentication: a client may only reach the node's own addresses, not relay to others."""
    with network(["a", "b"], accept_clients=True) as nets:
        got = inbox(nets["b"], "b-addr")
        client = TcpNetwork(
            ident("client"),
            None,
            nets["a"].peers,
            group=b"test-group",
            reactor=nets["a"].reactor,
            **FAST,
        )
        try:
            cconn = client.reactor.submit(client._dial(client.peers["a"]), timeout=DEADLINE)
            frame = wire.encode_frame(
                client_address(ident("client").public), "b-addr", Status(1, 1)
            )
            client.reactor.loop.call_soon_threadsafe(cconn.write, frame)
            _wait(nets["a"], "unroutable")
            nets["a"].run_for(0.1)
            assert not got
        finally:
            client.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=1, max_size=400))
def test_fuzz_handshake_bytes(data):
    """Robustness: arbitrary bytes in place of a handshake are refused; the port keeps
    serving."""
    with network(["a", "b"], handshake_timeout=0.5) as nets:
        with socket.create_connection(("127.0.0.1", nets["a"].port), timeout=5) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            _wait(nets["a"], "handshake_refused")
        check_still_serves(nets)


def test_refused_dialler_backs_off():
    """Liveness/robustness: a node the listener refuses after the handshake redials with
    backoff, not in a hot loop."""
    with network(["a", "b"]) as nets:
        peers = dict(nets["a"].peers)
        peers["b"] = ("127.0.0.1", peers["b"].port, ident("not-b").public, ["b-addr"])
        nets["a"].set_peers(peers)  # a no longer knows b's key: it refuses b
        nets["b"].endpoint("b-addr").send("a-addr", Status(1, 1))
        nets["a"].run_for(1.5)
        assert 2 <= nets["a"].stats["handshake_refused"] <= 30


def test_run_forever_until_stop():
    with network(["a"]) as nets:
        net = nets["a"]
        ep = net.endpoint("a-addr")
        ep.call_later(0.05, net.stop)
        t0 = time.monotonic()
        net.run_forever()
        assert 0.04 <= time.monotonic() - t0 < DEADLINE
        net.stop()  # a stop before run_forever is not lost
        net.run_forever()
        assert net.run_until(lambda: False, 0.05) is False  # plain waits are unaffected


def test_client_connections_are_bounded(caplog):
    """Robustness: strangers cannot open unboundedly many client connections."""
    caplog.set_level(logging.INFO, logger="kaires.net")
    with network(["a", "b"], accept_clients=True, max_clients=1) as nets:
        clients = [
            TcpNetwork(
                ident(f"c{i}"),
                None,
                nets["a"].peers,
                group=b"test-group",
                reactor=nets["a"].reactor,
                **FAST,
            )
            for i in range(2)
        ]
        try:
            for c in clients:
                c.endpoint(client_address(c.identity.public)).send("a-addr", Status(1, 0))
            _wait(nets["a"], "handshake_refused")
            assert "clients connected" in caplog.text
            check_still_serves(nets)
        finally:
            for c in clients:
                c.close()


def test_client_address_is_the_whole_key():
    """Privacy (clients): a client's address is its whole Ed25519 key, so no other key can
    claim it and take over its reply connection (a 64-bit prefix could be ground)."""
    from kaires_fl.transport.tcp import client_address

    a, b = bytes(32), bytes(31) + b"\x01"
    assert client_address(a) != client_address(b)
    assert client_address(a) == "client-" + a.hex()
