"""An aggregator whose ledger replica lags the coordinator's waits for it (fault injection:
delay). The ledger nodes commit a block at slightly different times, so the StartJob of a
job whose inputs the coordinator saw closed can reach an aggregator before its replica has
that block (seen in the soak benchmark under load and in `kaires demo --network`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from kaires_fl.aggregation import job as job_mod
from kaires_fl.simulation import LocalCommittee
from kaires_fl.statistics import LinearRegressionStats

D = 2
STAT = LinearRegressionStats(
    D, [-1, 1], [-1, 1], granularity="provider", max_rows=100, max_measurements=32
)
RNG = np.random.default_rng(5)
DATA = {f"p{i}": (RNG.uniform(-1, 1, (8, D)), RNG.uniform(-1, 1, 8)) for i in range(5)}
HIDDEN = ("job/", "calypso/inputs/", "calypso/read/")


class LaggingReplica:
    """A real ledger client that does not show jobs, closed inputs and reads until
    ``until`` (simulated seconds): a replica one block behind for that long."""

    def __init__(self, inner: Any, clock: Any, until: float) -> None:
        self.inner, self.clock, self.until = inner, clock, until

    def get(self, key: str) -> Any:
        if self.clock.now() < self.until and key.startswith(HIDDEN):
            return None
        return self.inner.get(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _lag(c: LocalCommittee, i: int, seconds: float) -> None:
    svc = c.aggregators[i]
    svc.ledger = LaggingReplica(svc.ledger, svc.t, svc.t.now() + seconds)


def _sums() -> np.ndarray:
    X = np.concatenate([x for x, _ in DATA.values()])
    return X.T @ X


def test_a_lagging_replica_is_waited_for_and_the_aggregator_takes_part() -> None:
    """Robustness: aggregator 2's replica shows the job 0.8 s after everyone else's (within
    the coordinator's round timeout); it handles the StartJob once it has caught up, takes
    part, and nobody is named faulty."""
    c = LocalCommittee()
    try:
        _lag(c, 2, 0.8)
        r = c.run_job(STAT, DATA)
        assert r.report["faulty_aggregators"] == {}
        assert 2 in {i for i, st in enumerate(c.aggregators) if st.jobs}
        np.testing.assert_allclose(np.array(r.aggregate["xtx"], float), _sums(), atol=1e-8)
        assert not c.aggregators[2].waiting
    finally:
        c.close()


def test_a_replica_that_never_catches_up_refuses_after_the_wait() -> None:
    """Robustness: a replica that stays behind refuses the job after LEDGER_WAIT with the
    reason; the job still ends right with the n − t others."""
    c = LocalCommittee()
    try:
        _lag(c, 1, 1e9)
        r = c.run_job(STAT, DATA)
        np.testing.assert_allclose(np.array(r.aggregate["xtx"], float), _sums(), atol=1e-8)
        c.network.run_for(job_mod.LEDGER_WAIT + 2)  # the wait runs out
        assert not c.aggregators[1].jobs
        assert any("not committed with closed inputs" in e[1] for e in c.aggregators[1].errors)
        assert not c.aggregators[1].waiting
    finally:
        c.close()


def test_strangers_early_messages_are_bounded() -> None:
    """Robustness: a flood of StartJobs for jobs nobody committed, from many senders, holds
    at most MAX_WAITING messages; the rest are refused at once."""
    c = LocalCommittee()
    try:
        svc = c.aggregators[0]
        for k in range(job_mod.MAX_WAITING + 10):
            svc.on_message(f"stranger-{k % 16}", job_mod.StartJob(f"{k:064x}", ()))
        assert len(svc.waiting) == job_mod.MAX_WAITING
        r = c.run_job(STAT, DATA)  # the waits run out on the way; the service still works
        np.testing.assert_allclose(np.array(r.aggregate["xtx"], float), _sums(), atol=1e-8)
    finally:
        c.close()


def _held_by(svc: Any, sender: str) -> int:
    return sum(1 for who, _ in svc.waiting.values() if who == sender)


def test_one_strangers_flood_leaves_the_coordinator_its_slot() -> None:
    """Adversarial: one stranger sends MAX_WAITING + 10 StartJobs naming junk jobs (parked
    before any signature check: the coordinator's key is only on the ledger) to aggregator
    2, whose replica lags 0.8 s. The flood holds only MAX_WAITING_PER_SENDER slots, so the
    honest coordinator's early StartJob is still parked, handled once the replica catches
    up, and the aggregator takes part (before the per-sender quota it was refused at once)."""
    c = LocalCommittee()
    try:
        svc = c.aggregators[2]
        _lag(c, 2, 0.8)
        for k in range(job_mod.MAX_WAITING + 10):
            svc.on_message("stranger", job_mod.StartJob(f"{k:064x}", ()))
        assert _held_by(svc, "stranger") == job_mod.MAX_WAITING_PER_SENDER
        r = c.run_job(STAT, DATA)
        assert r.report["faulty_aggregators"] == {}
        assert any(st.coordinator == "coordinator" for st in svc.jobs.values()), (
            "the honest coordinator's early StartJob was refused"
        )
        np.testing.assert_allclose(np.array(r.aggregate["xtx"], float), _sums(), atol=1e-8)
    finally:
        c.close()


def test_one_sender_holds_at_most_its_quota() -> None:
    """Robustness: one sender (one address, or any client-<key>/… sub-addresses of one key)
    holds at most MAX_WAITING_PER_SENDER early messages; its next ones are refused at once,
    with the reason, while another sender still parks; a message handled again while it
    waits keeps its one slot (not counted twice), and the quota frees once the wait ends."""
    c = LocalCommittee()
    try:
        svc = c.aggregators[0]
        quota = job_mod.MAX_WAITING_PER_SENDER
        assert quota < job_mod.MAX_WAITING
        for k in range(quota + 5):
            svc.on_message(f"client-ab/{k}", job_mod.StartJob(f"{k:064x}", ()))
        assert len(svc.waiting) == quota
        refused = [why for _, why in svc.errors if "not committed" in why]
        assert len(refused) == 5
        svc.on_message("other", job_mod.StartJob(f"{999:064x}", ()))
        assert _held_by(svc, "other") == 1
        c.network.run_for(3.0)  # each message handled again several times
        assert _held_by(svc, "client-ab") == quota and len(svc.waiting) == quota + 1
        svc.on_message("client-ab", job_mod.StartJob(f"{1000:064x}", ()))
        assert _held_by(svc, "client-ab") == quota
        assert len([why for _, why in svc.errors if "not committed" in why]) == 6
        c.network.run_for(job_mod.LEDGER_WAIT + 2)  # the waits run out
        assert not svc.waiting
        svc.on_message("client-ab", job_mod.StartJob(f"{1001:064x}", ()))
        assert _held_by(svc, "client-ab") == 1
    finally:
        c.close()
