"""The example's ServerApp: FedAvg swapped for ``KairesFedAvg`` on a 105,010-parameter MLP.

The ServerApp is the data consumer and the untrusted coordinator: it commits one job per
round on the Kaires ledger, relays the clients' sealed submissions to the aggregation
committee and opens only the aggregate. ``kaires-committee = "local"`` runs an in-process
committee (simulations); ``"path/to/group.toml"`` a deployed one (the ServerApp is then one
of its clients; ``kaires-client-key`` names its key file). It prints each round's accuracy
on the held-out digits and what the round cost (committee time, bytes uploaded per client).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord
from flwr.serverapp import Grid, ServerApp
from kaires_fl.strategies import CommitteeConnection, KairesFedAvg

from flower_mlp import task

app = ServerApp()
TAG = "kaires-flower-mlp"


def central_evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
    """Loss and accuracy of the global model on the held-out digits."""
    X, y = task.test_set()
    loss, acc = task.evaluate(arrays.to_numpy_ndarrays(), X, y)
    print(f"{TAG}: round {server_round} accuracy {acc:.4f}")
    return MetricRecord({"loss": loss, "accuracy": acc})


def _upload_bytes(reply: Message) -> int:
    """Bytes of a reply's byte values: the CALYPSO write, the signed manifest and each
    aggregator's sealed measurement and proof part (``kaires_mod``'s reply record)."""
    total = 0
    for rec in reply.content.config_records.values():
        for v in rec.values():
            parts = v if isinstance(v, list) else [v]
            total += sum(len(b) for b in parts if isinstance(b, bytes))
    return total


class MeasuredKairesFedAvg(KairesFedAvg):
    """KairesFedAvg that records the bytes of the sealed replies it relays per round."""

    upload_bytes: dict[int, list[int]]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        sizes = [_upload_bytes(m) for m in replies if m.has_content()]
        self.upload_bytes = {**getattr(self, "upload_bytes", {}), server_round: sizes}
        return super().aggregate_train(server_round, replies)


@app.main()
def main(grid: Grid, context: Context) -> None:
    rc = context.run_config
    nodes = int(rc.get("min-train-nodes", 4))
    strategy = MeasuredKairesFedAvg(
        fraction_evaluate=0.0,
        min_train_nodes=nodes,
        min_available_nodes=nodes,
        committee=CommitteeConnection.from_run_config(rc),
        clip_norm=float(rc.get("clip-norm", 5.0)),
        num_examples_cap=float(rc.get("num-examples-cap", 512)),
    )
    print(f"{TAG}: {task.N_PARAMS} parameters, {nodes} providers")
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(task.initial_arrays()),
        num_rounds=int(rc.get("num-server-rounds", 3)),
        train_config=ConfigRecord({"lr": float(rc.get("lr", 0.05))}),
        evaluate_fn=central_evaluate,
    )
    committee = strategy.committee.committee
    print(f"{TAG}: committee {type(committee).__name__}")
    for r, info in sorted(strategy.kaires_rounds.items()):
        res = info.get("result")
        if res is None:
            continue
        sizes = strategy.upload_bytes.get(r) or [0]
        print(
            f"{TAG}: round {r} {res.status}, {len(res.accepted)} accepted, committee "
            f"{sum(res.timings.values()):.2f} s, {np.mean(sizes) / task.N_PARAMS:.1f} bytes "
            "uploaded per parameter per client"
        )
    final = result.evaluate_metrics_serverapp[max(result.evaluate_metrics_serverapp)]
    print(f"{TAG}: final accuracy {final['accuracy']:.4f}")
    if rc.get("final-model"):
        np.savez(str(rc["final-model"]), *result.arrays.to_numpy_ndarrays())
    committee.ledger.verify()
