"""The ≥ 100k-parameter Flower example (``examples/flower-mlp``): a numpy MLP on the digits
with ``KairesFedAvg`` (issue 11).

The fast test runs one round in-process (:class:`flower_harness.LocalGrid`, messages
serialised as over the wire) and compares it with plain FedAvg of the same clients'
updates; the slow one runs the example's ServerApp and ClientApp through Flower's
simulation engine (Ray), as ``flwr run`` would.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
from flower_harness import LocalGrid
from flwr.app import ArrayRecord, ConfigRecord
from kaires_fl.strategies import KairesFedAvg

from kaires_fl.simulation import LocalCommittee

APP_DIR = Path(__file__).resolve().parents[2] / "examples" / "flower-mlp"
if str(APP_DIR) not in sys.path:
    sys.path.insert(0, str(APP_DIR))

task = importlib.import_module("flower_mlp.task")

NODES = 4
CLIP_NORM = 5.0
CAP = 512
LR = 0.05


def _plain_fedavg_round(arrays: list[np.ndarray], server_round: int) -> list[np.ndarray]:
    """One round of FedAvg (weighted by num-examples) over the example's clients, in plain
    numpy, with the handler's training (same seeds, epochs and learning rate)."""
    news, weights = [], []
    for pid in range(NODES):
        X, y = task.load_partition(pid, NODES)
        news.append(task.train(arrays, X, y, epochs=2, lr=LR, seed=1000 * server_round + pid))
        weights.append(len(y))
    return [np.average([n[i] for n in news], axis=0, weights=weights) for i in range(len(arrays))]


def test_the_model_has_at_least_100k_parameters() -> None:
    arrays = task.initial_arrays()
    assert sum(a.size for a in arrays) == task.N_PARAMS >= 100_000


def test_one_round_equals_plain_fedavg_within_the_fixed_point_bound() -> None:
    """One KairesFedAvg round of the example's 105,010-parameter MLP over 4 providers (each
    proves its update bounded; n = 4 aggregators, t = 1) equals FedAvg of the same updates
    within the fixed-point bound C·2^-f per parameter, and no update is clipped."""
    client_app = importlib.import_module("flower_mlp.client_app")
    grid = LocalGrid(client_app.app, NODES)
    strategy = KairesFedAvg(
        fraction_evaluate=0.0,
        min_available_nodes=NODES,
        min_train_nodes=NODES,
        committee=LocalCommittee(),
        clip_norm=CLIP_NORM,
        num_examples_cap=CAP,
    )
    init = task.initial_arrays()
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(init),
        num_rounds=1,
        train_config=ConfigRecord({"lr": LR}),
    )
    res = strategy.kaires_rounds[1]["result"]
    assert res.status == "done" and len(res.accepted) == NODES and not res.rejected
    assert res.aggregate["clipped"] == 0 and res.aggregate["capped"] == 0
    stat = strategy.kaires_rounds[1]["statistic"]
    assert stat.length == task.N_PARAMS
    got = result.arrays.to_numpy_ndarrays()
    want = _plain_fedavg_round(init, 1)
    bound = CLIP_NORM * 2.0**-stat.frac_bits
    err = max(float(np.max(np.abs(g - w))) for g, w in zip(got, want, strict=True))
    assert err <= bound, (err, bound)
    # the round moved the model (a no-op aggregate would fail above only if updates were tiny)
    moved = max(float(np.max(np.abs(w - a))) for w, a in zip(want, init, strict=True))
    assert moved > 100 * bound
    # and the server saw no client's arrays, only the aggregate
    replies = [m for m in grid.received if m.has_content()]
    assert replies and all(not m.content.array_records for m in replies)


@pytest.mark.slow
def test_example_app_runs_in_the_simulation_engine(capfd: pytest.CaptureFixture[str]) -> None:
    """The example app through Flower's simulation engine (4 supernodes, 3 rounds): every
    provider accepted every round, the held-out accuracy is printed and sensible.

    ``flwr run .`` needs a SuperLink process; the test runs the same ServerApp and
    ClientApp objects with ``run_simulation`` (docs/flower.md)."""
    from flwr.simulation import run_simulation

    server = importlib.import_module("flower_mlp.server_app").app
    client = importlib.import_module("flower_mlp.client_app").app
    run_simulation(
        server,
        client,
        num_supernodes=NODES,
        backend_config={"client_resources": {"num_cpus": 1}, "init_args": {"num_cpus": 2}},
    )
    text = capfd.readouterr().out
    for r in (1, 2, 3):
        assert f"kaires-flower-mlp: round {r} done, {NODES} accepted" in text, text[-3000:]
    assert "bytes uploaded per parameter per client" in text
    acc = float(text.split("kaires-flower-mlp: final accuracy")[1].split()[0])
    assert acc > 0.85
