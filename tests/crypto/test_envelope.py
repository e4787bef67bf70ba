"""Sealed envelopes: round trips, and every kind of tampering is detected."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.public import PrivateKey

from kaires_fl.crypto.envelope import (
    EnvelopeKeyPair,
    hkdf,
    open_,
    open_bulk,
    open_bulk_into,
    open_sealed,
    seal,
    seal_bulk,
    seal_to,
)
from kaires_fl.errors import EncodingError, InvalidProof

KEY = bytes(range(32))


def test_hkdf_matches_rfc5869_vector() -> None:
    # RFC 5869, test case 1 (SHA-256).
    ikm = bytes.fromhex("0b" * 22)
    salt = bytes.fromhex("000102030405060708090a0b0c")
    info = bytes.fromhex("f0f1f2f3f4f5f6f7f8f9")
    okm = hkdf(ikm, info, length=42, salt=salt)
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )
    ref = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"x").derive(b"k")
    assert hkdf(b"k", b"x") == ref
    assert hkdf(b"k", b"x") != hkdf(b"k", b"y")


@settings(max_examples=25, deadline=None)
@given(st.binary(max_size=200), st.binary(max_size=40))
def test_seal_round_trip(pt: bytes, aad: bytes) -> None:
    blob = seal(KEY, pt, aad)
    assert len(blob) == len(pt) + 28
    assert open_(KEY, blob, aad) == pt


def test_seal_uses_fresh_nonces() -> None:
    assert seal(KEY, b"m") != seal(KEY, b"m")


def test_seal_every_flipped_byte_detected() -> None:
    blob = seal(KEY, b"share of aggregator 2", b"job-7")
    for i in range(len(blob)):
        bad = bytearray(blob)
        bad[i] ^= 0x01
        with pytest.raises(InvalidProof, match="tampered"):
            open_(KEY, bytes(bad), b"job-7")


def test_seal_wrong_aad_key_truncation() -> None:
    blob = seal(KEY, b"m", b"a")
    with pytest.raises(InvalidProof):
        open_(KEY, blob, b"b")
    with pytest.raises(InvalidProof):
        open_(bytes(32), blob, b"a")
    with pytest.raises(InvalidProof, match="too short"):
        open_(KEY, blob[:27], b"a")
    with pytest.raises(InvalidProof):
        open_(KEY, blob[:-1], b"a")
    with pytest.raises(EncodingError, match="32 bytes"):
        seal(b"short", b"m")


@settings(max_examples=15, deadline=None)
@given(st.binary(max_size=200), st.binary(max_size=40))
def test_seal_to_round_trip(pt: bytes, aad: bytes) -> None:
    kp = EnvelopeKeyPair.generate()
    blob = seal_to(kp.public, pt, aad)
    assert open_sealed(kp, blob, aad) == pt
    assert open_sealed(kp.private, blob, aad) == pt


def test_seal_to_every_flipped_byte_detected() -> None:
    kp = EnvelopeKeyPair.from_seed(b"\x07" * 32)
    blob = seal_to(kp.public, b"Shamir share", b"aad")
    for i in range(len(blob)):
        bad = bytearray(blob)
        bad[i] ^= 0x80
        with pytest.raises(InvalidProof):
            open_sealed(kp, bytes(bad), b"aad")


def test_seal_to_wrong_recipient_or_aad() -> None:
    kp, other = EnvelopeKeyPair.generate(), EnvelopeKeyPair.generate()
    blob = seal_to(kp.public, b"m", b"aad")
    with pytest.raises(InvalidProof):
        open_sealed(other, blob, b"aad")
    with pytest.raises(InvalidProof):
        open_sealed(kp, blob, b"aae")
    with pytest.raises(InvalidProof, match="too short"):
        open_sealed(kp, blob[:40], b"aad")


def test_seal_to_rejects_low_order_public_key() -> None:
    # The X25519 point of order 1 (u = 0) gives an all-zero shared secret.
    with pytest.raises(InvalidProof, match="low-order"):
        seal_to(bytes(32), b"m")
    with pytest.raises(EncodingError):
        seal_to(b"\x01" * 31, b"m")


def test_seal_to_binds_ephemeral_key() -> None:
    """Replacing the ephemeral key (and nothing else) must fail even for the right recipient."""
    kp = EnvelopeKeyPair.generate()
    blob = seal_to(kp.public, b"m")
    forged = bytes(PrivateKey.generate().public_key) + blob[32:]
    with pytest.raises(InvalidProof):
        open_sealed(kp, forged)


def test_keypair_from_seed_deterministic() -> None:
    assert (
        EnvelopeKeyPair.from_seed(b"\x01" * 32).public
        == EnvelopeKeyPair.from_seed(b"\x01" * 32).public
    )
    with pytest.raises(EncodingError):
        EnvelopeKeyPair.from_seed(b"\x01")


# ------------------------------------------------------------ AES-256-GCM (bulk) envelopes


def test_seal_bulk_is_aes_256_gcm_with_the_nonce_in_front() -> None:
    """The blob is nonce ‖ AES-256-GCM(key, nonce, plaintext, aad): an independent GCM
    decryption of its parts gives the plaintext back (NIST SP 800-38D construction)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    blob = seal_bulk(KEY, b"the shares of aggregator 3", b"aad")
    assert AESGCM(KEY).decrypt(blob[:12], blob[12:], b"aad") == b"the shares of aggregator 3"


@settings(max_examples=25, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=40), st.integers(0, 15))
def test_seal_bulk_round_trip_also_into_any_buffer(pt: bytes, aad: bytes, offset: int) -> None:
    blob = seal_bulk(KEY, memoryview(pt), aad)  # any bytes-like plaintext
    assert len(blob) == len(pt) + 28
    assert open_bulk(KEY, blob, aad) == pt
    buf = bytearray(offset + len(pt) + 3)
    open_bulk_into(KEY, blob, aad, memoryview(buf)[offset : offset + len(pt)])
    assert bytes(buf[offset : offset + len(pt)]) == pt
    assert buf[:offset] == bytes(offset) and buf[offset + len(pt) :] == bytes(3)


def test_seal_bulk_uses_fresh_nonces_and_every_flipped_byte_is_detected() -> None:
    assert seal_bulk(KEY, b"m") != seal_bulk(KEY, b"m")
    blob = seal_bulk(KEY, b"share of aggregator 2", b"job-7")
    for i in range(len(blob)):
        bad = bytearray(blob)
        bad[i] ^= 0x01
        with pytest.raises(InvalidProof, match="tampered"):
            open_bulk(KEY, bytes(bad), b"job-7")


def test_open_bulk_refuses_wrong_aad_key_truncation_and_the_other_aead() -> None:
    blob = seal_bulk(KEY, b"m", b"a")
    for key, data, aad in (
        (KEY, blob, b"b"),
        (bytes(32), blob, b"a"),
        (KEY, blob[:-1], b"a"),
        (KEY, seal(KEY, b"m", b"a"), b"a"),  # ChaCha20-Poly1305 blob: never opens here
    ):
        with pytest.raises(InvalidProof):
            open_bulk(key, data, aad)
    with pytest.raises(InvalidProof):
        open_(KEY, blob, b"a")  # nor the other way round
    with pytest.raises(InvalidProof, match="too short"):
        open_bulk(KEY, blob[:27], b"a")
    with pytest.raises(EncodingError, match="32 bytes"):
        seal_bulk(b"short", b"m")
    with pytest.raises(EncodingError, match="the buffer has 2"):
        open_bulk_into(KEY, blob, b"a", memoryview(bytearray(2)))
