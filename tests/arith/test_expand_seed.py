"""The PRG of seeded shares (``Field.expand_seed``: AES-256-CTR, rejection sampling) against
a slow reference written from its specification, and ``Field.decode_view``.

The reference derives the key with hashlib, makes the keystream block by block as
AES-256(key, counter) with the 16-byte big-endian counter from 0 (AES in ECB mode on the
counter blocks, so CTR mode's counter semantics are checked too), and accepts the
ENCODED_SIZE-byte little-endian chunks below p one at a time with Python ints. The
rejection path (a chunk ≥ p comes with probability 2^-32 per Field64 element, never in a
test run by chance) is driven by a keystream of chosen bytes.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from kaires_fl.arith.field import Field64, Field128, PrimeField
from kaires_fl.errors import EncodingError

FIELDS = [Field64, Field128]
DST = b"kaires-fl/field/expand_seed/aes256-ctr/v1"


def _ref_key(F: Any, context: bytes, seed: bytes) -> bytes:
    h = hashlib.sha256()
    for part in (DST, F.NAME, context, seed):
        h.update(len(part).to_bytes(4, "little") + part)
    return h.digest()


def _ref_keystream(key: bytes, nbytes: int) -> bytes:
    blocks = -(-nbytes // 16)
    counters = b"".join(i.to_bytes(16, "big") for i in range(blocks))
    ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return ecb.update(counters)[:nbytes]


def _ref_accept(F: Any, stream: bytes, n: int) -> list[int]:
    size = F.ENCODED_SIZE
    out: list[int] = []
    for k in range(0, len(stream) - size + 1, size):
        if len(out) == n:
            break
        v = int.from_bytes(stream[k : k + size], "little")
        if v < F.MODULUS:
            out.append(v)
    return out


def ref_expand(F: Any, seed: bytes, n: int, context: bytes) -> list[int]:
    stream = _ref_keystream(_ref_key(F, context, seed), F.ENCODED_SIZE * (n + 8))
    out = _ref_accept(F, stream, n)
    assert len(out) == n  # 8 spare chunks: a shortfall here is a 2^-256 event
    return out


@settings(max_examples=30, deadline=None)
@given(
    field=st.sampled_from(FIELDS),
    seed=st.binary(min_size=32, max_size=32),
    context=st.binary(max_size=40),
    n=st.integers(0, 300),
)
def test_expand_seed_matches_the_reference(field: Any, seed: bytes, context: bytes, n: int) -> None:
    got = field.expand_seed(seed, (n,), context)
    assert got.shape == (n,) and got.dtype == field.DTYPE
    assert field.to_ints(got) == ref_expand(field, seed, n, context)


@pytest.mark.parametrize("F", FIELDS)
def test_expand_seed_is_prefix_consistent_shaped_and_separated(F: Any) -> None:
    seed = bytes(range(32))
    a = F.expand_seed(seed, (3, 5), b"ctx")
    assert a.shape == (3, 5)
    assert F.to_ints(F.expand_seed(seed, 7, b"ctx")) == F.to_ints(a.reshape(-1)[:7])
    # odd lengths: the stream continues mid-block (8-byte chunks, 16-byte AES blocks)
    assert F.to_ints(F.expand_seed(seed, 1001, b"ctx"))[:15] == F.to_ints(a.reshape(-1))
    others = [
        F.expand_seed(seed, 15, b"ctx2"),
        F.expand_seed(bytes(32), 15, b"ctx"),
        F.from_seed(seed, 15, b"ctx"),  # the SHAKE-128 XOF: another stream
    ]
    assert all(F.to_ints(o) != F.to_ints(a.reshape(-1)) for o in others)
    other = Field128 if F is Field64 else Field64
    assert other.to_ints(other.expand_seed(seed, 3, b"ctx")) != F.to_ints(a.reshape(-1)[:3])
    assert a.flags.writeable and a.flags.c_contiguous
    with pytest.raises(EncodingError, match="32 bytes"):
        F.expand_seed(b"short", 3)


@pytest.mark.parametrize("n", [32767, 32768, 32769, 100_003])
def test_long_expansions_cross_the_keystream_chunks(n: int) -> None:
    """The keystream is made from a 256 KiB buffer of zeros a chunk at a time (32,768
    Field64 elements): lengths around and across the chunk boundary match the reference."""
    seed = bytes(range(1, 33))
    got = Field64.expand_seed(seed, n, b"chunks")
    want = np.array(ref_expand(Field64, seed, n, b"chunks"), dtype=np.uint64)
    assert np.array_equal(got, want)


class _ChosenKeystream:
    """A keystream of chosen bytes (then zeros), with the encryptor interface that
    ``_expand`` uses: ``update`` and ``update_into`` XOR the data with the next bytes."""

    def __init__(self, stream: bytes) -> None:
        self.stream = stream
        self.pos = 0

    def _next(self, n: int) -> np.ndarray:
        ks = self.stream[self.pos : self.pos + n].ljust(n, b"\0")
        self.pos += n
        return np.frombuffer(ks, np.uint8)

    def update(self, data: bytes) -> bytes:
        return (np.frombuffer(data, np.uint8) ^ self._next(len(data))).tobytes()

    def update_into(self, data: memoryview, buf: memoryview) -> int:
        src = np.frombuffer(data, np.uint8).copy()
        dst = np.frombuffer(buf, np.uint8)
        dst[: len(src)] = src ^ self._next(len(src))
        return len(src)


@pytest.mark.parametrize("F", FIELDS)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_rejection_sampling_keeps_stream_order(F: Any, data: Any) -> None:
    """Chunks ≥ p are skipped (anywhere, in runs, in every refill); the accepted ones come in
    stream order, exactly as the reference takes them — the fast path (Field64: in place,
    zeros re-encrypted after a rejection) and the generic path alike."""
    size, p = F.ENCODED_SIZE, F.MODULUS
    n = data.draw(st.integers(1, 40))
    big = st.integers(p, 2 ** (8 * size) - 1)
    small = st.sampled_from([0, 1, p - 1, p // 2]) | st.integers(0, p - 1)
    chunks = data.draw(st.lists(big | small, min_size=n, max_size=3 * n))
    stream = b"".join(v.to_bytes(size, "little") for v in chunks)
    want = _ref_accept(F, stream + bytes(size * n), n)  # the stream goes on with zeros
    generic = PrimeField._expand.__func__  # type: ignore[attr-defined]
    fast = F._expand(_ChosenKeystream(stream), n)
    assert F.to_ints(fast) == want
    assert F.to_ints(generic(F, _ChosenKeystream(stream), n)) == want


def test_expanded_elements_are_uniform_statistically() -> None:
    """Coarse checks of AES-CTR elements: each of the 64 bits of Field64 elements is set
    half of the time, and the low byte is spread evenly (6 sigma bounds)."""
    v = Field64.expand_seed(b"\x07" * 32, 40000, b"uniformity")
    bits = (v[:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)
    sigma = np.sqrt(40000 * 0.25)
    assert np.all(np.abs(bits.sum(axis=0).astype(float) - 20000) < 6 * sigma)
    counts = np.bincount((v & np.uint64(255)).astype(np.int64), minlength=256)
    expect = 40000 / 256
    assert np.all(np.abs(counts - expect) < 6 * np.sqrt(expect))


# ------------------------------------------------------------ decode_view


@pytest.mark.parametrize("F", FIELDS)
def test_decode_view_equals_decode_and_views_aligned_buffers(F: Any) -> None:
    vals = F.elements([0, 1, F.MODULUS - 1, 12345, 2**40])
    enc = F.encode(vals)
    buf = np.zeros(1 + len(enc) // 8, np.uint64)  # an aligned buffer, data from byte 8
    raw = memoryview(buf).cast("B")[8:]
    raw[:] = enc
    got = F.decode_view(raw, (5,))
    assert F.to_ints(got) == F.to_ints(vals) == F.to_ints(F.decode(enc))
    shares_memory = np.shares_memory(got, buf) if got.dtype != object else False
    assert shares_memory == (F is Field64)  # Field64: a view, no copy
    if F is Field64:
        unaligned = memoryview(bytearray(b"\0" + enc))[1:]
        assert not np.shares_memory(F.decode_view(unaligned, (5,)), buf)
        assert F.to_ints(F.decode_view(unaligned, (5,))) == F.to_ints(vals)
        readonly = F.decode_view(memoryview(enc), (5,))
        assert readonly.flags.writeable and F.to_ints(readonly) == F.to_ints(vals)


@pytest.mark.parametrize("F", FIELDS)
def test_decode_view_refuses_what_decode_refuses(F: Any) -> None:
    size = F.ENCODED_SIZE
    buf = np.zeros(1 + 4 * size // 8, np.uint64)
    raw = memoryview(buf).cast("B")[8:]
    raw[size : 2 * size] = F.MODULUS.to_bytes(size, "little")  # element 1 ≥ p
    with pytest.raises(EncodingError, match="element 1 is not canonical"):
        F.decode_view(raw, (4,))
    with pytest.raises(EncodingError, match="expected"):
        F.decode_view(raw[: size * 3], (4,))
