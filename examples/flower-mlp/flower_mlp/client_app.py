"""The example's ClientApp: an ordinary Flower train handler, plus ``kaires_mod``.

The handler is what a plain FedAvg app would have: it trains the MLP on its partition and
replies with the new arrays and ``num-examples``. ``kaires_mod`` verifies each job against
the ledger and the provider's own policy, and replies with a sealed, proven-bounded
submission of the update instead of the trained arrays.

Run in a simulation (the local simulation engine), the mod allows the simulation-only
conveniences (trust on first use of the ledger and committee, keys derived from the public
``kaires-seed``). A SuperNode whose operator sets ``kaires-key`` in its ``--node-config``
is a deployment: it runs the default ``kaires_mod``, which refuses every simulation-only
convenience (docs/flower.md, docs/deployment.md *Flower deployment engine*).
"""

from __future__ import annotations

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable
from kaires_fl.strategies import kaires_mod, make_kaires_mod

from flower_mlp import task

_simulation_mod = make_kaires_mod(simulation=True)


def example_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """``kaires_mod`` on a SuperNode configured with ``kaires-key`` (a deployment), the
    simulation mod otherwise."""
    mod = kaires_mod if context.node_config.get("kaires-key") else _simulation_mod
    return mod(msg, context, call_next)


app = ClientApp(mods=[example_mod])


def _partition(context: Context) -> tuple[int, int]:
    return int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train locally (mini-batch SGD); reply with the new weights and num-examples."""
    pid, parts = _partition(context)
    X, y = task.load_partition(pid, parts)
    config = msg.content["config"]
    new = task.train(
        msg.content["arrays"].to_numpy_ndarrays(),
        X,
        y,
        epochs=int(context.run_config.get("local-epochs", 2)),
        lr=float(config.get("lr", 0.05)),
        seed=1000 * int(config.get("server-round", 0)) + pid,
    )
    return Message(
        RecordDict({"arrays": ArrayRecord(new), "metrics": MetricRecord({"num-examples": len(y)})}),
        reply_to=msg,
    )


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Local evaluation (metrics only; evaluate messages pass kaires_mod unchanged)."""
    X, y = task.load_partition(*_partition(context))
    loss, acc = task.evaluate(msg.content["arrays"].to_numpy_ndarrays(), X, y)
    return Message(
        RecordDict({"metrics": MetricRecord({"num-examples": len(y), "loss": loss, "acc": acc})}),
        reply_to=msg,
    )
