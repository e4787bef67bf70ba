"""FLP (BBCGGI19): agreement with a Python-int reference, batching, repetition, tampering."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kaires_fl.arith import circuits as cc
from kaires_fl.arith.field import Field64, Field128
from kaires_fl.arith.flp import (
    FlpBBCGGI19,
    Gadget,
    GadgetCall,
    Mul,
    ParallelSum,
    PolyEval,
    Valid,
    powers,
)
from kaires_fl.errors import ConfigError, EncodingError, ProtocolError

F = Field64
p = F.MODULUS
RNG = np.random.default_rng(20261127)


# ------------------------------------------------------------------ Python-int reference


def ref_interp_roots(vals: list[int], alpha: int) -> list[int]:
    """Coefficients of the polynomial with value vals[k] at alpha^k (O(P²) inverse DFT)."""
    n = len(vals)
    ainv = pow(alpha, -1, p)
    ninv = pow(n, -1, p)
    return [ninv * sum(v * pow(ainv, j * k, p) for k, v in enumerate(vals)) % p for j in range(n)]


def ref_mul(a: list[int], b: list[int]) -> list[int]:
    out = [0] * (len(a) + len(b) - 1)
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            out[i + j] = (out[i + j] + x * y) % p
    return out


def ref_eval(c: list[int], x: int) -> int:
    acc = 0
    for v in reversed(c):
        acc = (acc * x + v) % p
    return acc


def ref_gadget_inputs(valid: Valid, meas: np.ndarray, jr: np.ndarray) -> list[np.ndarray]:
    """Inputs (M, L) of every gadget call for one record, via the circuit itself."""
    calls = [GadgetCall(F, g, 1) for g in valid.GADGETS]
    valid.eval(meas[None, :], jr[None, :], calls)
    return [np.concatenate(c.inputs, axis=1)[0] for c in calls]


def ref_sumvec_inputs(meas: list[int], jr: list[int], chunk: int) -> list[list[int]]:
    """ParallelSum(Mul, chunk) inputs of SumVec straight from draft-12's definition, in
    ints: call m, slot j holds (r_m^(j+1)·b, b − 1) for b = meas[m·chunk + j] (pairs past
    the end stay (0, 0)); left factors first, then right ones."""
    calls = -(-len(meas) // chunk)
    rows = []
    for m in range(calls):
        left, right = [0] * chunk, [0] * chunk
        for j in range(chunk):
            i = m * chunk + j
            if i < len(meas):
                left[j] = pow(jr[m], j + 1, p) * meas[i] % p
                right[j] = (meas[i] - 1) % p
        rows.append(left + right)
    return rows


def ref_prove_parallel_sum_mul(valid: Valid, meas: np.ndarray, seeds: list[int], jr: np.ndarray):
    """Proof of one repetition for a circuit with one ParallelSum(Mul) gadget, in ints."""
    (inp,) = ref_gadget_inputs(valid, meas, jr)
    M, L = inp.shape
    P = 1 << (M).bit_length()
    alpha = int(F.root_of_unity(P))
    wires = []
    for j in range(L):
        vals = [seeds[j]] + [int(x) for x in inp[:, j]] + [0] * (P - 1 - M)
        wires.append(ref_interp_roots(vals, alpha))
    gpoly = [0] * (2 * (P - 1) + 1)
    half = L // 2  # ParallelSum inputs are sub-input-major: left factors, then right ones
    for j in range(half):
        prod = ref_mul(wires[j], wires[j + half])
        gpoly = [(x + y) % p for x, y in zip(gpoly, prod, strict=True)]
    return gpoly, wires, P


@settings(max_examples=10, deadline=None)
@given(st.integers(1, 6), st.integers(1, 4), st.integers(0, 2**32))
def test_prove_and_query_match_python_int_reference(length: int, bits: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    valid = cc.SumVec(length, bits, chunk_length=2)
    flp = FlpBBCGGI19(valid, proofs=1)
    meas = valid.encode(rng.integers(0, 2**bits, (length,)))
    meas[0] = F.random((), rng=rng)  # any input: the proof is still defined
    pr = F.random((flp.PROVE_RAND_LEN,), rng=rng)
    jr = F.random((flp.JOINT_RAND_LEN,), rng=rng)
    assert valid.GADGET_CALLS[0] == flp.JOINT_RAND_LEN  # one element per gadget call
    (inp,) = ref_gadget_inputs(valid, meas, jr)
    ref_inp = ref_sumvec_inputs([int(x) for x in meas], [int(x) for x in jr], 2)
    assert [[int(x) for x in row] for row in inp] == ref_inp
    proof = flp.prove(meas, pr, jr)
    gpoly, wires, P = ref_prove_parallel_sum_mul(valid, meas, [int(x) for x in pr], jr)
    L = valid.GADGETS[0].ARITY
    assert [int(x) for x in proof[:L]] == [int(x) for x in pr]
    assert [int(x) for x in proof[L:]] == gpoly
    # query: circuit output from the gadget polynomial at α^k, wires and polynomial at t
    qr = flp.derive_query_rand(seed.to_bytes(8, "little"))
    t = int(qr[0])
    ver = flp.query(meas, proof, qr, jr)
    alpha = int(F.root_of_unity(P))
    outs = [ref_eval(gpoly, pow(alpha, k, p)) for k in range(1, valid.GADGET_CALLS[0] + 1)]
    assert int(ver[0]) == sum(outs) % p
    assert [int(x) for x in ver[1 : 1 + L]] == [ref_eval(w, t) for w in wires]
    assert int(ver[1 + L]) == ref_eval(gpoly, t)


def test_gadgets_against_ints() -> None:
    x = F.random((5, 6), rng=RNG)
    xi = [[int(v) for v in row] for row in x]
    mul = Mul().eval(F, x[:, :2])
    assert [int(v) for v in mul] == [r[0] * r[1] % p for r in xi]
    pe = PolyEval([3, 0, p - 1, 5])
    out = pe.eval(F, x[:, :1])
    assert pe.DEGREE == 3
    assert [int(v) for v in out] == [(3 - r[0] ** 2 + 5 * r[0] ** 3) % p for r in xi]
    ps = ParallelSum(Mul(), 3)
    assert ps.ARITY == 6 and ps.DEGREE == 2
    out = ps.eval(F, x)
    assert [int(v) for v in out] == [(r[0] * r[3] + r[1] * r[4] + r[2] * r[5]) % p for r in xi]
    with pytest.raises(ConfigError):
        PolyEval([1])


def test_powers() -> None:
    x = F.random((4,), rng=RNG)
    pw = powers(F, x, 13)
    for i in range(4):
        assert [int(v) for v in pw[i]] == [pow(int(x[i]), k, p) for k in range(13)]


class Ternary(Valid):
    """x ∈ {0, 1, 2} for every entry, by a degree-3 PolyEval gadget (tests DEGREE > 2)."""

    field = F

    def __init__(self, n: int) -> None:
        self.n = n
        self.MEAS_LEN = n
        self.OUTPUT_LEN = n
        self.JOINT_RAND_LEN = 1
        self.EVAL_OUTPUT_LEN = 1
        self.GADGETS: list[Gadget] = [PolyEval([0, 2, p - 3, 1])]  # x(x-1)(x-2)
        self.GADGET_CALLS = [n]

    def eval(self, meas, joint_rand, gadgets):  # type: ignore[no-untyped-def]
        out = gadgets[0](meas[:, :, None])
        rp = powers(F, joint_rand[:, 0], self.n + 1)[:, 1:]
        return F.sum(F.mul(out, rp), axis=-1)[:, None]

    def joint_rand_degree(self) -> int:
        return self.n


def test_degree_three_gadget_complete_and_sound() -> None:
    valid = Ternary(9)
    flp = FlpBBCGGI19(valid)
    good = F.elements(RNG.integers(0, 3, (50, 9)))
    bad = good.copy()
    bad[np.arange(50), RNG.integers(0, 9, 50)] = F.elements(RNG.integers(3, 1000, 50))
    for meas, expect in ((good, True), (bad, False)):
        jr = F.random((flp.JOINT_RAND_LEN,), rng=RNG)
        proof = flp.prove(meas, flp.random_prove_rand((50,)), jr)
        qr = flp.derive_query_rand(b"ternary")
        assert (flp.decide(flp.query(meas, proof, qr, jr)) == expect).all()


def _setup(valid: Valid, batch: int, proofs: int | None = None):  # type: ignore[no-untyped-def]
    flp = FlpBBCGGI19(valid, proofs=proofs)
    return flp, F.random((batch, flp.PROVE_RAND_LEN), rng=RNG)


def test_batched_equals_one_by_one() -> None:
    valid = cc.LinearRegressionRecord(3, 4)
    flp, pr = _setup(valid, 7)
    meas = valid.encode(RNG.integers(0, 16, (7, 4)))
    meas[2, 0] = F.elements(5)  # one invalid record in the batch
    jr = F.random((7, flp.JOINT_RAND_LEN), rng=RNG)
    qr = F.random((7, flp.QUERY_RAND_LEN), rng=RNG)
    proofs = flp.prove(meas, pr, jr)
    ver = flp.query(meas, proofs, qr, jr)
    dec = flp.decide(ver)
    for i in range(7):
        pi = flp.prove(meas[i], pr[i], jr[i])
        assert np.array_equal(pi, proofs[i])
        vi = flp.query(meas[i], pi, qr[i], jr[i])
        assert np.array_equal(vi, ver[i])
        assert flp.decide(vi) == dec[i]
    assert dec.tolist() == [i != 2 for i in range(7)]


def test_shared_randomness_broadcasts_like_per_record() -> None:
    valid = cc.SumVec(20, 2)
    flp, pr = _setup(valid, 6)
    meas = valid.encode(RNG.integers(0, 4, (2, 3, 20)))
    jr = F.random((flp.JOINT_RAND_LEN,), rng=RNG)
    qr = F.random((flp.QUERY_RAND_LEN,), rng=RNG)
    proofs = flp.prove(meas, pr.reshape(2, 3, -1), jr)
    assert proofs.shape == (2, 3, flp.PROOF_LEN)
    ver = flp.query(meas, proofs, qr, jr)
    ver_tiled = flp.query(
        meas, proofs, np.broadcast_to(qr, (2, 3, qr.size)), np.broadcast_to(jr, (2, 3, jr.size))
    )
    assert ver.shape == (2, 3, flp.VERIFIER_LEN)
    assert np.array_equal(ver, ver_tiled)
    assert flp.decide(ver).all()


def test_every_tampered_proof_element_is_rejected() -> None:
    valid = cc.Histogram(10)
    flp, _ = _setup(valid, 1)
    meas = valid.encode(4)
    jr = F.random((flp.JOINT_RAND_LEN,), rng=RNG)
    proof = flp.prove(meas, flp.random_prove_rand(), jr)
    n = flp.PROOF_LEN
    tampered = np.repeat(proof[None, :], n, axis=0)
    delta = F.elements(RNG.integers(1, 2**63, n))
    tampered[np.arange(n), np.arange(n)] = F.add(tampered[np.arange(n), np.arange(n)], delta)
    qr = F.random((flp.QUERY_RAND_LEN,), rng=RNG)
    assert flp.decide(flp.query(meas, proof, qr, jr))
    dec = flp.decide(flp.query(np.repeat(meas[None, :], n, axis=0), tampered, qr, jr))
    assert not dec.any(), np.flatnonzero(dec)


def test_every_tampered_measurement_element_is_rejected() -> None:
    valid = cc.LinearRegressionRecord(4, 6)
    flp, _ = _setup(valid, 1)
    meas = valid.encode(RNG.integers(0, 64, 5))
    jr = F.random((flp.JOINT_RAND_LEN,), rng=RNG)
    proof = flp.prove(meas, flp.random_prove_rand(), jr)
    n = flp.MEAS_LEN
    tampered = np.repeat(meas[None, :], n, axis=0)
    idx = np.arange(n)
    tampered[idx, idx] = F.add(tampered[idx, idx], F.elements(RNG.integers(1, 2**63, n)))
    qr = F.random((flp.QUERY_RAND_LEN,), rng=RNG)
    dec = flp.decide(flp.query(tampered, np.repeat(proof[None, :], n, axis=0), qr, jr))
    assert not dec.any(), np.flatnonzero(dec)


def test_random_proofs_and_random_verifiers_are_rejected() -> None:
    valid = cc.SumVec(30, 1)
    flp, _ = _setup(valid, 1)
    meas = valid.encode(RNG.integers(0, 2, (300, 30)))
    jr = F.random((flp.JOINT_RAND_LEN,), rng=RNG)
    qr = F.random((flp.QUERY_RAND_LEN,), rng=RNG)
    bogus = F.random((300, flp.PROOF_LEN), rng=RNG)
    assert not flp.decide(flp.query(meas, bogus, qr, jr)).any()
    assert not flp.decide(F.random((300, flp.VERIFIER_LEN), rng=RNG)).any()


def test_repetitions_are_checked_independently() -> None:
    valid = cc.Sum(10)
    flp = FlpBBCGGI19(valid, proofs=3)
    assert flp.PROOF_LEN == 3 * FlpBBCGGI19(valid, proofs=1).PROOF_LEN
    meas = valid.encode(RNG.integers(0, 1024, 40))
    jr = F.random((flp.JOINT_RAND_LEN,), rng=RNG)
    proof = flp.prove(meas, flp.random_prove_rand((40,)), jr)
    qr = F.random((flp.QUERY_RAND_LEN,), rng=RNG)
    assert flp.decide(flp.query(meas, proof, qr, jr)).all()
    one = flp.PROOF_LEN // 3
    for rep in range(3):  # a fault in any single repetition's proof is caught
        bad = proof.copy()
        bad[:, rep * one + 2] = F.add(bad[:, rep * one + 2], F.ones(()))
        assert not flp.decide(flp.query(meas, bad, qr, jr)).any()


def test_query_point_in_domain_is_refused() -> None:
    valid = cc.SumVec(8, 1)
    flp, pr = _setup(valid, 1)
    meas = valid.encode(RNG.integers(0, 2, 8))
    jr = F.random((flp.JOINT_RAND_LEN,), rng=RNG)
    proof = flp.prove(meas, pr[0], jr)
    P = flp.layouts[0].P
    for t in (F.ones(()), F.root_of_unity(P), F.pow(F.root_of_unity(P), 3)):
        qr = F.random((flp.QUERY_RAND_LEN,), rng=RNG)
        qr[0] = t
        with pytest.raises(ProtocolError):
            flp.query(meas, proof, qr, jr)
    qr = flp.derive_query_rand(b"job-1")
    flp.check_query_rand(qr)
    assert np.array_equal(qr, flp.derive_query_rand(b"job-1"))
    assert not np.array_equal(qr, flp.derive_query_rand(b"job-2"))


def independent_bound(valid: Valid, k: int, q: float = 2.0**64) -> float:
    """The docs/proofs.md bound recomputed from the circuit's parameters alone: every
    gadget here is ParallelSum(Mul) or Mul (degree 2), and the range checks weigh slot j of
    call m by r_m^(j+1), so δ = chunk/p."""
    eps = 0.0
    for calls in valid.GADGET_CALLS:
        P = 1 << calls.bit_length()  # next power of two ≥ calls + 1
        eps += 2 * (P - 1) / (p - P)
    eps += (valid.EVAL_OUTPUT_LEN == 2) / p
    if valid.JOINT_RAND_LEN == 0:
        return eps**k
    delta = valid.chunk_length / p  # type: ignore[attr-defined]  (chunk < checks here)
    return eps**k + sum(
        min(1.0, q * math.comb(k, j) * delta**j) * eps ** (k - j) for j in range(1, k + 1)
    )


@pytest.mark.parametrize("valid", cc.doc_circuits(), ids=repr)
def test_default_repetitions_reach_target(valid: Valid) -> None:
    """Soundness: every circuit up to 10^6-entry vectors is ≤ 2^-64 against a prover that
    grinds its joint randomness with 2^64 hashes, with the least number of proofs."""
    flp = FlpBBCGGI19(valid)
    bound = flp.soundness()
    assert bound.error_log2 <= -64
    assert math.isclose(bound.error, independent_bound(valid, flp.proofs), rel_tol=1e-9)
    assert flp.proofs == 1 or independent_bound(valid, flp.proofs - 1) > 2.0**-64
    if valid.JOINT_RAND_LEN:
        assert flp.proofs >= 3  # draft-12: Field64 with joint randomness needs ≥ 3 proofs
        assert valid.GADGET_CALLS[0] == valid.JOINT_RAND_LEN  # one element per call


def test_soundness_table_in_docs_is_generated() -> None:
    """docs/proofs.md's soundness table is the output of circuits.soundness_table()."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "proofs.md").read_text()
    begin, end = "<!-- soundness-table:begin -->\n", "<!-- soundness-table:end -->"
    assert begin in doc and end in doc, "docs/proofs.md lost its soundness-table markers"
    table = doc[doc.index(begin) + len(begin) : doc.index(end)]
    assert table == cc.soundness_table(), (
        "docs/proofs.md is stale: paste the output of python -c 'from kaires_fl.arith."
        'circuits import soundness_table; print(soundness_table(), end="")\''
    )


