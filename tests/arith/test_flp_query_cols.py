"""The verifier's column-major pair kernel and the summed gadget outputs (kaires_fl/arith/flp.py).

``_k_pairs_cols`` accumulates the wire values at the query point with the records along
the columns; ``_k_add_split_cols`` folds its split sums into the row-major accumulator;
``_QueryCall.sum_pairs`` gives Σ_k G(α^k) as one dot product with the gadget polynomial's
coefficients. Each is checked against its numpy twin, against Python integers, and through
the whole query against the materialised pair buffer (every circuit, PINE included).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twin_checks import EDGES, edge_array, kernel_and_twin

from kaires_fl.arith import _kernels as kern
from kaires_fl.arith import _twins
from kaires_fl.arith import circuits as cc
from kaires_fl.arith import flp as flp_mod
from kaires_fl.arith.field import Field64
from kaires_fl.arith.flp import FlpBBCGGI19, Mul, ParallelSum, Valid, _QueryCall, _sum_weights
from kaires_fl.arith.pine import L2BoundPine
from kaires_fl.errors import ConfigError

F = Field64
p = F.MODULUS
RNG = np.random.default_rng(11)


def _values(lo: np.ndarray, hi: np.ndarray) -> list[list[int]]:
    """(hi·2^32 + lo) mod p of split sums, as Python integers."""
    return (((hi.astype(object) << 32) + lo.astype(object)) % p).tolist()


@settings(max_examples=40, deadline=None)
@given(
    st.integers(0, 2**32),
    st.integers(1, 19),
    st.integers(0, 30),
    st.integers(1, 7),
    st.integers(0, 12),
)
def test_pairs_cols_kernel_twin_and_python_ints(
    seed: int, R: int, n: int, chunk: int, off: int
) -> None:
    """Split sums of Σ a[ai_k, r]·vw[k] and Σ (b[bi_k, r] − bc)·vl[k] per slot
    (off + k) % chunk, exactly as Python integers give them modulo p; repeated slots and
    indices, edge values, and split sums that start nonzero."""
    rng = np.random.default_rng(seed)
    rows = 9
    a = edge_array(rng, (rows, R))
    b = edge_array(rng, (rows, R))
    ai = rng.integers(0, rows, n).astype(np.int64)
    bi = rng.integers(0, rows, n).astype(np.int64)
    bc = np.uint64(rng.choice(EDGES))
    vw = edge_array(rng, (n,))
    vl = edge_array(rng, (n,))
    lo0 = rng.integers(0, 2**40, (2 * chunk, R), dtype=np.uint64)
    hi0 = rng.integers(0, 2**40, (2 * chunk, R), dtype=np.uint64)
    lo, hi, *_ = kernel_and_twin(
        kern.tiered("_k_pairs_cols"), lo0, hi0, off, chunk, a, ai, b, bi, bc, vw, vl
    )
    exp = _values(lo0, hi0)
    for k in range(n):
        j = (off + k) % chunk
        for r in range(R):
            exp[j][r] = (exp[j][r] + int(a[ai[k], r]) * int(vw[k])) % p
            exp[chunk + j][r] = (exp[chunk + j][r] + (int(b[bi[k], r]) - int(bc)) * int(vl[k])) % p
    assert _values(lo, hi) == exp
    acc0 = edge_array(rng, (R, 2 * chunk))
    (acc, *_) = kernel_and_twin(kern.tiered("_k_add_split_cols"), acc0, lo, hi)
    assert [[int(x) for x in row] for row in acc] == [
        [(int(acc0[r, j]) + exp[j][r]) % p for j in range(2 * chunk)] for r in range(R)
    ]


@pytest.mark.parametrize("P,n", [(2, 3), (4, 7), (16, 31), (32, 63)])
def test_sum_weights_give_the_sum_of_gadget_values(P: int, n: int) -> None:
    """Σ_i c_i·s_i = Σ_{m=start+1}^{start+k} G(α^m) for random coefficients c."""
    alpha = int(F.root_of_unity(P))
    c = [int(x) for x in F.random((n,), rng=RNG)]
    for start in range(P - 1):
        for k in range(0, P - 1 - start + 1):
            s = _sum_weights(P, n, start, k)
            assert s.shape == (1, n) and not s.flags.writeable
            exp = (
                sum(
                    sum(ci * pow(alpha, m * i, p) for i, ci in enumerate(c))
                    for m in range(start + 1, start + 1 + k)
                )
                % p
            )
            assert sum(ci * int(si) for ci, si in zip(c, s[0], strict=True)) % p == exp


def test_query_sum_pairs_refuses_more_calls_than_declared() -> None:
    g = ParallelSum(Mul(), 2)
    gpoly = F.random((3, 7), rng=RNG)
    call = _QueryCall(F, g, 3, None, F.random((1, 4), rng=RNG), gpoly)
    a = F.random((3, 8), rng=RNG)
    pairs = call.pairs(6, 2)  # 3 calls: α^1..α^3, all the domain of P = 4 holds
    pairs.fill(0, 6, a, a)
    assert call.sum_pairs(pairs).shape == (3,)
    with pytest.raises(ConfigError, match="more often than declared"):
        call.pairs(2, 2)  # a 4th call: beyond the domain
    late = flp_mod._PairsAtT.__new__(flp_mod._PairsAtT)  # built before the others ran
    late.call, late.start, late.calls = call, 3, 1
    with pytest.raises(ConfigError, match="more often than declared"):
        call.sum_pairs(late)
    with pytest.raises(ConfigError, match="another call"):
        call.sum_pairs(pairs)  # inputs already consumed
    with pytest.raises(ConfigError):
        _QueryCall(F, g, 3, None, F.random((1, 4), rng=RNG))  # neither values nor coefficients


def test_columns_transpose_the_measurement_once_and_other_arrays_fresh() -> None:
    """A circuit may reuse a temporary between fills: only the block's measurement (which
    no circuit writes) is cached."""
    meas = F.random((5, 6), rng=RNG)
    cols = flp_mod._Columns(meas)
    assert cols.of(meas) is cols.of(meas)
    np.testing.assert_array_equal(cols.of(meas), meas.T)
    tmp = F.random((5, 3), rng=RNG)
    first = cols.of(tmp).copy()
    tmp[:] = F.random((5, 3), rng=RNG)
    np.testing.assert_array_equal(cols.of(tmp), tmp.T)
    assert not np.array_equal(first, tmp.T)
    np.testing.assert_array_equal(cols.of(tmp[:1]), np.repeat(tmp[:1].T, 5, axis=1))


@pytest.mark.parametrize(
    "valid",
    [
        cc.LinearRegressionRecord(4, 6),
        cc.BoundedL2Vec(10, 4, 1.0),
        L2BoundPine(12, 6, 1.0, checks=5),
    ],
    ids=repr,
)
@pytest.mark.parametrize("shared", [True, False])
def test_column_query_equals_pair_buffer_path(valid: Valid, shared: bool, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Column kernel + summed outputs give the verifier of the materialised pair buffer
    (arbitrary inputs: the map is affine), in blocks of several rows, for shared and
    per-record randomness; an honest proof is accepted and a tampered one rejected."""
    flp = FlpBBCGGI19(valid)
    B = 37
    monkeypatch.setattr(flp_mod, "_BLOCK_ROWS", 16)  # several blocks, one partial
    meas = F.random((B, valid.MEAS_LEN), rng=RNG)
    shape = (flp.JOINT_RAND_LEN,) if shared else (B, flp.JOINT_RAND_LEN)
    jr = F.random(shape, rng=RNG)
    proof = F.random((B, flp.PROOF_LEN), rng=RNG)
    qr = (
        flp.derive_query_rand(b"cols")
        if shared
        else np.stack([flp.derive_query_rand(bytes([i])) for i in range(B)])
    )
    fused = flp.query(meas, proof, qr, jr)
    with monkeypatch.context() as m:
        m.setattr(flp_mod._QueryCall, "pairs", flp_mod.GadgetCall.pairs)
        assert np.array_equal(fused, flp.query(meas, proof, qr, jr))
    if isinstance(valid, cc.LinearRegressionRecord):
        x = RNG.integers(0, 2**valid.bits, (B, valid.n_vars))
        good = valid.encode(x)
        pr = flp.random_prove_rand((B,))
        honest = flp.prove(good, pr, jr)
        assert flp.decide(flp.query(good, honest, qr, jr)).all()
        bad = honest.copy()
        bad[3, -1] = F.add(bad[3, -1], F.elements(1))
        assert list(np.flatnonzero(~flp.decide(flp.query(good, bad, qr, jr)))) == [3]


