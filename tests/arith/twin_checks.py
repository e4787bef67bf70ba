"""Shared checks of the numpy twins against their numba kernels (for the kernel tests)."""

from __future__ import annotations

from typing import Any

import numpy as np

from kaires_fl.arith import _kernels as kern
from kaires_fl.arith.field import Field64

p = Field64.MODULUS
#: Values where a Field64 reduction goes wrong first.
EDGES = [0, 1, 2, p - 1, p - 2, 2**32 - 1, 2**32, 2**32 + 1, 2**63, 2**64 - 2**33, p // 2]


def edge_array(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Canonical elements, about half of them edge values."""
    rand = rng.integers(0, p, size=shape, dtype=np.uint64)
    edge = np.array(EDGES, dtype=np.uint64)[rng.integers(0, len(EDGES), size=shape)]
    return np.where(rng.random(shape) < 0.5, edge, rand)


def kernel_and_twin(tk: kern.Tiered, *args: Any) -> list[Any]:
    """Run the kernel and its twin on copies; every array argument must end up equal.
    Returns the kernel's copies of the arguments."""
    a1 = [x.copy() if isinstance(x, np.ndarray) else x for x in args]
    a2 = [x.copy() if isinstance(x, np.ndarray) else x for x in args]
    tk.kernel(*a1)
    tk.twin(*a2)
    for x, y in zip(a1, a2, strict=True):
        if isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y, err_msg=tk.__name__)
    return a1
