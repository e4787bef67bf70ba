"""KairesFedAvg(dp=DP(ε, δ)): noisy rounds through a real ClientApp and committee, the
cumulative ε in each round's metrics, and the ledger's per-round budget debits."""

from __future__ import annotations

import flower_apps as apps
import numpy as np
import pytest
from flower_harness import LocalGrid
from flwr.app import ArrayRecord
from kaires_fl.strategies import KairesFedAvg

from kaires_fl import DP
from kaires_fl.errors import ConfigError
from kaires_fl.ledger.budgets import privacy_key
from kaires_fl.privacy.mechanism import TAIL_SHARE
from kaires_fl.simulation import LocalCommittee

N = apps.NUM_NODES


def _update_sensitivity() -> bool:
    from kaires_fl.strategies.update import ModelUpdateStats

    try:
        ModelUpdateStats(8, clip_norm=1.0, weight_cap=1.0).sensitivity()
    except ConfigError:
        return False
    return True


needs_sensitivity = pytest.mark.skipif(
    not _update_sensitivity(), reason="ModelUpdateStats states no proven sensitivity yet"
)


@pytest.fixture(scope="module")
def dp_run() -> dict:
    committee = LocalCommittee()
    grid = LocalGrid(apps.make_client_app(), N)
    s = apps.fedavg(N, committee, dp=DP(2.0, 1e-5))
    res = s.start(grid=grid, initial_arrays=ArrayRecord(apps.task.initial_arrays()), num_rounds=2)
    yield {"strategy": s, "result": res, "committee": committee}
    committee.close()


@needs_sensitivity
def test_rounds_report_the_cumulative_epsilon(dp_run: dict) -> None:
    s, res = dp_run["strategy"], dp_run["result"]
    m1, m2 = res.train_metrics_clientapp[1], res.train_metrics_clientapp[2]
    assert 0 < m1["kaires-epsilon"] <= 2.0 and m1["kaires-delta"] <= 1e-5
    # Rényi composition: two rounds cost more than one, less than twice the target
    assert m1["kaires-epsilon"] < m2["kaires-epsilon"] < 2 * 2.0
    plan = s.dp_rounds[0]
    assert len(s.dp_rounds) == 2 and s.dp_rounds[1].sigma == plan.sigma
    delta_c = 1e-5 * (1 - TAIL_SHARE)
    assert m2["kaires-epsilon"] == pytest.approx(plan.epsilon(delta_c, 2))
    assert m1["kaires-epsilon"] == pytest.approx(plan.epsilon(delta_c, 1))
    assert m2["kaires-delta"] == pytest.approx(delta_c + 2 * plan.tail)
    assert m1["kaires-accepted"] == N


@needs_sensitivity
def test_noisy_model_is_finite_and_each_round_debits_the_ledger(dp_run: dict) -> None:
    s, res, c = dp_run["strategy"], dp_run["result"], dp_run["committee"]
    arrays = res.arrays.to_numpy_ndarrays()
    assert all(np.all(np.isfinite(a)) for a in arrays)
    for r in (1, 2):
        job = s.kaires_rounds[r]["job"]
        assert job["privacy"] == {"epsilon": 2.0, "delta": 1e-5}
    pid = next(iter(s.kaires_rounds[1]["job"]["providers"]))
    spent = c.client.get(privacy_key(pid))
    assert spent["jobs"] == 2 and spent["epsilon_units"] == 4 * 10**9


def test_dp_must_be_a_dp() -> None:
    with pytest.raises(ConfigError, match=r"kaires_fl\.DP"):
        KairesFedAvg(num_examples_cap=10, dp=(1.0, 1e-6))


@needs_sensitivity
def test_a_client_whose_budget_is_spent_is_excluded_from_later_rounds() -> None:
    """Client 0's policy allows ε = 3 in total: round 1 (ε = 2) includes it, round 2 would
    exceed the budget and the ledger excludes it with a reason naming the privacy budget;
    the other clients' updates are still aggregated."""
    from kaires_fl.strategies import ProviderPolicy

    n = 4
    committee = LocalCommittee()
    try:
        app = apps.make_client_app(policies={0: lambda: ProviderPolicy(privacy_budget=(3.0, 1e-4))})
        s = apps.fedavg(n, committee, num_examples_cap=1, dp=DP(2.0, 1e-5))
        res = s.start(
            grid=LocalGrid(app, n), initial_arrays=ArrayRecord(apps.task.initial_arrays()),
            num_rounds=2,
        )  # fmt: skip
        pid0 = apps.policy_id(0)
        assert pid0 in s.kaires_rounds[1]["job"]["providers"]
        assert "privacy budget" in s.kaires_rounds[2]["job"]["excluded"][pid0]
        assert res.train_metrics_clientapp[2]["kaires-accepted"] == n - 1
        assert committee.client.get(privacy_key(pid0))["jobs"] == 1
    finally:
        committee.close()


@pytest.mark.parametrize("norm_proof", ["pine", "bits"])
def test_update_noise_blocks(norm_proof: str) -> None:
    """The update's blocks tile its output (a, ω, flags, metrics); with weight_cap = 1 the
    weight and flags take a few percent of the budget, so a's σ is below one σ for all
    (which pays for √5M against 2M); with another cap ω keeps a's σ. Both meet ε."""
    from kaires_fl.strategies.update import ModelUpdateStats

    from kaires_fl.privacy.accounting import calibrate
    from kaires_fl.privacy.mechanism import plan_noise

    L = 650
    kw = {"metrics": [("loss", 0.0, 5.0)], "norm_proof": norm_proof}
    if norm_proof == "bits":
        kw["frac_bits"] = 12
    stat = ModelUpdateStats(L, clip_norm=1.0, weight_cap=1.0, **kw)
    plan = plan_noise(DP(1.0, 1e-5), stat, 4, 1)
    a, w, flags, metric = plan.blocks
    assert (a.start, a.stop, w.stop, flags.stop, metric.stop) == (0, L, L + 1, L + 3, L + 4)
    assert metric.stop == stat.output_len
    sens = stat.sensitivity()
    one = calibrate(DP(1.0, 0.9e-5), sens["l2"], sens["l1"])
    assert a.sigma < 0.9 * one  # √(4 + 1 + 1)M → ≈ 2M·1.03
    assert flags.sigma < a.sigma / 100 and w.sigma > a.sigma
    assert plan.epsilon(0.9e-5) <= 1.0
    other = ModelUpdateStats(L, clip_norm=1.0, weight_cap=10.0, **kw)
    a2, w2, _, _ = plan_noise(DP(1.0, 1e-5), other, 4, 1).blocks
    assert w2.sigma == pytest.approx(a2.sigma)
