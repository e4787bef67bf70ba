"""Benchmarks of model updates at neural-network scale (``KairesFedAvg``, issue 11).

Every figure comes from the code path ``KairesFedAvg`` runs: a ServerApp-side
``KairesFedAvg`` (``configure_train`` → the clients → ``aggregate_train``) on an
in-process committee (``LocalCommittee``: 4 ledger nodes, 4 trustees, n = 4 aggregators,
Shamir degree t = 1), and real ClientApps with ``kaires_mod`` (simulation mode) reached
through an in-process Flower grid (no Ray, no serialisation). A client's train handler
returns ``global + Δ`` with a fixed random Δ of norm C/2 (no training: the figures are
the cost of privacy, not of SGD), ``num-examples`` = W.

- ``update_elements_per_param``: (measurement + proof) field elements of ONE client's
  update, per parameter, at d = 100,000, for the statistic the round's ``KairesFedAvg``
  committed (its default circuit).
- ``update_bytes_per_param``: bytes ONE client uploads per parameter at n = 4, t = 1: the
  byte values of its reply record (the CALYPSO write, the signed manifest and the sealed
  measurement and proof parts of all four aggregators), averaged over the round's clients.
- ``update_100k_round_s``: 10 clients, d = 100,000, one whole round (the clients'
  encode + prove + seal, one after the other in this process; the committee's writes, key
  release, verification on shares, aggregation, result; the ServerApp's decode), wall
  time of the second round (the first loads compiled kernels);
  ``update_100k_round_cpu_s``: this process's CPU time over that round (every party runs
  in it: the figure a shared, loaded machine disturbs least);
  ``update_100k_round_parallel_s``: the same round with ``LocalCommittee(workers=2)`` (the
  clients' encode + seal, and the aggregators' and trustees' steps of one instant, on two
  threads, as parties on their own machines would run).
  ``update_100k_client_s``: one client's share of it (mean mod time: encode, prove,
  seal); ``update_100k_committee_s``: the committee's (the round's ``RoundResult.timings``).
- ``update_1m_round_s`` / ``update_1m_peak_rss_mb``: the same round at d = 1,000,000 (one
  round after a 1,000-parameter warm-up round), run in a child process whose peak resident
  memory is read with ``os.wait4`` (the child's own ``rusage``). The child's address space
  is capped at :data:`CHILD_MEMORY_CAP_MB`: a round that needs more fails and the figures
  are NaN (the reason is printed on stderr). ``update_1m_round_cpu_s``: the child's CPU
  time over that round.

``quick=True``: d = 10,000 instead of 100,000 for the elements, bytes and round figures,
and d = 100,000 instead of 1,000,000 in the child process (same metric names).

Importing this module imports nothing of Flower; ``run`` does.
"""

from __future__ import annotations

import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

import numpy as np

N_CLIENTS = 10
#: C of the benchmark's KairesFedAvg (the clients' updates have norm C/2: none is clipped).
CLIP_NORM = 10.0
#: W of the benchmark's KairesFedAvg (every client reports W examples: weight 1 − 2^-f).
NUM_EXAMPLES_CAP = 100
#: Address-space cap of the 1M-parameter child process (MB): a runaway round fails there
#: instead of exhausting a shared machine.
CHILD_MEMORY_CAP_MB = 8_000
#: Threads of the parallel in-process committee (``LocalCommittee(workers=...)``): the
#: clients, aggregators and trustees of one instant work side by side, as on their own
#: machines.
PARALLEL_WORKERS = 2
#: Wall-clock limit of the child process (seconds).
CHILD_TIMEOUT_S = 900.0


def elements_per_param(statistic: Any) -> float:
    """(measurement + proof) field elements of one client's update per parameter, for a
    model-update ``statistic`` (the one ``KairesFedAvg`` committed)."""
    from kaires_fl.aggregation.job import flp_for

    flp = flp_for(statistic)
    return (flp.MEAS_LEN + flp.PROOF_LEN) / statistic.length


