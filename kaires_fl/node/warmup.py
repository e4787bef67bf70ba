"""Kernel warm-up of a node process: jobs must not pay for numba on the event loop.

A fresh ``kaires node run`` process has not yet imported the statistics, and its field
kernels are cold: small calls run their numpy twins and a kernel that is not in numba's
on-disk cache compiles on its first large call or once its twin has run
``TWIN_HOT_CALLS`` calls (:class:`kaires_fl.arith._kernels.Tiered`; a cached one loads on
a background thread from its first call) — in a node, in the middle of some job, on the
thread that drives consensus. A node therefore warms up once it
is ready, on a background thread:

1. it runs one tiny job — a 4-provider linear regression on 40 synthetic rows — through a
   throwaway in-process :class:`~kaires_fl.simulation.LocalCommittee` (its own in-memory
   ledger, trustees and aggregators with throwaway keys: nothing of the node's keys,
   ledger or network is touched), checked against numpy; this imports what a job needs
   and marks which tiered kernels the job path calls;
2. it makes those kernels hot and runs the job again: they compile on this thread (a
   kernel is typed by dtype and dimension, not size, so this covers jobs of every size).

Why a thread after readiness: compiling holds the GIL in numba's front end (≈ 0.3 s of
CPU with a warm numba cache, seconds with a cold one); before readiness it would lengthen
``committee up`` (``committee_up_s``), whereas after it the node's event loop keeps
running between the compiler's GIL releases (the ledger's view timeouts absorb the
delay). A job arriving meanwhile that calls a kernel being compiled waits for numba's
compiler lock — at most what it would have paid compiling the kernel itself.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np

log = logging.getLogger("kaires_fl.node.warmup")

#: Rows and features of the warm-up job (small: its only purpose is to run every kernel).
ROWS, FEATURES, PROVIDERS = 40, 3, 4


def warm_kernels() -> float:
    """Run the warm-up (module docstring: a tiny checked job, its cold kernels made hot,
    the job again); returns the seconds it took.

    Post: the statistics modules are imported and every tiered kernel a linear-regression
    job calls is hot and compiled (or loaded from numba's cache).

    Raises
    ------
    RuntimeError
        if the job's sums XᵀX, Xᵀy differ from numpy's (beyond the fixed-point rounding):
        a broken install, which the node's log then says.
    """
    t0 = time.perf_counter()
    from kaires_fl.simulation import LocalCommittee
    from kaires_fl.statistics import LinearRegressionStats

    rng = np.random.default_rng(0)
    X = rng.uniform(-1.0, 1.0, size=(ROWS, FEATURES))
    y = X @ np.array([1.0, -2.0, 0.5]) + 0.25
    stat = LinearRegressionStats(FEATURES, [-1.0, 1.0], [-4.0, 4.0], max_rows=ROWS)
    blocks = np.array_split(np.arange(ROWS), PROVIDERS)
    data = {f"warm-{i}": (X[b], y[b]) for i, b in enumerate(blocks)}
    _check(LocalCommittee().run_job(stat, data).aggregate, X, y)
    for kernel in used_cold_kernels():
        kernel.hot = True
    _check(LocalCommittee().run_job(stat, data).aggregate, X, y)
    return time.perf_counter() - t0


def used_cold_kernels() -> list[Any]:
    """The tiered kernels this process has called through their numpy twin only."""
    from kaires_fl.arith import _kernels

    tiered = getattr(_kernels, "_TIERED", ())  # empty where kernels are not tiered
    return [k for k in tiered if k.calls and not k.hot]


def _check(agg: Any, X: np.ndarray, y: np.ndarray) -> None:
    """Raise RuntimeError unless the aggregate's n, XᵀX, Xᵀy are numpy's (up to the
    fixed-point rounding of the statistic: 1e-9 absolute on these magnitudes)."""
    exact = (X.T @ X, X.T @ y)
    if agg["n"] != len(X) or not all(
        np.allclose(got, ref, rtol=0.0, atol=1e-9)
        for got, ref in zip((agg["xtx"], agg["xty"]), exact, strict=True)
    ):
        raise RuntimeError("the warm-up job's sums differ from numpy's: this install is broken")


def start_warmup(name: str) -> threading.Thread:
    """Start :func:`warm_kernels` on a daemon thread; its outcome is one log line.

    A failure is logged, never raised: the node serves jobs anyway (it compiles on the
    first one, as without the warm-up).
    """

    def run() -> None:
        try:
            seconds = warm_kernels()
        except Exception as exc:  # logged: the warm-up is an optimisation, not a service
            log.warning("node %s: kernel warm-up failed: %s: %s", name, type(exc).__name__, exc)
        else:
            log.info("node %s: kernels warm (%.2f s)", name, seconds)

    thread = threading.Thread(target=run, name=f"kaires-warmup-{name}", daemon=True)
    thread.start()
    return thread
