"""Privacy budgets through the networked committee (Nodes over an in-memory network, the
driver NodeCommittee): set_policy(privacy_budget=) and the exclusion once it is spent."""

from __future__ import annotations

import numpy as np
import pytest

from kaires_fl import DP
from kaires_fl.ledger.budgets import privacy_key
from kaires_fl.node.config import load_group, make_group, setup_node, write_group
from kaires_fl.node.driver import NodeCommittee
from kaires_fl.node.host import Node, bootstrap
from kaires_fl.statistics import HistogramStats
from kaires_fl.transport.memory import MemoryNetwork

DATA = {f"p{i}": (np.full((3, 1), 0.5), None) for i in range(3)}
STAT = HistogramStats(np.arange(9.0))


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    d = tmp_path_factory.mktemp("budget-nodes")
    entries = [
        setup_node(
            d / f"node-{i}",
            f"127.0.0.1:{7300 + i}",
            "ledger,trustee,aggregator",
            f"node-{i}",
            seeds=(bytes([i + 21]) * 32, bytes([i + 71]) * 32),
        )
        for i in range(4)
    ]
    write_group(make_group(entries), d / "group.toml")
    group = load_group(d / "group.toml")
    net = MemoryNetwork(seed=13)
    ns = [Node(d / f"node-{i}", group, net) for i in range(4)]
    assert bootstrap(net, ns, timeout=30.0)
    yield ns
    for nd in ns:
        nd.stop()


def test_networked_set_policy_budget_is_enforced(nodes) -> None:  # type: ignore[no-untyped-def]
    driver = NodeCommittee(nodes)
    driver.ensure_providers(sorted(DATA))
    driver.set_policy("p0", privacy_budget=(1.5, 1e-5))
    pid = driver.provider("p0").policy_id
    assert driver.client.get(f"darc/{pid}")["terms"]["privacy_budget"] == [1.5, 1e-5]
    first = driver.run_job(STAT, DATA, dp=DP(1.0, 1e-6))
    assert "p0" in first.report["accepted"] and first.report["privacy"]["epsilon"] == 1.0
    second = driver.run_job(STAT, DATA, dp=DP(1.0, 1e-6))
    assert "p0" not in second.report["accepted"]
    assert "privacy budget" in second.report["excluded"]["p0"]
    exact = driver.run_job(STAT, DATA)  # an exact job: the budgeted policy refuses it
    assert "requires differential privacy" in exact.report["excluded"]["p0"]
    spent = driver.client.get(privacy_key(pid))
    assert spent["jobs"] == 1 and spent["epsilon_units"] == 10**9