def test_a_query_point_in_the_domain_is_refused_after_a_valid_one() -> None:
    """check_query_rand remembers the last shared vector that passed, nothing else."""
    from kaires_fl.errors import ProtocolError

    flp = FlpBBCGGI19(cc.LinearRegressionRecord(3, 4))
    good = flp.derive_query_rand(b"good")
    flp.check_query_rand(good)
    flp.check_query_rand(good)  # remembered
    bad = good.copy()
    bad[0] = F.elements(1)  # α^0: in every wire domain
    with pytest.raises(ProtocolError, match="evaluation domain"):
        flp.check_query_rand(bad)
    with pytest.raises(ProtocolError):
        flp.query(
            F.zeros((2, flp.MEAS_LEN)),
            F.zeros((2, flp.PROOF_LEN)),
            bad,
            F.zeros((flp.JOINT_RAND_LEN,)),
        )
    per_record = np.stack([good, bad])
    with pytest.raises(ProtocolError):
        flp.check_query_rand(per_record)


@pytest.mark.parametrize("calls,chunk,group", [(15, 22, 8), (7, 3, 8), (3, 1, 4), (31, 5, 1)])
def test_prover_kernel_equals_twin_in_several_groups(calls: int, chunk: int, group: int) -> None:
    """The prover kernel's rows (all left wires of a group, then all right wires) and its
    butterflies without the twiddle-1 products: same gadget polynomials as the twin, for
    full groups, a partial last group and one record at a time."""
    rng = np.random.default_rng(calls)
    B, A = 19, 2 * chunk
    P = flp_mod.next_power_of_2(calls + 1)
    inp = edge_array(rng, (B, calls, A))
    seeds = edge_array(rng, (B, A))
    outs = _twins.split_sum(_twins.mulmod(inp[..., :chunk], inp[..., chunk:]), axis=2)
    tabs = flp_mod._psmul_tables(P)
    (*_, out) = kernel_and_twin(
        kern.tiered("_k_prove_psmul"),
        inp,
        seeds,
        outs,
        *tabs,
        group,
        np.empty((B, 2 * P - 1), np.uint64),
    )
    # one record: g(x) = Σ_j a_j(x)·b_j(x) from the wires' coefficients, in Python integers
    alpha = int(F.root_of_unity(P))
    r = 5
    vals = (
        [seeds[r]] + [inp[r, k] for k in range(calls)] + [np.zeros(A, np.uint64)] * (P - 1 - calls)
    )
    inv_p = pow(P, p - 2, p)
    coef = [
        [
            sum(int(vals[m][l]) * pow(alpha, (-m * i) % P, p) for m in range(P)) * inv_p % p
            for i in range(P)
        ]
        for l in range(A)
    ]
    g = [0] * (2 * P - 1)
    for j in range(chunk):
        for i1, x in enumerate(coef[j]):
            for i2, y in enumerate(coef[chunk + j]):
                g[i1 + i2] = (g[i1 + i2] + x * y) % p
    assert [int(v) for v in out[r]] == g
