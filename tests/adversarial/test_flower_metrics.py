"""Flower train metrics aggregated inside the sealed updates: a client cannot push a
metric's average beyond what its own proven weight allows.

Attacker: one Flower client (its own ClientApp, its own key), sending a well-formed,
validly shared submission whose metric coordinates exceed its weight.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "strategies"))

import flower_apps as apps
from flower_harness import LocalGrid
from flwr.app import ArrayRecord

N = 5
METRICS = {"train-loss": (0.0, 5.0), "train-acc": (0.0, 1.0)}


def test_inflated_metric_is_rejected_and_moves_no_average() -> None:
    """Robustness: a client that claims every metric at its upper bound with a small
    weight (c > w) fails the check ω − c − d = 0 on shares; the committee rejects it
    (update and metrics both), and the round's metric averages are the honest clients'.
    (Before issue 12 metrics were not aggregated at all; with an unchecked coordinate the
    attacker would move train-acc by up to 1/Σw.)"""
    s = apps.fedavg(N, train_metrics=METRICS)
    app = apps.make_client_app(faults={0: "inflated_metric"}, train_metrics=True)
    result = s.start(
        grid=LocalGrid(app, N),
        initial_arrays=ArrayRecord(apps.task.initial_arrays()),
        num_rounds=1,
    )
    res = s.kaires_rounds[1]["result"]
    assert set(res.rejected) == {apps.policy_id(0)} and len(res.accepted) == N - 1
    local = np.array(
        [apps.local_train_metrics(apps.task.initial_arrays(), p, N) for p in range(1, N)]
    )
    want = np.average(local[:, 1:], axis=0, weights=local[:, 0])
    got = result.train_metrics_clientapp[1]
    assert abs(got["train-loss"] - want[0]) < 1e-3 and abs(got["train-acc"] - want[1]) < 1e-4
