"""Per-process digest memos (schema.DigestMemo): a part or round-1 message hashed once per
object, never a stale or foreign digest — a tampered copy is hashed afresh and caught."""

from __future__ import annotations

import gc

import msgspec
import numpy as np
import pytest
from blake3 import blake3

from kaires_fl import schema
from kaires_fl.aggregation import submission
from kaires_fl.aggregation.aggregator import PUBLISH_CONTEXT, Published, published_digest
from kaires_fl.aggregation.submission import open_part, part_hash, seal_parts, sign_manifest
from kaires_fl.arith.circuits import SumVec
from kaires_fl.arith.flp import FlpBBCGGI19
from kaires_fl.crypto.sign import Identity
from kaires_fl.errors import InvalidSubmission
from kaires_fl.schema import DigestMemo, Elements, deeply_immutable

N, T = 4, 1
FLP = FlpBBCGGI19(SumVec(3, 4))
F = FLP.field


def _reference(blob: bytes) -> bytes:
    """BLAKE3 of the length-prefixed domain and blob (the protocol's part hash, v2)."""
    ctx = b"kaires/aggregation/part/v2"
    framed = len(ctx).to_bytes(8, "little") + ctx + len(blob).to_bytes(8, "little") + blob
    return blake3(bytes(framed)).digest()


def _sealed():
    meas = FLP.valid.encode(np.random.default_rng(0).integers(0, 16, (5, 3)))
    parts = seal_parts(FLP, meas, job="job", provider="p", circuit="c", n=N, t=T)
    sub = sign_manifest(Identity.generate(), parts, job="job", provider="p", circuit="c", write="w")
    return parts, sub


def test_a_part_is_hashed_once_per_object_and_a_tampered_copy_is_caught() -> None:
    parts, sub = _sealed()
    memo = submission._PART_HASHES
    blob = sub.meas_parts[1]
    hits, misses = memo.hits, memo.misses
    sub.check(N)  # the provider hashed every part when sealing: all hits now
    assert (memo.hits - hits, memo.misses - misses) == (2 * N, 0)
    assert part_hash(blob) == _reference(blob)
    # the same bytes in another object, and one flipped byte: both hashed afresh
    copy = bytes(bytearray(blob))
    assert copy is not blob and part_hash(copy) == _reference(blob)
    bad = blob[:-1] + bytes([blob[-1] ^ 1])
    misses = memo.misses
    assert part_hash(bad) == _reference(bad) != _reference(blob)
    assert memo.misses == misses + 1
    tampered = type(sub)(
        sub.manifest, sub.signature, (sub.meas_parts[0], bad, *sub.meas_parts[2:]), sub.proof_parts
    )
    with pytest.raises(InvalidSubmission, match="does not match"):
        tampered.check(N)
    with pytest.raises(InvalidSubmission, match="does not match its manifest"):
        open_part(FLP, sub.manifest, 1, parts.keys[1], bad, sub.proof_parts[1])


def test_a_mutable_buffer_is_never_memoised() -> None:
    buf = bytearray(b"part" * 1000)
    before = part_hash(buf)  # type: ignore[arg-type]
    buf[0] ^= 1
    after = part_hash(buf)  # type: ignore[arg-type]
    assert before != after == _reference(buf)


def test_entries_nobody_else_holds_are_dropped() -> None:
    calls: list[bytes] = []

    def digest(b: bytes) -> bytes:
        calls.append(b)
        return _reference(b)

    memo = DigestMemo(digest, lambda b: type(b) is bytes, capacity=3)
    kept = [bytes([i]) * 100 for i in range(5)]
    for i in range(5):
        memo(kept[i])
    assert len(memo) == 3  # capacity: oldest first
    assert memo(kept[4]) == _reference(kept[4]) and memo.hits == 1
    last = kept[4]
    calls.clear()
    del kept
    gc.collect()
    memo.forget_unused()
    assert len(memo) == 1 and not calls  # only the object still held elsewhere is kept
    assert memo(last) == _reference(last) and not calls
    del last
    memo.forget_unused()
    assert len(memo) == 0
    with pytest.raises(ValueError):
        DigestMemo(digest, bool, capacity=0)


def _published(data: bytes | bytearray) -> Published:
    z = Elements("Field64", (1,), data)
    return Published("ab" * 32, 1, z, Elements.of(F, F.ones((2, 3))))


