"""Sealed submissions: sealing, opening, manifest checks, tampering, provider faults."""

from __future__ import annotations

import numpy as np
import pytest

from kaires_fl.aggregation.submission import (
    joint_rand_seed,
    open_part,
    part_hash,
    seal_parts,
    sign_manifest,
)
from kaires_fl.arith import sharing
from kaires_fl.arith.circuits import SumVec
from kaires_fl.arith.flp import FlpBBCGGI19
from kaires_fl.crypto.sign import Identity
from kaires_fl.errors import EncodingError, InvalidSubmission

N, T = 4, 1
FLP = FlpBBCGGI19(SumVec(3, 4))
F = FLP.field


def _meas(rng: np.random.Generator, b: int = 5) -> np.ndarray:
    return FLP.valid.encode(rng.integers(0, 16, (b, 3)))


def _sealed(fault: str | None = None, seed: int = 0):
    rng = np.random.default_rng(seed)
    ident = Identity.generate()
    meas = _meas(rng)
    parts = seal_parts(FLP, meas, job="job", provider="p", circuit="c", n=N, t=T, fault=fault)
    sub = sign_manifest(ident, parts, job="job", provider="p", circuit="c", write="w")
    return meas, parts, sub


def _open_all(parts, sub):
    return [
        open_part(FLP, sub.manifest, i, parts.keys[i], sub.meas_parts[i], sub.proof_parts[i])
        for i in range(N)
    ]


def test_parts_open_to_shares_of_the_measurements_and_a_valid_proof() -> None:
    meas, parts, sub = _sealed()
    sub.check(N)
    opened = _open_all(parts, sub)
    m = sharing.reconstruct(F, {i: o.meas for i, o in enumerate(opened)}, T)
    assert np.array_equal(m, meas)
    proof = sharing.reconstruct(F, {i: o.proof for i, o in enumerate(opened)}, T)
    jr = FLP.derive_joint_rand(joint_rand_seed("job", "p", "c", sub.manifest.meas_parts))
    qr = FLP.derive_query_rand(b"q" * 32)
    assert FLP.decide(FLP.query(meas, proof, qr, jr)).all()
    # every share vector (and the mask) lies on one degree-t polynomial
    assert sharing.is_consistent(F, np.stack([o.meas for o in opened]), T)
    assert sharing.is_consistent(F, np.stack([o.rho for o in opened]), T)


def test_single_part_reveals_nothing_obvious() -> None:
    meas, _, sub = _sealed()
    for blob in sub.meas_parts:
        assert F.encode(meas) not in blob
    only = sub.only(2)
    assert only.meas_parts[2] == sub.meas_parts[2] and only.meas_parts[0] == b""
    only.check(N, parts=[2])
    with pytest.raises(InvalidSubmission):
        only.check(N)


def test_tampered_part_and_forged_manifest_are_detected() -> None:
    _, parts, sub = _sealed()
    bad = sub.meas_parts[1][:-1] + bytes([sub.meas_parts[1][-1] ^ 1])
    tampered = type(sub)(
        sub.manifest, sub.signature, (sub.meas_parts[0], bad, *sub.meas_parts[2:]), sub.proof_parts
    )
    with pytest.raises(InvalidSubmission, match="does not match"):
        tampered.check(N)
    forged = type(sub)(
        sub.manifest, Identity.generate().sign(b"x", b"y"), sub.meas_parts, sub.proof_parts
    )
    with pytest.raises(InvalidSubmission, match="not signed"):
        forged.check(N)
    with pytest.raises(InvalidSubmission, match="committee has 5"):
        sub.check(5)
    with pytest.raises(InvalidSubmission, match="does not match its manifest"):
        open_part(FLP, sub.manifest, 1, parts.keys[1], bad, sub.proof_parts[1])


def test_wrong_key_fails_the_commitment() -> None:
    _, parts, sub = _sealed()
    with pytest.raises(InvalidSubmission, match="commitment"):
        open_part(FLP, sub.manifest, 0, parts.keys[1], sub.meas_parts[0], sub.proof_parts[0])


def test_joint_randomness_binds_the_measurement_parts() -> None:
    _, _, a = _sealed(seed=1)
    _, _, b = _sealed(seed=1)
    sa = joint_rand_seed("job", "p", "c", a.manifest.meas_parts)
    assert sa != joint_rand_seed("job", "p", "c", b.manifest.meas_parts)
    assert a.manifest.meas_parts[0] == part_hash(a.meas_parts[0]).hex()


def test_provider_faults_are_what_they_claim() -> None:
    meas, parts, sub = _sealed("inconsistent_shares")
    opened = _open_all(parts, sub)
    assert not sharing.is_consistent(F, np.stack([o.meas for o in opened]), T)
    meas, parts, sub = _sealed("out_of_range")
    opened = _open_all(parts, sub)
    m = sharing.reconstruct(F, {i: o.meas for i, o in enumerate(opened)}, T)
    assert not FLP.valid.check(m, F.from_seed(b"r", (FLP.valid.JOINT_RAND_LEN,))).any()
    meas, parts, sub = _sealed("bad_proof")
    opened = _open_all(parts, sub)
    m = sharing.reconstruct(F, {i: o.meas for i, o in enumerate(opened)}, T)
    assert np.array_equal(m, meas)  # the data are fine, the proof is not


def test_bad_inputs_raise_typed_errors() -> None:
    with pytest.raises(EncodingError):
        seal_parts(FLP, np.zeros((2, 3)), job="j", provider="p", circuit="c", n=N, t=T)
    with pytest.raises(EncodingError, match="unknown provider fault"):
        seal_parts(
            FLP,
            _meas(np.random.default_rng(0)),
            job="j",
            provider="p",
            circuit="c",
            n=N,
            t=T,
            fault="nope",
        )
    with pytest.raises(EncodingError, match="keys"):
        seal_parts(
            FLP,
            _meas(np.random.default_rng(0)),
            job="j",
            provider="p",
            circuit="c",
            n=N,
            t=T,
            keys=[b"k"],
        )
