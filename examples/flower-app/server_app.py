"""The example's ServerApp: FedAvg swapped for ``KairesFedAvg``.

The ServerApp is the data consumer and the untrusted coordinator: it commits one job per
round on the Kaires ledger, relays the clients' sealed submissions to the aggregation
committee and opens only the aggregate. The committee comes from the run config
(``kaires-committee = "local"``: an in-process committee).
"""

from __future__ import annotations

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
    final = result.evaluate_metrics_serverapp[max(result.evaluate_metrics_serverapp)]
    print(f"kaires-flower-app: final accuracy {final['accuracy']:.4f}")
    strategy.committee.committee.ledger.verify()