def test_bound_formula_edge_cases() -> None:
    """ε^k without joint randomness; the offline term grows with q; ConfigError when no
    number of proofs suffices."""
    from kaires_fl.arith.flp import choose_proofs, soundness_bound

    c = cc.Count()
    b = soundness_bound(c, 2)
    assert b.joint_rand_error == 0 and math.isclose(b.error, (2 / (p - 2)) ** 2)
    sv = cc.SumVec(1000, 1)
    low = soundness_bound(sv, 3, offline_queries_log2=0).error
    high = soundness_bound(sv, 3, offline_queries_log2=64).error
    assert low < high
    assert soundness_bound(sv, 2).error_log2 > -64  # two proofs over Field64 are not enough
    with pytest.raises(ConfigError, match="cannot reach soundness"):
        choose_proofs(sv, target_log2=-2000)


def test_bad_shapes_and_dtypes_raise_typed_errors() -> None:
    valid = cc.SumVec(4, 1)
    flp, pr = _setup(valid, 1)
    meas = valid.encode([1, 0, 1, 1])
    jr = F.random((flp.JOINT_RAND_LEN,), rng=RNG)
    with pytest.raises(EncodingError):
        flp.prove(meas[:3], pr[0], jr)
    with pytest.raises(EncodingError):
        flp.prove(np.array([1, 0, 1, 1], dtype=np.int64), pr[0], jr)
    with pytest.raises(EncodingError):
        flp.prove(meas, pr[0], None)
    proof = flp.prove(meas, pr[0], jr)
    with pytest.raises(EncodingError):
        flp.query(meas, proof[:-1], F.random((flp.QUERY_RAND_LEN,)), jr)
    with pytest.raises(EncodingError):
        flp.query(meas, proof, F.random((flp.QUERY_RAND_LEN + 1,)), jr)
    with pytest.raises(ConfigError):
        FlpBBCGGI19(valid, proofs=0)


