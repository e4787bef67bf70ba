"""Nodes on a MemoryNetwork: bootstrap to ready, a job through them, restart from the directory."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import numpy as np
import pytest

from kaires_fl import schema
from kaires_fl.errors import ConfigError
from kaires_fl.ledger.audit import verify_chain
from kaires_fl.node.config import SHARE_FILE, load_group, make_group, setup_node, write_group
from kaires_fl.node.driver import NodeCommittee
from kaires_fl.node.host import LtsApproval, LtsCosign, Node, NodeHello, bootstrap, dkg_session
from kaires_fl.simulation import LocalCommittee
from kaires_fl.transport.memory import MemoryNetwork

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_simulation import DATA, STAT


def _make(tmp: Path, n: int = 4, roles: str = "ledger,trustee,aggregator") -> Path:
    entries = [
        setup_node(
            tmp / f"node-{i}",
            f"127.0.0.1:{7100 + i}",
            roles,
            f"node-{i}",
            seeds=(bytes([i + 1]) * 32, bytes([i + 51]) * 32),
        )
        for i in range(n)
    ]
    write_group(make_group(entries), tmp / "group.toml")
    return tmp


def _plain() -> tuple[np.ndarray, np.ndarray, int]:
    X = np.concatenate([DATA[k][0] for k in sorted(DATA)])
    y = np.concatenate([DATA[k][1] for k in sorted(DATA)])
    return X.T @ X, X.T @ y, len(y)


@pytest.fixture(scope="module")
def committee(tmp_path_factory: pytest.TempPathFactory):
    d = _make(tmp_path_factory.mktemp("committee"))
    group = load_group(d / "group.toml")
    net = MemoryNetwork(seed=7)
    nodes = [Node(d / f"node-{i}", group, net) for i in range(4)]
    assert bootstrap(net, nodes, timeout=30.0)
    yield d, group, net, nodes
    for nd in nodes:
        nd.stop()


def test_four_nodes_become_ready(committee) -> None:  # type: ignore[no-untyped-def]
    """Bootstrap: same genesis, committee in genesis, DKG done and persisted, one LTS."""
    d, group, _, nodes = committee
    assert all(nd.ready for nd in nodes)
    st = [nd.status() for nd in nodes]
    assert len({s["chain"] for s in st}) == 1 and len({s["lts"] for s in st}) == 1
    assert all(s["share"] and s["committee"] == group.committee_id for s in st)
    assert all(nd.committee_registered for nd in nodes)
    for i, nd in enumerate(nodes):
        path = d / f"node-{i}" / SHARE_FILE
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert nd.result is not None and nd.result.qual == (0, 1, 2, 3)
        raw = [r for _, r in nd.store.raw_blocks()]
        assert nd.height >= 1
        assert verify_chain(raw, nd.genesis) == nd.height
    # one identical collective key at every trustee
    assert len({nd.result.public_key.to_bytes() for nd in nodes}) == 1


def test_junk_on_the_bootstrap_address_is_dropped(committee) -> None:  # type: ignore[no-untyped-def]
    """Robustness: garbage bytes, a wrong-session hello and a forged co-signature sent to a
    trustee's address are dropped at the node's boundary; the node keeps serving (the next
    test runs a job through it)."""
    _, group, net, nodes = committee
    intruder = net.endpoint("intruder")
    before = nodes[0].refused
    intruder.send("trustee-0", b"\x00garbage\xff" * 10)
    intruder.send("trustee-0", NodeHello(b"\x01" * 32, 0, 0))
    forged = LtsCosign(dkg_session(group), 1, (0, 1, 2, 3), 1, b"\x02" * 64)
    net.endpoint("trustee-1").send("trustee-0", forged)  # spoofed src, bad signature
    net.run_for(0.1)
    assert nodes[0].ready and nodes[0].trustee_node is not None
    assert nodes[0].refused + nodes[0].trustee_node.refused > before
    assert schema.encode(forged)  # a well-formed message: refused for its signature only


def test_job_through_nodes_equals_in_process(committee) -> None:  # type: ignore[no-untyped-def]
    """A job whose ledger, trustees and aggregators are the Nodes' services gives the same
    aggregate as LocalCommittee (and as the plain sums)."""
    _, _, _, nodes = committee
    r = NodeCommittee(nodes).run_job(STAT, DATA)
    assert r.report["status"] == "done" and not r.report["faulty_aggregators"]
    local = LocalCommittee()
    try:
        ref = local.run_job(STAT, DATA)
    finally:
        local.close()
    assert r.aggregate["n"] == ref.aggregate["n"]
    np.testing.assert_array_equal(np.asarray(r.aggregate["xtx"]), np.asarray(ref.aggregate["xtx"]))
    np.testing.assert_array_equal(np.asarray(r.aggregate["xty"]), np.asarray(ref.aggregate["xty"]))
    xtx, xty, n = _plain()
    assert r.aggregate["n"] == n
    np.testing.assert_allclose(np.asarray(r.aggregate["xtx"], dtype=float), xtx, atol=1e-8)
    np.testing.assert_allclose(np.asarray(r.aggregate["xty"], dtype=float), xty, atol=1e-8)


def test_restarted_node_catches_up_and_keeps_its_share(committee) -> None:  # type: ignore[no-untyped-def]
    """Restart: a node down during a job comes back from its directory — same share, its
    ledger catches up to the others' height, and it serves the next job."""
    d, group, net, nodes = committee
    old = nodes[3]
    share = old.result
    old.stop()
    for a in old.addresses:
        net.crash(a)
    driver = NodeCommittee(nodes[:3])
    r = driver.run_job(STAT, DATA)
    assert r.report["status"] == "done" and 3 in r.report["faulty_aggregators"]
    behind = old.height
    for a in old.addresses:
        net.restart(a)
    again = Node(d / "node-3", group, net)
    nodes[3] = again
    assert again.result == share  # reloaded, not a new DKG
    assert again.dkg is None
    assert net.run_until(lambda: again.ready and again.height >= nodes[0].height, 30.0)
    assert again.height > behind
    raw = [r for _, r in again.store.raw_blocks()]
    assert verify_chain(raw, again.genesis) == again.height
    r2 = driver.run_job(STAT, DATA)
    assert r2.report["status"] == "done" and not r2.report["faulty_aggregators"]
    assert r2.aggregate["n"] == r.aggregate["n"]