def upload_bytes(reply: Any) -> int:
    """Bytes of a Flower reply's byte values (``bytes`` and lists of ``bytes`` in its
    ConfigRecords): for a ``kaires_mod`` reply, the CALYPSO write, the signed manifest and
    every aggregator's sealed measurement and proof part."""
    total = 0
    for rec in reply.content.config_records.values():
        for v in rec.values():
            if isinstance(v, bytes):
                total += len(v)
            elif isinstance(v, list):
                total += sum(len(b) for b in v if isinstance(b, bytes))
    return total


def _grid(client_app: Any, num_nodes: int, workers: int = 1) -> Any:
    """A Flower Grid delivering each message to ``client_app`` in this process (node ids
    1..n, partition ids 0..n−1, one Context per node kept across messages), the nodes'
    calls on ``workers`` threads (each node its own machine)."""
    from kaires_fl.strategies.grid import InProcessGrid

    return InProcessGrid(client_app, num_nodes, workers=workers)


def _client_app(length: int, timings: list[float]) -> Any:
    """A ClientApp with ``kaires_mod`` whose handler returns ``global + Δ`` (‖Δ‖ = C/2);
    ``timings`` receives each call's wall time (the handler's and the mod's work)."""
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    from kaires_fl.strategies import make_kaires_mod

    rng = np.random.default_rng(11)
    delta = rng.normal(size=length)
    delta *= 0.5 * CLIP_NORM / np.linalg.norm(delta)
    mod = make_kaires_mod(simulation=True)

    def timed_mod(msg: Any, ctx: Any, call_next: Any) -> Any:
        t0 = time.perf_counter()
        out = mod(msg, ctx, call_next)
        timings.append(time.perf_counter() - t0)  # list.append: atomic across threads
        return out

    app = ClientApp(mods=[timed_mod])

    @app.train()
    def train(msg: Any, ctx: Any) -> Any:
        (w,) = msg.content["arrays"].to_numpy_ndarrays()
        return Message(
            RecordDict(
                {
                    "arrays": ArrayRecord([w + delta]),
                    "metrics": MetricRecord({"num-examples": NUM_EXAMPLES_CAP}),
                }
            ),
            reply_to=msg,
        )

    return app


def run_rounds(
    length: int,
    clients: int,
    rounds: int,
    committee: Any = None,
    warmup: int = 0,
    workers: int = 1,
) -> dict[str, Any]:
    """``rounds`` KairesFedAvg rounds of a ``length``-parameter model over ``clients``
    in-process clients (module docstring), optionally after a ``warmup``-parameter round
    on the same committee (default: a fresh ``LocalCommittee(workers=workers)``: the
    parties work on ``workers`` threads). Returns lists, one entry per round: ``round_s``
    (wall time), ``round_cpu_s``, ``client_s`` (mean), ``committee_s``, ``bytes`` (mean
    per client), ``accepted`` (count), ``statistic`` (the committed ``ModelUpdateStats``).

    Raises
    ------
    KairesError
        if a round does not accept every client (the first reason in the message).
    """
    import logging

    from flwr.app import ArrayRecord

    from kaires_fl.simulation import LocalCommittee
    from kaires_fl.strategies import KairesFedAvg

    committee = committee if committee is not None else LocalCommittee(workers=workers)
    flwr_log = logging.getLogger("flwr")
    level = flwr_log.level
    flwr_log.setLevel(logging.WARNING)
    try:
        if warmup:
            run_rounds(warmup, clients, 1, committee=committee)
        client_times: list[float] = []
        out: dict[str, Any] = {"round_s": [], "round_cpu_s": [], "client_s": [], "bytes": []}
        out["committee_s"] = []
        out["accepted"] = []
        out["statistic"] = []

        class Timed(KairesFedAvg):
            def configure_train(self, server_round: int, *a: Any, **kw: Any) -> Any:
                client_times.clear()
                self._t0, self._c0 = time.perf_counter(), time.process_time()
                return super().configure_train(server_round, *a, **kw)

            def aggregate_train(self, server_round: int, replies: Any) -> Any:
                replies = list(replies)
                sizes = [upload_bytes(m) for m in replies if m.has_content()]
                res = super().aggregate_train(server_round, replies)
                out["round_s"].append(time.perf_counter() - self._t0)
                out["round_cpu_s"].append(time.process_time() - self._c0)
                info = self.kaires_rounds.get(server_round, {})
                result = info.get("result")
                out["client_s"].append(statistics.mean(client_times or [math.nan]))
                out["committee_s"].append(
                    math.nan
                    if result is None
                    else sum(result.timings.values()) + sum(info["timings"].values())
                )
                out["bytes"].append(statistics.mean(sizes or [math.nan]))
                out["accepted"].append(0 if result is None else len(result.accepted))
                out["statistic"].append(info.get("statistic"))
                why = {} if result is None else {**result.rejected, **result.refused}
                why.update({str(n): r for n, r in info.get("refusals", {}).items()})
                out["why"] = (result.why if result else info.get("why", "")) or next(
                    iter(why.values()), ""
                )
                return res

        strategy = Timed(
            fraction_evaluate=0.0,
            min_train_nodes=clients,
            min_available_nodes=clients,
            committee=committee,
            clip_norm=CLIP_NORM,
            num_examples_cap=NUM_EXAMPLES_CAP,
        )
        grid = _grid(_client_app(length, client_times), clients, workers)
        strategy.start(grid=grid, initial_arrays=ArrayRecord([np.zeros(length)]), num_rounds=rounds)
    finally:
        flwr_log.setLevel(level)
    if out["accepted"] != [clients] * rounds:
        from kaires_fl.errors import KairesError

        raise KairesError(
            f"benchmark round accepted {out['accepted']} of {clients} clients: "
            f"{str(out.get('why', ''))[:300]}"
        )
    return out