@pytest.mark.parametrize(
    "make",
    [
        lambda: (cc.SumVec(6, 3, field=Field128), RNG.integers(0, 8, (4, 6))),
        lambda: (cc.Histogram(5, field=Field128), RNG.integers(0, 5, 4)),
        lambda: (cc.LinearRegressionRecord(2, 5, field=Field128), RNG.integers(0, 32, (4, 3))),
        lambda: (cc.BoundedL2Vec(3, 4, 1.0, field=Field128), RNG.uniform(-0.5, 0.5, (4, 3))),
    ],
)
def test_field128_generic_path(make) -> None:  # type: ignore[no-untyped-def]
    valid, values = make()
    flp = FlpBBCGGI19(valid)
    # |F| ≈ 2^128: ε alone is far below 2^-64, but q·δ = 2^64·chunk/|F| is not for chunk ≥ 2
    assert flp.proofs <= 2 and flp.soundness().error_log2 <= -64
    meas = valid.encode(values)
    jr = Field128.random((flp.JOINT_RAND_LEN,))
    qr = Field128.random((flp.QUERY_RAND_LEN,))
    proof = flp.prove(meas, flp.random_prove_rand((4,)), jr)
    assert flp.decide(flp.query(meas, proof, qr, jr)).all()
    bad = meas.copy()
    bad[1, 0] = Field128.elements(2)
    proof = flp.prove(bad, flp.random_prove_rand((4,)), jr)
    assert flp.decide(flp.query(bad, proof, qr, jr)).tolist() == [True, False, True, True]


