"""The soak run, short: a 4-process committee runs jobs while one node is SIGKILLed and
restarted with ``kaires node run`` (``kaires_fl.bench.soak``; the 10-minute run is
``kaires bench --only soak``).

Steady on a loaded machine: the committee's ports are chosen free at run time, readiness
is polled (``committee up``, the final ledger check), deadlines are generous, and every
node process is stopped in a ``finally`` inside the soak.
"""

from __future__ import annotations

import math

import pytest

from kaires_fl.bench import soak


@pytest.mark.slow
def test_short_soak_one_kill_every_job_right_or_refused_ledgers_identical(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Fault tolerance: while node-0 is SIGKILLed mid-run and restarted, every job ends
    done with numpy's model or refused with a reason (none wrong, none failing
    otherwise); afterwards the four nodes' chains are identical (same height, same block
    hashes) and memory figures are reported. Parameters come from the environment, as
    for ``kaires bench --only soak``."""
    monkeypatch.setenv("KAIRES_SOAK_MINUTES", "0.3")  # 18 s of jobs
    monkeypatch.setenv("KAIRES_SOAK_JOBS", "3")
    monkeypatch.setenv("KAIRES_SOAK_KILL_EVERY", "16")  # kill at 8 s, restart at 16 s
    out = soak.run()
    assert out["soak_kills"] == 1
    assert out["soak_jobs"] >= 3
    assert out["soak_wrong_results"] == 0
    assert out["soak_unexplained_failures"] == 0
    assert out["soak_jobs_done"] + out["soak_jobs_refused"] == out["soak_jobs"]
    assert out["soak_jobs_done"] >= 1
    assert out["soak_ledgers_identical"] == 1
    assert out["soak_s"] >= 18
    assert math.isfinite(out["soak_rss_growth_mb"]) and out["soak_node_rss_mb"] > 0


def test_reference_model_is_least_squares_with_intercept() -> None:
    """Correctness of the soak's oracle: numpy's model recovers the generating
    coefficients of a noiseless job and a wrong model is beyond RTOL."""
    import numpy as np

    X, _ = soak.job_data(3)
    w = np.arange(1.0, X.shape[1] + 1)
    ref = soak.reference_model(X, X @ w + 2.5)
    assert np.allclose(ref, np.append(w, 2.5), rtol=1e-12, atol=1e-10)
    wrong = ref.copy()
    wrong[0] *= 1 + 1e-4
    assert np.max(np.abs(wrong - ref)) / np.max(np.abs(ref)) > soak.RTOL


def test_warm_growth_measures_from_the_end_of_the_warm_up() -> None:
    """The memory figure leaves out a lifetime's warm-up (its first WARMUP of samples) and
    lifetimes too short to say anything: a process that grows only while warming up is
    flat; one that keeps growing is not."""
    warm_then_flat = [100.0, 180.0, 200.0, 200.0, 200.0, 200.0, 200.0, 200.0, 200.0, 200.0]
    assert soak.warm_growth(warm_then_flat) == 0.0  # baseline: sample 2 (20 % of 10)
    assert soak.warm_growth([100.0, 180.0, 190.0] + [200.0] * 7) == 10.0
    growing = [100.0 + 10 * k for k in range(10)]
    assert soak.warm_growth(growing) == 70.0
    assert soak.warm_growth([100.0, 500.0, 900.0]) is None  # fewer than MIN_SAMPLES
    life = soak._Lifetimes(samples={1: growing, 2: warm_then_flat, 3: [1.0, 999.0]})
    assert life.growth() == 70.0
    assert soak._Lifetimes().growth() == 0.0
