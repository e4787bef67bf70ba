"""In-memory network: delivery, simulated time, and every injected fault."""

from __future__ import annotations

from typing import Any

import pytest

from kaires_fl.errors import ConfigError, ProtocolError
from kaires_fl.transport import LinkFaults, MemoryNetwork


def recorder(net: MemoryNetwork, name: str) -> list[tuple[float, str, Any]]:
    got: list[tuple[float, str, Any]] = []
    net.endpoint(name).set_handler(lambda src, msg: got.append((net.now, src, msg)))
    return got


def test_delivery_after_latency_in_order() -> None:
    net = MemoryNetwork(latency=0.01)
    a = net.endpoint("a")
    got = recorder(net, "b")
    for i in range(5):
        a.send("b", i)
    assert got == []  # nothing happens until the loop runs
    net.run_for(0.005)
    assert got == []
    net.run_for(0.01)
    assert [m for _, _, m in got] == [0, 1, 2, 3, 4]
    assert all(abs(t - 0.01) < 1e-12 and s == "a" for t, s, _ in got)


def test_timers_and_cancel() -> None:
    net = MemoryNetwork()
    ep = net.endpoint("a")
    fired: list[float] = []
    ep.call_later(0.5, lambda: fired.append(net.now))
    t2 = ep.call_later(0.2, lambda: fired.append(-1))
    t2.cancel()
    assert net.run_until(lambda: bool(fired), timeout=1.0)
    assert fired == [0.5]


def test_run_until_timeout_and_max_events() -> None:
    net = MemoryNetwork()
    ep = net.endpoint("a")

    def loop() -> None:
        ep.call_later(0.0, loop)

    assert not net.run_until(lambda: False, timeout=0.3)
    assert net.now == pytest.approx(0.3)
    loop()
    with pytest.raises(ProtocolError, match="did not settle"):
        net.run_until(lambda: False, timeout=1.0, max_events=100)


def test_cancelled_timer_does_not_let_run_for_overshoot() -> None:
    net = MemoryNetwork()
    ep = net.endpoint("a")
    fired: list[float] = []
    ep.call_later(0.1, lambda: fired.append(-1)).cancel()
    ep.call_later(5.0, lambda: fired.append(net.now))
    net.run_for(1.0)
    assert fired == []  # the 5 s timer is beyond the 1 s window
    assert net.now == pytest.approx(1.0)
    net.run_for(5.0)
    assert fired == [5.0]


def test_drop_all_and_none() -> None:
    net = MemoryNetwork(seed=1)
    a = net.endpoint("a")
    got = recorder(net, "b")
    net.set_faults(LinkFaults(drop=1.0), src="a", dst="b")
    for i in range(20):
        a.send("b", i)
    net.run_for(1.0)
    assert got == [] and net.stats["dropped"] == 20
    net.set_faults(None, src="a", dst="b")
    a.send("b", "x")
    net.run_for(1.0)
    assert [m for _, _, m in got] == ["x"]


def test_drop_rate_is_roughly_the_probability() -> None:
    net = MemoryNetwork(seed=2)
    a = net.endpoint("a")
    got = recorder(net, "b")
    net.set_faults(LinkFaults(drop=0.3))
    for i in range(2000):
        a.send("b", i)
    net.run_for(1.0)
    assert 1200 < len(got) < 1600


def test_duplicate_and_delay() -> None:
    net = MemoryNetwork(seed=3, latency=0.0)
    a = net.endpoint("a")
    got = recorder(net, "b")
    net.set_faults(LinkFaults(duplicate=1.0, delay=(0.1, 0.2)))
    a.send("b", "m")
    net.run_for(1.0)
    assert [m for _, _, m in got] == ["m", "m"]
    assert all(0.1 <= t <= 0.2 for t, _, _ in got)


def test_reorder_changes_order_deterministically() -> None:
    def trace(seed: int) -> list[int]:
        net = MemoryNetwork(seed=seed, latency=0.001)
        a = net.endpoint("a")
        got = recorder(net, "b")
        net.set_faults(LinkFaults(reorder=0.5, reorder_window=0.05))
        for i in range(50):
            a.send("b", i)
        net.run_for(1.0)
        return [m for _, _, m in got]

    t1, t2 = trace(7), trace(7)
    assert t1 == t2  # seeded: reproducible
    assert sorted(t1) == list(range(50)) and t1 != list(range(50))


