"""Field benchmarks: Field64 multiply against plain numpy uint64, and a 1024-point NTT.

Targets (issue 2): ``field64_mul_ratio`` ≥ 0.5 and ``field64_mul_per_s`` ≥ 200 M/s on one
core. Both multiplies run on the same 1M-element arrays in the same run; the Field64
multiply is exact modulo p, numpy's wraps modulo 2^64.
"""

from __future__ import annotations

import numpy as np

from kaires_fl.arith.field import Field64
from kaires_fl.arith.poly import ntt
from kaires_fl.bench import best_time

N_MUL = 1_000_000


def run(quick: bool = False) -> dict[str, float]:
    """Measure the field metrics (``quick`` uses fewer repetitions, same sizes)."""
    repeat = 5 if quick else 15
    rng = np.random.default_rng(2026)
    a = Field64.random(N_MUL, rng=rng)
    b = Field64.random(N_MUL, rng=rng)
    out = np.empty_like(a)
    Field64.mul(a, b)  # compile / load the cached kernel outside the timing
    np.multiply(a, b, out=out)
    t_field = best_time(lambda: Field64.mul(a, b), repeat=repeat)
    t_numpy = best_time(lambda: np.multiply(a, b), repeat=repeat)
    x = Field64.random(1024, rng=rng)
    ntt(Field64, x)
    t_ntt = best_time(lambda: ntt(Field64, x), repeat=repeat, number=20)
    return {
        "field64_mul_per_s": N_MUL / t_field,
        "numpy_u64_mul_per_s": N_MUL / t_numpy,
        "field64_mul_ratio": t_numpy / t_field,
        "field64_ntt_1024_us": t_ntt * 1e6,
    }
