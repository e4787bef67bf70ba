"""``kaires_fl.connect``: a client process against a committee over authenticated TCP.

The fast tests run the four nodes in this process (each its own TcpNetwork and keys, one
reactor driven by a background thread) and the client on its own reactor, driven by the
test's thread, exactly as in a separate process. The slow test starts the nodes as OS
processes (``kaires node run``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import socket
import stat
import sys
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_diabetes
from sklearn.linear_model import LinearRegression

import kaires_fl
from kaires_fl.committee import Committee
from kaires_fl.crypto.envelope import EnvelopeKeyPair
from kaires_fl.crypto.sign import Identity
from kaires_fl.errors import ConfigError, ProtocolError
from kaires_fl.estimators import KairesLinearRegression
from kaires_fl.ledger.block import decode_certified, encode_certified
from kaires_fl.ledger.consensus import SyncResponse
from kaires_fl.node.client import RemoteCommittee, load_client_key, write_client_key
from kaires_fl.node.config import (
    Group,
    load_group,
    load_keys,
    make_group,
    parse_address,
    setup_node,
    write_group,
)
from kaires_fl.node.host import Node, bootstrap, tcp_peers
from kaires_fl.simulation import LocalCommittee
from kaires_fl.transport.tcp import TcpNetwork

N_PROVIDERS = 10


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_committee_dir(tmp: Path, n: int = 4) -> Group:
    """``tmp/node-<i>`` and ``tmp/group.toml`` on free loopback ports."""
    entries = [
        setup_node(tmp / f"node-{i}", f"127.0.0.1:{_free_port()}", name=f"node-{i}")
        for i in range(n)
    ]
    write_group(make_group(entries), tmp / "group.toml")
    return load_group(tmp / "group.toml")


class Cluster:
    """Four Nodes in this process on TCP (one network and key each, clients accepted),
    driven by a background thread once ready."""

    def __init__(self, tmp: Path) -> None:
        self.dir = tmp
        self.group = make_committee_dir(tmp)
        peers = tcp_peers(self.group)
        self.nets: list[TcpNetwork] = []
        self.nodes: list[Node] = []
        self.thread: threading.Thread | None = None
        try:
            for i, e in enumerate(self.group.nodes):
                self.nets.append(
                    TcpNetwork(
                        load_keys(tmp / f"node-{i}").identity,
                        parse_address(e.address),
                        peers,
                        group=bytes.fromhex(self.group.id),
                        accept_clients=True,
                        reactor=self.nets[0].reactor if self.nets else None,
                    )
                )
            self.nodes = [
                Node(tmp / f"node-{i}", self.group, self.nets[i], dkg_round_time=0.25, tick=0.1)
                for i in range(4)
            ]
            assert bootstrap(self.nets[0], self.nodes, timeout=60.0), "committee not ready"
            self.resume()
        except BaseException:
            self.close()
            raise

    def resume(self) -> None:
        self.thread = threading.Thread(target=self.nets[0].run_forever, daemon=True)
        self.thread.start()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The nodes' driver stopped (their objects may be changed safely), then resumed."""
        self.pause()
        try:
            yield
        finally:
            self.resume()

    def pause(self) -> None:
        if self.thread is not None:
            self.nets[0].stop()
            self.thread.join(30.0)
            assert not self.thread.is_alive()
            self.thread = None

    def close(self) -> None:
        self.pause()
        for nd in self.nodes:
            nd.stop()
        for net in reversed(self.nets):
            net.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("connect"))
    try:
        yield c
    finally:
        c.close()


def _diabetes() -> tuple[np.ndarray, np.ndarray]:
    X, y = load_diabetes(return_X_y=True)
    return X, y


def _fit(committee: Any) -> KairesLinearRegression:
    X, y = _diabetes()
    return KairesLinearRegression(n_providers=N_PROVIDERS, committee=committee).fit(X, y)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.fixture(scope="module")
