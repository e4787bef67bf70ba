"""Soak run (on demand: ``kaires bench --only soak``): jobs on a 4-process committee
while one node at a time is SIGKILLed and restarted.

A 4-node committee of OS processes (``committee init`` + ``committee up --detach``, as in
:mod:`kaires_fl.bench.net`) serves a client (:func:`kaires_fl.connect`) that runs linear
regressions back to back — each on fresh data from 4 providers, compared with numpy's
least squares on the same rows — for at least ``minutes`` and ``jobs`` jobs. Meanwhile a
background thread, every ``kill_every`` seconds, SIGKILLs the next node (node-0, node-1,
…; a job may be running) and restarts it with ``kaires node run`` ``kill_every / 2``
seconds later (the restarted node reopens its directory and catches up). At the end every
node runs again; the soak waits until they report the same height and downloads each
node's chain.

Metrics:

* ``soak_jobs``: jobs run; ``soak_jobs_done``: done with a result; ``soak_jobs_refused``:
  refused with a reason (a ``KairesError`` with its message, e.g. too few aggregators
  answered while a node was down); ``soak_wrong_results``: done with a model that is not
  numpy's (relative error > 1e-6) — must be 0; ``soak_unexplained_failures``: any other
  exception (a bug) — must be 0. After a refused job the client closes its connection
  and the next job starts a new client session with a fresh key (the refused job may
  have left transactions signed with the old keys' counters in the nodes' mempools);
  ``soak_client_sessions`` counts the sessions.
* ``soak_ledgers_identical``: 1 if every node's chain has the same height and the same
  block hashes (blocks compared, not certificates: nodes may certify a block with
  different quorums), else 0.
* ``soak_rss_growth_mb``: the larger of ``soak_node_rss_growth_mb`` — the largest growth
  of resident memory, in MB, of a node process over one lifetime — and
  ``soak_client_rss_growth_mb`` (the client process). Every process is sampled every
  ``SAMPLE_EVERY`` seconds; a lifetime's growth is its last sample minus its sample at
  the end of its warm-up, the first ``WARMUP`` (20 %) of its samples (JIT compilation,
  caches filling up to their bounds, a restarted node catching up); a lifetime of fewer
  than ``MIN_SAMPLES`` samples is left out. The nodes' and the client's ledgers are
  SQLite files, so the chain's growth is not counted as memory. Compiling the numba
  kernels is a one-time step of a few tens of MB, not growth: a node compiles the kernels
  a job calls right after readiness (:mod:`kaires_fl.node.warmup`), within its warm-up,
  and the client process runs the same warm-up before its first job — otherwise its
  tiered kernels turn hot (and compile) after ≈ 2,000 calls, minutes into the run.
  ``soak_node_rss_mb``: the largest node RSS seen; ``soak_client_rss_mb``: the client's
  last RSS. ``soak_kills``: nodes SIGKILLed and restarted.
* ``soak_s``: the soak's duration; ``soak_job_p50_s``: the median job time.

Parameters (environment, for short runs such as the test suite's):
``KAIRES_SOAK_MINUTES`` (default 10; 1 with ``--quick``), ``KAIRES_SOAK_JOBS`` (200; 20),
``KAIRES_SOAK_KILL_EVERY`` (seconds, 60; 20).
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: Relative error above which a job's model counts as wrong.
RTOL = 1e-6
#: Seconds between two RSS samples of each process.
SAMPLE_EVERY = 5.0


def rss_mb(pid: int) -> float | None:
    """Resident memory of process ``pid`` in MB (None if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


def job_data(seed: int, n: int = 400, d: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """The rows of job ``seed``: well-conditioned features and a noisy linear target."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = X @ rng.normal(size=d) + rng.normal() + 0.1 * rng.normal(size=n)
    return X, y


def reference_model(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """numpy's least squares with an intercept: ``[coef..., intercept]``."""
    A = np.column_stack([X, np.ones(len(X))])
    return np.linalg.lstsq(A, y, rcond=None)[0]


#: Share of a process's RSS samples taken as its warm-up (JIT compilation, caches filling,
#: a restarted node catching up); growth is measured from the first sample after it.
WARMUP = 0.2
#: A lifetime with fewer samples says nothing about growth (it is left out).
MIN_SAMPLES = 4


def warm_growth(samples: list[float]) -> float | None:
    """RSS growth (MB) of one process lifetime from the end of its warm-up to its last
    sample: ``samples[-1] - samples[floor(WARMUP × len)]``; None if it has fewer than
    ``MIN_SAMPLES`` samples."""
    if len(samples) < MIN_SAMPLES:
        return None
    return samples[-1] - samples[int(WARMUP * len(samples))]


@dataclass
class _Lifetimes:
    """RSS samples per process lifetime (pid)."""

    samples: dict[int, list[float]] = field(default_factory=dict)
    peak: float = 0.0

    def sample(self, pid: int) -> None:
        mb = rss_mb(pid)
        if mb is None:
            return
        self.peak = max(self.peak, mb)
        self.samples.setdefault(pid, []).append(mb)

    def growth(self) -> float:
        """The largest warm growth of a lifetime (:func:`warm_growth`), 0 if none counts."""
        got = [g for g in map(warm_growth, self.samples.values()) if g is not None]
        return max(got, default=0.0)


class _Killer(threading.Thread):
    """Every ``every`` seconds: SIGKILL the next node, restart it ``every / 2`` later."""

    def __init__(self, root: Path, dirs: list[Path], every: float, log: Callable[[str], None]):
        super().__init__(daemon=True, name="soak-killer")
        self.root, self.dirs, self.every, self.log = root, dirs, every, log
        self.stop = threading.Event()
        self.kills = 0
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.errors: list[str] = []
        self.down: Path | None = None

    def restart(self, d: Path) -> None:
        from kaires_fl.node.process import read_pid, spawn_node

        if read_pid(d) is None:
            self.procs[d.name] = spawn_node(d, self.root / "group.toml")
            self.log(f"soak: {d.name} restarted (pid {self.procs[d.name].pid})")
        self.down = None

    def run(self) -> None:
        from kaires_fl.node.process import pid_alive, read_pid

        k = 0
        try:
            while not self.stop.wait(self.every / 2):
                d = self.dirs[k % len(self.dirs)]
                pid = read_pid(d)
                if pid is None:
                    self.errors.append(f"{d.name} was not running when its turn came")
                    break
                os.kill(pid, signal.SIGKILL)
                self.down = d
                deadline = time.monotonic() + 20
                while pid_alive(pid) and time.monotonic() < deadline:
                    for p in self.procs.values():
                        p.poll()  # reap a node this thread started
                    time.sleep(0.05)
                self.kills += 1
                self.log(f"soak: {d.name} SIGKILLed (pid {pid})")
                if self.stop.wait(self.every / 2):
                    break
                self.restart(d)
                k += 1
        finally:
            if self.down is not None:
                self.restart(self.down)


def _final_ledgers(group_path: Path, n: int, timeout: float) -> tuple[bool, list[int]]:
    """Wait until the ``n`` nodes are ready at one height; then whether their chains are
    identical (same height, same block hashes), and their heights."""
    from kaires_fl.ledger.block import decode_certified
    from kaires_fl.node.config import load_group
    from kaires_fl.node.process import CommitteeClient

    group = load_group(group_path)
    with CommitteeClient(group) as client:
        deadline = time.monotonic() + timeout
        heights: list[int] = []
        while time.monotonic() < deadline:
            views = client.poll(3.0)
            sts = [v.status for v in views]
            heights = [s.height for s in sts if s is not None]
            ready = len(heights) == n and all(s is not None and s.ready for s in sts)
            if ready and len(set(heights)) == 1:
                break
            time.sleep(0.5)
        else:
            return False, heights
        chains = []
        for address in client.ledger_addresses:
            raw = client.fetch_chain(address, timeout=30.0)
            chains.append([decode_certified(r)[0].hash for r in raw])
        return all(c == chains[0] for c in chains) and len(chains[0]) == heights[0], heights


def soak(
    minutes: float,
    jobs: int,
    kill_every: float,
    *,
    log: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """Run the soak (see the module docstring) and return its metrics.

    Pre: ``minutes`` > 0, ``jobs`` ≥ 1, ``kill_every`` ≥ 4 seconds. Post: every node
    process started is stopped; the run stops after ``max(2 × minutes, minutes + 10)``
    minutes even if fewer than ``jobs`` jobs ran (``soak_jobs`` says how many did).
    """
    import kaires_fl
    from kaires_fl.bench.net import running_committee
    from kaires_fl.errors import KairesError
    from kaires_fl.estimators import KairesLinearRegression
    from kaires_fl.node.client import write_client_key
    from kaires_fl.node.process import read_pid, stop_nodes
    from kaires_fl.node.warmup import warm_kernels

    say = log or (lambda s: print(s, file=sys.stderr, flush=True))
    n = 4
    out: dict[str, float] = {}
    counts = {"done": 0, "refused": 0, "wrong": 0, "unexplained": 0}
    times: list[float] = []
    life = _Lifetimes()
    client_life = _Lifetimes()
    with running_committee(n) as (root, _up):
        dirs = [root / f"node-{i}" for i in range(n)]
        sessions = 1
        key = root / "client-1.toml"
        write_client_key(key)
        replica = root / "client-replica.sqlite"
        killer = _Killer(root, dirs, kill_every, say)

        def _new_session(old: Any) -> None:
            """Close ``old``; the next job connects as a new client with a fresh key: the
            refused job may have left transactions signed with the old keys' counters in
            the nodes' mempools, and a new session must not sign over them."""
            nonlocal key, sessions
            if old is not None:
                old.close()
            sessions += 1
            key = root / f"client-{sessions}.toml"
            write_client_key(key)

        remote: Any = None
        warm_kernels()  # the client's one-time JIT step before the first sample (docstring)
        t0 = time.monotonic()
        cap = 60 * max(2 * minutes, minutes + 10)
        try:
            remote = kaires_fl.connect(
                root / "group.toml", key=key, timeout=60.0, max_jobs=None, ledger_db=replica
            )
            killer.start()
            i = 0
            next_sample = 0.0
            while True:
                now = time.monotonic() - t0
                if (now >= 60 * minutes and i >= jobs) or now >= cap:
                    break
                if now >= next_sample:
                    for d in dirs:
                        pid = read_pid(d)
                        if pid is not None:
                            life.sample(pid)
                    client_life.sample(os.getpid())
                    next_sample = now + SAMPLE_EVERY
                X, y = job_data(i)
                t1 = time.perf_counter()
                try:
                    if remote is None:
                        remote = kaires_fl.connect(
                            root / "group.toml",
                            key=key,
                            timeout=60.0,
                            max_jobs=None,
                            ledger_db=replica,
                        )
                    est = KairesLinearRegression(n_providers=4, committee=remote).fit(X, y)
                except KairesError as exc:
                    counts["refused" if str(exc) else "unexplained"] += 1
                    say(f"soak: job {i} refused: {type(exc).__name__}: {exc}")
                    _new_session(remote)
                    remote = None
                except Exception as exc:  # a bug: counted, reported, the soak goes on
                    counts["unexplained"] += 1
                    say(f"soak: job {i} failed unexplained: {type(exc).__name__}: {exc}")
                    _new_session(remote)
                    remote = None
                else:
                    times.append(time.perf_counter() - t1)
                    ours = np.append(est.coef_, est.intercept_)
                    ref = reference_model(X, y)
                    err = np.max(np.abs(ours - ref)) / np.max(np.abs(ref))
                    if err <= RTOL:
                        counts["done"] += 1
                    else:
                        counts["wrong"] += 1
                        say(f"soak: job {i} WRONG result (relative error {err:.3g})")
                i += 1
            out["soak_s"] = time.monotonic() - t0
        finally:
            killer.stop.set()
            if killer.is_alive():
                killer.join(timeout=30)
            if remote is not None:
                remote.close()
        try:
            identical, heights = _final_ledgers(root / "group.toml", n, timeout=120.0)
            say(f"soak: final heights {heights}, ledgers identical: {identical}")
        finally:
            stop_nodes(dirs, grace=5.0, procs=killer.procs, out=lambda s: None)
            for p in killer.procs.values():
                if p.poll() is None:
                    p.kill()
                    p.wait(timeout=10)
    client_growth = client_life.growth()
    for msg in killer.errors:
        say(f"soak: {msg}")
    for who, lives in (("node", life), ("client", client_life)):
        for pid, mbs in lives.samples.items():
            base = mbs[int(WARMUP * len(mbs))]
            say(
                f"soak: {who} pid {pid}: RSS {mbs[0]:.0f} MB first, {base:.0f} MB after warm-up, "
                f"{mbs[-1]:.0f} MB last, {max(mbs):.0f} MB peak ({len(mbs)} samples)"
            )
    out.update(
        {
            "soak_jobs": float(i),
            "soak_jobs_done": float(counts["done"]),
            "soak_jobs_refused": float(counts["refused"]),
            "soak_wrong_results": float(counts["wrong"]),
            "soak_unexplained_failures": float(counts["unexplained"]),
            "soak_ledgers_identical": 1.0 if identical else 0.0,
            "soak_kills": float(killer.kills),
            "soak_client_sessions": float(sessions),
            "soak_rss_growth_mb": max(life.growth(), client_growth),
            "soak_node_rss_growth_mb": life.growth(),
            "soak_client_rss_growth_mb": client_growth,
            "soak_node_rss_mb": life.peak,
            "soak_client_rss_mb": next(iter(client_life.samples.values()), [0.0])[-1],
            "soak_job_p50_s": statistics.median(times) if times else float("nan"),
        }
    )
    return out


def run(quick: bool = False) -> dict[str, float]:
    """The soak metrics, with the parameters from the environment (module docstring)."""
    minutes = float(os.environ.get("KAIRES_SOAK_MINUTES", 1 if quick else 10))
    jobs = int(os.environ.get("KAIRES_SOAK_JOBS", 20 if quick else 200))
    every = float(os.environ.get("KAIRES_SOAK_KILL_EVERY", 20 if quick else 60))
    return soak(minutes, jobs, every)


if __name__ == "__main__":  # pragma: no cover
    import json

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