def test_published_digest_memoises_only_deeply_immutable_messages() -> None:
    decoded = schema.roundtrip(_published(F.encode(F.ones((1,)))))
    assert deeply_immutable(decoded)
    d = published_digest(decoded)
    assert d == schema.signing_digest(decoded, PUBLISH_CONTEXT) == published_digest(decoded)
    # an in-process message holding a mutable buffer is hashed each time
    buf = bytearray(F.encode(F.ones((1,))))
    p = _published(buf)
    assert not deeply_immutable(p)
    first = published_digest(p)
    buf[0] ^= 1
    assert published_digest(p) == schema.signing_digest(p, PUBLISH_CONTEXT) != first


def test_deeply_immutable() -> None:
    class Open(msgspec.Struct):
        a: bytes

    class Closed(msgspec.Struct, frozen=True):
        a: object

    assert deeply_immutable((1, "x", b"y", None, 1.5, True, (Closed(b""),)))
    assert not deeply_immutable(Open(b""))
    assert not deeply_immutable(Closed([1]))
    assert not deeply_immutable(Closed(np.zeros(2)))
    assert not deeply_immutable(Closed((bytearray(),)))


def test_forget_unused_digests_frees_dead_objects_in_every_memo() -> None:
    memo = DigestMemo(_reference, lambda b: type(b) is bytes)
    alive, dead = bytes([97]) * 1000, bytes([100]) * 1000  # not constants of the code
    memo(alive), memo(dead)
    del dead
    gc.collect()
    schema.forget_unused_digests()  # what a provider calls before it seals
    assert len(memo) == 1 and memo(alive) == _reference(alive) and memo.hits == 1


def _counting_refcounts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the memo's reference-count checks (one per entry a sweep examines), whatever
    the implementation: ``sys.getrefcount`` wrapped, its result unchanged (the wrapper's own
    argument is one more reference)."""
    import sys

    real, calls = sys.getrefcount, [0]

    def counting(obj: object) -> int:
        calls[0] += 1
        return real(obj) - 1

    monkeypatch.setattr(sys, "getrefcount", counting)
    return calls


def test_remembering_is_amortised_constant_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """n insertions of objects that stay alive (a simulation's parts, held by the log and
    the aggregators) examine O(n) entries in all, not one pass over the memo each: 3,000
    insertions examined ≈ 4.5 M entries with a sweep at every insertion."""
    memo = DigestMemo(lambda b: b[:8], lambda b: type(b) is bytes, capacity=4096)
    calls = _counting_refcounts(monkeypatch)
    held = [i.to_bytes(4, "little") * 4 for i in range(3000)]
    for b in held:
        memo(b)
    assert len(memo) == 3000 and memo.misses == 3000
    assert calls[0] == memo.examined <= 3 * len(held)
    assert all(memo(b) == b[:8] for b in held) and memo.hits == 3000


def test_dead_entries_stay_bounded_in_count_and_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Objects nothing else holds are swept before they outnumber the live entries and
    SWEEP_ENTRIES, or outweigh the live bytes and SWEEP_BYTES (plus the last one)."""
    memo = DigestMemo(_reference, lambda b: type(b) is bytes)
    calls = _counting_refcounts(monkeypatch)
    alive = [bytes([7]) * 10 + i.to_bytes(4, "little") for i in range(100)]
    for b in alive:
        memo(b)
    for i in range(2000):  # small dead objects
        memo(i.to_bytes(4, "little") * 3)
        # live: the held ones and the last one inserted (its caller held it at the sweep)
        assert len(memo) <= len(alive) + max(len(alive) + 1, schema.SWEEP_ENTRIES) + 1
    assert calls[0] <= 3 * (len(alive) + 2000)
    memo.forget_unused()
    assert len(memo) == len(alive)
    big = 4 << 20
    for i in range(24):  # 96 MiB of dead 4 MiB blobs
        memo(bytes([i]) * big)
        held = sum(len(o) for o, *_ in memo._memo.values()) - sum(len(b) for b in alive)
        assert held <= schema.SWEEP_BYTES + big
    assert all(memo(b) == _reference(b) for b in alive)


def test_payload_bytes() -> None:
    p = _published(F.encode(F.ones((1,))))
    assert schema.payload_bytes(b"abc") == 3 and schema.payload_bytes(("ab", (b"c",))) == 3
    data = len(p.z.data) + len(p.verifier.data)
    assert data + len(p.job) <= schema.payload_bytes(p) <= data + len(p.job) + 64
    assert schema.payload_bytes(bytearray(10)) == 0 and schema.payload_bytes(3) == 0
