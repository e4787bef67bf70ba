"""The example's ClientApp: an ordinary Flower train handler, plus ``kaires_mod``.

The handler is exactly what a plain FedAvg app would have; ``kaires_mod`` verifies each
job against the ledger and the provider's own policy, and replies with a sealed,
proven-bounded submission instead of the trained arrays.

This example is a simulation (``flwr run`` with the local simulation engine), so its mod
allows the simulation-only conveniences (trust on first use of the ledger and committee,
keys derived from the public ``kaires-seed``). A deployment uses ``kaires_mod`` and sets
``kaires-key``, ``kaires-trusted-chain-id``, ``kaires-trusted-committee``,
``kaires-trusted-lts`` and ``kaires-grants`` in each SuperNode's ``--node-config``
(docs/flower.md).
"""

from __future__ import annotations

import task
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from kaires_fl.strategies import make_kaires_mod

app = ClientApp(mods=[make_kaires_mod(simulation=True)])


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train locally for a few epochs; reply with the new weights and num-examples."""
    X, y = task.load_partition(
        int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])
    )
    arrays = msg.content["arrays"].to_numpy_ndarrays()
    epochs = int(context.run_config.get("local-epochs", 5))
    new = task.train(arrays, X, y, epochs=epochs)
    loss, _ = task.evaluate(new, X, y)
    return Message(
        RecordDict(
            {
                "arrays": ArrayRecord(new),
                "metrics": MetricRecord({"num-examples": len(y), "train-loss": loss}),
            }
        ),
        reply_to=msg,
    )


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Local evaluation (metrics only; evaluate messages pass kaires_mod unchanged)."""
    X, y = task.load_partition(
        int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])
    )
    loss, acc = task.evaluate(msg.content["arrays"].to_numpy_ndarrays(), X, y)
    return Message(
        RecordDict({"metrics": MetricRecord({"num-examples": len(y), "loss": loss, "acc": acc})}),
        reply_to=msg,
    )
