"""The networked benchmarks (``kaires_fl.bench.net``) and the bench area registry."""

from __future__ import annotations

import math

import pytest

from kaires_fl import bench
from kaires_fl.crypto.sign import Identity
from kaires_fl.ledger.client import LocalLedger
from kaires_fl.ledger.tx import make_tx


def test_net_runs_by_default_and_soak_only_on_demand() -> None:
    """Operations: ``kaires bench --json`` runs the net area; the 10-minute soak runs only
    when named (``--only soak``), and both modules have the area entry point."""
    import importlib

    assert "net" in bench.AREAS and "soak" not in bench.AREAS
    assert "soak" in bench.ON_DEMAND
    for area in ("net", "soak"):
        assert callable(importlib.import_module(f"kaires_fl.bench.{area}").run)


def test_wait_decodes_each_block_once() -> None:
    """Performance: ``LedgerClient.wait`` on n transactions of one block reads that block
    once, not n times (it was O(n²) on a networked client's SQLite replica, 57 tx/s)."""
    L = LocalLedger(4, seed=3)
    try:
        client = L.client()
        txs = [make_tx(L.genesis.chain_id, "coin.transfer", {"to": "33" * 32, "amount": 1},
                       1, Identity.generate()) for _ in range(30)]  # fmt: skip
        ids = client.submit_many(txs)
        client.wait(ids, proof=False)  # committed (and counted below: already final)
        reads: list[int] = []
        real = L.block

        def counting_block(h: int):  # type: ignore[no-untyped-def]
            reads.append(h)
            return real(h)

        L.block = counting_block  # type: ignore[method-assign]
        done = client.wait(ids, proof=False)
        assert len(done) == 30
        assert len(reads) == len(set(reads)) == len({d.height for d in done})
    finally:
        L.close()


@pytest.mark.slow
def test_net_quick_reports_every_metric() -> None:
    """Benchmarks: the quick net area starts a 4-process committee, measures every
    networked metric (finite, positive) and stops the nodes."""
    from kaires_fl.bench import net

    out = net.run(quick=True)
    for k in ("committee_up_s", "net_job_s", "net_e2e_1m_s", "net_ledger_tx_per_s",
              "net_key_release_ms"):  # fmt: skip
        assert k in out and math.isfinite(out[k]) and out[k] > 0, (k, out)
