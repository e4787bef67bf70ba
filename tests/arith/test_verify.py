"""Verification on Shamir shares: right decisions despite garbage or silent aggregators."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

from kaires_fl.arith import circuits as cc
from kaires_fl.arith import sharing
from kaires_fl.arith.field import Field64
from kaires_fl.arith.flp import FlpBBCGGI19
from kaires_fl.arith.verify import (
    decide_opened,
    open_verifiers,
    query_shares,
    share_submission,
    verify_shared,
)
from kaires_fl.errors import DecodingError

F = Field64
RNG = np.random.default_rng(99)


def batch(valid: cc.LinearRegressionRecord | cc.SumVec, B: int = 40):  # type: ignore[no-untyped-def]
    """A batch with every 5th record invalid (a non-bit), proofs, randomness, expected."""
    flp = FlpBBCGGI19(valid)
    if isinstance(valid, cc.LinearRegressionRecord):
        meas = valid.encode(RNG.integers(0, 2**valid.bits, (B, valid.d + 1)))
    else:
        meas = valid.encode(RNG.integers(0, 2**valid.bits, (B, valid.length)))
    expect = np.ones(B, dtype=bool)
    expect[::5] = False
    meas[::5, 1] = F.elements(3)
    jr = flp.derive_joint_rand(b"manifest hash")
    proof = flp.prove(meas, flp.random_prove_rand((B,)), jr)
    qr = flp.derive_query_rand(b"coin of the job")
    return flp, meas, proof, jr, qr, expect


@pytest.mark.parametrize("bad", range(4))
def test_one_garbage_aggregator_of_four_is_named_and_decisions_hold(bad: int) -> None:
    flp, meas, proof, jr, qr, expect = batch(cc.LinearRegressionRecord(4, 8))
    ms, ps = share_submission(flp, meas, proof, 4, 1)
    ms[bad] = F.random(ms[bad].shape)  # its stored shares are garbage
    accept, faulty = verify_shared(flp, ms, ps, qr, jr, n=4, t=1)
    assert accept.tolist() == expect.tolist()
    assert faulty == [bad]


@pytest.mark.parametrize("silent", range(4))
def test_one_silent_aggregator_of_four(silent: int) -> None:
    flp, meas, proof, jr, qr, expect = batch(cc.SumVec(30, 2))
    ms, ps = share_submission(flp, meas, proof, 4, 1)
    del ms[silent]
    accept, faulty = verify_shared(flp, ms, ps, qr, jr, n=4, t=1)
    assert accept.tolist() == expect.tolist()
    assert faulty == [silent]


def test_garbage_verifier_share_is_named() -> None:
    flp, meas, proof, jr, qr, expect = batch(cc.LinearRegressionRecord(2, 6))
    ms, ps = share_submission(flp, meas, proof, 4, 1)
    ver = {i: query_shares(flp, ms[i], ps[i], qr, jr) for i in range(4)}
    ver[2] = ver[2].copy()
    ver[2][7, 0] = F.add(ver[2][7, 0], F.ones(()))  # wrong in one coordinate only
    verifier, wrong, missing = open_verifiers(flp, ver, 4, 1)
    assert wrong == [2] and missing == []
    assert decide_opened(flp, verifier).tolist() == expect.tolist()


def test_verifier_shares_are_shamir_shares_of_the_verifier() -> None:
    flp, meas, proof, jr, qr, _ = batch(cc.LinearRegressionRecord(3, 5), B=9)
    ms, ps = share_submission(flp, meas, proof, 5, 2)
    ver = {i: query_shares(flp, ms[i], ps[i], qr, jr) for i in range(5)}
    assert sharing.is_consistent(F, ver, 2)
    assert np.array_equal(sharing.reconstruct(F, ver, 2), flp.query(meas, proof, qr, jr))


def test_seven_aggregators_two_byzantine() -> None:
    flp, meas, proof, jr, qr, expect = batch(cc.SumVec(10, 4))
    ms, ps = share_submission(flp, meas, proof, 7, 2)
    ms[1] = F.random(ms[1].shape)
    ps[5] = F.random(ps[5].shape)
    accept, faulty = verify_shared(flp, ms, ps, qr, jr, n=7, t=2)
    assert accept.tolist() == expect.tolist()
    assert faulty == [1, 5]


def test_too_many_faulty_aggregators_raise() -> None:
    flp, meas, proof, jr, qr, _ = batch(cc.SumVec(10, 1))
    ms, ps = share_submission(flp, meas, proof, 4, 1)
    ms[0] = F.random(ms[0].shape)
    del ps[3]  # one wrong + one missing: 4 − 1 < 1 + 1 + 2
    with pytest.raises(DecodingError):
        verify_shared(flp, ms, ps, qr, jr, n=4, t=1)


def test_per_record_randomness_on_shares() -> None:
    valid = cc.Histogram(6)
    flp = FlpBBCGGI19(valid)
    meas = valid.encode(RNG.integers(0, 6, 30))
    meas[3] = F.elements([1, 1, 0, 0, 0, 0])
    jr = F.random((30, flp.JOINT_RAND_LEN), rng=RNG)
    qr = F.random((30, flp.QUERY_RAND_LEN), rng=RNG)
    proof = flp.prove(meas, flp.random_prove_rand((30,)), jr)
    ms, ps = share_submission(flp, meas, proof, 4, 1)
    ps[0] = F.random(ps[0].shape)
    accept, faulty = verify_shared(flp, ms, ps, qr, jr, n=4, t=1)
    assert accept.tolist() == [i != 3 for i in range(30)]
    assert faulty == [0]


def test_malformed_share_counts_as_faulty() -> None:
    flp, meas, proof, jr, qr, expect = batch(cc.SumVec(12, 2))
    ms, ps = share_submission(flp, meas, proof, 4, 1)
    ms[3] = ms[3][:, :-1]  # truncated
    accept, faulty = verify_shared(flp, ms, ps, qr, jr, n=4, t=1)
    assert accept.tolist() == expect.tolist()
    assert faulty == [3]


_FUZZ_FLP = FlpBBCGGI19(cc.SumVec(5, 2, chunk_length=3))


def _fuzz_array(data, length: int):  # type: ignore[no-untyped-def]
    """A peer's array: right or wrong length, batch, dtype; canonical or not."""
    from hypothesis import strategies as st

    kind = data.draw(st.sampled_from(["ok", "len", "dtype", "scalar", "none", "batch"]))
    B = data.draw(st.integers(1, 3))
    if kind == "none":
        return None
    if kind == "scalar":
        return np.uint64(data.draw(st.integers(0, 2**64 - 1)))
    n = length if kind != "len" else data.draw(st.integers(0, 2 * length + 1))
    vals = data.draw(st.lists(st.integers(0, 2**64 - 1), min_size=B * n, max_size=B * n))
    arr = np.array(vals, dtype=np.uint64).reshape(B, n)
    if kind == "dtype":
        return arr.astype(data.draw(st.sampled_from([np.int64, np.float64, np.uint32, object])))
    if kind == "batch":
        return arr[:1] if B > 1 else np.concatenate([arr, arr])
    return arr


