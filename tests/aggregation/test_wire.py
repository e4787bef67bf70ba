"""Aggregation over the wire: every message through its schema encoding (MemoryNetwork
``wire=True``), so receivers see only what a real network would hand their decoder."""

from __future__ import annotations

import numpy as np

from kaires_fl import schema
from kaires_fl.aggregation import job as job_mod
from kaires_fl.simulation import LocalCommittee
from kaires_fl.statistics import LinearRegressionStats

STAT = LinearRegressionStats(
    2, [-1, 1], [-1, 1], granularity="provider", max_rows=100, max_measurements=32
)


def test_a_job_over_the_wire_gives_the_numpy_sums_and_every_message_is_typed() -> None:
    rng = np.random.default_rng(3)
    data = {f"p{i}": (rng.uniform(-1, 1, (6, 2)), rng.uniform(-1, 1, 6)) for i in range(4)}
    c = LocalCommittee(faults={"aggregator": {2: "byzantine"}, "provider": {1: "bad_proof"}})
    c.network.wire = True
    r = c.run_job(STAT, data)
    assert c.network.stats["undecodable"] == 0
    assert r.report["rejected"] == {"p1": "invalid_proof"}
    assert list(r.report["faulty_aggregators"]) == [2]
    X = np.concatenate([data[k][0] for k in ("p0", "p2", "p3")])
    np.testing.assert_allclose(np.array(r.aggregate["xtx"], float), X.T @ X, atol=1e-8)
    # Everything the coordinator relayed to the aggregators is a schema message.
    out = [e.message for e in c.coordinator.log if e.direction == "out"]
    assert out and all(isinstance(m, job_mod.ToAggregator) for m in out)
    assert all(schema.decode(schema.encode(m), job_mod.ToAggregator) == m for m in out)
    c.close()
