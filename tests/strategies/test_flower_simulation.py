"""Acceptance over Flower's simulation engine (Ray): ``run_simulation`` with KairesFedAvg,
KairesStatsStrategy and kaires_mod, against plain FedAvg on the same data, split and rounds.

Each ``run_simulation`` starts Ray (≈ 20 s on a 2-core machine), so each test packs several
strategies into one ServerApp run.
"""

from __future__ import annotations

import importlib
from typing import Any

import flower_apps as apps
import numpy as np
import pytest
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation
from kaires_fl.strategies import KairesFedAvg, KairesStatsStrategy, make_kaires_mod
from sklearn.linear_model import LinearRegression

from kaires_fl.simulation import LocalCommittee
from kaires_fl.statistics import LinearRegressionStats

pytestmark = pytest.mark.slow

N = apps.NUM_NODES
ROUNDS = 3
BACKEND = {"client_resources": {"num_cpus": 1}, "init_args": {"num_cpus": 2}}


def test_ray_runs_the_clientapp_actors_at_default_niceness() -> None:
    """The simulations' actors are not niced by Ray (conftest.py): they compete for the CPU
    as the ServerApp does, so a loaded machine slows a simulation down, not to a halt."""
    import os

    import ray

    ray.init(num_cpus=2, logging_level="WARNING", include_dashboard=False)
    try:

        @ray.remote(num_cpus=1)
        class Actor:
            def niceness(self) -> int:
                return os.nice(0)

        assert ray.get(Actor.remote().niceness.remote()) == os.nice(0)
    finally:
        ray.shutdown()


def _accuracy(arrays: ArrayRecord) -> float:
    X, y = apps.task.test_set()
    return apps.task.evaluate(arrays.to_numpy_ndarrays(), X, y)[1]


class PlainFedAvg(FedAvg):
    """Flower's FedAvg, sending ``train.plain`` (the handler without kaires_mod)."""

    def _construct_messages(self, record: RecordDict, node_ids: list[int], message_type: str):
        return super()._construct_messages(record, node_ids, f"{message_type}.plain")


class RecordingKairesFedAvg(KairesFedAvg):
    """KairesFedAvg that keeps every train reply the ServerApp received."""

    def aggregate_train(self, server_round: int, replies: Any) -> Any:
        replies = list(replies)
        self.seen = [*getattr(self, "seen", []), *replies]
        return super().aggregate_train(server_round, replies)


def _mixed_client_app() -> ClientApp:
    """The same train handler twice: with kaires_mod (``train``) and without it
    (``train.plain``, for the plain FedAvg baseline); a query handler for statistics."""
    app = ClientApp()
    kaires_mod = make_kaires_mod(simulation=True)

    def train(msg: Message, ctx: Context) -> Message:
        pid = int(ctx.node_config["partition-id"])
        X, y = apps.task.load_partition(pid, int(ctx.node_config["num-partitions"]))
        new = apps.task.train(msg.content["arrays"].to_numpy_ndarrays(), X, y)
        return Message(
            RecordDict(
                {"arrays": ArrayRecord(new), "metrics": MetricRecord({"num-examples": len(y)})}
            ),
            reply_to=msg,
        )

    app.train(mods=[kaires_mod])(train)
    app.train("plain")(train)

    @app.query(mods=[kaires_mod])
    def query(msg: Message, ctx: Context) -> Message:
        pid = int(ctx.node_config["partition-id"])
        X, y = apps.diabetes_partition(pid, int(ctx.node_config["num-partitions"]))
        from flwr.app import Array

        rec = ArrayRecord({"X": Array(np.ascontiguousarray(X)), "y": Array(y.copy())})
        return Message(RecordDict({"data": rec}), reply_to=msg)

    return app


