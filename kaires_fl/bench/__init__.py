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
    "update",
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


#: Per metric: (unit, target, one-line meaning), for ``kaires bench``'s table. A target
#: is a stated goal ("≤ 1.3×"), or the direction that is better ("higher", "lower").
METRICS: dict[str, tuple[str, str, str]] = {
    # field
    "field64_mul_per_s": ("1/s", "higher", "Field64 multiplications per second (vectorised)"),
    "numpy_u64_mul_per_s": ("1/s", "reference", "numpy uint64 multiplications per second"),
    "field64_mul_ratio": ("×", "higher", "Field64 multiply speed relative to numpy uint64"),
    "field64_ntt_1024_us": ("µs", "lower", "one number-theoretic transform of 1,024 elements"),
    # flp
    "flp_sumvec1000_prove_ms": ("ms", "lower", "prove one SumVec(1000) measurement (FLP)"),
    "flp_sumvec1000_query_ms": ("ms", "lower", "query one SumVec(1000) proof on shares"),
    "linreg_proofs": ("count", "—", "FLP proofs per linear-regression record (soundness)"),
    "linreg_record_prove_per_s": ("rows/s", "higher", "linear-regression records proven"),
    "linreg_record_verify_per_s": ("rows/s", "higher", "linear-regression records verified"),
    "linreg_record_verify_cpu_per_s": ("rows/s", "higher", "records verified per CPU second"),
    # group
    "ed25519_scalarmult_per_s": ("1/s", "higher", "Ed25519 variable-base scalar mults"),
    "ed25519_base_scalarmult_per_s": ("1/s", "higher", "Ed25519 fixed-base scalar mults"),
    "dleq_verify_per_s": ("1/s", "higher", "DLEQ (Chaum–Pedersen) proofs verified"),
    "threshold_decrypt_ms": ("ms", "lower", "one threshold ElGamal decryption"),
    "dkg_4_s": ("s", "lower", "distributed key generation among 4 trustees"),
    # ledger
    "ledger_tx_per_s": ("tx/s", "higher", "transactions committed by the in-process BFT ledger"),
    "ledger_tx_per_cpu_s": ("tx/s", "higher", "transactions committed per CPU second"),
    "ledger_commit_p50_ms": ("ms", "lower", "median submit-to-commit latency of one transaction"),
    "ledger_verify_blocks_per_s": ("blocks/s", "higher", "blocks audited from genesis"),
    # secret management
    "key_release_ms": ("ms", "lower", "one CALYPSO key release (re-encryption by trustees)"),
    "key_release_cpu_ms": ("ms", "lower", "CPU time of one key release"),
    "key_release_parallel_ms": ("ms", "lower", "one key release, trustees in parallel"),
    "key_release_batch_per_s": ("keys/s", "higher", "keys released per second in a batch"),
    "key_release_batch_cpu_per_s": ("keys/s", "higher", "keys released per CPU second"),
    # e2e
    "setup_s": ("s", "lower", "start an in-process committee (ledger, trustees, aggregators)"),
    "e2e_1m_s": ("s", "lower", "private linear regression over 1M rows, end to end"),
    "sklearn_1m_s": ("s", "reference", "scikit-learn's fit of the same 1M rows, in the clear"),
    "e2e_rows_per_s": ("rows/s", "higher", "rows per second of the end-to-end job"),
    "e2e_record_rows_per_s": ("rows/s", "≥ 20,000", "per-record job (one proof per row)"),
    "e2e_record_cpu_rows_per_s": ("rows/s", "higher", "per-record job, rows per CPU second"),
    "e2e_record_serial_rows_per_s": ("rows/s", "higher", "per-record job on one thread"),
    "e2e_record_aggregator_rows_per_s": ("rows/s", "higher", "rows verified per aggregator CPU s"),
    "demo_cold_s": ("s", "≤ 6", "first `kaires demo`, empty numba cache (cold kernels)"),
    "demo_cold_cpu_s": ("s", "lower", "CPU time of that first `kaires demo`"),
    "demo_warm_s": ("s", "lower", "`kaires demo` again, kernels cached"),
    # flower
    "flower_plain_round_s": ("s", "reference", "one plain FedAvg round (Ray, 10 clients)"),
    "flower_kaires_round_s": ("s", "lower", "one KairesFedAvg round (same simulation)"),
    "flower_kaires_committee_s": ("s", "lower", "committee's share of a KairesFedAvg round"),
    "flower_round_overhead": ("×", "≤ 1.3×", "KairesFedAvg round time / FedAvg round time"),
    "flower_plain_wait_s": ("s", "reference", "plain round: push → replies (0.1 s polls)"),
    "flower_kaires_wait_s": ("s", "lower", "Kaires round: push → replies (0.1 s polls)"),
    "flower_kaires_server_s": ("s", "lower", "Kaires round: configure + aggregate (ServerApp)"),
    # update (model updates at neural-network scale, issue 11)
    "update_elements_per_param": ("count", "≤ 1.1", "measurement + proof elements per parameter"),
    "update_bytes_per_param": ("B", "≤ 30", "bytes one client uploads per parameter (n=4, t=1)"),
    "update_100k_round_s": ("s", "≤ 1.0", "KairesFedAvg round, 10 clients × 100k parameters"),
    "update_100k_round_cpu_s": ("s", "lower", "CPU time of that round (all parties in-process)"),
    "update_100k_round_parallel_s": ("s", "lower", "that round, parties on 2 threads"),
    "update_100k_client_s": ("s", "lower", "one client's encode + prove + seal (100k)"),
    "update_100k_committee_s": ("s", "lower", "the committee's share of the 100k round"),
    "update_1m_round_s": ("s", "≤ 10", "KairesFedAvg round, 10 clients × 1M parameters"),
    "update_1m_round_cpu_s": ("s", "lower", "CPU time of that round (all parties in-process)"),
    "update_1m_peak_rss_mb": ("MB", "≤ 2000", "peak memory of the process running that round"),
    # net (committee of OS processes)
    "committee_up_s": ("s", "≤ 10", "committee init → 4 node processes ready"),
    "committee_up_16_s": ("s", "lower", "start a 16-node committee until ready"),
    "net_job_s": ("s", "≤ 1.5", "the diabetes job through connect(), 4 node processes"),
    "net_e2e_1m_s": ("s", "≤ 1.5× e2e_1m_s", "1M-row linear regression against node processes"),
    "net_ledger_tx_per_s": ("tx/s", "≥ 1000", "transactions committed across node processes"),
    "net_key_release_ms": ("ms", "≤ 20", "one key release by 4 trustee processes over TCP"),
    "net_key_release_16_ms": ("ms", "≤ 100", "one key release by 16 trustee processes"),
    # soak (on demand)
    "soak_s": ("s", "—", "duration of the soak run"),
    "soak_jobs": ("count", "—", "jobs started during the soak"),
    "soak_jobs_done": ("count", "higher", "jobs that produced a result"),
    "soak_jobs_refused": ("count", "—", "jobs refused with a reason (node down)"),
    "soak_wrong_results": ("count", "= 0", "results that differ from numpy's"),
    "soak_unexplained_failures": ("count", "= 0", "failures without a typed reason"),
    "soak_ledgers_identical": ("bool", "= 1", "every node ends with the same ledger"),
    "soak_kills": ("count", "—", "node processes killed and restarted"),
    "soak_client_sessions": ("count", "—", "client sessions (a new one after a refusal)"),
    "soak_job_p50_s": ("s", "lower", "median job time during the soak"),
    "soak_rss_growth_mb": ("MB", "lower", "largest memory growth (node or client)"),
    "soak_node_rss_growth_mb": ("MB", "lower", "a node process's memory growth"),
    "soak_client_rss_growth_mb": ("MB", "lower", "the client's memory growth"),
    "soak_node_rss_mb": ("MB", "lower", "peak memory of a node process"),
}


def describe(name: str) -> tuple[str, str, str]:
    """(unit, target, meaning) of metric ``name``; the unit guessed from its suffix when
    the metric is not in :data:`METRICS`."""
    if name in METRICS:
        return METRICS[name]
    for suffix, unit in (("_per_s", "1/s"), ("_ms", "ms"), ("_us", "µs"), ("_mb", "MB")):
        if name.endswith(suffix):
            return unit, "—", "—"
    return ("s" if name.endswith("_s") else "—"), "—", "—"
