"""Benchmarks of the FLP (issue 2): SumVec prove/query and batched linear-regression checks.

* ``flp_sumvec1000_prove_ms`` / ``flp_sumvec1000_query_ms``: SumVec(length 1000, bits 1,
  default chunk ≈ √1000), one proof, one measurement (what a provider / one aggregator
  spends per submission). Targets ≤ 2 ms and ≤ 1 ms.
* ``linreg_record_verify_per_s``: LinearRegressionRecord(d=14, bits=14) records verified
  per second by one aggregator — ``query`` on its share plus ``decide`` on the opened
  verifier — batched, one query point and one joint randomness for the batch, the default
  number of proofs (``choose_proofs``: soundness ≤ 2^-64 against 2^64 offline hash
  evaluations, 3 over Field64 for any circuit with joint randomness; ``linreg_proofs``).
  Target ≥ 50,000/s.
* ``linreg_record_verify_cpu_per_s``: the same from the process's CPU time, which equals the
  wall time on an idle core and stays meaningful on a shared, loaded machine.
* ``linreg_record_prove_per_s``: the provider's side, for scale.

Every figure is the compiled (numba) kernels' steady state: the bench switches the tiered
kernels to numba while it measures (a cold process first runs small calls on their numpy
twins, :mod:`kaires_fl.arith._kernels`; ``demo_cold_s`` measures that start).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from kaires_fl.arith import _kernels as kern
from kaires_fl.arith.circuits import LinearRegressionRecord, SumVec
from kaires_fl.arith.field import Field64
from kaires_fl.arith.flp import FlpBBCGGI19
from kaires_fl.bench import best_time


def cpu_time(fn: Callable[[], Any], repeat: int = 5) -> float:
    """Best CPU time (process time, seconds) of one call of ``fn`` over ``repeat`` runs."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def run(quick: bool = False) -> dict[str, float]:
    previous = kern.set_tiering("numba")
    try:
        return _measure(quick)
    finally:
        kern.set_tiering(previous)


def _measure(quick: bool) -> dict[str, float]:
    F = Field64
    rng = np.random.default_rng(1)
    out: dict[str, float] = {}

    sv = FlpBBCGGI19(SumVec(1000, 1), proofs=1)
    meas = sv.valid.encode(rng.integers(0, 2, 1000))
    jr = F.random((sv.JOINT_RAND_LEN,))
    qr = sv.derive_query_rand(b"bench")
    pr = sv.random_prove_rand()
    proof = sv.prove(meas, pr, jr)
    rep = 5 if quick else 30
    out["flp_sumvec1000_prove_ms"] = 1e3 * best_time(lambda: sv.prove(meas, pr, jr), rep)
    out["flp_sumvec1000_query_ms"] = 1e3 * best_time(lambda: sv.query(meas, proof, qr, jr), rep)

    lr = FlpBBCGGI19(LinearRegressionRecord(14, 14))
    B = 2048 if quick else 8192
    meas = lr.valid.encode(rng.integers(0, 2**14, (B, 15)))
    jr = F.random((lr.JOINT_RAND_LEN,))
    qr = lr.derive_query_rand(b"bench")
    proof = lr.prove(meas, lr.random_prove_rand((B,)), jr)

    def verify() -> None:
        if not lr.decide(lr.query(meas, proof, qr, jr)).all():
            raise AssertionError("benchmark batch rejected")

    verify()
    out["linreg_record_verify_per_s"] = B / best_time(verify, 2 if quick else 5)
    out["linreg_record_verify_cpu_per_s"] = B / cpu_time(verify, 2 if quick else 5)
    out["linreg_record_prove_per_s"] = B / best_time(
        lambda: lr.prove(meas, lr.random_prove_rand((B,)), jr), 1 if quick else 3
    )
    out["linreg_proofs"] = float(lr.proofs)
    return out