def test_start_barrier_waits_for_a_late_trustee(tmp_path: Path) -> None:
    """The DKG starts only when every trustee is up: a node started 2 s late still gets a
    share and the committee becomes ready."""
    d = _make(tmp_path)
    group = load_group(d / "group.toml")
    net = MemoryNetwork(seed=11)
    nodes = [Node(d / f"node-{i}", group, net) for i in range(3)]
    net.run_for(2.0)
    assert not any(nd.ready or nd.dkg is not None for nd in nodes)
    nodes.append(Node(d / "node-3", group, net))
    try:
        assert bootstrap(net, nodes, timeout=30.0)
        assert all(nd.result is not None for nd in nodes)
        # one agreed start, after the last trustee came up
        assert len({nd.dkg_start_at for nd in nodes}) == 1
        assert nodes[0].dkg_start_at is not None and nodes[0].dkg_start_at >= 2.0
    finally:
        for nd in nodes:
            nd.stop()


def test_node_without_the_ledger_role_is_refused(tmp_path: Path) -> None:
    entries = [
        setup_node(tmp_path / f"n{i}", f"127.0.0.1:{7200 + i}", "ledger,trustee,aggregator")
        for i in range(4)
    ]
    entries.append(setup_node(tmp_path / "agg", "127.0.0.1:7300", "aggregator"))
    write_group(make_group(entries, threshold=1), tmp_path / "group.toml")
    group = load_group(tmp_path / "group.toml")
    with pytest.raises(ConfigError, match="without 'ledger'"):
        Node(tmp_path / "agg", group, MemoryNetwork())


def test_lts_registered_by_n_minus_t_when_a_trustee_stays_silent(tmp_path: Path) -> None:
    """Liveness: a trustee that finishes the DKG but never approves nor co-signs the LTS
    (its bootstrap messages are dropped) cannot block it — after the grace period the
    other n − t register it; the silent one still finds it and serves."""
    d = _make(tmp_path)
    group = load_group(d / "group.toml")
    net = MemoryNetwork(seed=5)
    net.add_filter(
        lambda env: (
            not (env.src == "trustee-3" and isinstance(env.payload, LtsApproval | LtsCosign))
        )
    )
    nodes = [Node(d / f"node-{i}", group, net) for i in range(4)]
    try:
        assert bootstrap(net, nodes, timeout=30.0)
        tx_signers = nodes[0].lts.trustees  # every trustee of the LTS ...
        assert len(tx_signers) == 4
        ((signers, _),) = nodes[0]._assembled  # ... co-signed by the three that spoke
        assert signers == (0, 1, 2)
        assert nodes[3].trustee_node is not None and nodes[3].lts == nodes[0].lts
    finally:
        for nd in nodes:
            nd.stop()


def test_cosignature_for_another_payload_is_refused(committee) -> None:  # type: ignore[no-untyped-def]
    """Integrity: a trustee's valid transaction signature on a *different* LTS payload
    (another key) is not collected: a co-signature only counts for the tx registering the
    receiving trustee's own DKG result."""
    from kaires_fl.ledger.tx import TX_CONTEXT, Tx

    _, group, net, nodes = committee
    target = nodes[0]
    target.lts_saved, target.lts = target.lts, None  # as if still registering
    try:
        other = dict(target._lts_payload(), X="00" * 32)
        keys = tuple(e.sign for e in target.trustee_entries)
        tx = Tx(target.genesis.chain_id, "calypso.lts", other, keys, 1, ())
        sig = nodes[1].keys.identity.sign(TX_CONTEXT, tx.hash)
        before = target.refused
        nodes[1]._trustee_ep.send(
            "trustee-0", LtsCosign(dkg_session(group), 1, (0, 1, 2, 3), 1, sig)
        )
        net.run_for(0.01)
        assert target.refused == before + 1
        assert all(1 not in sigs or sigs[1] != sig for sigs in target.candidates.values())
    finally:
        target.lts = target.lts_saved


def test_lts_retried_without_a_trustee_that_approves_but_never_cosigns(tmp_path: Path) -> None:
    """Liveness: a trustee that approves (so the first signer set includes it) but whose
    co-signatures never arrive cannot block the LTS: the incomplete set is given up and
    the n − t others register it."""
    d = _make(tmp_path)
    group = load_group(d / "group.toml")
    net = MemoryNetwork(seed=6)
    net.add_filter(
        lambda env: not (isinstance(env.payload, LtsCosign) and "trustee-3" in (env.src, env.dst))
    )
    nodes = [Node(d / f"node-{i}", group, net) for i in range(4)]
    try:
        assert bootstrap(net, nodes, timeout=30.0)
        assert nodes[0]._suspects == {3}
        assert [s for s, _ in nodes[0]._assembled] == [(0, 1, 2)]
        assert all(nd.lts == nodes[0].lts for nd in nodes) and nodes[3].trustee_node
    finally:
        for nd in nodes:
            nd.stop()
