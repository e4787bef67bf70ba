"""Adversarial review of session 3's changes (AES-GCM part envelopes, AES-CTR seed PRG,
BLAKE3 part hash, DLEQ batch v2, evidence cache, open_shares kernel)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from kaires_fl import schema
from kaires_fl.crypto.envelope import open_bulk_into, seal_bulk
from kaires_fl.errors import InvalidProof


def test_failed_open_bulk_into_leaves_no_unauthenticated_plaintext() -> None:
    """An in-transit tamperer flips one tag bit: AES-GCM's decrypt_into has already written
    the (unauthenticated) plaintext into the caller's buffer when the tag check fails. The
    buffer must not keep it (a caller reusing its buffer would read attacker-malleable
    plaintext: CTR bits flip where the attacker flips ciphertext bits)."""
    key = os.urandom(32)
    secret = b"share-bytes " * 64
    blob = seal_bulk(key, secret, b"aad")
    for tampered in (
        blob[:-1] + bytes([blob[-1] ^ 1]),  # tag
        blob[:20] + bytes([blob[20] ^ 0x80]) + blob[21:],  # ciphertext
    ):
        buf = np.full(len(secret), 0xAB, np.uint8)
        with pytest.raises(InvalidProof):
            open_bulk_into(key, tampered, b"aad", memoryview(buf))
        assert not buf.any(), "plaintext (or old contents) left in the buffer after a failure"
    # a wrong aad too
    buf = np.zeros(len(secret), np.uint8)
    with pytest.raises(InvalidProof):
        open_bulk_into(key, blob, b"other", memoryview(buf))
    assert not buf.any()


def test_replayed_start_of_a_dropped_finished_job_is_refused_not_parked() -> None:
    """A stranger who saw job 1's signed StartJob replays it once the aggregator has dropped
    the delivered job (KEEP_DELIVERED newer ones delivered). The job has its receipt (status
    'done'), so it is never started again — and the replay must not take a slot of the
    aggregator's ledger-wait queue (MAX_WAITING): a finished job will never become
    'committed', and a queue full of such replays refuses honest early StartJobs."""
    from kaires_fl.aggregation import job as job_mod
    from kaires_fl.simulation import LocalCommittee
    from kaires_fl.statistics import LinearRegressionStats

    stat = LinearRegressionStats(1, [-1, 1], [-1, 1], granularity="provider", max_rows=8)
    rng = np.random.default_rng(3)
    data = {f"p{i}": (rng.uniform(-1, 1, (4, 1)), rng.uniform(-1, 1, 4)) for i in range(3)}
    c = LocalCommittee()
    try:
        svc = c.aggregators[0]
        c.run_job(stat, data)
        start = next(
            e.message
            for e in c.coordinator.log
            if isinstance(e.message, job_mod.StartJob) and e.direction == "out"
        )
        for _ in range(job_mod.KEEP_DELIVERED + 1):
            c.run_job(stat, data)
        assert start.job not in svc.jobs  # dropped: delivered, 3 newer delivered
        before = len(svc.errors)
        for _ in range(5):  # each decoded copy is a distinct object
            svc.on_message("stranger", schema.encode(start))
        assert start.job not in svc.jobs, "a finished job was started again"
        assert not svc.waiting, "replays of a finished job hold ledger-wait slots"
        refused = svc.errors[before:]
        assert len(refused) == 5 and all("finished" in why for _, why in refused)
    finally:
        c.close()
