"""Acceptance (Flower, deployment engine): the example app (``examples/flower-app``) run with
``flwr run`` on a ``flower-superlink --insecure`` and one ``flower-supernode`` per provider,
against a committee of 4 node processes (``kaires committee up``), all on loopback, every
party its own OS process as on many machines.

- The SuperNodes are deployments, not simulations: each has its own ``kaires-key`` and
  pins the ledger, the aggregation committee, the LTS (the ids ``committee up`` prints) and
  the consumer it grants (the ServerApp's client key) in its ``--node-config``; the
  example's ClientApp then runs the default ``kaires_mod``, which refuses every
  simulation-only convenience (a missing pin fails the round).
- The ServerApp gets ``kaires-committee = "<group.toml>"`` (public entries only) and
  ``kaires-client-key`` (a client key file, not a node's): it is a client of the
  committee, never a node.
- The model equals the same app's in-process run (simulation mod, ``LocalCommittee``,
  the same data, split, rounds and seed) within the fixed-point bound.

Flower 1.42 (this version serves the Fleet, Control and Runtime APIs over HTTP on one
port: ``flower-superlink --port``; each SuperNode's ClientApp runtime API on its own
``--port``). ``FLWR_HOME`` points at a temporary Flower configuration naming the local
SuperLink; ``--disable-runtime-dependency-installation`` since kaires-fl is not on PyPI.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "examples" / "flower-app"
N = 3  # SuperNodes (providers)
ROUNDS = 2
CONNECTION = "kaires-deploy"  # the SuperLink connection's name in the Flower config
FLWR_TIMEOUT = 100.0  # seconds for `flwr run` (it starts the ServerApp, N ClientApps a round)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children() -> dict[int, list[int]]:
    """Every process's children (from /proc), to stop what Flower's processes spawned
    (SuperExec, flwr-serverapp, flwr-clientapp)."""
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(d.name))
    return kids


class Processes:
    """The OS processes this test starts (each in its own session, output to a log file),
    stopped with all their descendants: SIGTERM, then SIGKILL after a grace period."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        with (self.logs / f"{name}.log").open("wb") as log:
            self.procs[name] = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                start_new_session=True,
            )  # fmt: skip

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def check_alive(self, *names: str) -> None:
        for n in names:
            code = self.procs[n].poll()
            assert code is None, f"{n} exited with status {code}:\n{self.log(n)[-3000:]}"

    def stop(self, grace: float = 10.0) -> None:
        kids = _children()
        pids: list[int] = []
        todo = [p.pid for p in self.procs.values() if p.poll() is None]
        while todo:
            pid = todo.pop()
            pids.append(pid)
            todo.extend(kids.get(pid, []))
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        for p in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=5.0)


def _wait_http(port: int, procs: Processes, name: str, timeout: float) -> None:
    """Until the HTTP server on ``port`` answers (any status); fails if ``name`` exits."""
    deadline = time.monotonic() + timeout
    while True:
        procs.check_alive(name)
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2.0).close()
            return
        except urllib.error.HTTPError:  # an HTTP answer (404): the server is up
            return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{name} not serving after {timeout:.0f} s"
        time.sleep(0.2)


def _copy_app(dst: Path) -> Path:
    """The example app without its ``[tool.flwr.federations]`` tables (Flower 1.42 moves
    them to the Flower config and comments them out in the project file on first use)."""
    dst.mkdir()
    for f in APP.glob("*.py"):
        shutil.copy(f, dst / f.name)
    text = (APP / "pyproject.toml").read_text().split("[tool.flwr.federations]")[0]
    (dst / "pyproject.toml").write_text(text)
    return dst


def _toml_value(v: Any) -> str:
    return f'"{v}"' if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v)


def _kv(config: dict[str, Any]) -> str:
    """``--node-config`` / ``--run-config`` syntax: space-separated TOML ``key=value``."""
    return " ".join(f"{k}={_toml_value(v)}" for k, v in config.items())


