"""The same Node host on the TCP transport (loopback, one process, one reactor)."""

from __future__ import annotations

import socket
from pathlib import Path

from kaires_fl.ledger.audit import verify_chain
from kaires_fl.node.config import (
    load_group,
    load_keys,
    make_group,
    parse_address,
    setup_node,
    write_group,
)
from kaires_fl.node.host import Node, bootstrap, tcp_peers
from kaires_fl.transport.tcp import TcpNetwork


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_four_nodes_become_ready_over_tcp(tmp_path: Path) -> None:
    """Transport independence: the host, the DKG start barrier and the co-signed LTS run
    unchanged over authenticated TCP on a real clock."""
    entries = [
        setup_node(tmp_path / f"node-{i}", f"127.0.0.1:{_free_port()}", name=f"node-{i}")
        for i in range(4)
    ]
    write_group(make_group(entries), tmp_path / "group.toml")
    group = load_group(tmp_path / "group.toml")
    peers = tcp_peers(group)
    nets: list[TcpNetwork] = []
    nodes: list[Node] = []
    try:
        for i, e in enumerate(group.nodes):
            nets.append(
                TcpNetwork(
                    load_keys(tmp_path / f"node-{i}").identity,
                    parse_address(e.address),
                    peers,
                    group=bytes.fromhex(group.id),
                    reactor=nets[0].reactor if nets else None,
                )
            )
        nodes = [
            Node(tmp_path / f"node-{i}", group, nets[i], dkg_round_time=0.25, tick=0.1)
            for i in range(4)
        ]
        assert bootstrap(nets[0], nodes, timeout=20.0)
        assert len({nd.lts.id for nd in nodes if nd.lts}) == 1
        for nd in nodes:
            raw = [r for _, r in nd.store.raw_blocks()]
            assert verify_chain(raw, nd.genesis) == nd.height >= 1
    finally:
        for nd in nodes:
            nd.stop()
        for net in reversed(nets):
            net.close()