def test_fuzzed_peer_shares_give_typed_errors_or_blame() -> None:
    """Robustness: arbitrary measurement/proof shares from up to n aggregators (wrong
    shapes, dtypes, non-canonical elements, missing) make verify_shared return decisions
    with the culprits named or raise a KairesError — never another exception."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from kaires_fl.errors import KairesError

    flp = _FUZZ_FLP
    jr = flp.derive_joint_rand(b"fuzz")
    qr = flp.derive_query_rand(b"fuzz")

    @settings(max_examples=150, deadline=None)
    @given(st.data())
    def run(data) -> None:  # type: ignore[no-untyped-def]
        ms = {i: _fuzz_array(data, flp.MEAS_LEN) for i in range(4)}
        ps = {i: _fuzz_array(data, flp.PROOF_LEN) for i in range(4)}
        try:
            accept, faulty = verify_shared(flp, ms, ps, qr, jr, 4, 1)
        except KairesError:
            return
        assert accept.dtype == bool and all(0 <= i < 4 for i in faulty)

    run()


def test_fuzzed_opened_verifiers_give_typed_errors() -> None:
    """Robustness: decide on an arbitrary opened verifier answers per record or raises a
    KairesError; query on arbitrary shares likewise."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from kaires_fl.errors import KairesError

    flp = _FUZZ_FLP
    jr = flp.derive_joint_rand(b"fuzz")
    qr = flp.derive_query_rand(b"fuzz")

    @settings(max_examples=150, deadline=None)
    @given(st.data())
    def run(data) -> None:  # type: ignore[no-untyped-def]
        ver = _fuzz_array(data, flp.VERIFIER_LEN)
        try:
            out = decide_opened(flp, ver)  # type: ignore[arg-type]
            assert out.dtype == bool
        except KairesError:
            pass
        m, p = _fuzz_array(data, flp.MEAS_LEN), _fuzz_array(data, flp.PROOF_LEN)
        with contextlib.suppress(KairesError):
            query_shares(flp, m, p, qr, jr)  # type: ignore[arg-type]

    run()
