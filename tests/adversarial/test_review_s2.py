"""Review S2 (R2): attacker-style checks of this session's PINE, seeded-share and memo code."""

from __future__ import annotations

import numpy as np
import pytest
from kaires_fl.strategies.update import WeightedBoundedL2Vec, WeightedL2BoundPine

from kaires_fl.errors import EncodingError


@pytest.mark.parametrize("circuit", [WeightedL2BoundPine, WeightedBoundedL2Vec])
@pytest.mark.parametrize("huge", [1e300, -1e300, 2.0**70])
def test_weighted_encode_refuses_entries_beyond_int64(circuit: type, huge: float) -> None:
    """A finite entry beyond 2^63 (a diverged update) must be refused by the encoder, not
    cast to −2^63 — whose |·| and square wrap in int64 and slipped past the range and norm
    checks, yielding a measurement with an entry of magnitude 2^63 that no proof accepts."""
    c = circuit(4, 8)
    m = np.array([huge, 0.0, 0.0, 0.0, 0.5])
    with pytest.raises(EncodingError):
        c.encode(m)


@pytest.mark.parametrize("circuit", [WeightedL2BoundPine, WeightedBoundedL2Vec])
def test_weighted_encode_refuses_huge_metric(circuit: type) -> None:
    c = circuit(2, 8, metrics=1)
    with pytest.raises(EncodingError):
        c.encode(np.array([0.1, 0.1, 0.5, 1e300]))


@pytest.mark.parametrize("circuit", [WeightedL2BoundPine, WeightedBoundedL2Vec])
def test_weighted_encode_still_accepts_the_extremes(circuit: type) -> None:
    """The range checks moved before the casts keep the same boundary: entries of ±ω."""
    c = circuit(2, 8)
    top = (2**8 - 1) / 2**8
    c.encode(np.array([top, 0.0, top]))
    c.encode(np.array([0.0, -top, top]))


def test_wraparound_codes_survive_a_concurrent_smaller_zero_buffer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Race: another thread expanding a shorter keystream may rebind ``pine._zeros`` to a
    smaller buffer between this call's size check and its read of the global; the codes
    must still be the full keystream (a short input left the tail of ``np.empty`` memory
    in the codes: z not derived from the joint randomness, and cached under its seed)."""
    import hashlib

    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

    from kaires_fl.arith import pine

    checks, length = 9, 1001
    raw = np.arange(1, 5, dtype="<u8").tobytes()
    real_cipher = pine.Cipher

    def racing_cipher(*args: object, **kwargs: object) -> object:
        pine._zeros = b""  # the other thread's (smaller) assignment lands here
        return real_cipher(*args, **kwargs)

    monkeypatch.setattr(pine, "_zeros", b"")
    monkeypatch.setattr(pine, "Cipher", racing_cipher)
    got = pine._expand_codes(raw, checks, length)
    key = hashlib.sha256(b"kaires/pine/wraparound" + raw + length.to_bytes(8, "little"))
    enc = Cipher(algorithms.ChaCha20(key.digest(), bytes(16)), mode=None).encryptor()
    nbytes = -(-length // 4)
    want = np.frombuffer(enc.update(bytes(checks * nbytes)), dtype=np.uint8)
    assert np.array_equal(np.asarray(got).reshape(-1), want)
