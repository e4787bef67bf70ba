"""Sealed submissions: sealing, opening, manifest checks, tampering, provider faults, the
schema (wire form, canonical hash and signature), batch limits, and decoder fuzzing."""

from __future__ import annotations

import contextlib
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kaires_fl import schema
from kaires_fl.aggregation.submission import (
    MANIFEST_CONTEXT,
    Manifest,
    SealedSubmission,
    check_for_job,
    fit_job_total,
    joint_rand_seed,
    max_batch,
    open_part,
    part_hash,
    seal_parts,
    sign_manifest,
)
from kaires_fl.arith import sharing
from kaires_fl.arith.circuits import SumVec
from kaires_fl.arith.field import Field64, Field128
from kaires_fl.arith.flp import FlpBBCGGI19
from kaires_fl.crypto import envelope
from kaires_fl.crypto.sign import H, Identity
from kaires_fl.errors import ConfigError, EncodingError, InvalidSubmission
from kaires_fl.statistics import CountStats, HistogramStats

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


def test_seeded_parts_carry_a_seed_and_only_n_minus_t_shares_travel() -> None:
    rng = np.random.default_rng(3)
    meas = _meas(rng, 50)
    kw = dict(job="job", provider="p", circuit="c", n=N, t=T)
    full = seal_parts(FLP, meas, **kw, seeded=())
    comp = seal_parts(FLP, meas, **kw)  # default: the first t aggregators get seeds
    overhead = len(comp.meas_parts[0])  # AEAD nonce + tag + format byte + 32-byte seed
    assert overhead < 80 and len(comp.proof_parts[0]) == overhead
    for i in range(T, N):
        assert len(comp.meas_parts[i]) == len(full.meas_parts[i]) > 50 * 8
    total = sum(map(len, comp.meas_parts + comp.proof_parts))
    assert total < (N - T + 0.1) / N * sum(map(len, full.meas_parts + full.proof_parts))
    # another seeded set, chosen per submission, opens the same way
    other = seal_parts(FLP, meas, **kw, seeded=(2,))
    assert len(other.meas_parts[2]) == overhead
    for parts in (full, comp, other):
        sub = sign_manifest(
            Identity.generate(), parts, job="job", provider="p", circuit="c", write="w"
        )
        opened = _open_all(parts, sub)
        got = sharing.reconstruct(F, {i: o.meas for i, o in enumerate(opened)}, T)
        assert np.array_equal(got, meas)
        assert sharing.is_consistent(F, np.stack([o.proof for o in opened]), T)
    with pytest.raises(EncodingError, match="exactly t"):
        seal_parts(FLP, meas, **kw, seeded=(0, 1))
    with pytest.raises(EncodingError, match="bad_seed"):
        seal_parts(FLP, meas, **kw, seeded=(), fault="bad_seed")


def test_a_seeded_part_opens_only_to_its_seed_expansion() -> None:
    """bad_seed: the seeded share is off the polynomial of the full ones; a seeded part with
    a seed of the wrong length, the retired SHAKE-128 seed format, an unknown format byte,
    no plaintext, or sealed with ChaCha20-Poly1305 instead of AES-256-GCM opens to nothing."""
    _, parts, sub = _sealed("bad_seed")
    opened = _open_all(parts, sub)
    assert not sharing.is_consistent(F, np.stack([o.meas for o in opened]), T)
    assert sharing.is_consistent(F, np.stack([o.meas for o in opened[T:]]), T)
    from kaires_fl.aggregation import submission as sm

    key = parts.keys[0]
    aad = sm._aad(b"meas", "job", "p", 0)
    seed = bytes([sm.FORMAT_SEED]) + bytes(32)
    cases = {
        "does not open to": [bytes([sm.FORMAT_SEED]) + bytes(31), b"\x03" + bytes(32), b""],
        "SHAKE-128": [bytes([sm.FORMAT_SEED_SHAKE]) + bytes(32)],
    }
    blobs = [(envelope.seal_bulk(key, p, aad), m) for m, ps in cases.items() for p in ps]
    blobs.append((envelope.seal(key, seed, aad), "does not open to"))
    for blob, match in blobs:
        with pytest.raises(InvalidSubmission, match=match):
            open_part(FLP, sub.manifest, 0, key, blob, sub.proof_parts[0], hashes_checked=True)
    # the same seed sealed as it should be opens (the cases above fail for their reason)
    good = envelope.seal_bulk(key, seed, aad)
    open_part(FLP, sub.manifest, 0, key, good, sub.proof_parts[0], hashes_checked=True)


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