def local_fit() -> KairesLinearRegression:
    local = LocalCommittee()
    try:
        return _fit(local)
    finally:
        local.close()


def test_connect_fit_equals_scikit_learn_and_local_committee(
    cluster: Cluster, local_fit: KairesLinearRegression
) -> None:
    """Correctness: a diabetes fit through ``connect`` (client process, nodes over TCP)
    equals scikit-learn (≤ 1e-6 relative) and LocalCommittee's fit."""
    with kaires_fl.connect(cluster.dir / "group.toml", timeout=60.0) as c:
        as_object: object = c
        assert isinstance(as_object, Committee)
        est = _fit(c)
        t0 = time.perf_counter()
        again = _fit(c)
        net_job_s = time.perf_counter() - t0
        print(f"net_job_s (in-process nodes over TCP) = {net_job_s:.3f}")
        assert est.kaires_report_["status"] == "done"
        assert not est.kaires_report_["faulty_aggregators"]
        X, y = _diabetes()
        sk = LinearRegression().fit(X, y)
        ours = np.append(est.coef_, est.intercept_)
        assert _rel(ours, np.append(sk.coef_, sk.intercept_)) <= 1e-6
        ref = np.append(local_fit.coef_, local_fit.intercept_)
        np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=0)
        np.testing.assert_array_equal(np.append(again.coef_, again.intercept_), ours)
        # the client's replica is the committee's chain, verified from genesis
        height = c.verify()
        assert height >= est.kaires_report_["receipt_height"]
        first = c.client.accesses(c.provider("provider-000").policy_id)
        assert len(first) >= 2 and all(p.verify(c.ledger.genesis) for p in first)


def _reachable(root: object) -> list[object]:
    """Every object reachable from ``root`` through instances and containers (not through
    modules, classes or functions' globals: those lead to the whole process)."""
    seen: set[int] = set()
    out: list[object] = []
    stack = [root]
    skip = (types.ModuleType, type, types.FunctionType, types.BuiltinFunctionType, types.CodeType)
    while stack:
        o = stack.pop()
        if id(o) in seen or isinstance(o, skip):
            continue
        seen.add(id(o))
        out.append(o)
        if isinstance(o, types.MethodType):
            stack.append(o.__self__)
            continue
        if isinstance(o, threading.Thread | str | bytes | int | float):
            continue
        stack.extend(gc.get_referents(o))
    return out


def test_client_holds_no_trustee_share_or_node_key(cluster: Cluster) -> None:
    """Privacy: the client process's committee holds client keys only — no DKG share, no
    trustee, no aggregator service, no ledger node key, no node's X25519 key; every
    Ed25519 identity it holds is a client one."""
    node_sign = {bytes.fromhex(e.sign) for e in cluster.group.nodes}
    node_box = {bytes.fromhex(e.box) for e in cluster.group.nodes}
    with kaires_fl.connect(cluster.dir / "group.toml", timeout=60.0) as c:
        _fit(c)
        objs = _reachable(c)
        assert len(objs) > 1000  # the walk did go through the committee's objects
        names = {type(o).__name__ for o in objs}
        for forbidden in (
            "DkgResult",
            "DkgNode",
            "Trustee",
            "TrusteeNode",
            "AggregatorService",
            "Node",
            "DkgParticipant",
        ):
            assert forbidden not in names, forbidden
        ids = [o for o in objs if isinstance(o, Identity)]
        boxes = [o for o in objs if isinstance(o, EnvelopeKeyPair)]
        assert ids and boxes
        assert not {i.public for i in ids} & node_sign
        assert not {b.public for b in boxes} & node_box
        # the only ledger node here is the keyless replica
        assert type(c.follower).__name__ == "LedgerFollower" and c.follower.identity is None
        assert c.trustees.addresses == cluster.group.addresses("trustee")
        assert c.aggregators == []


