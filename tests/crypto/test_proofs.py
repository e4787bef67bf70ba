"""Schnorr and DLEQ proofs: completeness, and every forgery or tampering is rejected."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kaires_fl.crypto.group import H_POINT, L, Point, Scalar, hash_to_point
from kaires_fl.crypto.proofs import (
    BATCH_COEFF_BITS,
    PROOF_SIZE,
    DLEQProof,
    SchnorrProof,
    _fold,
    dleq_batch_coefficients,
    dleq_batch_prove,
    dleq_batch_verify,
    dleq_prove,
    dleq_verify,
    is_valid_dleq,
    schnorr_prove,
    schnorr_verify,
)
from kaires_fl.errors import EncodingError, InvalidProof

G = Point.base()
CTX = b"job-42/step-4"
FAST = settings(max_examples=10, deadline=None)


@FAST
@given(st.integers(min_value=1, max_value=L - 1))
def test_schnorr_complete_and_round_trip(x: int) -> None:
    s = Scalar(x)
    X = G * s
    proof = schnorr_prove(s, CTX)
    schnorr_verify(proof, X, CTX)
    again = SchnorrProof.from_bytes(proof.to_bytes())
    assert again == proof and len(proof.to_bytes()) == PROOF_SIZE
    schnorr_verify(again, X, CTX)
    # another base
    p2 = schnorr_prove(s, CTX, base=H_POINT)
    schnorr_verify(p2, H_POINT * s, CTX, base=H_POINT)


def test_schnorr_forgeries_rejected() -> None:
    s = Scalar.random_nonzero()
    X = G * s
    proof = schnorr_prove(s, CTX)
    one = Scalar(1)
    forged = [
        SchnorrProof(proof.challenge + one, proof.response),
        SchnorrProof(proof.challenge, proof.response + one),
        SchnorrProof(proof.response, proof.challenge),
        SchnorrProof(Scalar(0), Scalar(0)),
    ]
    for f in forged:
        with pytest.raises(InvalidProof, match="Schnorr"):
            schnorr_verify(f, X, CTX)
    with pytest.raises(InvalidProof):
        schnorr_verify(proof, X, CTX + b"x")  # other context
    with pytest.raises(InvalidProof):
        schnorr_verify(proof, X + G, CTX)  # other statement
    with pytest.raises(InvalidProof):
        schnorr_verify(proof, X, CTX, base=H_POINT)  # other base
    with pytest.raises(InvalidProof, match="identity"):
        schnorr_verify(proof, X, CTX, base=Point.identity())
    # a proof for a wrong witness
    with pytest.raises(InvalidProof):
        schnorr_verify(schnorr_prove(s + one, CTX), X, CTX)


def test_schnorr_every_flipped_bit_rejected() -> None:
    s = Scalar.random_nonzero()
    X = G * s
    raw = schnorr_prove(s, CTX).to_bytes()
    for i in range(len(raw)):
        for bit in (0, 7):
            bad = bytearray(raw)
            bad[i] ^= 1 << bit
            try:
                p = SchnorrProof.from_bytes(bytes(bad))
            except EncodingError:
                continue  # non-canonical scalar: rejected at decoding
            with pytest.raises(InvalidProof):
                schnorr_verify(p, X, CTX)


def _dleq_setup() -> tuple[Scalar, Point, Point, Point, Point, DLEQProof]:
    x = Scalar.random_nonzero()
    B2 = hash_to_point(b"some base")
    X1, X2 = G * x, B2 * x
    return x, G, X1, B2, X2, dleq_prove(x, G, B2, CTX)


@FAST
@given(st.integers(min_value=1, max_value=L - 1), st.binary(max_size=16))
def test_dleq_complete_and_round_trip(x: int, label: bytes) -> None:
    s = Scalar(x)
    B1, B2 = hash_to_point(b"1" + label), hash_to_point(b"2" + label)
    proof = dleq_prove(s, B1, B2, CTX)
    dleq_verify(proof, B1, B1 * s, B2, B2 * s, CTX)
    again = DLEQProof.from_bytes(proof.to_bytes())
    assert again == proof
    assert is_valid_dleq(again, B1, B1 * s, B2, B2 * s, CTX)


def test_dleq_forgeries_rejected() -> None:
    _, B1, X1, B2, X2, proof = _dleq_setup()
    one = Scalar(1)
    cases = {
        "challenge": (DLEQProof(proof.challenge + one, proof.response), B1, X1, B2, X2, CTX),
        "response": (DLEQProof(proof.challenge, proof.response + one), B1, X1, B2, X2, CTX),
        "statement1": (proof, B1, X1 + G, B2, X2, CTX),
        "statement2": (proof, B1, X1, B2, X2 + G, CTX),
        "base1": (proof, H_POINT, X1, B2, X2, CTX),
        "base2": (proof, B1, X1, H_POINT, X2, CTX),
        "swap bases": (proof, B2, X2, B1, X1, CTX),
        "swap statements": (proof, B1, X2, B2, X1, CTX),
        "context": (proof, B1, X1, B2, X2, b"job-43/step-4"),
        "empty context": (proof, B1, X1, B2, X2, b""),
    }
    for name, args in cases.items():
        assert not is_valid_dleq(*args), name
        with pytest.raises(InvalidProof):
            dleq_verify(*args)


def test_dleq_unequal_logs_cannot_be_proven() -> None:
    """A prover whose two statements have different logs produces an invalid proof."""
    x = Scalar.random_nonzero()
    B2 = hash_to_point(b"b2")
    X2_wrong = B2 * (x + 1)
    proof = dleq_prove(x, G, B2, CTX, statement2=X2_wrong)
    assert not is_valid_dleq(proof, G, G * x, B2, X2_wrong, CTX)


def test_dleq_identity_base_rejected() -> None:
    _, B1, X1, _, _, proof = _dleq_setup()
    Z = Point.identity()
    with pytest.raises(InvalidProof, match="identity"):
        dleq_verify(proof, B1, X1, Z, Z, CTX)


def test_proof_decoding_rejects_non_canonical() -> None:
    _, _, _, _, _, proof = _dleq_setup()
    raw = proof.to_bytes()
    with pytest.raises(EncodingError, match="64 bytes"):
        DLEQProof.from_bytes(raw[:-1])
    with pytest.raises(EncodingError, match="non-canonical"):
        DLEQProof.from_bytes(raw[:32] + L.to_bytes(32, "little"))
    with pytest.raises(EncodingError, match="non-canonical"):
        SchnorrProof.from_bytes((L + 5).to_bytes(32, "little") + raw[32:])


def test_nonces_are_fresh() -> None:
    x = Scalar.random_nonzero()
    assert schnorr_prove(x, CTX) != schnorr_prove(x, CTX)


# ---- batched DLEQ ----------------------------------------------------------------------------
def _batch(k: int) -> tuple[Scalar, list[Point], list[Point]]:
    x = Scalar.random_nonzero()
    bases = [hash_to_point(b"batch-base-%d" % i) for i in range(k)]
    return x, bases, [b * x for b in bases]


@pytest.mark.parametrize("k", [1, 2, 5])
def test_dleq_batch_complete_and_matches_reference(k: int) -> None:
    x, bases, values = _batch(k)
    got, proof = dleq_batch_prove(x, G, bases, CTX, statement1=G * x)
    assert got == values  # the prover's values are x·B_k (reference: one mult each)
    dleq_batch_verify(proof, G, G * x, bases, values, CTX)
    # the coefficients are a deterministic function of the whole batch
    d1, r1 = dleq_batch_coefficients(CTX, G, G * x, bases, values)
    d2, r2 = dleq_batch_coefficients(CTX, G, G * x, bases, values)
    assert (d1, r1) == (d2, r2) and len(r1) == k
    assert k == 1 or (all(0 <= r < 2**BATCH_COEFF_BITS for r in r1) and len(set(r1)) == k)
    assert r1[0] == 1  # the first coefficient is fixed (the fold adds B_1)
    # the fold is the reference linear combination, one plain multiplication per term
    ref = Point.identity()
    for r, b in zip(r1, bases, strict=True):
        ref = ref + b * Scalar(r)
    assert _fold(r1, bases) == ref


def test_dleq_batch_costs_2k_plus_1_variable_base_multiplications(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """K values, K − 1 for the fold (r_1 = 1), x·B* and w·B*: a regression guard."""
    import kaires_fl.crypto.group as group

    k = 6
    x, bases, values = _batch(k)
    X = G * x
    calls = []
    real = group._nb.crypto_scalarmult_ed25519_noclamp

    def counting(n: bytes, p: bytes) -> bytes:
        calls.append(p)
        return real(n, p)

    monkeypatch.setattr(group._nb, "crypto_scalarmult_ed25519_noclamp", counting)
    got, proof = dleq_batch_prove(x, G, bases, CTX, statement1=X)
    assert got == values and len(calls) == 2 * k + 1
    calls.clear()
    dleq_batch_verify(proof, G, X, bases, values, CTX)
    # two folds of K − 1 and the DLEQ check: c·X, s·B*, c·V*
    assert len(calls) == 2 * (k - 1) + 3


def test_dleq_batch_rejects_any_wrong_value_and_tampering() -> None:
    x, bases, values = _batch(4)
    X = G * x
    _, proof = dleq_batch_prove(x, G, bases, CTX, statement1=X)
    D = hash_to_point(b"error")
    cases = {
        "one wrong value": [*values[:2], values[2] + G, *values[3:]],
        "a wrong first value (coefficient 1)": [values[0] + D, *values[1:]],
        "two errors that cancel in a plain sum": [values[0] + D, values[1] - D, *values[2:]],
        "values swapped": [values[1], values[0], *values[2:]],
        "a value dropped": values[:3],
        "another secret for one value": [*values[:3], bases[3] * (x + 1)],
    }
    for name, vs in cases.items():
        with pytest.raises(InvalidProof, match="batched DLEQ"):
            dleq_batch_verify(proof, G, X, bases[: len(vs)], vs, CTX)
        assert name
    with pytest.raises(InvalidProof):
        dleq_batch_verify(proof, G, X, bases, values, CTX + b"x")  # other context
    with pytest.raises(InvalidProof):
        dleq_batch_verify(proof, G, X + G, bases, values, CTX)  # other public share
    with pytest.raises(InvalidProof):
        dleq_batch_verify(proof, G, X, list(reversed(bases)), list(reversed(values)), CTX)
    one = Scalar(1)
    for forged in (
        DLEQProof(proof.challenge + one, proof.response),
        DLEQProof(proof.challenge, proof.response + one),
        DLEQProof(Scalar(0), Scalar(0)),
    ):
        with pytest.raises(InvalidProof):
            dleq_batch_verify(forged, G, X, bases, values, CTX)
    # a batch proof is not a proof for a sub-batch, and a single proof is not a batch proof
    with pytest.raises(InvalidProof):
        dleq_batch_verify(proof, G, X, bases[:2], values[:2], CTX)
    single = dleq_prove(x, G, bases[0], CTX, X, values[0])
    with pytest.raises(InvalidProof):
        dleq_batch_verify(single, G, X, bases[:1], values[:1], CTX)
    with pytest.raises(InvalidProof, match="one statement per base"):
        dleq_batch_verify(proof, G, X, [], [], CTX)


def test_dleq_batch_prover_with_wrong_secret_fails() -> None:
    x, bases, _values = _batch(3)
    # a prover that uses another secret for the batch cannot prove it for X = x·G
    vs, proof = dleq_batch_prove(x + 1, G, bases, CTX, statement1=G * x)
    with pytest.raises(InvalidProof):
        dleq_batch_verify(proof, G, G * x, bases, vs, CTX)
