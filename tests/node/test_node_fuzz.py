"""Fuzz: the node's own peer-facing handler (the trustee address) never raises and never dies.

Arbitrary bytes, mutated encodings of the node's bootstrap messages and arbitrary field
values are dropped or refused; the node is still ready and its trustee still answers.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kaires_fl import schema
from kaires_fl.node.config import load_group, make_group, setup_node, write_group
from kaires_fl.node.host import LtsApproval, LtsCosign, Node, NodeHello, bootstrap, dkg_session
from kaires_fl.transport.memory import MemoryNetwork


@pytest.fixture(scope="module")
def ready(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("fuzz")
    entries = [setup_node(d / f"n{i}", f"127.0.0.1:{7400 + i}", name=f"n{i}") for i in range(4)]
    write_group(make_group(entries), d / "group.toml")
    group = load_group(d / "group.toml")
    net = MemoryNetwork(seed=2)
    nodes = [Node(d / f"n{i}", group, net) for i in range(4)]
    assert bootstrap(net, nodes, 30.0)
    yield group, net, nodes
    for nd in nodes:
        nd.stop()


def _samples(session: bytes) -> list[bytes]:
    return [
        schema.encode(NodeHello(session, 1, 5)),
        schema.encode(LtsApproval(session, 1, b"\x03" * 32, b"\x04" * 64)),
        schema.encode(LtsCosign(session, 1, (0, 1, 2), 1, b"\x05" * 64)),
    ]


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    data=st.one_of(
        st.binary(max_size=300),
        st.tuples(st.integers(0, 2), st.integers(0, 200), st.integers(0, 255)),
        st.builds(
            LtsCosign,
            session=st.binary(min_size=32, max_size=32),
            index=st.integers(0, 2**16 - 1),
            signers=st.lists(st.integers(0, 2**16 - 1), max_size=8).map(tuple),
            counter=st.integers(0, 2**63 - 1),
            tx_signature=st.binary(min_size=64, max_size=64),
        ),
        st.builds(
            NodeHello,
            session=st.binary(min_size=32, max_size=32),
            index=st.integers(0, 2**16 - 1),
            since_ms=st.integers(0, 2**63 - 1),
        ),
    ),
    src=st.sampled_from(["trustee-1", "trustee-3", "intruder", "aggregator-0"]),
)
def test_trustee_address_survives_anything(ready, data, src) -> None:  # type: ignore[no-untyped-def]
    """Robustness: whatever a peer sends to ``trustee-0``, the handler returns normally and
    the node stays ready with its trustee serving."""
    group, _, nodes = ready
    node = nodes[0]
    if isinstance(data, tuple):  # a mutated byte of a real bootstrap message
        which, pos, byte = data
        raw = bytearray(_samples(dkg_session(group))[which])
        raw[pos % len(raw)] = byte
        data = bytes(raw)
    node._on_trustee_message(src, data)  # must not raise
    if not isinstance(data, bytes):
        node._on_trustee_message(src, schema.encode(data))
    assert node.ready and node.trustee_node is not None and node.dkg_error is None