def test_byzantine_aggregator_and_forged_sync_change_nothing(
    cluster: Cluster, local_fit: KairesLinearRegression
) -> None:
    """Robustness: with aggregator 2 Byzantine (wrong values at every step) and ledger
    node 3 sending the client a forged block (its own key, a tampered state), the fit is
    unchanged, aggregator 2 is named, the forged block is refused and the replica keeps
    the committee's chain."""
    with kaires_fl.connect(cluster.dir / "group.toml", timeout=60.0) as c:
        with cluster.paused():
            agg = cluster.nodes[2].aggregator
            assert agg is not None
            agg.behaviour = "byzantine"
        try:
            # The replica drained and level with the (paused) nodes, so that the forged
            # record is the next block it is offered.
            c.network.run_for(0.3)
            cluster.pause()
            try:
                assert c.network.run_until(
                    lambda: c.follower.height == cluster.nodes[3].height, 30.0
                )
                c.network.run_for(0.2)
                before = c.follower.ignored
                h = c.follower.height
                block, cert = decode_certified(cluster.nodes[3].store.raw_block(h) or b"")
                header = dataclasses.replace(
                    block.header,
                    height=h + 1,
                    prev=block.hash.hex(),
                    time_ms=block.header.time_ms + 1,
                    state_root="00" * 32,
                )
                forged_block = dataclasses.replace(block, header=header)
                cert = dataclasses.replace(cert, height=h + 1, block_hash=forged_block.hash)
                forged = encode_certified(forged_block, cert)
                cluster.nets[3].endpoint("ledger-3").send(
                    c.address + "/ledger", SyncResponse((forged,), False)
                )
                cluster.nets[0].run_for(0.1)  # the nodes' side sends it (nothing else runs)
                assert c.network.run_until(lambda: c.follower.ignored > before, 30.0)
                assert c.follower.height == h
            finally:
                cluster.resume()
            est = _fit(c)
            rep = est.kaires_report_
            assert rep["status"] == "done" and 2 in rep["faulty_aggregators"]
            ours = np.append(est.coef_, est.intercept_)
            np.testing.assert_allclose(
                ours, np.append(local_fit.coef_, local_fit.intercept_), rtol=1e-12, atol=0
            )
            assert c.verify() == c.follower.height
            with cluster.paused():  # same blocks (certificates may hold other quorums)
                for height in range(1, c.follower.height + 1):
                    mine = decode_certified(c.follower.store.raw_block(height) or b"")[0]
                    theirs = decode_certified(cluster.nodes[0].store.raw_block(height) or b"")[0]
                    assert mine.hash == theirs.hash
        finally:
            with cluster.paused():
                agg.behaviour = None


def test_crashed_node_changes_nothing(tmp_path: Path, local_fit: KairesLinearRegression) -> None:
    """Robustness: node 3 (ledger node, trustee and aggregator) down before the client
    connects: the fit is unchanged and aggregator 3 is named."""
    cl = Cluster(tmp_path)
    try:
        with cl.paused():
            cl.nodes[3].stop()
            cl.nets[3].close()
        with kaires_fl.connect(tmp_path / "group.toml", timeout=60.0) as c:
            est = _fit(c)
        rep = est.kaires_report_
        assert rep["status"] == "done" and 3 in rep["faulty_aggregators"]
        np.testing.assert_allclose(
            np.append(est.coef_, est.intercept_),
            np.append(local_fit.coef_, local_fit.intercept_),
            rtol=1e-12,
            atol=0,
        )
    finally:
        cl.close()


def test_client_key_file(cluster: Cluster, tmp_path: Path) -> None:
    """A client key file (0600) is the client's identity; one readable by others, or
    malformed, is refused with one line."""
    path = tmp_path / "client.toml"
    keys = write_client_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(ConfigError, match="already exists"):
        write_client_key(path)
    with kaires_fl.connect(cluster.dir / "group.toml", key=path, timeout=60.0) as c:
        assert c.consumer.identity.public == keys.identity.public
        assert c.consumer.keypair.public == keys.box.public
        assert c.coordinator.identity.public != keys.identity.public
    assert load_client_key(path).identity.public == keys.identity.public
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_client_key(path)
    bad = tmp_path / "bad.toml"
    bad.write_text("ed25519_seed = 1\n")
    os.chmod(bad, 0o600)
    with pytest.raises(ConfigError):
        load_client_key(bad)
    with pytest.raises(ConfigError, match="not found"):
        kaires_fl.connect(cluster.dir / "group.toml", key=tmp_path / "missing.toml")


