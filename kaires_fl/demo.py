"""``kaires demo``: a private, Byzantine-tolerant linear regression on scikit-learn's diabetes
data, with an audit of the ledger.

Ten simulated providers hold the rows; the default committee (4 ledger nodes, 4 trustees,
4 aggregators, t = 1) runs one job with aggregator 2 Byzantine and provider 5 submitting
out-of-range values. The demo prints the coefficients beside plain scikit-learn's fitted on
the accepted providers' rows, who was rejected or caught, and the audit: the whole ledger
verified from its genesis block and the access records of one provider, each checked
against its inclusion proof.

``kaires demo --network`` runs the same job against a fresh committee of 4 separate node
processes on loopback, to which this process connects as a client
(:func:`kaires_fl.connect`); only the provider fault is injected there (the nodes are
real processes running honest code).
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import load_diabetes
from sklearn.linear_model import LinearRegression

N_PROVIDERS = 10
FAULTS: dict[str, dict[int, str]] = {
    "aggregator": {2: "byzantine"},
    "provider": {5: "out_of_range"},
}


def _short(h: str) -> str:
    return f"{h[:12]}…"


def main(quiet: bool = False, network: bool = False) -> int:
    """Run the demo and print it; ``quiet`` hides the progress bar. Returns 0 when the result
    matches scikit-learn and the audit passes.

    ``network``: against a fresh committee of 4 separate node processes on loopback
    (``committee init`` + ``committee up --detach`` in a temporary directory, stopped at
    the end); this process is a client of it (:func:`kaires_fl.connect`): it holds the
    consumer's, the coordinator's and the simulated providers' keys, no node key.
    """
    if network:
        return _main_network(quiet)
    from kaires_fl.simulation import LocalCommittee

    out: Callable[..., None] = print
    out("Kaires-FL demo: linear regression on scikit-learn's diabetes data")
    out("  committee: 4 ledger nodes, 4 trustees, 4 aggregators (Shamir degree t = 1)")
    out("  injected faults: aggregator 2 is Byzantine, provider 5 submits out-of-range values")
    t0 = time.perf_counter()
    committee = LocalCommittee(faults=FAULTS)
    try:
        return _run(committee, t0, quiet, committee.ledger.verify, out)
    finally:
        committee.close()


def init_local_committee(root: Path, n: int = 4, host: str = "127.0.0.1") -> Path:
    """``committee init`` on ports free now: ``root/node-<i>`` and ``root/group.toml``."""
    from kaires_fl.node.config import make_group, setup_node, write_group

    entries = []
    for i in range(n):
        with socket.socket() as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        entries.append(setup_node(root / f"node-{i}", f"{host}:{port}", name=f"node-{i}"))
    write_group(make_group(entries), root / "group.toml")
    return root / "group.toml"


def _main_network(quiet: bool) -> int:
    import kaires_fl
    from kaires_fl.node.process import committee_down, committee_up

    out: Callable[..., None] = print
    out("Kaires-FL demo over the network: linear regression on scikit-learn's diabetes data")
    root = Path(tempfile.mkdtemp(prefix="kaires-demo-"))
    try:
        group = init_local_committee(root)
        out(f"  committee: 4 node processes (ledger node, trustee, aggregator each) in {root}")
        t_up = time.perf_counter()
        if committee_up(root, detach=True, out=lambda line: out(f"    {line}")) != 0:
            out("MISMATCH: the committee did not start (see the node logs above)")
            return 1
        out(f"  committee up in {time.perf_counter() - t_up:.1f} s; this process connects as a "
            "client (consumer, coordinator, providers: no node key)")  # fmt: skip
        out("  injected fault: provider 5 submits out-of-range values")
        t0 = time.perf_counter()
        with kaires_fl.connect(group) as committee:
            committee.faults["provider"] = dict(FAULTS["provider"])
            return _run(committee, t0, quiet, committee.verify, out)
    finally:
        committee_down(root, out=lambda line: None)
        shutil.rmtree(root, ignore_errors=True)


def _run(
    committee: Any, t0: float, quiet: bool, verify: Callable[[], int], out: Callable[..., None]
) -> int:
    from kaires_fl.estimators import KairesLinearRegression, split_rows

    data = load_diabetes()
    X, y = data.data, data.target
    names: list[str] = list(data.feature_names)
    out(f"  {X.shape[0]} rows × {X.shape[1]} features split among {N_PROVIDERS} providers")
    est = KairesLinearRegression(
        n_providers=N_PROVIDERS, committee=committee, progress="auto" if not quiet else False
    ).fit(X, y)
    elapsed = time.perf_counter() - t0
    report = est.kaires_report_
    labels, groups = split_rows(X.shape[0], N_PROVIDERS)
    accepted = set(report["accepted"])
    rows = np.concatenate([g for lab, g in zip(labels, groups, strict=True) if lab in accepted])
    sk = LinearRegression().fit(X[rows], y[rows])
    ours = np.append(est.coef_, est.intercept_)
    ref = np.append(sk.coef_, sk.intercept_)
    err = float(np.max(np.abs(ours - ref)) / np.max(np.abs(ref)))

    out(f"\nJob {_short(report['job'])} done in {elapsed:.1f} s "
        f"(set-up {committee.setup_seconds:.2f} s)")  # fmt: skip
    out(f"\n  {'coefficient':<12}{'Kaires':>14}{'scikit-learn':>16}")
    for name, a, b in zip([*names, "intercept"], ours, ref, strict=True):
        out(f"  {name:<12}{a:>14.6f}{b:>16.6f}")
    out(f"  max relative difference: {err:.1e}  (scikit-learn on the "
        f"{len(rows)} rows of the {len(accepted)} accepted providers)")  # fmt: skip

    out("\nRobustness")
    for lab, why in report["rejected"].items():
        out(f"  rejected provider {lab}: {why}")
    for i, why in report["faulty_aggregators"].items():
        out(f"  caught aggregator {i}: {why}")
    if not report["rejected"] and not report["faulty_aggregators"]:
        out("  nothing rejected, nobody caught")

    out("\nAudit")
    height = verify()
    out(f"  ledger verified from genesis: {height} blocks, hash chain and 2f + 1 "
        "signatures per block")  # fmt: skip
    who = labels[0]
    accesses = committee.client.accesses(committee.provider(who).policy_id)
    out(f"  access records of {who} ({len(accesses)}), each checked against its proof:")
    for proof in accesses:
        entry: dict[str, Any] = proof.verify(committee.ledger.genesis)
        out(f"    job {_short(entry['job'])} {entry['statistic']} by consumer "
            f"{_short(entry['consumer'])} at height {entry['height']}")  # fmt: skip
    ok = err <= 1e-6 and height >= report["receipt_height"] and len(accesses) >= 1
    out("\n" + ("OK" if ok else "MISMATCH: see above"))
    return 0 if ok else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