def test_partition_and_heal() -> None:
    net = MemoryNetwork()
    for x in "abcd":
        net.endpoint(x)
    got = {x: recorder(net, x) for x in "abcd"}
    net.partition({"a", "b"})  # c, d form the other group
    for src in "abcd":
        net.endpoint(src).broadcast("abcd", src)
    net.run_for(1.0)
    assert sorted(m for _, _, m in got["a"]) == ["a", "b"]
    assert sorted(m for _, _, m in got["d"]) == ["c", "d"]
    net.heal()
    net.endpoint("a").send("d", "hi")
    net.run_for(1.0)
    assert got["d"][-1][2] == "hi"


def test_partition_cuts_messages_in_flight() -> None:
    net = MemoryNetwork(latency=0.1)
    a = net.endpoint("a")
    got = recorder(net, "b")
    a.send("b", 1)
    net.partition({"a"}, {"b"})
    net.run_for(1.0)
    assert got == []


def test_crash_stops_messages_and_timers_restart_resumes() -> None:
    net = MemoryNetwork()
    a = net.endpoint("a")
    got = recorder(net, "b")
    fired: list[int] = []
    net.endpoint("b").call_later(0.1, lambda: fired.append(1))
    net.crash("b")
    a.send("b", "lost")
    net.run_for(1.0)
    assert got == [] and fired == []
    b = net.restart("b")
    b.set_handler(lambda src, msg: got.append((net.now, src, msg)))
    a.send("b", "after")
    b.call_later(0.1, lambda: fired.append(2))
    net.run_for(1.0)
    assert [m for _, _, m in got] == ["after"] and fired == [2]
    # a crashed node cannot send either
    net.crash("a")
    a.send("b", "ghost")
    net.run_for(1.0)
    assert [m for _, _, m in got] == ["after"]


def test_filter_targets_messages() -> None:
    net = MemoryNetwork()
    a = net.endpoint("a")
    got = recorder(net, "b")
    remove = net.add_filter(lambda env: env.payload != "secret")
    a.send("b", "secret")
    a.send("b", "public")
    net.run_for(1.0)
    assert [m for _, _, m in got] == ["public"]
    remove()
    a.send("b", "secret")
    net.run_for(1.0)
    assert [m for _, _, m in got] == ["public", "secret"]


def test_bad_fault_parameters() -> None:
    with pytest.raises(ConfigError, match="probability"):
        LinkFaults(drop=1.5)
    with pytest.raises(ConfigError, match="delay"):
        LinkFaults(delay=(0.2, 0.1))
    with pytest.raises(ConfigError):
        MemoryNetwork(latency=-1)


def test_reentrant_run_until() -> None:
    net = MemoryNetwork()
    a, b = net.endpoint("a"), net.endpoint("b")
    replies: list[str] = []
    b.set_handler(lambda src, msg: b.send(src, msg + "!"))
    a.set_handler(lambda src, msg: replies.append(msg))
    outer: list[bool] = []

    def nested() -> None:
        a.send("b", "ping")
        outer.append(net.run_until(lambda: bool(replies), timeout=1.0))

    a.call_later(0.1, nested)
    net.run_until(lambda: bool(outer), timeout=2.0)
    assert outer == [True] and replies == ["ping!"]


def test_wire_mode_round_trips_schema_messages() -> None:
    from kaires_fl import schema
    from kaires_fl.errors import EncodingError
    from kaires_fl.ledger.consensus import Status, Vote

    net = MemoryNetwork(wire=True)
    a = net.endpoint("a")
    got = recorder(net, "b")
    msg = Vote("commit", 3, 1, b"\x07" * 32, 2, b"\x01" * 64)
    a.send("b", msg)
    a.send("b", ("not", "a", "message"))  # other payloads pass by reference
    a.send("b", Status(-1, 0))  # encodes, but a receiver's decoder refuses it
    net.run_for(0.01)
    assert [m for _, _, m in got] == [msg, ("not", "a", "message")]
    assert got[0][2] is not msg and net.stats["undecodable"] == 1
    with pytest.raises(EncodingError, match="does not encode"):
        a.send("b", Status(object(), 0))  # type: ignore[arg-type]
    assert schema.encode(got[0][2]) == schema.encode(msg)