def test_connect_to_a_committee_that_is_not_running(tmp_path: Path) -> None:
    """Liveness: nothing listening — a ProtocolError naming what to do after the
    timeout, and nothing left open."""
    make_committee_dir(tmp_path)
    with pytest.raises(ProtocolError, match="committee up"):
        kaires_fl.connect(tmp_path / "group.toml", timeout=1.0)
    with pytest.raises(ConfigError):
        kaires_fl.connect(tmp_path / "nope.toml")


def test_remote_committee_is_a_committee() -> None:
    assert issubclass(RemoteCommittee, LocalCommittee)
    assert "connect" in kaires_fl.__all__ and kaires_fl.connect is not None
    assert sys.modules["kaires_fl.committee"].Committee is Committee


@pytest.mark.slow
def test_connect_to_four_node_processes(tmp_path: Path, local_fit: KairesLinearRegression) -> None:
    """Acceptance: a committee of 4 OS processes (``committee init`` on free ports,
    ``committee up --detach``): a diabetes fit through ``connect`` equals scikit-learn
    (≤ 1e-6 relative) and LocalCommittee's; with one node SIGKILLed the next fit is the
    same and its aggregator is named. Prints ``net_job_s`` (a warm diabetes job)."""
    import signal

    from kaires_fl.demo import init_local_committee
    from kaires_fl.node.process import committee_down, committee_up, read_pid

    group = init_local_committee(tmp_path)
    lines: list[str] = []
    try:
        assert committee_up(tmp_path, detach=True, timeout=120.0, out=lines.append) == 0, lines
        with kaires_fl.connect(group, timeout=60.0) as c:
            est = _fit(c)
            X, y = _diabetes()
            sk = LinearRegression().fit(X, y)
            ours = np.append(est.coef_, est.intercept_)
            assert _rel(ours, np.append(sk.coef_, sk.intercept_)) <= 1e-6
            ref = np.append(local_fit.coef_, local_fit.intercept_)
            np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=0)
            t0 = time.perf_counter()
            _fit(c)
            print(f"\nnet_job_s {time.perf_counter() - t0:.3f} (4 node processes, loopback)")
            pid = read_pid(tmp_path / "node-3")
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            after = _fit(c)
            rep = after.kaires_report_
            assert rep["status"] == "done" and 3 in rep["faulty_aggregators"]
            np.testing.assert_allclose(
                np.append(after.coef_, after.intercept_), ref, rtol=1e-12, atol=0
            )
            assert c.verify() >= rep["receipt_height"]
    finally:
        committee_down(tmp_path, grace=10.0, out=lines.append)


