"""The PINE-style L2 bound (kaires_fl/arith/pine.py): reference, honest, over-norm,
wraparound, forged proofs, shares, soundness numbers and the docs table."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kaires_fl.arith import pine, sharing, verify
from kaires_fl.arith.field import Field64
from kaires_fl.arith.flp import FlpBBCGGI19, GadgetCall
from kaires_fl.arith.pine import L2BoundPine
from kaires_fl.errors import ConfigError, EncodingError, InvalidSubmission

F = Field64
P = F.MODULUS
HALF = (P + 1) // 2  # 2^-1 mod p: HALF² = 1/4


def _seed(i: int) -> np.ndarray:
    return F.from_seed(bytes([i]) * 32, (1, pine.WR_SEED_LEN), b"test/pine")


def _jr(c: L2BoundPine, i: int) -> np.ndarray:
    """One repetition's joint randomness: stage-2 weights, then the wraparound seed i."""
    return np.concatenate([F.from_seed(bytes([i]) * 32, (1, c.bit_calls), b"t/2"), _seed(i)], 1)


def _field(ints: list[int]) -> np.ndarray:
    return F.elements(np.array([v % P for v in ints], dtype=np.uint64))


def _meas(c: L2BoundPine, a: list[int], slack: int) -> np.ndarray:
    """A measurement with arbitrary entries (any field values) and slack bits."""
    bits = [(slack >> k) & 1 for k in range(c.norm_bits)]
    return _field([*a, *bits])[None, :]


