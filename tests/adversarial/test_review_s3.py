"""Adversarial review of session 3's changes (AES-GCM part envelopes, AES-CTR seed PRG,
BLAKE3 part hash, DLEQ batch v2, evidence cache, open_shares kernel)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from kaires_fl import schema
from kaires_fl.crypto.envelope import open_bulk_into, seal_bulk
from kaires_fl.errors import EncodingError, InvalidProof


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


# ------------------------------------------------------------------ batched DLEQ v2 (r_1 = 1)


def _dleq_world(k: int) -> tuple[object, ...]:
    from kaires_fl.crypto.group import Point, Scalar, hash_to_point

    x = Scalar.random()
    base1 = Point.base()
    bases = [hash_to_point(b"review-s3/base/%d" % i) for i in range(k)]
    return x, base1, base1 * x, bases, [b * x for b in bases]


@pytest.mark.parametrize("wrong", [0, 1, 3])
def test_batched_dleq_refuses_a_trustee_wrong_on_one_of_k(wrong: int) -> None:
    """A trustee re-encrypts K = 4 writes and is wrong on one (the first, whose coefficient
    is the fixed 1, or a later one): its best proof — an honest DLEQ on the fold of the true
    values — does not verify for the statements it sent."""
    from kaires_fl.crypto import proofs
    from kaires_fl.crypto.group import Point

    x, base1, x1, bases, vs = _dleq_world(4)
    vs = list(vs)
    vs[wrong] = vs[wrong] + Point.base()
    _, proof = proofs.dleq_batch_prove(x, base1, bases, b"ctx")  # proof for the true values
    with pytest.raises(InvalidProof):
        proofs.dleq_batch_verify(proof, base1, x1, bases, vs, b"ctx")
    # and proving over the wrong statements (the prover folds with the verifier's r) fails
    d, r = proofs.dleq_batch_coefficients(b"ctx", base1, x1, bases, vs)
    b_star = proofs._fold(r, bases)
    forged = proofs.dleq_prove(x, base1, b_star, d, x1, b_star * x)
    with pytest.raises(InvalidProof):
        proofs.dleq_batch_verify(forged, base1, x1, bases, vs, b"ctx")


def test_batched_dleq_errors_that_cancel_in_a_plain_sum_are_caught() -> None:
    """V_1 = x·B_1 + E and V_2 = x·B_2 − E: with coefficients (1, 1) the fold is exactly
    x·(B_1 + B_2) and an honest proof on it would pass; r_2 is a hash of every statement,
    so (1 − r_2)·E ≠ 0 and it fails."""
    from kaires_fl.crypto import proofs
    from kaires_fl.crypto.group import hash_to_point

    x, base1, x1, bases, vs = _dleq_world(2)
    e = hash_to_point(b"review-s3/error")
    bad = [vs[0] + e, vs[1] - e]
    d, r = proofs.dleq_batch_coefficients(b"ctx", base1, x1, bases, bad)
    assert r[0] == 1 and r[1] != 1
    b_star = proofs._fold(r, bases)
    forged = proofs.dleq_prove(x, base1, b_star, d, x1, b_star * x)
    with pytest.raises(InvalidProof):
        proofs.dleq_batch_verify(forged, base1, x1, bases, bad, b"ctx")


def test_batched_dleq_coefficients_hash_every_input() -> None:
    """Strong Fiat–Shamir: changing the context, base1, statement1, any B_k or V_k, or the
    order changes the digest and every coefficient after the first."""
    from kaires_fl.crypto import proofs
    from kaires_fl.crypto.group import Point

    x, base1, x1, bases, vs = _dleq_world(3)
    ref = proofs.dleq_batch_coefficients(b"ctx", base1, x1, bases, vs)
    g = Point.base()
    variants = [
        (b"ctx2", base1, x1, bases, vs),
        (b"ctx", base1 + g, x1, bases, vs),
        (b"ctx", base1, x1 + g, bases, vs),
        (b"ctx", base1, x1, [bases[0], bases[1] + g, bases[2]], vs),
        (b"ctx", base1, x1, bases, [vs[0] + g, vs[1], vs[2]]),
        (b"ctx", base1, x1, bases[::-1], vs[::-1]),
    ]
    for v in variants:
        d, r = proofs.dleq_batch_coefficients(*v)
        assert d != ref[0] and r[0] == 1 and r[1] != ref[1][1] and r[2] != ref[1][2]
    _, proof = proofs.dleq_batch_prove(x, base1, bases, b"ctx")
    proofs.dleq_batch_verify(proof, base1, x1, bases, vs, b"ctx")
    with pytest.raises(InvalidProof):
        proofs.dleq_batch_verify(proof, base1, x1, bases, vs, b"ctx2")


# ------------------------------------------------------------------ decide_job's opening


@pytest.mark.parametrize("n, t", [(4, 1), (7, 2)])
def test_open_consistent_sees_one_wrong_coordinate_anywhere(n: int, t: int) -> None:
    """A faulty aggregator wrong in one coordinate only (a base share or a checked one,
    at a tile's first or last element, or the very last): the fused opening reports the
    shares inconsistent, and the robust opening corrects them to the secret."""
    from kaires_fl.aggregation.aggregator import _open_consistent
    from kaires_fl.arith import _kernels as kern
    from kaires_fl.arith import sharing
    from kaires_fl.arith.field import Field64, Field128

    size = 2 * kern.OPEN_TILE + 3
    for F in (Field64, Field128):
        secret = F.random((size,))
        sh = sharing.share(F, secret, n, t)
        shares = {i: sh[i].copy() for i in range(n)}
        opened = _open_consistent(F, shares, t)
        assert opened is not None and np.array_equal(opened, secret)
        for party in (0, t, n - 1):
            for pos in (0, kern.OPEN_TILE - 1, kern.OPEN_TILE, size - 1):
                bad = dict(shares)
                bad[party] = shares[party].copy()
                bad[party][pos] = F.add(bad[party][pos : pos + 1], F.ones((1,)))[0]
                assert _open_consistent(F, bad, t) is None, (F.__name__, party, pos)
        bad = dict(shares)
        bad[n - 1] = shares[n - 1].copy()
        bad[n - 1][size - 1] = F.add(bad[n - 1][-1:], F.ones((1,)))[0]
        got, wrong = sharing.robust_reconstruct(F, bad, n, t)
        assert np.array_equal(got, secret) and wrong == [n - 1]


# ------------------------------------------------------------------ evidence BlockCache


def test_block_cache_entry_vouches_only_for_its_root_and_bytes() -> None:
    """An entry whose Merkle path passed under root R is remembered for (R, its exact
    encoding) only: the same entry under another root, or another value, key or path under
    R, is not vouched for (it is checked again)."""
    from kaires_fl.secret_management.evidence import BlockCache, ProvenEntry

    cache = BlockCache(entries=8)
    e = ProvenEntry("job/abc", b'{"status":"committed"}', (), (bytes(32),))
    r1, r2 = b"\x01" * 32, b"\x02" * 32
    cache.remember_entry(r1, e)
    assert cache.entry_passed(r1, e)
    assert not cache.entry_passed(r2, e)
    for other in (
        ProvenEntry("job/abc", b'{"status":"done"}', (), (bytes(32),)),
        ProvenEntry("job/abc", None, (), (bytes(32),)),
        ProvenEntry("job/abd", b'{"status":"committed"}', (), (bytes(32),)),
        ProvenEntry("job/abc", b'{"status":"committed"}', (), (b"\x01" * 32,)),
        ProvenEntry("job/abc", b'{"status":"committed"}', (("k", bytes(32)),), (bytes(32),)),
    ):
        assert not cache.entry_passed(r1, other)


# ------------------------------------------------------------------ expand_seed


def test_expand_seed_streams_are_separated_and_never_repeat_a_block() -> None:
    """No two of (field, context, seed) share a keystream, and one long expansion (across
    the 256 KiB chunks of the Field64 path) never repeats a 16-byte keystream block (the
    counter is not restarted per chunk or per rejection round)."""
    from kaires_fl.arith.field import Field64, Field128

    seed = bytes(range(32))
    a = Field64.expand_seed(seed, (4,), b"ctx")
    assert not np.array_equal(a, Field64.expand_seed(seed, (4,), b"ctx2"))
    assert not np.array_equal(a, Field64.expand_seed(bytes(31) + b"\x01", (4,), b"ctx"))
    wide = Field128.expand_seed(seed, (4,), b"ctx")
    assert all(int(w) % (1 << 64) != int(a[0]) for w in wide)
    n = 3 * (1 << 15) + 7  # three 256 KiB chunks and a bit
    long = Field64.expand_seed(seed, (n,), b"ctx")
    assert np.array_equal(long[: n // 2], Field64.expand_seed(seed, (n // 2,), b"ctx"))
    blocks = long[: n - 1 if n % 2 else n].reshape(-1, 2)
    assert len(np.unique(blocks, axis=0)) == len(blocks)
    with pytest.raises(EncodingError):
        Field64.expand_seed(seed[:31], (1,), b"ctx")