def child_round(length: int, clients: int = N_CLIENTS, warmup: int = 1_000) -> dict[str, float]:
    """One ``length``-parameter round in a child process (module docstring): its wall time,
    its CPU time and the child's peak RSS in MB (``os.wait4``), or NaN for all three if the
    child failed."""
    import tempfile
    import threading

    code = (
        "import json; from kaires_fl.bench.update import run_rounds; "
        f"r = run_rounds({int(length)}, {int(clients)}, 1, warmup={int(warmup)}); "
        "print('RESULT ' + json.dumps([r['round_s'][0], r['round_cpu_s'][0]]), flush=True)"
    )
    cap = CHILD_MEMORY_CAP_MB * 2**20

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    failed = {"round_s": math.nan, "round_cpu_s": math.nan, "peak_rss_mb": math.nan}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", code], stdout=out, stderr=err, preexec_fn=limit
        )
        killer = threading.Timer(CHILD_TIMEOUT_S, proc.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)  # the child's own rusage
        finally:
            killer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        line = next((s for s in out.read().splitlines() if s.startswith("RESULT ")), None)
        tail = " | ".join(err.read().strip().splitlines()[-3:])
    if proc.returncode != 0 or line is None:
        print(
            f"update bench: the {length}-parameter round failed (exit {proc.returncode}; "
            f"memory cap {CHILD_MEMORY_CAP_MB} MB, time limit {CHILD_TIMEOUT_S:g} s): {tail}",
            file=sys.stderr,
        )
        return failed
    round_s, round_cpu_s = json.loads(line[len("RESULT ") :])
    return {
        "round_s": float(round_s),
        "round_cpu_s": float(round_cpu_s),
        "peak_rss_mb": usage.ru_maxrss / 1024,  # Linux: KiB
    }


def run(quick: bool = False) -> dict[str, float]:
    """The update metrics (module docstring)."""
    d = 10_000 if quick else 100_000
    r = run_rounds(d, N_CLIENTS, 2)
    par = run_rounds(d, N_CLIENTS, 2, workers=PARALLEL_WORKERS)
    big = child_round(100_000 if quick else 1_000_000)
    return {
        "update_elements_per_param": elements_per_param(r["statistic"][-1]),
        "update_bytes_per_param": r["bytes"][-1] / d,
        "update_100k_round_s": r["round_s"][-1],
        "update_100k_round_cpu_s": r["round_cpu_s"][-1],
        "update_100k_round_parallel_s": par["round_s"][-1],
        "update_100k_client_s": r["client_s"][-1],
        "update_100k_committee_s": r["committee_s"][-1],
        "update_1m_round_s": big["round_s"],
        "update_1m_round_cpu_s": big["round_cpu_s"],
        "update_1m_peak_rss_mb": big["peak_rss_mb"],
    }
