"""Networked benchmarks: a committee of separate OS processes on loopback.

A 4-node committee is made with ``kaires committee init`` (ports free at run time, in a
temporary directory) and started with :func:`~kaires_fl.node.process.committee_up`
(``--detach``: one ``kaires node run`` process per node); the benchmark process is a
client (:func:`kaires_fl.connect`) holding no node key. The nodes are stopped in a
``finally`` whatever happens.

* ``committee_up_s``: ``committee init`` → every node ready (genesis committed, DKG done
  and persisted, LTS and aggregation committee on the ledger). Target ≤ 10 s. The other
  figures are taken once every node has also finished its kernel warm-up (which starts at
  readiness, on a background thread: :func:`wait_warm`), i.e. in the steady state.
* ``net_job_s``: the diabetes linear regression (4 providers) through ``connect``, best of
  3 after a warm-up job, the client already connected. Target ≤ 1.5 s.
* ``net_e2e_1m_s``: 1,000,000 rows × 20 features from 100 providers — the workload of
  ``e2e_1m_s`` (:func:`kaires_fl.bench.e2e._data`) — the whole ``fit`` through the
  networked committee, best of 2 (the first also writes the 100 providers' policies, as
  ``e2e_1m_s`` does; the second finds them on the ledger). Target ≤ 1.5 × ``e2e_1m_s``.
* ``net_ledger_tx_per_s``: signed ``darc.create`` transactions (one per fresh identity)
  submitted at once through the client's connections, until every one is final in the
  client's verified replica (committed by the node processes). Target ≥ 1,000.
* ``net_key_release_ms``: one key released through the trustee processes at 4 trustees
  (t = 1), as a reader does it — the ledger evidence proved from the client's verified
  replica, a ``ReleaseRequest`` to every trustee over TCP, every sealed answer opened,
  the shares combined and checked — best of 10 (after a warm-up). The read is set up
  through the client on the networked ledger: an aggregation committee of one key held
  by the benchmark (registered like any committee), a policy naming it, a job, one
  write, the inputs closed, the read committed. Target ≤ 20 ms.
* ``net_key_release_16_ms``: the same on a 16-node committee (16 trustees), measured only
  if the 16 processes become ready within :data:`UP_16_TIMEOUT` seconds (then
  ``committee_up_16_s`` too); otherwise the metric is left out and the reason printed on
  stderr. Target ≤ 100 ms.

``quick=True``: 100,000 rows from 20 providers, 500 transactions, no 16-node committee.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: Seconds the 16-node committee may take to become ready before it is given up.
UP_16_TIMEOUT = 60.0


def free_base_port(n: int) -> int:
    """A port ``P`` with ``P .. P+n-1`` free on 127.0.0.1 now (below the ephemeral range)."""
    for _ in range(200):
        base = random.randrange(20000, 32000 - n)
        socks: list[socket.socket] = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free range of ports on 127.0.0.1")


def committee_init(root: Path, n: int) -> None:
    """``kaires committee init --dir root --nodes n`` on free ports (raises with its error)."""
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "kaires_fl.cli",
            "committee",
            "init",
            "--dir",
            str(root),
            "--nodes",
            str(n),
            "--base-port",
            str(free_base_port(n)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if r.returncode != 0:
        raise RuntimeError(f"committee init failed: {r.stderr.strip()}")


@contextlib.contextmanager
def running_committee(n: int, timeout: float = 120.0) -> Iterator[tuple[Path, float]]:
    """Init and start an ``n``-node committee of OS processes in a temporary directory.

    Yields ``(root, seconds from init to ready)``; the nodes are stopped (SIGTERM, then
    SIGKILL) when the block exits, also when it did not become ready.

    Raises
    ------
    RuntimeError
        if the committee is not ready within ``timeout`` seconds (with ``up``'s output).
    """
    from kaires_fl.node.process import committee_up, stop_nodes

    with tempfile.TemporaryDirectory(prefix="kaires-net-") as tmp:
        root = Path(tmp) / "committee"
        dirs = [root / f"node-{i}" for i in range(n)]
        lines: list[str] = []
        try:
            t0 = time.perf_counter()
            committee_init(root, n)
            rc = committee_up(root, detach=True, timeout=timeout, out=lines.append)
            up_s = time.perf_counter() - t0
            if rc != 0:
                raise RuntimeError(f"{n}-node committee not up: {' / '.join(lines[-3:])}")
            wait_warm(dirs, timeout)
            yield root, up_s
        finally:
            stop_nodes(dirs, grace=5.0, out=lambda s: None)


def diabetes_job(remote: Any) -> float:
    """One diabetes fit (4 providers) through ``remote``: wall seconds."""
    from sklearn.datasets import load_diabetes

    from kaires_fl.estimators import KairesLinearRegression

    X, y = load_diabetes(return_X_y=True)
    t0 = time.perf_counter()
    est = KairesLinearRegression(n_providers=4, committee=remote).fit(X, y)
    wall = time.perf_counter() - t0
    if est.kaires_report_["status"] != "done":  # pragma: no cover - fit raises first
        raise RuntimeError("the benchmark job did not complete")
    return wall


def _ledger_tx_per_s(remote: Any, n_tx: int) -> float:
    """``n_tx`` darc.create transactions, one per fresh identity, through the client."""
    from kaires_fl.crypto.sign import H, Identity
    from kaires_fl.ledger.darc import bound_policy_id, data_terms

    client = remote.client
    txs = []
    for i in range(n_tx):
        who = Identity.from_seed(H(b"bench-net/tx", random.randbytes(16), str(i).encode()))
        key = who.public.hex()
        body = {
            "id": bound_policy_id(f"net{i}", key),
            "rules": {"_evolve": f"ed25519:{key}", "use": f"ed25519:{key}"},
            "terms": data_terms(key, ["mean"], min_providers=1),
        }
        txs.append(client.sign(who, "darc.create", body))
    t0 = time.perf_counter()
    done = client.wait(client.submit_many(txs), timeout=300.0, proof=False)
    dt = time.perf_counter() - t0
    if not all(d.result.ok for d in done):
        raise RuntimeError("benchmark transactions were rejected: the workload is wrong")
    return n_tx / dt


def _key_release_setup(remote: Any) -> dict[str, Any]:
    """On the networked ledger, through the client: an aggregation committee of one key
    (the client's, registered like any committee), a provider's policy naming it, a job,
    one sealed key written to the committee's LTS, the inputs closed and a committed read
    — what an aggregator holds before it asks the trustees for a key
    (:func:`kaires_fl.bench.secret_management.open_release`)."""
    from kaires_fl.bench.secret_management import open_release
    from kaires_fl.crypto.envelope import EnvelopeKeyPair
    from kaires_fl.crypto.sign import H, Identity

    salt = random.randbytes(16)

    def ident(label: str) -> Identity:
        return Identity.from_seed(H(b"bench-net/release", salt, label.encode()))

    agg_key = EnvelopeKeyPair.from_seed(H(b"bench-net/release-box", salt))
    box = EnvelopeKeyPair.from_seed(H(b"bench-net/release-consumer", salt)).public.hex()
    lts = remote.trustees.lts
    s = open_release(remote.client, lts, ident, agg_key, box, "bench-net-policy", 1)
    return {**s, "key": agg_key}


def _key_release_once(remote: Any, s: dict[str, Any], timeout: float = 10.0) -> float:
    """One key release through the trustee processes, as the reader does it: the ledger
    evidence (proved from the client's replica), the request to every trustee, every
    sealed answer opened, t + 1 shares combined and checked. Returns seconds."""
    from kaires_fl.crypto.elgamal import RecipientKey
    from kaires_fl.errors import ProtocolError
    from kaires_fl.secret_management import (
        ReleaseRequest,
        combine_release,
        evidence_keys,
        prove_entries,
    )
    from kaires_fl.secret_management.committee import _opened
    from kaires_fl.secret_management.release import writes_from_evidence

    client, lts = remote.client, remote.trustees.lts
    addresses = list(remote.trustees.addresses)
    index = {a: j for j, a in enumerate(addresses)}
    got: dict[int, Any] = {}

    def on_answer(src: str, msg: Any) -> None:
        j = index.get(src)
        if j is not None:
            got.setdefault(j, msg)

    ep = remote.network.endpoint(remote.address + "/reader")
    ep.set_handler(on_answer)
    try:
        t0 = time.perf_counter()
        keys = evidence_keys(lts.id, s["read_id"], s["job"], s["writes"])
        req = ReleaseRequest(s["read_id"], prove_entries(client, keys))
        ep.broadcast(addresses, req)
        if not remote.network.run_until(lambda: len(got) == len(addresses), timeout):
            raise ProtocolError(f"{len(got)} of {len(addresses)} trustees answered")
        answers = {j: _opened(a, s["key"], s["read_id"], j) for j, a in got.items()}
        proven = req.evidence.verify(client.genesis)
        res = combine_release(
            answers,
            s["read_id"],
            s["read"],
            writes_from_evidence(proven, s["writes"]),
            lts,
            RecipientKey.from_x25519(s["key"]),
        )
        elapsed = time.perf_counter() - t0
    finally:
        ep.set_handler(None)
    if len(res.keys) != 1 or res.faulty:
        raise ProtocolError(f"benchmark release failed (faulty trustees {res.faulty})")
    return elapsed


def _key_release_ms(remote: Any, repeat: int) -> float:
    """Best of ``repeat`` key releases (after one warm-up), in ms."""
    s = _key_release_setup(remote)
    _key_release_once(remote, s)
    return min(_key_release_once(remote, s) for _ in range(repeat)) * 1e3


def wait_warm(dirs: list[Path], timeout: float) -> bool:
    """Wait until every node in ``dirs`` logged the end of its kernel warm-up (it runs
    after readiness, see :mod:`kaires_fl.node.warmup`), so that the figures measure the
    committee's steady state and not 2·n cores' worth of compilation; True if they did."""
    from kaires_fl.node.process import WARMUP_ENV

    if os.environ.get(WARMUP_ENV, "1") == "0":
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logs = [(d / "node.log").read_text(errors="replace") for d in dirs if d.exists()]
        done = ("kernels warm (" in log or "warm-up failed" in log for log in logs)
        if len(logs) == len(dirs) and all(done):
            return True
        time.sleep(0.2)
    print(f"bench net: the nodes' warm-up did not end within {timeout:.0f} s", file=sys.stderr)
    return False


def _release_16() -> dict[str, float]:
    """``net_key_release_16_ms`` if a 16-node committee comes up in time, else {}."""
    import kaires_fl

    try:
        with running_committee(16, timeout=UP_16_TIMEOUT) as (root, up_s):
            with kaires_fl.connect(root / "group.toml", timeout=60.0) as remote:
                rel = _key_release_ms(remote, 5)
            return {"net_key_release_16_ms": rel, "committee_up_16_s": up_s}
    except Exception as exc:  # reported, not faked: the metric is left out
        print(f"bench net: net_key_release_16_ms left out: {exc}", file=sys.stderr)
        return {}


def run(quick: bool = False) -> dict[str, float]:
    """The net metrics (see the module docstring)."""
    import kaires_fl
    from kaires_fl.bench.e2e import _data
    from kaires_fl.estimators import KairesLinearRegression

    n, providers = (100_000, 20) if quick else (1_000_000, 100)
    n_tx = 500 if quick else 2000
    out: dict[str, float] = {}
    with running_committee(4) as (root, up_s):
        out["committee_up_s"] = up_s
        with kaires_fl.connect(root / "group.toml", timeout=60.0, max_jobs=None) as remote:
            diabetes_job(remote)  # warm-up: providers' policies, caches, connections
            out["net_job_s"] = min(diabetes_job(remote) for _ in range(3))
            out["net_key_release_ms"] = _key_release_ms(remote, 5 if quick else 10)
            out["net_ledger_tx_per_s"] = _ledger_tx_per_s(remote, n_tx)
            X, y = _data(n, 20)
            e2e = []
            for _ in range(2):
                t0 = time.perf_counter()
                KairesLinearRegression(n_providers=providers, committee=remote).fit(X, y)
                e2e.append(time.perf_counter() - t0)
            out["net_e2e_1m_s"] = min(e2e)
    if not quick:
        out.update(_release_16())
    return out


if __name__ == "__main__":  # pragma: no cover
    import json

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
