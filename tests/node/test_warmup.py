"""The node's kernel warm-up (kaires_fl.node.warmup): a real tiny job, checked."""

from __future__ import annotations

import logging
import os
import time

import numpy as np
import pytest

from kaires_fl.node import warmup
from kaires_fl.simulation import LocalCommittee


def _signatures() -> dict[str, int]:
    """Compiled specialisations of every numba kernel of the field and FLP modules."""
    from numba.core.dispatcher import Dispatcher

    from kaires_fl.arith import _kernels, field, flp, pine, poly

    out = {}
    for mod in (_kernels, field, flp, pine, poly):
        for name, obj in vars(mod).items():
            kernel = getattr(obj, "kernel", obj)  # a Tiered kernel, or a plain one
            if isinstance(kernel, Dispatcher):
                out[f"{mod.__name__}.{name}"] = len(kernel.signatures)
    return out


@pytest.mark.skipif(
    os.environ.get("KAIRES_KERNELS") == "numpy", reason="kernels forced to their numpy twins"
)
def test_warm_kernels_compiles_what_a_job_calls_and_then_jobs_compile_nothing() -> None:
    """The warm-up jobs run (their sums equal numpy's), leave no kernel they called cold,
    and the next linear-regression job, of another size, compiles nothing: no numba
    kernel gains a specialisation."""
    assert warmup.warm_kernels() > 0.0
    assert warmup.used_cold_kernels() == []
    before = _signatures()
    assert sum(before.values()) > 0  # kernels were compiled (or loaded from the cache)
    from kaires_fl.statistics import LinearRegressionStats

    rng = np.random.default_rng(1)
    X = rng.uniform(-1, 1, size=(200, 6))
    y = X @ rng.normal(size=6)
    stat = LinearRegressionStats(6, [-1.0, 1.0], [-8.0, 8.0], max_rows=100)
    data = {f"p{i}": (X[i * 50 : (i + 1) * 50], y[i * 50 : (i + 1) * 50]) for i in range(4)}
    LocalCommittee().run_job(stat, data)
    assert _signatures() == before
    assert warmup.used_cold_kernels() == []


def test_a_wrong_warm_up_result_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injection: a committee whose aggregate is off by one unit of XᵀX fails the
    warm-up's check (a node must say its install computes wrongly)."""
    real = LocalCommittee.run_job

    def tampered(self: LocalCommittee, *args: object, **kwargs: object) -> object:
        result = real(self, *args, **kwargs)
        result.aggregate["xtx"] = result.aggregate["xtx"] + 1e-6
        return result

    monkeypatch.setattr(LocalCommittee, "run_job", tampered)
    with pytest.raises(RuntimeError, match="differ from numpy"):
        warmup.warm_kernels()


def _join(thread: object) -> None:
    thread.join(timeout=120)  # type: ignore[attr-defined]
    assert not thread.is_alive()  # type: ignore[attr-defined]


def test_start_warmup_logs_its_outcome(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The thread logs one line: the seconds it took, or the failure (never raised: the
    node serves without the warm-up)."""
    caplog.set_level(logging.INFO, logger="kaires_fl.node.warmup")
    monkeypatch.setattr(warmup, "warm_kernels", lambda: 0.25)
    _join(warmup.start_warmup("node-7"))
    assert "node node-7: kernels warm (0.25 s)" in caplog.text

    def broken() -> float:
        time.sleep(0.01)
        raise RuntimeError("no compiler")

    monkeypatch.setattr(warmup, "warm_kernels", broken)
    _join(warmup.start_warmup("node-7"))
    assert "node node-7: kernel warm-up failed: RuntimeError: no compiler" in caplog.text
