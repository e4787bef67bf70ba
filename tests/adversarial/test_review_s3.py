"""Adversarial review of session 3's changes (AES-GCM part envelopes, AES-CTR seed PRG,
BLAKE3 part hash, DLEQ batch v2, evidence cache, open_shares kernel)."""

from __future__ import annotations

import os

import numpy as np
import pytest

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