def _reference_outputs(c: L2BoundPine, meas: list[int], seed: np.ndarray) -> list[int]:
    """The circuit's outputs in plain Python integers (slow reference, no FLP, no kernels):
    the weighted bit check Σ_j r_m^(j mod chunk + 1)·(b_j² − b_j) (m = j // chunk, r the
    stage-2 part of the joint randomness), the norm equation, the wraparound checks."""
    d = c.length
    r = [int(v) for v in F.to_ints(seed[0, : c.bit_calls])]
    z = pine.wraparound_vectors(seed[0, -pine.WR_SEED_LEN :], c.checks, d).astype(int).tolist()
    a = meas[:d]
    y = [sum(zi * ai for zi, ai in zip(zk, a, strict=True)) % P for zk in z]
    wit = []
    for yk in y:
        v = (yk + c.beta) % P % (1 << c.wr_bits)
        wit += [(v >> j) & 1 for j in range(c.wr_bits)]
    bits = meas[d:] + wit
    ch = c.bits_chunk_length
    weights = [pow(r[j // ch], j % ch + 1, P) for j in range(len(bits))]
    out = [sum(w * (b * b - b) for w, b in zip(weights, bits, strict=True)) % P]
    s = sum(b << k for k, b in enumerate(meas[d:]))
    out.append((sum(ai * ai for ai in a) + s - c.norm_int) % P)
    for k in range(c.checks):
        claimed = sum(b << j for j, b in enumerate(wit[k * c.wr_bits : (k + 1) * c.wr_bits]))
        out.append((claimed - c.beta - y[k]) % P)
    return out


def _prove_and_decide(c: L2BoundPine, meas: np.ndarray, jr_seed: bytes = b"j" * 32) -> bool:
    flp = FlpBBCGGI19(c)
    jr = flp.derive_joint_rand(jr_seed)
    proof = flp.prove(meas, flp.random_prove_rand((meas.shape[0],)), jr)
    ver = flp.query(meas, proof, flp.derive_query_rand(b"q" * 32), jr)
    return bool(flp.decide(ver)[0])


# ------------------------------------------------------------------ reference


@settings(max_examples=30, deadline=None)
@given(
    a=st.lists(
        st.one_of(st.integers(-40, 40), st.integers(0, P - 1), st.just(HALF)),
        min_size=5,
        max_size=5,
    ),
    slack=st.integers(0, 2**12 - 1),
    seed=st.integers(0, 255),
)
def test_circuit_equals_slow_reference(a: list[int], slack: int, seed: int) -> None:
    c = L2BoundPine(5, 5, 1.0, checks=7)
    meas = _meas(c, a, slack)
    jr = _jr(c, seed)
    calls = [GadgetCall(F, g, 1) for g in c.GADGETS]
    ext = np.concatenate([meas, c.witness(meas, jr)], axis=1)
    got = [int(v) for v in F.to_ints(c.eval(ext, jr, calls)[0])]
    want = _reference_outputs(c, [int(v) for v in F.to_ints(meas[0])], jr)
    assert got == want
    assert bool(c.check(meas, jr)[0]) == (not any(want))


@settings(max_examples=20, deadline=None)
@given(d=st.integers(1, 700), rows=st.integers(1, 3), seed=st.integers(0, 255))
def test_wraparound_kernel_equals_python(d: int, rows: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = F.elements(rng.integers(0, P, size=(rows, d), dtype=np.uint64))
    jr = _seed(seed)
    got = pine.wraparound_dots(F, a, jr, 5)
    z = pine.wraparound_vectors(jr[0], 5, d).astype(object)
    want = (np.asarray(F.to_ints(a), dtype=object) @ z.T) % P
    assert got.tolist() == want.tolist()


_EDGE_VALUES = [0, 1, 2, P - 1, P - 2, (P - 1) // 2, (P + 1) // 2, 2**32 - 1, 2**32, P - 2**32]
_BLOCK_ENTRIES = 4 * pine._TABLE_BLOCK
#: lengths around the nibble, byte and table-block boundaries
_EDGE_LENGTHS = [1, 2, 3, 4, 5, *(k * _BLOCK_ENTRIES + e for k in (1, 2) for e in (-1, 0, 1))]


@settings(max_examples=25, deadline=None)
@given(
    d=st.sampled_from(_EDGE_LENGTHS),
    rows=st.integers(1, 3),
    checks=st.integers(1, 9),
    seed=st.integers(0, 255),
    data=st.data(),
)
def test_wraparound_kernel_edge_cases(
    d: int, rows: int, checks: int, seed: int, data: st.DataObject
) -> None:
    """The nibble-table kernel on lengths around its table block and the nibble/byte
    boundaries, with entries at the field's edges (0, p − 1, 2^32 ± 1, …): equal to the
    integer dot product with the decoded z (every code value, including the padding of
    the last byte, is exercised)."""
    vals = data.draw(
        st.lists(
            st.one_of(st.sampled_from(_EDGE_VALUES), st.integers(0, P - 1)),
            min_size=rows * d,
            max_size=rows * d,
        )
    )
    a = F.elements(np.array(vals, dtype=np.uint64).reshape(rows, d))
    jr = _seed(seed)
    got = pine.wraparound_dots(F, a, jr, checks)
    z = pine.wraparound_vectors(jr[0], checks, d).astype(object)
    want = (np.asarray(F.to_ints(a), dtype=object) @ z.T) % P
    assert got.tolist() == want.tolist()


def test_wraparound_kernel_all_minus_one_entries_at_scale() -> None:
    """Every entry p − 1 (≡ −1) over several table blocks: the split 32-bit sums are
    near their largest, and y_k = −Σ_i z_{k,i} exactly."""
    d = 5 * _BLOCK_ENTRIES + 7
    a = F.elements(np.full((1, d), P - 1, dtype=np.uint64))
    jr = _seed(9)
    got = pine.wraparound_dots(F, a, jr, 16)
    z = pine.wraparound_vectors(jr[0], 16, d).astype(np.int64)
    assert got[0].tolist() == [int(-s) % P for s in z.sum(axis=1)]


def test_wraparound_vectors_have_the_pine_distribution() -> None:
    z = pine.wraparound_vectors(_seed(1)[0], 64, 4096)
    freq = [float(np.mean(z == v)) for v in (-1, 0, 1)]
    assert abs(freq[0] - 0.25) < 0.01 and abs(freq[1] - 0.5) < 0.01 and abs(freq[2] - 0.25) < 0.01
    # a different seed, a different vector
    assert not np.array_equal(z, pine.wraparound_vectors(_seed(2)[0], 64, 4096))


# ------------------------------------------------------------------ honest and over-norm


def test_honest_vectors_at_the_bound_pass_and_decode() -> None:
    f = 10
    c = L2BoundPine(300, f, 1.0)
    rng = np.random.default_rng(0)
    v = rng.normal(size=(3, 300))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    v *= 0.999
    exact = np.zeros((1, 300))
    exact[0, 7] = -1.0  # Σ a² = 4^f = N exactly: the slack is 0
    meas = c.encode(np.concatenate([v, exact]))
    assert meas.shape == (4, c.MEAS_LEN)
    flp = FlpBBCGGI19(c)
    jr = flp.derive_joint_rand(b"h" * 32)
    proof = flp.prove(meas, flp.random_prove_rand((4,)), jr)
    assert flp.decide(flp.query(meas, proof, flp.derive_query_rand(b"q" * 32), jr)).all()
    total = F.sum(c.truncate(meas), axis=0)
    want = np.round(np.concatenate([v, exact]) * 2**f).sum(axis=0) / 2**f
    np.testing.assert_array_equal(c.decode(total, 4), want)


def test_over_norm_vector_is_rejected() -> None:
    c = L2BoundPine(50, 8, 1.0)
    with pytest.raises(EncodingError, match="norm exceeds"):
        c.encode(np.full(50, 0.2))  # ‖v‖ ≈ 1.41
    # The same vector forged into a measurement (slack bits 0): the bits are bits and no
    # check wraps, but Σ a² ≠ N.
    a = [round(0.2 * 2**8)] * 50
    meas = _meas(c, a, 0)
    jr = _jr(c, 3)
    assert bool(c.wraparound_passes(meas, jr)[0])
    assert not bool(c.check(meas, jr)[0])
    assert not _prove_and_decide(c, meas)
    # and one unit over the bound with every slack value refused
    over = [2**8 + 1] + [0] * 49
    assert not any(bool(c.check(_meas(c, over, s), jr)[0]) for s in range(0, 2**c.norm_bits, 97))


# ------------------------------------------------------------------ wraparound


def _wrapped_vector(c: L2BoundPine) -> tuple[list[int], int]:
    """Four entries 2^-1 mod p (centred lift ≈ p/2, so ‖ā‖ ≈ p): Σ a² = 4·(1/4) = 1 in the
    field, so with slack N − 1 the norm equation holds and every bit is a bit."""
    return [HALF] * 4 + [0] * (c.length - 4), c.norm_int - 1


def test_wraparound_vector_passes_without_checks_and_is_caught_with_them() -> None:
    f = 6
    unchecked = L2BoundPine(16, f, 1.0, checks=0)
    a, slack = _wrapped_vector(unchecked)
    meas = _meas(unchecked, a, slack)
    # Without wraparound checks the field equation is all there is: accepted, and its
    # contribution to the sum is garbage (≈ p/2 in each of four entries).
    assert bool(unchecked.check(meas, _jr(unchecked, 0))[0])
    assert _prove_and_decide(unchecked, meas)
    assert abs(unchecked.decode(unchecked.truncate(meas)[0], 1)[0]) > 2**50
    # With the default checks it is refused, for every joint randomness tried.
    c = L2BoundPine(16, f, 1.0)
    assert c.checks >= 128
    for i in range(8):
        assert not bool(c.check(meas, _jr(c, i))[0])
        assert not bool(c.wraparound_passes(meas, _jr(c, i))[0])
    assert not _prove_and_decide(c, meas)
    # Each check passes iff Σ z_i over the four entries is even: about half of them.
    shifted = c._shifted(meas, _seed(5))[0]
    frac = float(np.mean(shifted < np.uint64(1 << c.wr_bits)))
    assert 0.3 < frac < 0.7


def test_wraparound_by_large_entries_is_caught() -> None:
    """Entries 2^32 (a² = 2^64 ≡ 2^32 − 1): 2^8 of them sum to 2^40 − 2^8 in the field,
    within N = 4^20 — the in-field norm looks fine, the integer norm is 2^72."""
    f = 20
    c = L2BoundPine(300, f, 1.0)
    a = [2**32] * 256 + [0] * 44
    field_norm = (256 * pow(2**32, 2, P)) % P
    assert field_norm <= c.norm_int
    meas = _meas(c, a, c.norm_int - field_norm)
    unchecked = L2BoundPine(300, f, 1.0, checks=0)
    assert bool(unchecked.check(meas, _jr(unchecked, 0))[0])
    assert not bool(c.check(meas, _jr(c, 0))[0])
    assert not _prove_and_decide(c, meas)


def test_a_cheating_witness_cannot_fix_a_failed_check() -> None:
    """Whatever bits the prover sends for a check, the linear check pins them to y + β:
    replacing the honest witness by any bits changes a nonzero output at most."""
    c = L2BoundPine(16, 6, 1.0)
    a, slack = _wrapped_vector(c)
    meas = _meas(c, a, slack)
    jr = _jr(c, 9)
    rng = np.random.default_rng(1)
    for _ in range(5):
        wit = F.elements(rng.integers(0, 2, size=(1, c.WITNESS_LEN), dtype=np.uint64))
        ext = np.concatenate([meas, wit], axis=1)
        out = c.eval(ext, jr, [GadgetCall(F, g, 1) for g in c.GADGETS])
        assert np.any(out != 0)


# ------------------------------------------------------------------ forged proofs, shares


def test_forged_proofs_and_wrong_joint_randomness_rejected() -> None:
    c = L2BoundPine(200, 10, 1.0)
    v = np.random.default_rng(2).normal(size=(1, 200))
    meas = c.encode(v / np.linalg.norm(v) * 0.9)
    flp = FlpBBCGGI19(c)
    jr = flp.derive_joint_rand(b"a" * 32)
    qr = flp.derive_query_rand(b"q" * 32)
    proof = flp.prove(meas, flp.random_prove_rand((1,)), jr)
    assert flp.decide(flp.query(meas, proof, qr, jr))[0]
    for pos in (0, c.wr_bits - 1, c.WITNESS_LEN - 1, c.WITNESS_LEN + 5, flp.PROOF_LEN - 1):
        bad = proof.copy()
        bad[0, pos] = F.add(bad[0, pos], F.ones(()))
        assert not flp.decide(flp.query(meas, bad, qr, jr))[0], pos
    # a witness for another joint randomness (other z): the linear checks fail
    other = flp.derive_joint_rand(b"b" * 32)
    assert not flp.decide(flp.query(meas, proof, qr, other))[0]
    # a tampered measurement entry
    m2 = meas.copy()
    m2[0, 3] = F.add(m2[0, 3], F.ones(()))
    assert not flp.decide(flp.query(m2, proof, qr, jr))[0]


def test_verified_on_shamir_shares_with_a_wrong_aggregator() -> None:
    c = L2BoundPine(100, 10, 1.0)
    v = np.random.default_rng(3).normal(size=(2, 100))
    meas = c.encode(v / np.linalg.norm(v, axis=1, keepdims=True) * 0.9)
    a, slack = _wrapped_vector(c)
    meas = np.concatenate([meas, _meas(c, a, slack)])
    flp = FlpBBCGGI19(c)
    jr = flp.derive_joint_rand(b"s" * 32)
    proof = flp.prove(meas, flp.random_prove_rand((3,)), jr)
    n, t = 4, 1
    ms, ps = sharing.share(F, meas, n, t), sharing.share(F, proof, n, t)
    mshares = {i: ms[i] for i in range(n)}
    pshares = {i: ps[i] for i in range(n)}
    pshares[2] = F.add(pshares[2], F.ones(pshares[2].shape))  # a wrong aggregator
    qr = flp.derive_query_rand(b"q" * 32)
    ok, faulty = verify.verify_shared(flp, mshares, pshares, qr, jr, n, t)
    assert ok.tolist() == [True, True, False] and faulty == [2]


# ------------------------------------------------------------------ soundness numbers


def test_pass_probability_lemma_empirically() -> None:
    """Case 1 of the lemma (one entry ≥ W): ≤ 1/2 per check; measured over 4,096 checks."""
    c = L2BoundPine(64, 8, 1.0, checks=4096)
    rng = np.random.default_rng(4)
    for big in (1 << c.wr_bits, HALF, P - (1 << (c.wr_bits + 3))):
        a = [int(v) % P for v in rng.integers(-30, 30, size=64)]
        a[11] = big
        shifted = c._shifted(_field(a)[None, :], _seed(7))[0]
        frac = float(np.mean(shifted < np.uint64(1 << c.wr_bits)))
        assert frac <= 0.5 + 4 * math.sqrt(0.25 / 4096)


def test_parameters_are_computed_and_sound() -> None:
    for c in pine.doc_pine_circuits():
        wr = c.wraparound()
        assert c.pass_prob == 0.5 and c.checks == 129
        assert wr.error_log2 <= -64 and c.soundness_error_log2() <= -64
        assert wr.honest_failure < 2.0**-64
        # the stage-2 weights give a grindable δ = chunk/p per repetition: three proofs
        assert FlpBBCGGI19(c).proofs == 3 and c.joint_rand_degree() == c.bits_chunk_length
        assert c.threshold + 2**c.norm_bits <= P
    # Case 2 of the lemma must not dominate: its Berry–Esseen bound is far below 1/2.
    c = pine.doc_pine_circuits()[-1]
    assert pine.wraparound_pass_prob(c.length, c.wr_bits, c.threshold, P) == 0.5
    with pytest.raises(ConfigError):
        pine.wraparound_pass_prob(2**40, 30, c.threshold, P)  # ⟨z, a⟩ could wrap


def test_elements_per_parameter() -> None:
    got = [pine.elements_per_param(c) for c in pine.doc_pine_circuits()]
    assert got[2] < 1.02 and got[1] < 1.1 and got[0] < 1.6


def test_pine_table_in_docs_is_generated() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "proofs.md").read_text()
    m = re.search(r"<!-- pine-table:begin -->\n(.*?)<!-- pine-table:end -->", doc, re.S)
    assert m, "docs/proofs.md lacks the pine-table markers"
    assert m.group(1) == pine.pine_table()


# ------------------------------------------------------------------ two-stage joint randomness


def _sqrt_mod(a: int) -> int | None:
    """A square root of a mod p (Tonelli–Shanks; p − 1 = 2^32·(2^32 − 1)), None if none."""
    a %= P
    if a == 0:
        return 0
    if pow(a, (P - 1) // 2, P) != 1:
        return None
    q, s = P - 1, 0
    while q % 2 == 0:
        q, s = q // 2, s + 1
    z = 7  # a generator of F_p^*: a non-residue
    m, c, t, r = s, pow(z, q, P), pow(a, q, P), pow(a, (q + 1) // 2, P)
    while t != 1:
        i, t2 = 0, t
        while t2 != 1:
            t2, i = t2 * t2 % P, i + 1
        b = pow(c, 1 << (m - i - 1), P)
        m, c, t, r = i, b * b % P, t * b * b % P, r * b % P
    return r


def _cancelling_witness(c: L2BoundPine, meas: np.ndarray, jr: np.ndarray) -> np.ndarray:
    """A forged witness for ``meas`` (a wrapped vector) that satisfies every output of the
    circuit under the joint randomness ``jr`` — possible only because its stage-2 weights
    are known. Each check k gets Σ_j 2^j·b_j = y_k + β exactly (bit 0 absorbs what the low
    bits cannot hold: a non-bit), then two bits of one check are moved by (−2t, t), which
    keeps its sum, with t a root of the weighted bit check (a quadratic in t)."""
    Wb, tail = c.wr_bits, c.tail_bits
    y = [int(v) for v in F.to_ints(c.wraparound_values(meas, jr)[0])]
    wit: list[int] = []
    for yk in y:
        v = (yk + c.beta) % P
        low = v % (1 << Wb)
        bits = [(low >> j) & 1 for j in range(Wb)]
        bits[0] = (bits[0] + v - low) % P
        wit += bits
    r = [int(v) for v in F.to_ints(jr[0, : c.bit_calls])]
    ch = c.bits_chunk_length
    allbits = [int(v) for v in F.to_ints(meas[0, c.length :])] + wit
    w = [pow(r[j // ch], j % ch + 1, P) for j in range(len(allbits))]
    err = sum(wj * (b * b - b) for wj, b in zip(w, allbits, strict=True)) % P
    for k in range(c.checks):
        j0 = tail + k * Wb
        w0, w1, b0, b1 = w[j0], w[j0 + 1], allbits[j0], allbits[j0 + 1]
        A = (4 * w0 + w1) % P
        B = (w0 * (2 - 4 * b0) + w1 * (2 * b1 - 1)) % P
        root = _sqrt_mod(B * B - 4 * A * err)
        if root is None:
            continue
        t = (-B + root) * pow(2 * A, -1, P) % P
        wit[k * Wb] = (wit[k * Wb] - 2 * t) % P
        wit[k * Wb + 1] = (wit[k * Wb + 1] + t) % P
        return _field(wit)[None, :]
    raise AssertionError("no check admits a cancelling pair")  # probability 2^-129


def test_non_bits_that_cancel_under_known_weights_are_caught_under_fresh_ones() -> None:
    """With the stage-2 weights known, a wrapped vector passes with a witness of non-bits
    (the attack the second stage defeats); the same witness under stage-2 randomness drawn
    after it — any other weights, same z — fails, and so does its FLP proof."""
    c = L2BoundPine(16, 6, 1.0)
    a, slack = _wrapped_vector(c)
    meas = _meas(c, a, slack)
    flp = FlpBBCGGI19(c)
    known = flp.derive_joint_rand_staged(b"1" * 32, b"known weights")
    jrs = flp._rep_joint_rands(known[None, :])
    wit = _cancelling_witness(c, meas, jrs[0])
    ext = np.concatenate([meas, wit], axis=1)
    assert any(int(v) > 1 for v in F.to_ints(wit[0]))  # non-bits
    for jr in jrs:  # every repetition's weights must be cancelled: only the first is
        out = c.eval(ext, jr, [GadgetCall(F, g, 1) for g in c.GADGETS])
        assert np.all(out == 0) == (jr is jrs[0])
    # a one-repetition FLP over the known weights accepts it: the attack is real
    one = FlpBBCGGI19(c, proofs=1)
    k1 = jrs[0][0]
    pr = one.random_prove_rand((1,))
    proof = one.prove(meas, pr, k1, witness=wit)
    qr = one.derive_query_rand(b"q" * 32)
    assert one.decide(one.query(meas, proof, qr, k1))[0]
    # stage 2 drawn after the commitment: other weights, same z → rejected
    fresh = one.derive_joint_rand_staged(b"1" * 32, b"drawn after the witness")
    assert np.array_equal(fresh[-pine.WR_SEED_LEN :], k1[-pine.WR_SEED_LEN :])
    assert not one.decide(one.query(meas, one.prove(meas, pr, fresh, witness=wit), qr, fresh))[0]


def _seal_pine(c: L2BoundPine, meas: np.ndarray, **kw: object):
    from kaires_fl.aggregation.submission import seal_parts, sign_manifest
    from kaires_fl.crypto.sign import Identity

    flp = FlpBBCGGI19(c)
    parts = seal_parts(flp, meas, job="job", provider="p", circuit="c", n=4, t=1, **kw)
    sub = sign_manifest(Identity.generate(), parts, job="job", provider="p", circuit="c", write="w")
    return flp, parts, sub


def _verify_sealed(flp: FlpBBCGGI19, parts, sub) -> bool:
    """What the aggregators do: open every part, recompute both stages from the manifest,
    query on shares, reconstruct the verifier and decide."""
    from kaires_fl.aggregation.submission import joint_rand_of, open_part

    opened = [
        open_part(flp, sub.manifest, i, parts.keys[i], sub.meas_parts[i], sub.proof_parts[i])
        for i in range(4)
    ]
    jr = joint_rand_of(flp, sub.manifest)
    qr = flp.derive_query_rand(b"q" * 32)
    ver = {i: flp.query(o.meas, o.proof, qr, jr) for i, o in enumerate(opened)}
    return bool(flp.decide(sharing.reconstruct(F, ver, 1))[0])


@pytest.mark.parametrize("seeded", [None, ()])
def test_sealed_pine_submission_two_stages_honest_and_forged(seeded: object) -> None:
    """Honest: accepted, with the witness at the head of the proof parts and its hashes in
    the manifest. Forged: the provider commits a witness of non-bits that cancels under
    the stage-2 weights it predicts — the weights come from its commitment, so it is
    rejected. Swapping a witness blob after the manifest is signed: the provider's own
    signed hash convicts it (InvalidSubmission)."""
    from kaires_fl.aggregation.submission import joint_rand_of

    c = L2BoundPine(16, 6, 1.0)
    honest = c.encode(np.full((1, 16), 0.2))
    flp, parts, sub = _seal_pine(c, honest, seeded=seeded)
    assert len(sub.manifest.witness_parts) == 4
    assert _verify_sealed(flp, parts, sub)

    a, slack = _wrapped_vector(c)
    wrapped = _meas(c, a, slack)
    guess = flp.derive_joint_rand_staged(b"?" * 32, b"predicted weights")

    def forge(meas: np.ndarray, stage1: np.ndarray) -> np.ndarray:
        jr = np.concatenate([guess[: c.bit_calls], stage1])[None, :]
        return _cancelling_witness(c, meas, jr)

    flp.witness = forge  # type: ignore[method-assign]
    _, fparts, fsub = _seal_pine(c, wrapped, seeded=seeded)
    fflp = FlpBBCGGI19(c)
    assert not _verify_sealed(fflp, fparts, fsub)
    real = joint_rand_of(fflp, fsub.manifest)
    assert not np.array_equal(real[: c.bit_calls], guess[: c.bit_calls])

    # a witness blob swapped after signing: the signed part hash catches it; a provider that
    # signs the swapped part's hash but the old witness hash: its own signature convicts it
    from kaires_fl.aggregation.submission import open_part, part_hash, sign_manifest
    from kaires_fl.crypto.sign import Identity

    _, _, osub = _seal_pine(c, honest, seeded=seeded)
    wlen = int.from_bytes(sub.proof_parts[2][:4], "little")
    swapped = osub.proof_parts[2][: 4 + wlen] + sub.proof_parts[2][4 + wlen :]
    assert swapped != sub.proof_parts[2]
    with pytest.raises(InvalidSubmission, match="does not match its manifest"):
        open_part(flp, sub.manifest, 2, parts.keys[2], sub.meas_parts[2], swapped)
    parts.proof_parts[2] = swapped
    parts.proof_hashes[2] = part_hash(swapped).hex()
    resigned = sign_manifest(
        Identity.generate(), parts, job="job", provider="p", circuit="c", write="w"
    )
    resigned.check(4)
    with pytest.raises(InvalidSubmission, match="another witness"):
        open_part(flp, resigned.manifest, 2, parts.keys[2], resigned.meas_parts[2], swapped)


def test_remembered_wraparound_values_follow_their_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The circuit remembers its last y: the same measurement and seed cost no second
    projection pass; a changed entry, seed or row count is recomputed (never stale)."""
    c = L2BoundPine(300, 4, 1.0)
    rng = np.random.default_rng(3)
    a = F.elements(rng.integers(0, P, size=(2, c.MEAS_LEN), dtype=np.uint64))
    jr = _jr(c, 1)
    passes: list[int] = []
    real = pine.wraparound_dots

    def counted(*args: object) -> np.ndarray:
        passes.append(1)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(pine, "wraparound_dots", counted)
    y = c.wraparound_values(a, jr)
    assert c.wraparound_values(a.copy(), jr.copy()).tolist() == y.tolist()
    assert len(passes) == 1
    b = a.copy()
    b[1, 299] = F.add(b[1, 299], F.elements(1))  # the last entry
    assert c.wraparound_values(b, jr).tolist() == real(F, b[:, :300], jr, c.checks).tolist()
    assert (
        c.wraparound_values(a, _jr(c, 2)).tolist()
        == real(F, a[:, :300], _jr(c, 2), c.checks).tolist()
    )
    assert c.wraparound_values(a[:1], jr).tolist() == y[:1].tolist()
    assert len(passes) == 4
    # the slack bits after the entries do not enter y
    t = a.copy()
    t[:, 300:] = 0
    assert c.wraparound_values(t, jr).tolist() == y.tolist()
    y.fill(0)  # a caller's copy: the remembered value is untouched
    assert c.wraparound_values(t, jr).tolist() != y.tolist()


def test_centred_lift_at_the_middle_of_the_field() -> None:
    """``signed``: (p − 1)/2 is the largest positive value, (p + 1)/2 the most negative,
    equal to the integer reference over the whole edge set and random values."""
    c = L2BoundPine(10, 4, 1.0)
    rng = np.random.default_rng(4)
    vals = [0, 1, 2, (P - 1) // 2, (P + 1) // 2, P - 2, P - 1, 2**32, P - 2**32]
    vals += [int(v) for v in rng.integers(0, P, size=50, dtype=np.uint64)]
    got = c.signed(_field(vals))
    assert got.dtype == np.int64
    assert got.tolist() == [v - P if v > P // 2 else v for v in vals]


def test_codes_cache_is_keyed_by_seed_checks_and_length(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kept expansion is returned only for the same (seed, r, d), equals a fresh one,
    cannot be written to, and the cache stays within its byte budget."""
    monkeypatch.setattr(pine, "_codes_cache", type(pine._codes_cache)())
    monkeypatch.setattr(pine, "_CODES_CACHE_BYTES", 3 * 64 * 250)
    seed = _seed(5)[0]
    raw = np.asarray(seed, dtype="<u8").tobytes()
    c = pine.wraparound_codes(seed, 64, 1000)
    assert pine.wraparound_codes(seed.copy(), 64, 1000) is c
    assert not c.flags.writeable
    assert np.array_equal(c, pine._expand_codes(raw, 64, 1000))
    for other in [(_seed(6)[0], 64, 1000), (seed, 63, 1000), (seed, 64, 999)]:
        got = pine.wraparound_codes(*other)
        assert got is not c
        assert np.array_equal(got, pine._expand_codes(np.asarray(other[0]).tobytes(), *other[1:]))
    assert sum(v.nbytes for v in pine._codes_cache.values()) <= 3 * 64 * 250
    assert (raw, 64, 1000) not in pine._codes_cache  # the oldest went first


@pytest.mark.parametrize(("checks", "length"), [(1, 1), (7, 3), (5, 10), (129, 1001)])
def test_codes_are_the_documented_keystream(checks: int, length: int) -> None:
    """``_expand_codes`` (reused zero input, ``update_into``) is the keystream docs/proofs.md
    names: ChaCha20, zero nonce, key SHA-256(context ‖ seed ‖ d), r rows of ⌈d/4⌉ bytes."""
    import hashlib

    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

    raw = np.asarray(_seed(checks)[0], dtype="<u8").tobytes()
    key = hashlib.sha256(b"kaires/pine/wraparound" + raw + length.to_bytes(8, "little"))
    enc = Cipher(algorithms.ChaCha20(key.digest(), bytes(16)), mode=None).encryptor()
    nbytes = -(-length // 4)
    want = np.frombuffer(enc.update(bytes(checks * nbytes)), dtype=np.uint8)
    got = pine._expand_codes(raw, checks, length)
    assert got.shape == (checks, nbytes) and not got.flags.writeable
    assert np.array_equal(got.reshape(-1), want)


def test_a_proof_leaves_no_copy_of_the_measurement_in_the_circuit() -> None:
    """Privacy (memory hygiene): the circuit remembers its last entries to reuse y between
    the provider's witness and proof; once the proof is made that copy is dropped, so the
    provider's plaintext update does not outlive it in a long-lived (in simulation, shared)
    circuit object."""
    c = L2BoundPine(50, 8, 1.0)
    flp = FlpBBCGGI19(c)
    a = F.elements(np.arange(1, 51, dtype=np.uint64))
    meas = _meas(c, [int(v) for v in F.to_ints(a)], 0)
    jr = flp.derive_joint_rand(b"j" * 32)
    wit = flp.witness(meas, jr)
    assert c._y_memo is not None  # kept for the proof
    flp.prove(meas, flp.random_prove_rand((1,)), jr, witness=wit)
    assert c._y_memo is None
