"""A job with differential privacy through Nodes (the networked committee's services and
driver, messages encoded at the nodes' boundaries)."""

from __future__ import annotations

import numpy as np
import pytest

from kaires_fl import DP
from kaires_fl.node.config import load_group, make_group, setup_node, write_group
from kaires_fl.node.driver import NodeCommittee
from kaires_fl.node.host import Node, bootstrap
from kaires_fl.statistics import HistogramStats
from kaires_fl.transport.memory import MemoryNetwork

BINS = 400
DATA = {f"p{i}": (np.full((3, 1), 0.5), None) for i in range(3)}


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    d = tmp_path_factory.mktemp("dp-nodes")
    entries = [
        setup_node(
            d / f"node-{i}",
            f"127.0.0.1:{7200 + i}",
            "ledger,trustee,aggregator",
            f"node-{i}",
            seeds=(bytes([i + 11]) * 32, bytes([i + 61]) * 32),
        )
        for i in range(4)
    ]
    write_group(make_group(entries), d / "group.toml")
    group = load_group(d / "group.toml")
    net = MemoryNetwork(seed=11)
    ns = [Node(d / f"node-{i}", group, net) for i in range(4)]
    assert bootstrap(net, ns, timeout=30.0)
    yield ns
    for nd in ns:
        nd.stop()


def test_dp_job_through_nodes(nodes) -> None:  # type: ignore[no-untyped-def]
    """The noisy histogram's noise has the reported σ (all four honest: n/(n − t)·σ²,
    within 25 % over 400 coordinates) and mean 0; the exact job after it is exact."""
    driver = NodeCommittee(nodes)
    r = driver.run_job(HistogramStats(np.arange(BINS + 1.0)), DATA, dp=DP(2.0, 1e-6))
    assert r.report["status"] == "done" and not r.report["faulty_aggregators"]
    true = np.zeros(BINS, dtype=np.int64)
    true[0] = 9
    z = np.asarray(r.aggregate["counts"], dtype=np.int64) - true
    sigma2 = r.report["privacy"]["sigma"] ** 2
    assert z.var() == pytest.approx(4 / 3 * sigma2, rel=0.25)
    assert abs(z.mean()) < 4 * np.sqrt(z.var() / z.size)
    exact = driver.run_job(HistogramStats(np.arange(BINS + 1.0)), DATA)
    assert exact.report["privacy"] is None
    assert np.array_equal(np.asarray(exact.aggregate["counts"]), true)