def test_kaires_fedavg_matches_fedavg_and_stats_match_sklearn() -> None:
    out: dict[str, Any] = {}
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        init = ArrayRecord(apps.task.initial_arrays())
        plain = PlainFedAvg(fraction_evaluate=0.0, min_available_nodes=N, min_train_nodes=N)
        out["plain"] = plain.start(grid=grid, initial_arrays=init, num_rounds=ROUNDS).arrays
        committee = LocalCommittee()
        kaires = RecordingKairesFedAvg(
            fraction_evaluate=0.0,
            min_available_nodes=N,
            min_train_nodes=N,
            committee=committee,
            num_examples_cap=apps.NUM_EXAMPLES_CAP,
        )
        out["kaires"] = kaires.start(grid=grid, initial_arrays=init, num_rounds=ROUNDS).arrays
        out["strategy"] = kaires
        stat = LinearRegressionStats(10, [-0.3, 0.3], [0.0, 400.0], max_rows=100)
        stats = KairesStatsStrategy(stat, min_nodes=N, min_available_nodes=N, committee=committee)
        out["stats"] = stats.start(grid)
        out["audit"] = committee.ledger.verify()

    run_simulation(server, _mixed_client_app(), num_supernodes=N, backend_config=BACKEND)
    acc_plain, acc_kaires = _accuracy(out["plain"]), _accuracy(out["kaires"])
    assert acc_plain > 0.8
    assert abs(acc_kaires - acc_plain) <= 0.01
    kaires = out["strategy"]
    for r in range(1, ROUNDS + 1):
        assert len(kaires.kaires_rounds[r]["result"].accepted) == N
    # The ServerApp never held an individual update: no reply carried arrays, only
    # sealed submissions (and the public weight).
    assert len(kaires.seen) == N * ROUNDS
    for m in kaires.seen:
        assert not m.has_error() and not m.content.array_records
        assert set(m.content.config_records) == {"kaires"}
        assert set(m.content.config_records["kaires"]) == {
            "policy",
            "write-tx",
            "submission",
            "meas-parts",
            "proof-parts",
        }
    X, y = apps.diabetes_partition(0, 1)
    ref = LinearRegression().fit(X, y)
    res = out["stats"]
    np.testing.assert_allclose(res.coef_, ref.coef_, rtol=1e-6, atol=1e-6 * np.abs(ref.coef_).max())
    assert abs(res.intercept_ - ref.intercept_) <= 1e-6 * abs(ref.intercept_)
    assert out["audit"] > 0


def test_over_norm_client_and_byzantine_aggregator_over_ray() -> None:
    out: dict[str, Any] = {}
    server = ServerApp()
    rounds = 2

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        s = KairesFedAvg(
            fraction_evaluate=0.0,
            min_available_nodes=N,
            min_train_nodes=N,
            committee=LocalCommittee(faults={"aggregator": {1: "byzantine"}}),
            num_examples_cap=apps.NUM_EXAMPLES_CAP,
            train_metrics={"train-loss": (0.0, 5.0), "train-acc": (0.0, 1.0)},
        )
        init = ArrayRecord(apps.task.initial_arrays())
        result = s.start(grid=grid, initial_arrays=init, num_rounds=rounds)
        out["arrays"], out["result"] = result.arrays, result
        out["strategy"] = s

    app = apps.make_client_app(faults={0: "over_norm"}, train_metrics=True)
    run_simulation(server, app, num_supernodes=N, backend_config=BACKEND)
    s = out["strategy"]
    for r in range(1, rounds + 1):
        res = s.kaires_rounds[r]["result"]
        assert set(res.rejected) == {apps.policy_id(0)}
        assert len(res.accepted) == N - 1
        assert 1 in res.faulty_aggregators
    # The result is FedAvg over the nine honest clients: the Byzantine aggregator changed
    # nothing (bit-identity with an honest committee is in test_protocol.py).
    arrays = apps.task.initial_arrays()
    for _ in range(rounds):
        arrays = apps.plain_fedavg(arrays, list(range(1, N)))
    for a, b in zip(out["arrays"].to_numpy_ndarrays(), arrays, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)
    # Train metrics over Ray: the accepted clients' weighted averages, from the aggregate.
    local = np.array([apps.local_train_metrics(apps.task.initial_arrays(), p) for p in range(1, N)])
    want = np.average(local[:, 1:], axis=0, weights=local[:, 0])
    got = out["result"].train_metrics_clientapp[1]
    assert abs(got["train-loss"] - want[0]) < 1e-3 and abs(got["train-acc"] - want[1]) < 1e-4
    assert got["kaires-accepted"] == N - 1 and got["kaires-rejected"] == 1


def test_example_app_runs(capfd: pytest.CaptureFixture[str]) -> None:
    """The example Flower app (examples/flower-app) through the simulation engine.

    ``flwr run .`` needs a SuperLink process; the test runs the same ServerApp and
    ClientApp objects with ``run_simulation`` (see docs/flower.md for ``flwr run``)."""
    server = importlib.import_module("server_app").app
    client = importlib.import_module("client_app").app
    run_simulation(server, client, num_supernodes=N, backend_config=BACKEND)
    text = capfd.readouterr().out
    assert "kaires-flower-app: final accuracy" in text
    acc = float(text.split("kaires-flower-app: final accuracy")[1].split()[0])
    assert acc > 0.8
