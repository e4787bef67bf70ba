"""End-to-end benchmarks: whole ``fit`` calls through a Kaires job on a 2-core machine.

* ``e2e_1m_s`` / ``e2e_rows_per_s``: 1,000,000 rows × 20 features from 100 providers,
  committee 4/4/4 with t = 1, provider granularity, the whole ``KairesLinearRegression.fit``
  (committee set-up, grants, job, sealed submissions, key release, verification,
  aggregation, reconstruction, solve). Target ``e2e_1m_s`` ≤ 10 s.
* ``sklearn_1m_s``: scikit-learn's ``LinearRegression.fit`` on the same data, same run.
* ``e2e_record_rows_per_s``: record granularity (one proved record per row), d = 14,
  each value quantised to 14 bits — the ``LinearRegressionRecord(d=14, bits=14)`` of issue 2
  (``RECORD_BITS``; the estimator's default takes as many bits as the field allows, 24 for
  20,000 records, a circuit 1.4× larger), on the default committee
  (:func:`kaires_fl.committee.default_committee`: providers sealing, aggregators and
  trustees handling messages on one thread per CPU, at most 4, as separate machines
  would). Target ≥ 20,000 rows/s. ``e2e_record_cpu_rows_per_s``: the same from the
  process's CPU time (the job runs in this process): the figure a shared, loaded machine
  disturbs least. ``e2e_record_serial_rows_per_s``: the same job on
  ``LocalCommittee(workers=1)`` — every party one after the other on one thread (run just
  after, same data). ``e2e_record_aggregator_rows_per_s``: rows verified per CPU second of
  one aggregator — the busiest one's message handlers (opening its parts, FLP queries on
  shares, round-1 message, decision, aggregate share) during the default-committee job, each
  handler's thread CPU time. What one aggregator machine of a deployment sustains on one
  core; providers, trustees, ledger and coordinator are not counted (they are other
  machines). The busiest is the first to check what the others then find in the process's
  memories (passed signature and proof checks, part and round-1 digests): the figure a
  separate machine pays, but for the hashes of its own parts (BLAKE3) and of the others'
  round-1 messages (SHA-256), which the provider and the coordinator computed here (≈ 150 MB
  for 20,000 rows, a few hundredths of a second).
* ``setup_s``: genesis, DKG and the grants (policies) of 10 providers for the default
  committee. Target ≤ 2 s.
* ``demo_cold_s``: the first ``kaires demo`` after installation — a fresh process whose numba
  cache (``NUMBA_CACHE_DIR``) is an empty directory, so every kernel it uses is cold
  (compiled, or its numpy twin on small calls); wall time of the whole command. Target
  ≤ 6 s. ``demo_cold_cpu_s``: that process's CPU time (user + system), the figure to
  compare on a loaded machine; ``demo_warm_s``: the same command once its kernels are
  cached.

``quick=True`` uses 100,000 rows from 20 providers and 2,000 records (same keys).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import numpy as np

#: Quantisation bits of the record-granularity benchmark (issue 2's LinearRegressionRecord).
RECORD_BITS = 14


def _data(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = X @ rng.normal(size=d) + 1.0 + rng.normal(size=n)
    return X, y


def _setup_s() -> float:
    from kaires_fl.simulation import LocalCommittee

    t0 = time.perf_counter()
    committee = LocalCommittee()
    committee.ensure_providers([f"provider-{i:03d}" for i in range(10)])
    elapsed = time.perf_counter() - t0
    committee.close()
    return elapsed


def _children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def demo_cold() -> dict[str, float]:
    """Wall and CPU time of ``kaires demo --quiet`` with an empty numba cache, then warm."""
    out: dict[str, float] = {}
    cmd = [sys.executable, "-c", "import sys; from kaires_fl.cli import main; sys.exit(main())"]
    with tempfile.TemporaryDirectory(prefix="kaires-numba-") as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        for name in ("cold", "warm"):
            c0, t0 = _children_cpu_s(), time.perf_counter()
            subprocess.run([*cmd, "demo", "--quiet"], env=env, check=True, capture_output=True)
            out[f"demo_{name}_s"] = time.perf_counter() - t0
            if name == "cold":
                out["demo_cold_cpu_s"] = _children_cpu_s() - c0
    return out


def _time_aggregators(committee: Any) -> dict[str, float]:
    """Wrap each aggregator's message handler of ``committee`` (a LocalCommittee) to add
    its thread CPU time to the returned dict (address → seconds), updated as it runs."""
    spent = dict.fromkeys(committee.aggregator_addresses, 0.0)
    lock = threading.Lock()
    for address in committee.aggregator_addresses:
        endpoint = committee.network.endpoints[address]
        inner = endpoint.handler

        def timed(src: str, payload: Any, inner: Any = inner, address: str = address) -> Any:
            c0 = time.thread_time()
            try:
                return inner(src, payload)
            finally:
                with lock:
                    spent[address] += time.thread_time() - c0

        endpoint.set_handler(timed)
    return spent


def run(quick: bool = False) -> dict[str, float]:
    """The e2e metrics (see the module docstring)."""
    from sklearn.linear_model import LinearRegression

    from kaires_fl.estimators import KairesLinearRegression

    cold = demo_cold()  # first: a fresh process, before this one has warmed anything up
    n, providers = (100_000, 20) if quick else (1_000_000, 100)
    n_rec = 2_000 if quick else 20_000
    # Warm-up (numba compilation, caches) on a small job, so timings are steady-state.
    Xw, yw = _data(2_000, 20, seed=1)
    KairesLinearRegression(n_providers=4).fit(Xw, yw)
    KairesLinearRegression(n_providers=2, granularity="record", frac_bits=RECORD_BITS).fit(
        Xw[:200, :14], yw[:200]
    )
    from kaires_fl.arith._kernels import wait_loaded

    wait_loaded(60.0)  # the kernels the warm-up asked for are loaded: no loader while timed

    setup = min(_setup_s() for _ in range(3))

    X, y = _data(n, 20)
    t0 = time.perf_counter()
    KairesLinearRegression(n_providers=providers).fit(X, y)
    e2e = time.perf_counter() - t0
    t0 = time.perf_counter()
    LinearRegression().fit(X, y)
    sk = time.perf_counter() - t0

    Xr, yr = _data(n_rec, 14, seed=2)
    from kaires_fl.committee import default_committee
    from kaires_fl.simulation import LocalCommittee

    record: dict[str, Any] = {"n_providers": 10, "granularity": "record", "frac_bits": RECORD_BITS}
    default = default_committee()  # what the estimator builds without committee=
    spent = _time_aggregators(default)
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        KairesLinearRegression(**record, committee=default).fit(Xr, yr)
        rec, rec_cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        default.close()
    serial = LocalCommittee(workers=1)
    try:
        t0 = time.perf_counter()
        KairesLinearRegression(**record, committee=serial).fit(Xr, yr)
        rec_serial = time.perf_counter() - t0
    finally:
        serial.close()
    return {
        "e2e_1m_s": e2e,
        "e2e_rows_per_s": n / e2e,
        "sklearn_1m_s": sk,
        "e2e_record_rows_per_s": n_rec / rec,
        "e2e_record_cpu_rows_per_s": n_rec / rec_cpu,
        "e2e_record_serial_rows_per_s": n_rec / rec_serial,
        "e2e_record_aggregator_rows_per_s": n_rec / max(spent.values()),
        "setup_s": setup,
        **cold,
    }


if __name__ == "__main__":  # pragma: no cover
    import json
    import sys

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
