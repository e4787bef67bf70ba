"""The example's ClientApp: an ordinary Flower train handler, plus ``kaires_mod``.

The handler is exactly what a plain FedAvg app would have; ``kaires_mod`` verifies each
job against the ledger and the provider's own policy, and replies with a sealed,
proven-bounded submission instead of the trained arrays.

Run in a simulation (``flwr run`` with the local simulation engine), its mod allows the
simulation-only conveniences (trust on first use of the ledger and committee, keys derived
from the public ``kaires-seed``). A SuperNode whose operator sets ``kaires-key`` in its
``--node-config`` is a deployment: it runs the default ``kaires_mod``, which refuses every
simulation-only convenience, so ``kaires-trusted-chain-id``, ``kaires-trusted-committee``,
``kaires-trusted-lts`` and ``kaires-grants`` must be set there too (docs/flower.md,
docs/deployment.md *Flower deployment engine*).
"""

from __future__ import annotations

import task
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable
from kaires_fl.strategies import kaires_mod, make_kaires_mod

_simulation_mod = make_kaires_mod(simulation=True)


def example_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """``kaires_mod`` on a SuperNode configured with ``kaires-key`` (a deployment), the
    simulation mod otherwise."""
    mod = kaires_mod if context.node_config.get("kaires-key") else _simulation_mod
    return mod(msg, context, call_next)


app = ClientApp(mods=[example_mod])


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
