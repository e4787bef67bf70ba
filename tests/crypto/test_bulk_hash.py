"""``sign.bulk_hash`` (BLAKE3 over length-prefixed parts): known answers, framing, and its
separation from ``sign.H``; the part hash of submissions is built on it."""

from __future__ import annotations

from blake3 import blake3
from hypothesis import given, settings
from hypothesis import strategies as st

from kaires_fl.crypto.sign import H, bulk_hash

#: BLAKE3 test vectors (the specification's reference outputs for "" and "abc").
EMPTY = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
ABC = "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"


def test_bulk_hash_is_blake3_on_known_answers() -> None:
    assert bulk_hash().hex() == EMPTY  # no parts: BLAKE3 of the empty input
    assert blake3(b"abc").hexdigest() == ABC  # the library is BLAKE3
    framed = (3).to_bytes(8, "little") + b"abc"
    assert bulk_hash(b"abc") == blake3(framed).digest()


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(max_size=80), max_size=4))
def test_bulk_hash_frames_each_part_with_its_length(parts: list[bytes]) -> None:
    framed = b"".join(len(p).to_bytes(8, "little") + p for p in parts)
    assert bulk_hash(*parts) == blake3(framed).digest()
    assert len(bulk_hash(*parts)) == 32
    if parts:
        assert bulk_hash(*parts) != H(*parts)  # another function of the same parts


def test_bulk_hash_is_unambiguous_and_hashes_megabytes() -> None:
    assert bulk_hash(b"a", b"bc") != bulk_hash(b"ab", b"c") != bulk_hash(b"abc")
    big = bytes(range(256)) * 8192  # 2 MiB: the SIMD / multi-chunk path
    assert bulk_hash(b"ctx", big) == blake3(b"".join(
        [(3).to_bytes(8, "little"), b"ctx", len(big).to_bytes(8, "little"), big]
    )).digest()  # fmt: skip
    assert bulk_hash(b"ctx", big) != bulk_hash(b"ctx", big[:-1] + b"\x01")