def test_ledger_over_the_wire_commits_and_verifies() -> None:
    from kaires_fl.crypto.sign import H, Identity
    from kaires_fl.ledger import LedgerConfig, LocalLedger

    net = MemoryNetwork(seed=3, wire=True)
    cfg = LedgerConfig(view_timeout=0.05, max_timeout=1.0, status_interval=0.05)
    L = LocalLedger(4, network=net, config=cfg, byzantine={0: "garbage"})
    c = L.client()
    owner = Identity.from_seed(H(b"wire-owner"))
    rule = {"_evolve": f"ed25519:{owner.public.hex()}"}
    txs = [c.sign(owner, "darc.create", {"id": f"w{k}", "rules": rule}) for k in range(3)]
    got = c.wait(c.submit_many(txs), timeout=30.0, proof=True)
    assert all(g.result.ok for g in got)
    L.crash(3)
    more = [c.sign(owner, "darc.create", {"id": f"v{k}", "rules": rule}) for k in range(2)]
    top = max(g.height for g in c.wait(c.submit_many(more), timeout=30.0, proof=False))
    node = L.restart(3)  # catches up through SyncRequest / SyncResponse over the wire
    assert net.run_until(lambda: node.height >= top, 10.0)
    assert L.verify(replay=True) >= top
    assert net.stats["delivered"] > 0
    L.close()


def _gossip(workers: int, faults: LinkFaults | None = None) -> tuple[Any, ...]:
    """A hub broadcasts twice to 4 parallel nodes; each answers twice, forwards to its
    neighbour and sets a timer. Returns the hub's log (time, src, message), each node's
    own log (its handler's state: parallel handlers share nothing else) and the stats."""
    net = MemoryNetwork(seed=7, workers=workers)
    nodes = [f"n{i}" for i in range(4)]
    net.parallel.update(nodes)
    hub_log = recorder(net, "hub")
    hub = net.endpoint("hub")
    logs: dict[str, list[Any]] = {name: [] for name in nodes}
    for i, name in enumerate(nodes):
        ep = net.endpoint(name)

        def handle(src: str, msg: Any, ep: Any = ep, i: int = i) -> None:
            logs[ep.address].append((net.now, src, msg))
            if src == "hub":
                ep.send("hub", f"{ep.address}:{msg}:a")
                ep.call_later(0.0005, lambda: ep.send("hub", f"{ep.address}:timer"))
                ep.send(nodes[(i + 1) % 4], f"{ep.address}:fwd")
                ep.send("hub", f"{ep.address}:{msg}:b")

        ep.set_handler(handle)
    if faults is not None:
        net.set_faults(faults)
    for r in range(3):
        for msg in (f"round{r}", f"again{r}"):  # a batch holds 2 messages per node
            for name in nodes:
                hub.send(name, msg)
        net.run_for(0.01)
    return hub_log, logs, dict(net.stats)


@pytest.mark.parametrize("faults", [None, LinkFaults(drop=0.2, duplicate=0.3, reorder=0.3)])
def test_parallel_batches_deliver_exactly_as_one_thread(faults: LinkFaults | None) -> None:
    one = _gossip(1, faults)
    assert len(one[0]) > 20 and all(len(log) > 5 for log in one[1].values())
    assert _gossip(4, faults) == one
    assert _gossip(2, faults) == one


def test_parallel_batch_handlers_run_side_by_side() -> None:
    import threading

    net = MemoryNetwork(workers=2)
    net.parallel.update({"x", "y"})
    barrier = threading.Barrier(2, timeout=30)  # passes only if both handlers run at once
    met: list[str] = []
    for name in ("x", "y"):
        net.endpoint(name).set_handler(
            lambda src, msg, name=name: met.append(name + str(barrier.wait()))
        )
    src = net.endpoint("s")
    src.send("x", 1)
    src.send("y", 1)
    net.run_for(0.01)
    assert sorted(m[0] for m in met) == ["x", "y"]
    with pytest.raises(ConfigError, match="workers"):
        MemoryNetwork(workers=0)


def test_parallel_batch_handler_may_not_drive_the_loop_and_errors_surface() -> None:
    net = MemoryNetwork(workers=2)
    net.parallel.update({"x", "y"})
    got: list[str] = []
    net.endpoint("x").set_handler(lambda src, msg: net.run_until(lambda: True))
    net.endpoint("y").set_handler(lambda src, msg: got.append(msg))
    src = net.endpoint("s")
    src.send("x", "m")
    src.send("y", "m")
    with pytest.raises(ProtocolError, match="parallel batch"):
        net.run_for(0.01)
    assert got == ["m"]  # the rest of the batch still ran
