"""The example's ServerApp: FedAvg swapped for ``KairesFedAvg``.

The ServerApp is the data consumer and the untrusted coordinator: it commits one job per
round on the Kaires ledger, relays the clients' sealed submissions to the aggregation
committee and opens only the aggregate. The committee comes from the run config:
``kaires-committee = "local"`` (an in-process committee, for simulations) or
``"path/to/group.toml"`` (a deployed committee: the ServerApp is then one of its clients
and holds no node key, trustee share or aggregator key; ``kaires-client-key`` names its
key file). ``final-model``, if set, is where the final model is written (``.npz``).
"""

from __future__ import annotations

import numpy as np
import task
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from kaires_fl.strategies import CommitteeConnection, KairesFedAvg

app = ServerApp()


def central_evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
    """Accuracy of the global model on the held-out digits."""
    X, y = task.test_set()
    loss, acc = task.evaluate(arrays.to_numpy_ndarrays(), X, y)
    return MetricRecord({"loss": loss, "accuracy": acc})


@app.main()
def main(grid: Grid, context: Context) -> None:
    rc = context.run_config
    strategy = KairesFedAvg(
        fraction_evaluate=0.0,
        min_train_nodes=int(rc.get("min-train-nodes", 10)),
        min_available_nodes=int(rc.get("min-train-nodes", 10)),
        committee=CommitteeConnection.from_run_config(rc),
        clip_norm=float(rc.get("clip-norm", 10.0)),
        num_examples_cap=float(rc.get("num-examples-cap", 1024)),
    )
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(task.initial_arrays()),
        num_rounds=int(rc.get("num-server-rounds", 3)),
        train_config=ConfigRecord({"lr": 0.5}),
        evaluate_fn=central_evaluate,
    )
    committee = strategy.committee.committee
    print(f"kaires-flower-app: committee {type(committee).__name__}")
    for r, info in sorted(strategy.kaires_rounds.items()):
        res = info.get("result")
        if res is not None:
            print(f"kaires-flower-app: round {r} {res.status}, {len(res.accepted)} accepted")
    final = result.evaluate_metrics_serverapp[max(result.evaluate_metrics_serverapp)]
    print(f"kaires-flower-app: final accuracy {final['accuracy']:.4f}")
    if rc.get("final-model"):
        np.savez(str(rc["final-model"]), *result.arrays.to_numpy_ndarrays())
    committee.ledger.verify()
