"""The PINE norm proof of model updates (``ModelUpdateStats(norm_proof="pine")``, the default
of KairesFedAvg): the weighted circuit's statement, equality with the bit-decomposition
circuit, and the Flower path on the in-process grid (equal models, over-norm and wraparound
clients rejected)."""

from __future__ import annotations

import flower_apps as apps
import numpy as np
import pytest
from flower_harness import LocalGrid
from flwr.app import ArrayRecord
from kaires_fl.strategies import KairesFedAvg
from kaires_fl.strategies import update as upd
from kaires_fl.strategies.update import ModelUpdateStats, WeightedL2BoundPine

from kaires_fl.arith.field import Field64
from kaires_fl.arith.flp import FlpBBCGGI19
from kaires_fl.errors import ConfigError

F = Field64
P = F.MODULUS
N = apps.NUM_NODES


def test_pine_and_bits_aggregate_the_same() -> None:
    rng = np.random.default_rng(0)
    deltas = rng.normal(size=(4, 500)) * 0.02
    deltas[0] *= 1000  # clipped
    out = {}
    for proof in ("pine", "bits"):
        stat = ModelUpdateStats(
            500,
            clip_norm=1.0,
            weight_cap=8,
            frac_bits=16,
            metrics=[("loss", 0, 4)],
            norm_proof=proof,
        )
        c = stat.circuit
        flp = FlpBBCGGI19(c)
        total = None
        for i, d in enumerate(deltas):
            meas = stat.measurements(d, 3 + 2 * i, {"loss": 1.0 + i})
            jr = flp.derive_joint_rand(bytes([i]) * 32)
            proof_ = flp.prove(meas, flp.random_prove_rand((1,)), jr)
            assert flp.decide(flp.query(meas, proof_, flp.derive_query_rand(b"q" * 32), jr))[0]
            o = c.truncate(meas)
            total = o if total is None else F.add(total, o)
        out[proof] = stat.decode(total[0], 4)
    np.testing.assert_array_equal(out["pine"]["sum"], out["bits"]["sum"])
    assert out["pine"]["weight"] == out["bits"]["weight"]
    assert out["pine"]["clipped"] == out["bits"]["clipped"] == 1
    assert out["pine"]["metrics"] == out["bits"]["metrics"]
    assert stat.params()["norm_proof"] == "bits"
    with pytest.raises(ConfigError, match="norm_proof"):
        ModelUpdateStats(10, norm_proof="bytes")


def test_pine_is_the_default_and_compact() -> None:
    stat = ModelUpdateStats(100_000)
    assert isinstance(stat.circuit, WeightedL2BoundPine) and stat.frac_bits == 20
    flp = FlpBBCGGI19(stat.circuit)
    assert (flp.MEAS_LEN + flp.PROOF_LEN) / 100_000 < 1.1
    bits = FlpBBCGGI19(ModelUpdateStats(100_000, norm_proof="bits").circuit)
    assert (bits.MEAS_LEN + bits.PROOF_LEN) / 100_000 > 17


def test_forged_pine_updates_are_refused_by_the_circuit() -> None:
    stat = ModelUpdateStats(64, clip_norm=1.0, weight_cap=10.0, metrics=[("loss", 0, 1)])
    c = stat.circuit
    # A fixed joint randomness: each forgery fails a deterministic check (norm, weight,
    # metric) or all 129 wraparound checks at once (chance of passing 2^-129 per seed).
    jr = F.from_seed(b"forged updates" * 2, (1, c.JOINT_RAND_LEN), b"test")
    for forged in (
        upd.over_norm_measurements(stat),
        upd.underweight_measurements(stat, np.ones(64)),
        upd.inflated_metric_measurements(stat, np.ones(64) * 0.01, 1.0, {"loss": 0.5}),
        upd.wraparound_measurements(stat),
    ):
        assert forged.shape == (1, c.MEAS_LEN)
        assert not bool(c.check(forged, jr)[0])
    # the wraparound one satisfies every check but the wraparound ones
    unchecked = WeightedL2BoundPine(64, 20, flags=2, metrics=1, checks=0)
    ujr = np.concatenate([jr[:, : unchecked.bit_calls], jr[:, -4:]], axis=1)
    assert bool(unchecked.check(upd.wraparound_measurements(stat), ujr)[0])


def _run(strategy: KairesFedAvg, grid: LocalGrid, rounds: int) -> list[np.ndarray]:
    res = strategy.start(
        grid=grid, initial_arrays=ArrayRecord(apps.task.initial_arrays()), num_rounds=rounds
    )
    return res.arrays.to_numpy_ndarrays()


@pytest.mark.parametrize("forge", ["over_norm", "wraparound"])
def test_flower_round_equals_fedavg_and_rejects_the_forged_client(
    forge: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """KairesFedAvg (PINE, the default) on the example app's task through a real ClientApp:
    client 0 forges its update (over the norm, or a wraparound vector that satisfies the
    field equation), is rejected in both rounds, and the model is plain FedAvg over the
    other clients within the fixed-point step."""
    if forge == "wraparound":
        monkeypatch.setattr(upd, "over_norm_measurements", upd.wraparound_measurements)
    s = apps.fedavg(N)
    grid = LocalGrid(apps.make_client_app(faults={0: "over_norm"}), N)
    final = _run(s, grid, 2)
    for r in (1, 2):
        res = s.kaires_rounds[r]["result"]
        assert set(res.rejected) == {apps.policy_id(0)} and len(res.accepted) == N - 1
    assert isinstance(s.kaires_rounds[1]["statistic"].circuit, WeightedL2BoundPine)
    arrays = apps.task.initial_arrays()
    for _ in range(2):
        arrays = apps.plain_fedavg(arrays, list(range(1, N)))
    for a, b in zip(final, arrays, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_flower_round_bits_and_pine_give_the_same_model() -> None:
    finals = {}
    for proof in ("pine", "bits"):
        s = apps.fedavg(N, norm_proof=proof)
        finals[proof] = _run(s, LocalGrid(apps.make_client_app(), N), 1)
    want = apps.plain_fedavg(apps.task.initial_arrays(), list(range(N)))
    for a, b, w in zip(finals["pine"], finals["bits"], want, strict=True):
        np.testing.assert_array_equal(a, b)  # same fixed-point sums, same model
        np.testing.assert_allclose(a, w, atol=1e-4)
