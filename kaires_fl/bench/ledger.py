"""Ledger benchmarks: throughput and commit latency of 4 in-process nodes, audit speed.

- ``ledger_tx_per_s``: signed policy (``darc.evolve``, one per provider) and job
  (``job.create`` over 5 providers each) transactions submitted at once to a 4-node
  :class:`~kaires_fl.ledger.LocalLedger` and waited for (signing is the clients' work
  and is done beforehand; every node verifies every signature, re-executes every tx
  and persists to SQLite).
- ``ledger_commit_p50_ms``: median wall time from submitting a small batch of txs to
  its commit, under light load (network latency is simulated, so this is the
  protocol's compute time: 3 phases, 4 nodes, block execution and persistence).
- ``ledger_tx_per_cpu_s``: the same run per CPU second of this process (all nodes
  share it), which does not depend on what else the machine runs.
- ``ledger_verify_blocks_per_s``: :func:`~kaires_fl.ledger.verify_chain` over the
  chain produced by the latency run (one policy block, then blocks of
  ``LATENCY_BATCH`` jobs) — hash links, tx Merkle roots and 2f+1 certificate
  signatures per block.
"""

from __future__ import annotations

import statistics
import time

from kaires_fl.bench import best_time
from kaires_fl.crypto.envelope import EnvelopeKeyPair
from kaires_fl.crypto.sign import H, Identity
from kaires_fl.ledger import (
    LedgerConfig,
    LocalLedger,
    bound_policy_id,
    committee_id,
    data_terms,
    job_payload,
    register_payload,
    verify_chain,
)

LATENCY_BATCH = 10


def _ident(*parts: bytes) -> Identity:
    return Identity.from_seed(H(b"bench-ledger", *parts))


def _pid(i: int, p: Identity) -> str:
    return bound_policy_id(f"prov{i}", p.public.hex())


def _policy(i: int, p: Identity, use: str, version: int | None, price: int, committee: str) -> dict:
    body = {
        "id": _pid(i, p),
        "rules": {"_evolve": f"ed25519:{p.public.hex()}", "use": use},
        "terms": data_terms(
            p.public.hex(),
            ["mean"],
            price=price,
            min_providers=1,
            max_jobs=None,
            committees=[committee],
        ),
    }
    return body if version is None else {**body, "version": version}


def run(quick: bool = False) -> dict[str, float]:
    n_prov = 50 if quick else 200
    n_jobs = 500 if quick else 2000
    rounds = 30 if quick else 100
    L = LocalLedger(4, config=LedgerConfig(max_block_txs=1000))
    c = L.client()
    consumers = [_ident(b"consumer", str(i).encode()) for i in range(20)]
    provs = [_ident(b"provider", str(i).encode()) for i in range(n_prov)]
    aggs = [_ident(b"agg", str(i).encode()) for i in range(4)]
    boxes = [EnvelopeKeyPair.from_seed(H(b"bench-ledger/box", bytes([i]))) for i in range(4)]
    cid = committee_id([a.public.hex() for a in aggs], [b.public.hex() for b in boxes], 1)
    reg = c.sign(
        aggs[0],
        "committee.register",
        register_payload(c.chain, list(zip(aggs, boxes, strict=True)), 1),
        cosigners=aggs[1:],
    )
    c.wait(c.submit_many([reg]), proof=False)
    use = " | ".join(f"ed25519:{k.public.hex()}" for k in consumers)
    pids = [_pid(i, p) for i, p in enumerate(provs)]
    setup = [
        c.sign(p, "darc.create", _policy(i, p, use, None, 0, cid)) for i, p in enumerate(provs)
    ]
    c.wait(c.submit_many(setup), timeout=600.0, proof=False)

    # Latency under light load: one small batch at a time.
    lat: list[float] = []
    for r in range(rounds):
        who = consumers[r % len(consumers)]
        batch = [
            c.sign(
                who,
                "job.create",
                job_payload("mean", [pids[(r + k) % n_prov]], cid, "ab" * 32),
            )
            for k in range(LATENCY_BATCH)
        ]
        t0 = time.perf_counter()
        c.wait(c.submit_many(batch), proof=False)
        lat.append(time.perf_counter() - t0)
    L.run_for(0.05)
    chain = c.raw_blocks()
    t_verify = best_time(lambda: verify_chain(chain, L.genesis), repeat=3)

    # Throughput: every provider re-prices its policy (a new version) and consumers
    # submit jobs over 5 providers each, all at once.
    txs = [c.sign(p, "darc.evolve", _policy(i, p, use, 1, 0, cid)) for i, p in enumerate(provs)]
    for j in range(n_jobs):
        who = consumers[j % len(consumers)]
        chosen = [pids[(j + k) % n_prov] for k in range(5)]
        txs.append(c.sign(who, "job.create", job_payload("mean", chosen, cid, "ab" * 32)))
    t0, c0 = time.perf_counter(), time.process_time()
    done = c.wait(c.submit_many(txs), timeout=600.0, proof=False)
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    if not all(d.result.ok for d in done):
        raise RuntimeError("benchmark transactions were rejected: the workload is wrong")
    L.close()
    return {
        "ledger_tx_per_s": len(txs) / dt,
        # The nodes share one process: CPU time is the protocol's cost without the
        # noise of other processes on the machine.
        "ledger_tx_per_cpu_s": len(txs) / dc,
        "ledger_commit_p50_ms": statistics.median(lat) * 1000,
        "ledger_verify_blocks_per_s": len(chain) / t_verify,
    }