# ------------------------------------------------------------ schema, wire form, batch limits

JOB = "a" * 64


def _signed(batch: int = 1, seed: int = 0):
    rng = np.random.default_rng(seed)
    ident = Identity.generate()
    parts = seal_parts(FLP, _meas(rng, batch), job=JOB, provider="p", circuit="c", n=N, t=T)
    return ident, sign_manifest(ident, parts, job=JOB, provider="p", circuit="c", write="w")


def test_wire_form_round_trips_and_keeps_the_signature() -> None:
    _, sub = _signed(batch=3)
    back = SealedSubmission.from_bytes(sub.to_bytes())
    assert back == sub and back.manifest.hash == sub.manifest.hash
    back.check(N, max_batch=3)
    assert Manifest.from_obj(sub.manifest.to_obj()) == sub.manifest


def test_manifest_hash_is_the_hash_of_its_canonical_encoding() -> None:
    _, sub = _signed()
    m = sub.manifest
    assert m.hash == H(MANIFEST_CONTEXT, schema.encode(m))
    # every field is covered: changing any one changes the hash and breaks the signature
    for name, value in [
        ("job", "b" * 64),
        ("provider", "q"),
        ("signer", "0" * 64),
        ("batch", 2),
        ("circuit", "d"),
        ("meas_parts", (m.proof_parts[0], *m.meas_parts[1:])),
        ("proof_parts", (m.meas_parts[0], *m.proof_parts[1:])),
        ("key_commits", (m.meas_parts[0], *m.key_commits[1:])),
        ("write", "x"),
    ]:
        other = msgspec.structs.replace(m, **{name: value})
        assert other.hash != m.hash, name
        with pytest.raises(InvalidSubmission, match="not signed"):
            SealedSubmission(other, sub.signature, sub.meas_parts, sub.proof_parts).check(N)


def test_batch_outside_the_job_limit_is_refused_naming_provider_and_limit() -> None:
    _, sub = _signed(batch=5)
    sub.check(N, max_batch=5)
    with pytest.raises(InvalidSubmission, match=r"'p' submitted a batch of 5.*1\.\.1"):
        sub.check(N, max_batch=1)
    with pytest.raises(InvalidSubmission, match="batch of 5"):
        sub.only(1).check(N, parts=[1], max_batch=4)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("batch", -1),
        ("batch", 0),
        ("batch", 2**70),
        ("batch", "3"),
        ("batch", 1.5),
        ("batch", True),
        ("job", ""),
        ("job", "a b"),
        ("signer", "AB" * 32),
        ("meas_parts", ("00" * 32,) * (N - 1)),
        ("key_commits", ("zz" * 32,) * N),
        ("write", None),
    ],
)
def test_malformed_manifest_fields_raise_encoding_errors(field: str, value: object) -> None:
    _, sub = _signed()
    obj = sub.manifest.to_obj()
    obj[field] = value
    with pytest.raises(EncodingError):
        Manifest.from_obj(obj)
    with pytest.raises(EncodingError):
        Manifest(**{**sub.manifest.to_obj(), field: value})


def test_a_manifest_built_in_python_must_use_tuples() -> None:
    _, sub = _signed()
    with pytest.raises(EncodingError, match="meas_parts"):
        Manifest(**sub.manifest.to_obj())  # lists, as in to_obj()


def test_check_for_job_ties_the_manifest_to_the_job() -> None:
    _, sub = _signed(batch=2)
    job = {"id": JOB, "aggregators": ["0" * 64] * N, "providers": ["p"], "params": {}}
    rec = CountStats("record", max_rows=2)
    check_for_job(sub, job, statistic=rec, circuit="c")
    with pytest.raises(InvalidSubmission, match="batch of 2"):
        check_for_job(sub, job, statistic=CountStats("provider", max_rows=9))
    with pytest.raises(InvalidSubmission, match="batch of 2"):
        check_for_job(sub, {**job, "params": {"max_batch": 1}}, statistic=rec)
    with pytest.raises(InvalidSubmission, match="another circuit"):
        check_for_job(sub, job, statistic=rec, circuit="e")
    with pytest.raises(InvalidSubmission, match="not for job"):
        check_for_job(sub, {**job, "providers": ["q"]}, statistic=rec)
    with pytest.raises(InvalidSubmission, match="committee has 5"):
        check_for_job(sub, {**job, "aggregators": ["0" * 64] * 5}, statistic=rec)