def _edge_array(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Field64 elements mixing uniform values with the edges 0, 1, p − 1, p − 2, 2^32."""
    a = F.random(shape, rng=rng)
    edges = F.elements([0, 1, p - 1, p - 2, 2**32, 2**63])
    mask = rng.integers(0, 3, shape) == 0
    a[mask] = edges[rng.integers(0, len(edges), int(mask.sum()))]
    return a


def _ints(a: np.ndarray) -> list:  # type: ignore[type-arg]
    return np.asarray(a, dtype=object).tolist()


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 5), st.integers(1, 40), st.booleans())
def test_hot_path_kernels_against_python_ints(seed: int, B: int, K: int, shared: bool) -> None:
    from kaires_fl.arith.flp import as_calls, dot_groups, dot_rows, fill_pairs, pair_buffer

    rng = np.random.default_rng(seed)
    a = _edge_array(rng, (B, K + 3))
    w = _edge_array(rng, (1 if shared else B, K + 2))
    ai, wi = _ints(a), _ints(w)
    wr = [wi[0 if shared else r] for r in range(B)]
    got = dot_rows(F, a, w, start=2, w_start=1, n=K)
    assert _ints(got) == [sum(ai[r][2 + k] * wr[r][1 + k] for k in range(K)) % p for r in range(B)]
    # many terms of p − 1: the branch-free accumulator must not overflow
    big = F.elements(np.full((2, 5000), p - 1, dtype=object))
    assert _ints(dot_rows(F, big, big[:1])) == [5000 * (p - 1) ** 2 % p] * 2
    g = dot_groups(F, a, w[0, :3], K // 3 or 1, start=0) if K >= 3 else None
    if g is not None:
        G = K // 3
        exp = [
            [sum(ai[r][3 * j + k] * wi[0][k] for k in range(3)) % p for j in range(G)]
            for r in range(B)
        ]
        assert _ints(g) == exp
    chunk = int(rng.integers(1, 7))
    buf = pair_buffer(F, B, K + 2, chunk)
    idx = rng.integers(0, K + 3, K)
    fill_pairs(F, buf, 2, K, a, a, w=w, w_start=1, b_const=1, a_index=idx, b_start=1)
    pairs = np.swapaxes(buf, 1, 2).reshape(B, 2, -1)
    for r in range(B):
        left = _ints(pairs[r, 0])
        right = _ints(pairs[r, 1])
        assert left[:2] == [0, 0] and right[:2] == [0, 0]
        assert left[2 : 2 + K] == [ai[r][idx[k]] * wr[r][1 + k] % p for k in range(K)]
        assert right[2 : 2 + K] == [(ai[r][1 + k] - 1) % p for k in range(K)]
        assert set(left[2 + K :]) <= {0} and set(right[2 + K :]) <= {0}
    assert as_calls(buf, chunk).shape == (B, buf.shape[1], 2 * chunk)
    pw = powers(F, w[:, 0], 7)
    assert _ints(pw) == [[pow(row[0], k, p) for k in range(7)] for row in _ints(w)]


# ------------------------------------------------- fast paths agree with the generic ones


@pytest.mark.parametrize(
    "valid",
    [
        cc.Count(),
        cc.SumVec(7, 3, chunk_length=1),
        cc.LinearRegressionRecord(3, 5),
        cc.LinearRegressionRecord(14, 14),
        cc.SumVec(300, 2, chunk_length=4),  # P = 256: beyond the dense-extension range
        cc.BoundedL2Vec(12, 4, 1.0),
    ],
    ids=repr,
)
def test_fused_prover_equals_generic_wire_grid(valid: Valid, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import kaires_fl.arith.flp as flp_mod

    flp = FlpBBCGGI19(valid)
    B = 5
    meas = F.random((B, flp.MEAS_LEN), rng=RNG)  # any input: the proof is still defined
    pr = F.random((B, flp.PROVE_RAND_LEN), rng=RNG)
    jr = F.random((B, flp.JOINT_RAND_LEN), rng=RNG)
    fast = flp.prove(meas, pr, jr)
    monkeypatch.setattr(flp_mod, "_is_psmul", lambda g: False)
    slow = flp.prove(meas, pr, jr)
    assert np.array_equal(fast, slow)
    # and the gadget itself (fast ParallelSum(Mul).eval) against the generic product-sum
    g = valid.GADGETS[0]
    x = F.random((3, 4, g.ARITY), rng=RNG)
    if isinstance(g, ParallelSum):
        sides = np.swapaxes(x.reshape(3, 4, 2, g.count), -1, -2)
        assert np.array_equal(g.eval(F, x), F.sum(F.mul(sides[..., 0], sides[..., 1]), axis=-1))


@pytest.mark.parametrize("shared", [True, False])
def test_row_blocks_equal_one_block(shared: bool, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import kaires_fl.arith.flp as flp_mod

    valid = cc.LinearRegressionRecord(2, 3)
    flp = FlpBBCGGI19(valid)
    B = 23
    meas = valid.encode(RNG.integers(0, 8, (B, 3)))
    meas[5, 0] = F.elements(2)  # one invalid record
    pr = F.random((B, flp.PROVE_RAND_LEN), rng=RNG)
    shape = (flp.JOINT_RAND_LEN,) if shared else (B, flp.JOINT_RAND_LEN)
    jr = F.random(shape, rng=RNG)
    qr = flp.derive_query_rand(b"blocks")
    proof = flp.prove(meas, pr, jr)
    ver = flp.query(meas, proof, qr, jr)
    monkeypatch.setattr(flp_mod, "_BLOCK_ROWS", 4)
    assert np.array_equal(flp.prove(meas, pr, jr), proof)
    ver_blocks = flp.query(meas, proof, qr, jr)
    assert np.array_equal(ver_blocks, ver)
    assert flp.decide(ver_blocks).tolist() == [i != 5 for i in range(B)]


@pytest.mark.parametrize("K", [1, 5, 14, 31, 32, 40])
def test_dot_groups_powers_of_two_against_ints(K: int) -> None:
    # w = 2^k takes the bits kernel (shifted split sums up to K = 31, doublings above):
    # any field elements (shares), not just bits; row 1 all p − 1, the largest sums
    from kaires_fl.arith.flp import dot_groups

    G = 3
    a = F.random((4, 2 + G * K), rng=RNG)
    a[0, 2] = F.elements(p - 1)
    a[1, :] = F.elements(p - 1)
    w = F.elements([1 << k for k in range(K)])
    got = dot_groups(F, a, w, G, start=2)
    ai = [[int(x) for x in row] for row in a]
    exp = [
        [sum(ai[r][2 + g * K + k] << k for k in range(K)) % p for g in range(G)] for r in range(4)
    ]
    assert [[int(x) for x in row] for row in got] == exp
    w2 = w.copy()
    w2[-1] = F.elements(3)  # not powers of two: the general kernel, same contract
    exp2 = [
        [(sum(ai[r][2 + g * K + k] * int(w2[k]) for k in range(K))) % p for g in range(G)]
        for r in range(4)
    ]
    assert [[int(x) for x in row] for row in dot_groups(F, a, w2, G, start=2)] == exp2


@pytest.mark.parametrize(
    "valid",
    [
        cc.Sum(9),
        cc.SumVec(37, 3),
        cc.Histogram(20),
        cc.LinearRegressionRecord(3, 5),
        cc.BoundedL2Vec(10, 4, 1.0),
    ],
    ids=repr,
)
@pytest.mark.parametrize("shared", [True, False])
def test_fused_query_equals_pair_buffer_path(valid: Valid, shared: bool, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The verifier's fused pair inputs (wires at t accumulated, no buffer) give the same
    verifier as the materialised pair buffer, valid and tampered records alike."""
    from kaires_fl.arith import flp as flp_mod

    flp = FlpBBCGGI19(valid)
    B = 6
    meas = F.random((B, valid.MEAS_LEN), rng=RNG)  # arbitrary inputs: the map is affine
    shape = (flp.JOINT_RAND_LEN,) if shared else (B, flp.JOINT_RAND_LEN)
    jr = F.random(shape, rng=RNG)
    proof = F.random((B, flp.PROOF_LEN), rng=RNG)
    qr = (
        flp.derive_query_rand(b"fused")
        if shared
        else np.stack([flp.derive_query_rand(bytes([i])) for i in range(B)])
    )
    fused = flp.query(meas, proof, qr, jr)
    monkeypatch.setattr(flp_mod._QueryCall, "pairs", flp_mod.GadgetCall.pairs)
    assert np.array_equal(fused, flp.query(meas, proof, qr, jr))


def test_pair_fills_outside_their_sources_raise_config_error() -> None:
    """The kernels do not check bounds: every fill checks its columns first, in the
    prover's buffer and in the verifier's fused path alike."""
    from kaires_fl.arith.flp import GadgetCall, _QueryCall

    g = ParallelSum(Mul(), 4)
    a = F.random((2, 6), rng=RNG)
    w = F.random((1, 3), rng=RNG)
    prover = GadgetCall(F, g, 2)
    verifier = _QueryCall(F, g, 2, F.random((1, 4), rng=RNG), F.random((1, 4), rng=RNG))
    for call in (prover, verifier):
        pairs = call.pairs(8, 4)
        for kw in (
            {"off": 0, "n": 4, "w": w},  # w too short
            {"off": 0, "n": 7, "a_start": 0},  # a too short
            {"off": 6, "n": 4},  # beyond the declared pairs
            {"off": 0, "n": 2, "a_index": np.array([0, 6])},  # index out of range
        ):
            with pytest.raises(ConfigError):
                pairs.fill(a=a, b=a, **kw)
        pairs.fill(0, 3, a, a, w=w, b_const=1)  # in range: fine