def _reference_model(run_config: dict[str, Any], out: Path) -> list[np.ndarray]:
    """The same ServerApp and ClientApp objects in this process: an in-process committee,
    N simulated SuperNodes (partition i of N), the simulation mod."""
    sys.path.insert(0, str(ROOT / "tests" / "strategies"))
    sys.path.insert(0, str(APP))
    import client_app
    import server_app
    from flower_harness import LocalGrid
    from flwr.app import Context, RecordDict

    rc = {**run_config, "kaires-committee": "local", "final-model": str(out)}
    grid = LocalGrid(client_app.app, N, run_config=rc)
    server_app.app(
        grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=rc)
    )
    with np.load(out) as z:
        return [z[f"arr_{i}"] for i in range(len(z.files))]


def _walk(obj: Any) -> list[str]:
    if isinstance(obj, dict):
        return [k for k, v in obj.items() for k in [k, *_walk(v)]]
    if isinstance(obj, list):
        return [k for v in obj for k in _walk(v)]
    return []


def test_flwr_run_on_superlink_and_supernodes_against_node_processes(tmp_path: Path) -> None:
    """Acceptance: ``flwr run`` (SuperLink, N SuperNodes, ServerApp, ClientApps) against 4
    node processes: every round done with all N providers, the model equal to the
    in-process run's; the ServerApp is a client of the committee (no node key), the
    providers pin the committee (no simulation convenience)."""
    from kaires_fl.strategies.update import auto_frac_bits

    from kaires_fl.crypto.sign import Identity
    from kaires_fl.demo import init_local_committee
    from kaires_fl.ledger.darc import bound_policy_id
    from kaires_fl.node.client import write_client_key
    from kaires_fl.node.config import load_group
    from kaires_fl.node.process import audit_chain, committee_down, committee_up
    from kaires_fl.transport.tcp import client_address

    bindir = Path(sys.executable).parent
    tool = {t: str(bindir / t) if (bindir / t).exists() else t
            for t in ("flower-superlink", "flower-supernode", "flwr")}  # fmt: skip
    home, logs = tmp_path / "flwr-home", tmp_path / "logs"
    home.mkdir()
    logs.mkdir()
    link_port = _free_port()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
        f'address = "127.0.0.1:{link_port}"\ninsecure = true\n'
    )
    env = {
        **os.environ,
        "FLWR_HOME": str(home),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "PYTHONUNBUFFERED": "1",
    }
    app = _copy_app(tmp_path / "app")
    with (app / "pyproject.toml").open("rb") as f:
        defaults = dict(tomllib.load(f)["tool"]["flwr"]["app"]["config"])
    group = init_local_committee(tmp_path / "committee")
    key_file = tmp_path / "serverapp" / "client-key.toml"
    consumer = write_client_key(key_file).identity.public
    deployed_model = tmp_path / "serverapp" / "final-model.npz"
    run_config = {
        "num-server-rounds": ROUNDS,
        "min-train-nodes": N,
        "kaires-committee": str(group),
        "kaires-client-key": str(key_file),
        "final-model": str(deployed_model),
    }
    seeds = [os.urandom(32) for _ in range(N)]  # the providers' keys (their operators')
    policies = [
        bound_policy_id(f"provider.flwr.node-{i}", Identity.from_seed(seed).public.hex())
        for i, seed in enumerate(seeds)
    ]
    procs = Processes(logs)
    up: list[str] = []
    try:
        procs.start(
            "superlink",
            [tool["flower-superlink"], "--insecure", "--host", "127.0.0.1",
             "--port", str(link_port), "--disable-runtime-dependency-installation"],
            env, tmp_path,
        )  # fmt: skip
        assert committee_up(group.parent, detach=True, timeout=90.0, out=up.append) == 0, up
        ids = dict(re.findall(r"^(chain|committee|lts) id ([0-9a-f]{64})$", "\n".join(up), re.M))
        assert set(ids) == {"chain", "committee", "lts"}, up
        for i in range(N):
            node_config = {
                "partition-id": i,
                "num-partitions": N,
                "kaires-key": seeds[i].hex(),
                "kaires-trusted-chain-id": ids["chain"],
                "kaires-trusted-committee": ids["committee"],
                "kaires-trusted-lts": ids["lts"],
                "kaires-grants": consumer.hex(),
            }
            procs.start(
                f"supernode-{i}",
                [tool["flower-supernode"], "--insecure", "--superlink",
                 f"127.0.0.1:{link_port}", "--host", "127.0.0.1", "--port", str(_free_port()),
                 "--node-config", _kv(node_config)],
                env, tmp_path,
            )  # fmt: skip
        _wait_http(link_port, procs, "superlink", 60.0)
        procs.start(
            "flwr-run",
            [tool["flwr"], "run", str(app), CONNECTION, "--stream",
             "--run-config", _kv(run_config)],
            env, app,
        )  # fmt: skip
        # The reference, in this process, while the deployed run goes on.
        reference = _reference_model({**defaults, **run_config}, tmp_path / "reference.npz")
        try:
            code = procs.procs["flwr-run"].wait(timeout=FLWR_TIMEOUT)
        except subprocess.TimeoutExpired:
            code = None
        out = procs.log("flwr-run")
        assert code == 0, (
            f"flwr run: status {code}\n{out[-4000:]}\n{procs.log('superlink')[-2000:]}"
        )
        listing = subprocess.run(
            [tool["flwr"], "ls", CONNECTION, "--format", "json"],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        # An auditor's view: the chain verifies from genesis, and each provider's policy
        # (bound to the key its operator configured) was accessed once a round.
        audits = [audit_chain(load_group(group), p, timeout=30.0) for p in policies]
        node_logs = "".join(
            (group.parent / f"node-{i}" / "node.log").read_text(errors="replace") for i in range(4)
        )
        with group.open("rb") as f:
            public = tomllib.load(f)
        with np.load(deployed_model) as z:
            deployed = [z[f"arr_{i}"] for i in range(len(z.files))]
    finally:
        procs.stop()
        committee_down(group.parent, grace=10.0, out=up.append)
        # Keys, ledgers, the app and the logs (the failure messages carry the log tails).
        shutil.rmtree(tmp_path, ignore_errors=True)
    # The run finished, every round with all N providers accepted.
    try:
        runs = json.loads(listing.stdout)["runs"]
    except (ValueError, KeyError):
        runs = None
    assert runs is not None and [r["status"] for r in runs] == ["finished:completed"], (
        listing.stdout + listing.stderr
    )
    for r in range(1, ROUNDS + 1):
        assert f"kaires-flower-app: round {r} done, {N} accepted" in out, out[-4000:]
    assert "kaires-flower-app: final accuracy" in out
    # The model equals the in-process run's, within the fixed-point bound (C·2^-f per
    # coordinate and round; the two committees' fixed-point sums are in fact identical).
    n_params = sum(a.size for a in reference)
    bound = ROUNDS * float(defaults["clip-norm"]) * 2.0 ** -auto_frac_bits(n_params)
    assert len(deployed) == len(reference)
    for a, b in zip(deployed, reference, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=bound)
    # The ServerApp is a client of the committee, never a node: it was given the public
    # group file and a client key (not a node's), connected with that key as a client,
    # and reports the remote committee.
    assert "kaires-flower-app: committee RemoteCommittee" in out
    assert not {"ed25519_seed", "x25519_seed"} & set(_walk(public))
    assert consumer.hex() not in {n["sign"] for n in public["node"]}
    assert f"accepted client {client_address(consumer)}" in node_logs
    # The providers used the keys their operators configured (not keys derived from the
    # public kaires-seed): each one's policy was accessed once per round, proven on a
    # chain verified from genesis.
    for report in audits:
        assert len(report.accesses) == ROUNDS, report
