"""Client apps and data shared by the Flower tests (real ClientApps with kaires_mod)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from kaires_fl.strategies import KairesFedAvg, ProviderPolicy, make_kaires_mod

from kaires_fl.simulation import LocalCommittee

APP_DIR = Path(__file__).resolve().parents[2] / "examples" / "flower-app"
if str(APP_DIR) not in sys.path:
    sys.path.insert(0, str(APP_DIR))

import task  # noqa: E402  (the example app's model and data)

NUM_NODES = 10
#: W of the tests' KairesFedAvg (every digits partition has fewer examples: FedAvg's weights).
NUM_EXAMPLES_CAP = 1024
#: A consumer key no test strategy holds (a provider granting only it denies the others).
STRANGER = "ab" * 32


def fedavg(nodes: int = NUM_NODES, committee: Any = None, **kw: Any) -> KairesFedAvg:
    """The tests' KairesFedAvg: all ``nodes`` nodes train each round, no evaluation,
    W = NUM_EXAMPLES_CAP, on ``committee`` (default: a fresh LocalCommittee); ``kw`` adds
    or overrides KairesFedAvg's arguments."""
    kw.setdefault("num_examples_cap", NUM_EXAMPLES_CAP)
    return KairesFedAvg(
        fraction_evaluate=0.0,
        min_available_nodes=nodes,
        min_train_nodes=nodes,
        committee=committee if committee is not None else LocalCommittee(),
        **kw,
    )


def policy_id(pid: int) -> str:
    """The policy id of simulated node ``pid`` (key derived from the default seed)."""
    from flwr.app import Context, RecordDict
    from kaires_fl.strategies.provider import FlowerProvider

    ctx = Context(
        run_id=1,
        node_id=pid + 1,
        node_config={"partition-id": pid},
        state=RecordDict(),
        run_config={},
    )
    return FlowerProvider.from_context(ctx, simulation=True).policy_id


def diabetes_partition(pid: int, n: int = NUM_NODES) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)
    k = np.array_split(np.arange(len(y)), n)[pid]
    return X[k], y[k]


def make_client_app(
    faults: Mapping[int, str] | None = None,
    policies: Mapping[int, Callable[[], ProviderPolicy]] | None = None,
    epochs: int = 5,
    mod: Any = None,
    train_metrics: bool = False,
) -> ClientApp:
    """The example's train handler (+ a query handler returning the diabetes rows), with
    kaires_mod; ``faults`` / ``policies`` map a partition id to a fault / policy factory;
    ``train_metrics``: the train reply also reports ``train-loss`` / ``train-acc``
    (:func:`local_train_metrics`)."""
    faults, policies = dict(faults or {}), dict(policies or {})

    def pid(ctx: Context) -> int:
        return int(ctx.node_config["partition-id"])

    def policy(ctx: Context) -> ProviderPolicy | None:
        f = policies.get(pid(ctx))
        return None if f is None else f()

    app = ClientApp(
        mods=[
            mod
            or make_kaires_mod(policy=policy, fault=lambda c: faults.get(pid(c)), simulation=True)
        ]
    )

    @app.train()
    def train(msg: Message, ctx: Context) -> Message:
        X, y = task.load_partition(pid(ctx), int(ctx.node_config["num-partitions"]))
        new = task.train(msg.content["arrays"].to_numpy_ndarrays(), X, y, epochs=epochs)
        metrics: dict[str, Any] = {"num-examples": len(y)}
        if train_metrics:
            loss, acc = task.evaluate(new, X, y)
            metrics.update({"train-loss": loss, "train-acc": acc})
        return Message(
            RecordDict({"arrays": ArrayRecord(new), "metrics": MetricRecord(metrics)}),
            reply_to=msg,
        )

    @app.query()
    def query(msg: Message, ctx: Context) -> Message:
        X, y = diabetes_partition(pid(ctx), int(ctx.node_config["num-partitions"]))
        return Message(
            RecordDict({"data": ArrayRecord({"X": _arr(X), "y": _arr(y)})}), reply_to=msg
        )

    return app


def _arr(a: np.ndarray) -> Any:
    from flwr.app import Array

    return Array(np.ascontiguousarray(a))


def plain_update(arrays: list[np.ndarray], pid: int, epochs: int = 5) -> np.ndarray:
    """What node ``pid`` would send a plain FedAvg server (to look for it in replies)."""
    X, y = task.load_partition(pid, NUM_NODES)
    new = task.train(arrays, X, y, epochs=epochs)
    return np.concatenate([np.ravel(a) for a in new])


def local_train_metrics(
    arrays: list[np.ndarray], pid: int, n: int = NUM_NODES, epochs: int = 5
) -> tuple[float, ...]:
    """(num-examples, train-loss, train-acc) node ``pid`` of ``n`` reports after a round."""
    X, y = task.load_partition(pid, n)
    new = task.train(arrays, X, y, epochs=epochs)
    return (len(y), *task.evaluate(new, X, y))


def plain_fedavg(arrays: list[np.ndarray], nodes: list[int]) -> list[np.ndarray]:
    """One round of FedAvg (weighted by num-examples) over ``nodes``, in plain numpy."""
    flat0 = np.concatenate([a.ravel() for a in arrays])
    ups, ws = [], []
    for p in nodes:
        ups.append(plain_update(arrays, p) - flat0)
        ws.append(len(task.load_partition(p, NUM_NODES)[1]))
    new = flat0 + np.average(ups, axis=0, weights=ws)
    return [new[:640].reshape(64, 10), new[640:]]