def test_max_batch_per_granularity() -> None:
    assert max_batch(CountStats("provider", max_rows=100)) == 1
    assert max_batch(HistogramStats([0, 1, 2], granularity="provider", max_rows=3)) == 1
    assert max_batch(CountStats("record", max_measurements=1000)) == 1000
    assert max_batch(CountStats("record", max_rows=10, max_measurements=1000)) == 10
    assert max_batch(CountStats("record", max_rows=10), {"params": {"max_batch": 4}}) == 4

    class NoGranularity:
        pass

    with pytest.raises(ConfigError, match="granularity"):
        max_batch(NoGranularity())


def _wire_mutations(data: bytes, positions: list[int], values: list[int]) -> bytes:
    b = bytearray(data)
    for p, v in zip(positions, values, strict=False):
        b[p % len(b)] = v
    return bytes(b)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_fuzz_arbitrary_bytes_decode_to_a_submission_or_encoding_error(data: bytes) -> None:
    try:
        sub = SealedSubmission.from_bytes(data)
    except EncodingError:
        return
    with contextlib.suppress(InvalidSubmission):
        sub.check(N, max_batch=1)


_, _FUZZ_SUB = _signed(batch=2)
_FUZZ_BYTES = _FUZZ_SUB.to_bytes()


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.integers(0, 2**31), min_size=1, max_size=6),
    st.lists(st.integers(0, 255), min_size=1, max_size=6),
    st.integers(0, 64),
)
def test_fuzz_mutated_submissions_are_refused_with_typed_errors(
    positions: list[int], values: list[int], cut: int
) -> None:
    data = _wire_mutations(_FUZZ_BYTES, positions, values)
    if cut:
        data = data[:-cut]
    try:
        sub = SealedSubmission.from_bytes(data)
    except EncodingError:
        return
    try:
        sub.check(N, max_batch=2)
    except InvalidSubmission:
        return
    assert sub == _FUZZ_SUB  # only an unchanged submission passes every check


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from([*_FUZZ_SUB.manifest.to_obj(), "type", "extra"]),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(-(2**80), 2**80),
            st.floats(allow_nan=True),
            st.text(max_size=80),
            st.binary(max_size=40),
            st.lists(st.text(max_size=70), max_size=5),
        ),
    )
)
def test_fuzz_manifest_objects_give_encoding_errors(patch: dict) -> None:
    obj = {**_FUZZ_SUB.manifest.to_obj(), **patch}
    try:
        m = Manifest.from_obj(obj)
    except EncodingError:
        return
    sub = SealedSubmission(m, _FUZZ_SUB.signature, _FUZZ_SUB.meas_parts, _FUZZ_SUB.proof_parts)
    try:
        sub.check(N, max_batch=2)
    except InvalidSubmission:
        assert m != _FUZZ_SUB.manifest


def test_fit_job_total_drops_the_largest_batches_first() -> None:
    rec = CountStats("record", max_measurements=8)
    subs = [_signed(batch=b, seed=b)[1] for b in (2, 6, 3)]
    subs = [
        SealedSubmission(
            msgspec.structs.replace(s.manifest, provider=f"p{k}"),
            s.signature,
            s.meas_parts,
            s.proof_parts,
        )
        for k, s in enumerate(subs)
    ]
    kept, dropped = fit_job_total(subs, rec)
    assert [s.manifest.provider for s in kept] == ["p0", "p2"]
    assert list(dropped) == ["p1"] and "batch of 6" in dropped["p1"]
    kept, dropped = fit_job_total(subs, CountStats("record", max_measurements=11))
    assert kept == subs and dropped == {}


