"""Benchmark of the Flower integration (``kaires_fl.strategies``).

- ``flower_round_overhead``: wall time of one ``KairesFedAvg`` round divided by one plain
  ``FedAvg`` round, in the same Flower simulation (Ray, 2 CPUs): 10 clients, a
  10,000-parameter softmax-regression model (999 features × 10 classes + 10 biases), each
  client training 5 full-batch epochs on 200 local rows. The same train handler answers
  both strategies (``train`` with ``kaires_mod``, ``train.plain`` without). Round time =
  configure_train → aggregate_train done; the median over the 10 rounds after the first
  (warm-up: Ray actors import the cryptography and load compiled kernels). Target ≤ 1.3.
- ``flower_plain_round_s`` / ``flower_kaires_round_s``: those two medians (seconds).
- ``flower_kaires_committee_s``: of the Kaires round, the time spent in the committee
  (ledger job and writes, key release, verification, aggregation, result).
- ``flower_plain_wait_s`` / ``flower_kaires_wait_s``: of those rounds, the median time
  from the end of ``configure_train`` to the start of ``aggregate_train`` (Flower pushes
  the messages, the clients run, the Grid collects the replies): Flower's simulation
  engine moves messages every 0.1 s and the Grid looks for replies every 0.1 s, so this is
  close to a multiple of 0.1 s (docs/flower.md, *Round time in the simulation*);
  ``flower_kaires_server_s``: the median of the rest of a Kaires round (``configure_train``
  + ``aggregate_train``: the job's commit, the committee, the result).

Importing this module imports nothing of Flower; ``run`` does.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import numpy as np

N_CLIENTS = 10
N_FEATURES = 999
N_CLASSES = 10
ROWS = 200
#: Ray's setting of its workers' niceness (lower-case, as Ray reads it).
RAY_NICENESS = "RAY_worker_niceness"


def _data(pid: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1000 + pid)
    X = rng.normal(size=(ROWS, N_FEATURES)) / np.sqrt(N_FEATURES)
    y = rng.integers(0, N_CLASSES, size=ROWS)
    return X, y


def _train(arrays: list[np.ndarray], X: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    W, b = (np.array(a, dtype=np.float64) for a in arrays)
    Y = np.eye(N_CLASSES)[y]
    for _ in range(5):
        Z = X @ W + b
        Z -= Z.max(axis=1, keepdims=True)
        P = np.exp(Z)
        P /= P.sum(axis=1, keepdims=True)
        G = (P - Y) / len(y)
        W -= 0.5 * (X.T @ G)
        b -= 0.5 * G.sum(axis=0)
    return [W, b]


def _client_app() -> Any:
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    from kaires_fl.strategies import make_kaires_mod

    kaires_mod = make_kaires_mod(simulation=True)  # a simulation: trust on first use
    app = ClientApp()

    def train(msg: Message, ctx: Context) -> Message:
        X, y = _data(int(ctx.node_config["partition-id"]))
        new = _train(msg.content.array_records["arrays"].to_numpy_ndarrays(), X, y)
        return Message(
            RecordDict(
                {"arrays": ArrayRecord(new), "metrics": MetricRecord({"num-examples": len(y)})}
            ),
            reply_to=msg,
        )

    app.train(mods=[kaires_mod])(train)
    app.train("plain")(train)
    return app


def _timed(strategy_cls: type) -> type:
    """``strategy_cls`` recording each round's configure → aggregate wall time
    (``round_times``) and its part between ``configure_train`` returning and
    ``aggregate_train`` being called (``wait_times``: Flower's delivery and the clients)."""

    class Timed(strategy_cls):
        round_times: list[float]
        wait_times: list[float]

        def configure_train(self, server_round: int, *a: Any, **kw: Any) -> Any:
            self._t0 = time.perf_counter()
            out = super().configure_train(server_round, *a, **kw)
            self._t1 = time.perf_counter()
            return out

        def aggregate_train(self, server_round: int, replies: Any) -> Any:
            t2 = time.perf_counter()
            out = super().aggregate_train(server_round, replies)
            self.round_times = [*getattr(self, "round_times", []), time.perf_counter() - self._t0]
            self.wait_times = [*getattr(self, "wait_times", []), t2 - self._t1]
            return out

    return Timed


def run(quick: bool) -> dict[str, float]:
    """Run both strategies in one simulation; ``quick`` uses fewer rounds."""
    import logging

    from flwr.app import ArrayRecord, Context, RecordDict
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation

    from kaires_fl.strategies import KairesFedAvg

    class PlainFedAvg(FedAvg):
        def _construct_messages(self, record: RecordDict, node_ids: list[int], mtype: str) -> Any:
            return super()._construct_messages(record, node_ids, f"{mtype}.plain")

    rounds = 3 if quick else 11  # 10 measured: the 0.1 s poll phase varies per round
    out: dict[str, Any] = {}
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        init = ArrayRecord([np.zeros((N_FEATURES, N_CLASSES)), np.zeros(N_CLASSES)])
        kw = {"fraction_evaluate": 0.0, "min_available_nodes": N_CLIENTS}
        kw["min_train_nodes"] = N_CLIENTS
        plain = _timed(PlainFedAvg)(**kw)
        plain.start(grid=grid, initial_arrays=init, num_rounds=rounds)
        kaires = _timed(KairesFedAvg)(**kw, num_examples_cap=1024)
        kaires.start(grid=grid, initial_arrays=init, num_rounds=rounds)
        out["plain"], out["kaires"] = plain.round_times, kaires.round_times
        out["plain_wait"], out["kaires_wait"] = plain.wait_times, kaires.wait_times
        out["committee"] = [
            sum(kaires.kaires_rounds[r]["result"].timings.values())
            + sum(kaires.kaires_rounds[r]["timings"].values())
            for r in range(2, rounds + 1)
        ]

    level = logging.getLogger("flwr").level
    logging.getLogger("flwr").setLevel(logging.WARNING)
    # Ray starts its workers (the ClientApp actors) at niceness 15: beside any other busy
    # process they would get a few percent of a core, and the figures would measure that
    # process (docs/flower.md, *Simulation under load*). Both strategies run alike.
    niceness = os.environ.get(RAY_NICENESS)
    os.environ[RAY_NICENESS] = "0"
    try:
        run_simulation(
            server,
            _client_app(),
            num_supernodes=N_CLIENTS,
            backend_config={"client_resources": {"num_cpus": 1}, "init_args": {"num_cpus": 2}},
        )
    finally:
        logging.getLogger("flwr").setLevel(level)
        if niceness is None:
            os.environ.pop(RAY_NICENESS, None)
        else:
            os.environ[RAY_NICENESS] = niceness
    plain_s = statistics.median(out["plain"][1:])
    kaires_s = statistics.median(out["kaires"][1:])
    server_s = [r - w for r, w in zip(out["kaires"][1:], out["kaires_wait"][1:], strict=True)]
    return {
        "flower_round_overhead": kaires_s / plain_s,
        "flower_plain_round_s": plain_s,
        "flower_kaires_round_s": kaires_s,
        "flower_kaires_committee_s": statistics.median(out["committee"]),
        "flower_plain_wait_s": statistics.median(out["plain_wait"][1:]),
        "flower_kaires_wait_s": statistics.median(out["kaires_wait"][1:]),
        "flower_kaires_server_s": statistics.median(server_s),
    }
