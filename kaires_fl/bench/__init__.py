"""Benchmarks behind ``kaires bench --json``.

Each area has a module here with a ``run(quick: bool) -> dict[str, float]``; the
CLI merges their results into one JSON object. Targets are stated in the issue
that introduced each metric and reported in closing notes, never asserted in tests.
Areas in :data:`AREAS` run by default; those in :data:`ON_DEMAND` (``soak``, a
10-minute run) only when named (``kaires bench --only soak``).
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from typing import Any

#: Area modules, in the order they run.
AREAS: tuple[str, ...] = (
    "field",
    "flp",
    "group",
    "ledger",
    "secret_management",
    "e2e",
    "flower",
    "net",
)

#: Areas that run only when named with ``--only`` (long runs).
ON_DEMAND: tuple[str, ...] = ("soak",)


def best_time(fn: Callable[[], Any], repeat: int = 5, number: int = 1) -> float:
    """Best wall time of ``number`` calls of ``fn`` over ``repeat`` runs, per call (seconds)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - t0) / number)
    return best


def run(areas: tuple[str, ...] | None = None, quick: bool = False) -> dict[str, Any]:
    """Run the benchmarks of ``areas`` (default: every area that exists)."""
    out: dict[str, Any] = {}
    for area in areas or AREAS:
        try:
            mod = importlib.import_module(f"kaires_fl.bench.{area}")
        except ModuleNotFoundError as exc:
            if exc.name == f"kaires_fl.bench.{area}":
                continue
            raise
        out.update(mod.run(quick=quick))
    return out