@pytest.mark.parametrize("field", [Field64, Field128])
@pytest.mark.parametrize("seeded", [None, (), (3,)])
def test_a_full_part_is_the_format_byte_and_the_encoded_shares(field: Any, seeded: Any) -> None:
    """Whatever the field and the seeded aggregators: a full part's plaintext is
    FORMAT_FULL ‖ encode(meas_i) ‖ encode(ρ_i) (proof part: FORMAT_FULL ‖ encode(proof_i)),
    a seeded one FORMAT_SEED ‖ 32-byte seed, and the opened shares reconstruct the batch."""
    from kaires_fl.aggregation import submission as sm

    flp = FlpBBCGGI19(SumVec(3, 4, field=field))
    meas = flp.valid.encode(np.random.default_rng(1).integers(0, 16, (4, 3)))
    parts = seal_parts(flp, meas, job="job", provider="p", circuit="c", n=N, t=T, seeded=seeded)
    sub = sign_manifest(Identity.generate(), parts, job="job", provider="p", circuit="c", write="w")
    opened = [
        open_part(flp, sub.manifest, i, parts.keys[i], sub.meas_parts[i], sub.proof_parts[i])
        for i in range(N)
    ]
    for i, o in enumerate(opened):
        mp = envelope.open_bulk(parts.keys[i], sub.meas_parts[i], sm._aad(b"meas", "job", "p", i))
        pp = envelope.open_bulk(parts.keys[i], sub.proof_parts[i], sm._aad(b"proof", "job", "p", i))
        if i in (seeded if seeded is not None else range(T)):
            assert mp[0] == pp[0] == sm.FORMAT_SEED and len(mp) == len(pp) == 33
        else:
            assert mp == bytes([sm.FORMAT_FULL]) + field.encode(o.meas) + field.encode(o.rho)
            assert pp == bytes([sm.FORMAT_FULL]) + field.encode(o.proof)
    got = sharing.reconstruct(field, {i: o.meas for i, o in enumerate(opened)}, T)
    assert np.array_equal(got, meas)
    assert sharing.is_consistent(field, np.stack([o.proof for o in opened]), T)


def test_a_full_part_with_a_non_canonical_share_or_a_wrong_length_opens_to_nothing() -> None:
    """A provider that seals a full part holding a value ≥ p, or too few or too many bytes,
    is refused (InvalidSubmission) — decoding without a copy checks what decode checks."""
    from kaires_fl.aggregation import submission as sm

    _, parts, sub = _sealed()
    key, aad = parts.keys[2], sm._aad(b"meas", "job", "p", 2)
    good = envelope.open_bulk(key, sub.meas_parts[2], aad)
    assert good[0] == sm.FORMAT_FULL
    non_canonical = good[:9] + F.MODULUS.to_bytes(8, "little") + good[17:]
    for plain, match in (
        (non_canonical, "element 1 is not canonical"),
        (good[:-8], "holds"),
        (good + bytes(8), "holds"),
    ):
        blob = envelope.seal_bulk(key, plain, aad)
        with pytest.raises(InvalidSubmission, match=match):
            open_part(FLP, sub.manifest, 2, key, blob, sub.proof_parts[2], hashes_checked=True)
    open_part(FLP, sub.manifest, 2, key, envelope.seal_bulk(key, good, aad), sub.proof_parts[2],
              hashes_checked=True)  # fmt: skip


@pytest.mark.parametrize("fault", [None, "inconsistent_shares"])
def test_seven_aggregators_two_seeded_anywhere_open_to_one_sharing(fault: Any) -> None:
    """n = 7, t = 2, the seeded aggregators in the middle (1 and 5): every part opens, the
    shares of the batch, the mask and the proofs lie on one degree-2 polynomial per
    coordinate and reconstruct the batch — unless the provider corrupted the last full
    share (``inconsistent_shares``), which the consistency check then sees."""
    n, t = 7, 2
    meas = _meas(np.random.default_rng(3), b=6)
    parts = seal_parts(
        FLP, meas, job="job", provider="p", circuit="c", n=n, t=t, seeded=(5, 1), fault=fault
    )
    sub = sign_manifest(Identity.generate(), parts, job="job", provider="p", circuit="c", write="w")
    sub.check(n)
    opened = [
        open_part(FLP, sub.manifest, i, parts.keys[i], sub.meas_parts[i], sub.proof_parts[i])
        for i in range(n)
    ]
    shares = np.stack([o.meas for o in opened])
    assert sharing.is_consistent(F, shares, t) == (fault is None)
    assert sharing.is_consistent(F, shares[: n - 1], t)
    assert sharing.is_consistent(F, np.stack([o.rho for o in opened]), t)
    assert sharing.is_consistent(F, np.stack([o.proof for o in opened]), t)
    got, bad = sharing.robust_reconstruct(F, {i: o.meas for i, o in enumerate(opened)}, n, t)
    assert np.array_equal(got, meas) and bad == ([] if fault is None else [n - 1])