def test_flower_run_against_the_networked_committee(cluster: Cluster) -> None:
    """Acceptance (Flower): ``kaires-committee = "<path>/group.toml"`` makes the ServerApp a
    client of the node processes: two KairesFedAvg rounds give exactly the model of the
    same run on an in-process committee, and the ServerApp's connection holds no trustee
    share, no aggregator key and no node key."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "strategies"))
    import flower_apps as apps
    from flower_harness import LocalGrid
    from flwr.app import ArrayRecord
    from kaires_fl.strategies import CommitteeConnection, KairesFedAvg

    def run(conn: Any) -> list[np.ndarray]:
        s = KairesFedAvg(
            fraction_evaluate=0.0,
            min_available_nodes=apps.NUM_NODES,
            min_train_nodes=apps.NUM_NODES,
            committee=conn,
            num_examples_cap=apps.NUM_EXAMPLES_CAP,
        )
        res = s.start(
            grid=LocalGrid(apps.make_client_app(), apps.NUM_NODES),
            initial_arrays=ArrayRecord(apps.task.initial_arrays()),
            num_rounds=2,
        )
        assert all(s.kaires_rounds[r]["result"].status == "done" for r in (1, 2))
        return list(res.arrays.to_numpy_ndarrays())

    with pytest.raises(ConfigError, match=r"neither 'local' nor a group\.toml"):
        CommitteeConnection.from_run_config({"kaires-committee": "remote"})
    conn = CommitteeConnection.from_run_config(
        {"kaires-committee": str(cluster.dir / "group.toml"), "kaires-connect-timeout": 60}
    )
    try:
        assert isinstance(conn.committee, RemoteCommittee)
        networked = run(conn)
        conn.committee.ledger.verify()
        objs = _reachable(conn)
        names = {type(o).__name__ for o in objs}
        assert not names & {"DkgResult", "Trustee", "TrusteeNode", "AggregatorService", "Node"}
        node_sign = {bytes.fromhex(e.sign) for e in cluster.group.nodes}
        assert not {o.public for o in objs if isinstance(o, Identity)} & node_sign
    finally:
        conn.committee.close()
    local = LocalCommittee()
    try:
        in_process = run(CommitteeConnection(local))
    finally:
        local.close()
    for a, b in zip(networked, in_process, strict=True):
        np.testing.assert_array_equal(a, b)


def test_follower_replicates_the_chain_and_survives_any_bytes() -> None:
    """Robustness (service boundary of the client's replica): arbitrary bytes, mutated
    block records and stray messages from a ledger node's address, or from a stranger,
    never raise and are never taken; the replica then still follows the chain, block for
    block identical to the nodes'."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from kaires_fl.ledger.client import LocalLedger
    from kaires_fl.ledger.coin import balance_key
    from kaires_fl.ledger.consensus import Status, SyncRequest
    from kaires_fl.ledger.store import Store
    from kaires_fl.node.client import LedgerFollower

    payer = Identity.generate()
    ledger = LocalLedger(4, balances={payer.public: 1000})
    store = Store()
    follower = LedgerFollower(
        ledger.genesis, ledger.network.endpoint("client-0/ledger"), store, ledger.addresses
    )
    try:
        client = ledger.client()
        client.execute(payer, "coin.transfer", {"to": "ab" * 32, "amount": 5})
        assert ledger.network.run_until(lambda: follower.height == ledger.best_node().height, 30)
        real = store.raw_block(follower.height)
        assert real is not None

        @settings(max_examples=150, deadline=None)
        @given(
            src=st.sampled_from([ledger.addresses[1], "client-0/ledger", "stranger"]),
            raw=st.binary(max_size=600)
            | st.builds(
                lambda i, b: real[:i] + bytes([real[i % len(real)] ^ (b or 1)]) + real[i + 1 :],
                st.integers(0, len(real) - 1),
                st.integers(0, 255),
            ),
            wrap=st.sampled_from(["bytes", "sync", "status", "request"]),
        )
        def check(src: str, raw: bytes, wrap: str) -> None:
            h = follower.height
            msg: Any = {
                "bytes": raw,
                "sync": SyncResponse((raw,), False),
                "status": Status(10**9, 0),
                "request": SyncRequest(1, 0),
            }[wrap]
            follower.on_message(src, msg)
            assert follower.height == h

        check()
        client.execute(payer, "coin.transfer", {"to": "cd" * 32, "amount": 7})
        assert ledger.network.run_until(lambda: follower.height == ledger.best_node().height, 30)
        node = ledger.best_node()
        for h in range(1, follower.height + 1):  # same blocks (certificates: any quorum)
            mine, theirs = store.raw_block(h), node.store.raw_block(h)
            assert mine and theirs and decode_certified(mine)[0] == decode_certified(theirs)[0]
        assert (
            follower.state.get(balance_key("cd" * 32))
            == 7
            == node.state.get(balance_key("cd" * 32))
        )
        assert follower.ignored > 0
    finally:
        follower.stop()
        store.close()
        ledger.close()


@pytest.mark.slow
def test_demo_network(capsys: pytest.CaptureFixture[str]) -> None:
    """``kaires demo --network``: the diabetes job against 4 node processes matches
    scikit-learn, names the out-of-range provider, audits, and stops its nodes."""
    import re

    from kaires_fl import demo

    assert demo.main(quiet=True, network=True) == 0
    text = capsys.readouterr().out
    assert "committee ready" in text and "rejected provider provider-005" in text
    assert "ledger verified from genesis" in text and text.rstrip().endswith("OK")
    root = Path(re.search(r"node processes .* in (\S+)", text).group(1))  # type: ignore[union-attr]
    assert not root.exists()  # removed, after its nodes were stopped
    left = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if str(root).encode() in cmdline.read_bytes():
                left.append(cmdline.parent.name)
    assert not left, f"node processes still running: {left}"


def test_connect_reaches_the_tip_whatever_one_node_claims(cluster: Cluster) -> None:
    """Liveness and freshness: ``connect`` returns with the replica at the committee's
    height, asked of the nodes over their pinned connections; one node claiming a huge
    height (or none) neither stalls it nor holds it back."""
    with kaires_fl.connect(cluster.dir / "group.toml", timeout=60.0) as c:
        _fit(c)  # new blocks
    liar = cluster.nodes[3]
    honest = liar.status_message

    def lie(nonce: int = 0) -> Any:
        st = honest(nonce)
        fields = {name: getattr(st, name) for name in st.__struct_fields__}
        return type(st)(**{**fields, "height": 10**12})

    with cluster.paused():
        liar.status_message = lie  # type: ignore[method-assign]
        tip = cluster.nodes[0].height
    try:
        t0 = time.perf_counter()
        with kaires_fl.connect(cluster.dir / "group.toml", timeout=60.0) as c:
            assert c.follower.height >= tip
            assert time.perf_counter() - t0 < 30.0
            assert c.sync_to_tip(5.0) >= tip
    finally:
        with cluster.paused():
            del liar.status_message


@pytest.mark.slow
def test_flower_simulation_engine_against_node_processes(tmp_path: Path) -> None:
    """Acceptance (Flower, simulation engine): ``run_simulation`` (Ray) with a ServerApp
    configured by ``kaires-committee = "<path>/group.toml"`` against 4 node processes: the
    model equals the same run's on an in-process committee, and the ServerApp's connection
    holds no trustee share, no aggregator key and no node key."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "strategies"))
    import flower_apps as apps
    from flower_harness import LocalGrid
    from flwr.app import ArrayRecord, Context
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation
    from kaires_fl.strategies import CommitteeConnection, KairesFedAvg

    from kaires_fl.demo import init_local_committee
    from kaires_fl.node.process import committee_down, committee_up

    rounds = 2
    out: dict[str, Any] = {}

    def strategy(conn: Any) -> KairesFedAvg:
        return KairesFedAvg(
            fraction_evaluate=0.0,
            min_available_nodes=apps.NUM_NODES,
            min_train_nodes=apps.NUM_NODES,
            committee=conn,
            num_examples_cap=apps.NUM_EXAMPLES_CAP,
        )

    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        conn = CommitteeConnection.from_run_config(
            {"kaires-committee": str(group), "kaires-connect-timeout": 60}
        )
        try:
            s = strategy(conn)
            init = ArrayRecord(apps.task.initial_arrays())
            out["arrays"] = s.start(grid=grid, initial_arrays=init, num_rounds=rounds).arrays
            out["results"] = [s.kaires_rounds[r]["result"] for r in range(1, rounds + 1)]
            names = {type(o).__name__ for o in _reachable(conn)}
            out["secrets"] = names & {"DkgResult", "Trustee", "AggregatorService", "Node"}
            out["remote"] = isinstance(conn.committee, RemoteCommittee)
        finally:
            conn.committee.close()

    group = init_local_committee(tmp_path)
    lines: list[str] = []
    try:
        assert committee_up(tmp_path, detach=True, timeout=120.0, out=lines.append) == 0, lines
        run_simulation(
            server,
            apps.make_client_app(),
            num_supernodes=apps.NUM_NODES,
            backend_config={"client_resources": {"num_cpus": 1}, "init_args": {"num_cpus": 2}},
        )
    finally:
        committee_down(tmp_path, grace=10.0, out=lines.append)
    assert out.get("remote") and not out["secrets"]
    assert all(r.status == "done" and len(r.accepted) == apps.NUM_NODES for r in out["results"])
    local = LocalCommittee()
    try:
        ref = strategy(CommitteeConnection(local)).start(
            grid=LocalGrid(apps.make_client_app(), apps.NUM_NODES),
            initial_arrays=ArrayRecord(apps.task.initial_arrays()),
            num_rounds=rounds,
        )
    finally:
        local.close()
    for a, b in zip(out["arrays"].to_numpy_ndarrays(), ref.arrays.to_numpy_ndarrays(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_node_process_knows_every_shipped_statistic() -> None:
    """Correctness: a fresh interpreter that has not imported the Flower strategies (a node
    process, whose aggregator rebuilds a job's statistic from the ledger) rebuilds a
    ``model_update`` job's statistic; an unknown kind is still a ConfigError."""
    import json
    import subprocess

    from kaires_fl.strategies.update import ModelUpdateStats

    kind, params = ModelUpdateStats(12, clip_norm=3.0).spec()
    code = (
        "import json, sys\n"
        "from kaires_fl.errors import ConfigError\n"
        "from kaires_fl.statistics import from_params\n"
        "assert 'kaires_fl.strategies' not in sys.modules\n"
        f"st = from_params({kind!r}, json.loads({json.dumps(json.dumps(params))}))\n"
        "print(type(st).__name__, st.spec()[0])\n"
        "try:\n    from_params('no_such_kind', {})\nexcept ConfigError:\n    print('refused')\n"
    )
    got = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert got.stdout.split() == ["ModelUpdateStats", "model_update", "refused"]


def test_reconnecting_with_a_replica_at_the_tip_of_an_idle_chain(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Robustness (clients, soak): a client whose persisted replica is already at the tip
    of an idle chain (no new block will come) is told so by the nodes (an empty, final
    sync answer) and connects, instead of waiting for a block forever."""
    db = tmp_path / "replica.sqlite"
    with kaires_fl.connect(cluster.dir / "group.toml", timeout=60.0, ledger_db=db):
        pass
    with kaires_fl.connect(cluster.dir / "group.toml", timeout=20.0, ledger_db=db) as c:
        assert c.client.height >= 1  # connected: the replica reached the tip


def test_the_client_returns_freed_heap_pages_while_driven_and_stops_on_close(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memory: a connected client runs glibc's malloc_trim every TRIM_EVERY seconds while
    its network is driven (its arenas fragment with the frames of the I/O thread), and
    no more once closed."""
    from kaires_fl.node import client as client_mod
    from kaires_fl.node.process import malloc_trim

    real = malloc_trim()
    if real is None:
        pytest.skip("no glibc malloc_trim here")
    calls: list[float] = []

    def counting() -> None:
        calls.append(time.monotonic())
        real()

    monkeypatch.setattr(client_mod, "TRIM_EVERY", 0.05)
    monkeypatch.setattr(client_mod, "malloc_trim", lambda: counting)
    with kaires_fl.connect(cluster.dir / "group.toml", timeout=60.0) as c:
        c.network.run_until(lambda: len(calls) >= 3, 30.0)
        assert len(calls) >= 3
    assert c._trim_timer is not None and c._trim_timer.cancelled  # no trim after close
