"""Merkle trees: a list tree for a block's transactions and a bucketed tree for state.

List tree (:func:`merkle_root`, :func:`merkle_path`, :func:`verify_path`): leaves and
inner nodes are domain-separated; an odd node is promoted, never duplicated (so two
different leaf lists never share a root).

State tree (:class:`StateTree`): each key falls in one of ``2**BUCKET_BITS`` buckets by
``H(key)``; a bucket's hash commits to its sorted (key, H(value)) pairs; the root is
a complete binary tree over the bucket hashes. An inclusion *or absence* proof of a
key is its bucket's pairs plus ``BUCKET_BITS`` sibling hashes. Updating k keys
costs O(k · (BUCKET_BITS + bucket size)) hashes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import lru_cache
from typing import Protocol

from kaires_fl.crypto.sign import H
from kaires_fl.errors import AuditError

_LEAF = b"kaires/merkle/leaf"
_NODE = b"kaires/merkle/node"
_sha256 = hashlib.sha256


def node_hash(left: bytes, right: bytes) -> bytes:
    """Inner node: SHA-256 over a fixed prefix and two 32-byte digests (fixed layout, so
    no length framing is needed)."""
    return _sha256(_NODE + left + right).digest()


_EMPTY = H(b"kaires/merkle/empty")

BUCKET_BITS = 10
N_BUCKETS = 1 << BUCKET_BITS
_BUCKET = b"kaires/state/bucket"


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """Root of the list tree over ``leaves`` (each already a digest)."""
    if not leaves:
        return _EMPTY
    level = [H(_LEAF, x) for x in leaves]
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def merkle_path(leaves: Sequence[bytes], index: int) -> list[tuple[bool, bytes]]:
    """Sibling path of leaf ``index``: (sibling_is_left, sibling_hash) from the bottom up."""
    level = [H(_LEAF, x) for x in leaves]
    path: list[tuple[bool, bytes]] = []
    i = index
    while len(level) > 1:
        sib = i ^ 1
        if sib < len(level):
            path.append((sib < i, level[sib]))
        nxt = [node_hash(level[j], level[j + 1]) for j in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
        i //= 2
    return path


def verify_path(leaf: bytes, path: Iterable[tuple[bool, bytes]], root: bytes) -> None:
    """Check that ``leaf`` is under ``root`` via ``path``; raises AuditError otherwise."""
    h = H(_LEAF, leaf)
    for left, sib in path:
        h = node_hash(sib, h) if left else node_hash(h, sib)
    if h != root:
        raise AuditError("Merkle path does not lead to the committed root (wrong leaf or path)")


# Caches bounded well below a long chain's key count: a full cache is resident memory.
@lru_cache(maxsize=1 << 13)
def bucket_of(key: str) -> int:
    """Bucket of a state key: the top BUCKET_BITS bits of SHA-256("kaires/state/key/" + key)."""
    d = _sha256(b"kaires/state/key/" + key.encode()).digest()
    return int.from_bytes(d[:4], "big") >> (32 - BUCKET_BITS)


@lru_cache(maxsize=1 << 13)
def _framed_key(key: str) -> bytes:
    kb = key.encode()
    return len(kb).to_bytes(4, "big") + kb


def bucket_hash(pairs: Iterable[tuple[str, bytes]]) -> bytes:
    """Hash of a bucket from its (key, H(value)) pairs, in sorted key order.

    SHA-256 over the domain tag then, per pair, ``len(key)`` (4 bytes) ‖ key ‖ value hash
    (32 bytes): every part is framed, so the encoding is unambiguous.
    """
    h = _sha256(_BUCKET)
    for k, vh in sorted(pairs):
        h.update(_framed_key(k))
        h.update(vh)
    return h.digest()


_EMPTY_BUCKET = bucket_hash(())


_VALUE = b"kaires/state/value/"


def value_hash(value: bytes) -> bytes:
    return _sha256(_VALUE + value).digest()


class PreparedUpdate:
    """A computed but not yet applied update of a :class:`StateTree`."""

    __slots__ = ("base", "changed", "levels")

    def __init__(
        self,
        base: list[list[bytes]],
        changed: dict[int, dict[str, bytes]],
        levels: list[list[bytes]],
    ) -> None:
        self.base = base
        self.changed = changed
        self.levels = levels


class BucketSource(Protocol):
    """Where a store-backed :class:`StateTree` reads its committed buckets (a
    :class:`~kaires_fl.ledger.store.Store`)."""

    def bucket_pairs(self, bucket: int) -> dict[str, bytes]: ...

    def bucket_rows(self) -> Iterator[tuple[int, str, bytes]]: ...


class StateTree:
    """Bucketed Merkle tree over a key → value-hash map (see module docstring).

    In memory (``source`` None) it holds every bucket's pairs. With a ``source`` it holds
    only the bucket hashes and the levels above them (``2 · N_BUCKETS`` hashes): a bucket's
    pairs are read from ``source`` when a write or a proof needs them, and :meth:`apply`
    takes the writes as already committed to ``source``.
    """

    def __init__(self, source: BucketSource | None = None) -> None:
        self.source = source
        self.buckets: list[dict[str, bytes]] = [
            {} for _ in range(N_BUCKETS if source is None else 0)
        ]
        self.levels: list[list[bytes]] = [[_EMPTY_BUCKET] * N_BUCKETS]
        while len(self.levels[-1]) > 1:
            lv = self.levels[-1]
            self.levels.append([node_hash(lv[i], lv[i + 1]) for i in range(0, len(lv), 2)])
        if source is not None:
            self._fill_from_source(source)

    @property
    def root(self) -> bytes:
        return self.levels[-1][0]

    def pairs(self, bucket: int) -> dict[str, bytes]:
        """The committed key → value-hash pairs of ``bucket`` (do not modify)."""
        if self.source is not None:
            return self.source.bucket_pairs(bucket)
        return self.buckets[bucket]

    def fill(self, entries: Iterable[tuple[str, bytes]]) -> None:
        """Add ``entries`` (key, value) pairs, streamed, to an empty in-memory tree."""
        buckets, sha, tag = self.buckets, _sha256, _VALUE
        for key, value in entries:
            buckets[bucket_of(key)][key] = sha(tag + value).digest()
        changed = {b: pairs for b, pairs in enumerate(buckets) if pairs}
        self.levels = self._levels_with(changed)

    def _fill_from_source(self, source: BucketSource) -> None:
        """The bucket hashes from the source's rows (sorted by bucket, then key)."""
        bottom: dict[int, bytes] = {}
        cur, h = -1, None
        for b, key, vh in source.bucket_rows():
            if b != cur:
                if h is not None:
                    bottom[cur] = h.digest()
                cur, h = b, _sha256(_BUCKET)
            assert h is not None
            h.update(_framed_key(key))
            h.update(vh)
        if h is not None:
            bottom[cur] = h.digest()
        self.levels = self._levels_with({}, bottom)

    def _bucket_updates(self, writes: Mapping[str, bytes | None]) -> dict[int, dict[str, bytes]]:
        changed: dict[int, dict[str, bytes]] = {}
        sha, tag = _sha256, _VALUE
        for key, value in writes.items():
            b = bucket_of(key)
            bucket = changed.get(b)
            if bucket is None:
                bucket = changed[b] = dict(self.pairs(b))
            if value is None:
                bucket.pop(key, None)
            else:
                bucket[key] = sha(tag + value).digest()  # value_hash, inlined (hot)
        return changed

    def _levels_with(
        self, changed: Mapping[int, dict[str, bytes]], hashes: Mapping[int, bytes] | None = None
    ) -> list[list[bytes]]:
        levels = [list(lv) for lv in self.levels]
        bottom = levels[0]
        for b, pairs in changed.items():
            bottom[b] = bucket_hash(pairs.items())
        for b, bh in (hashes or {}).items():
            bottom[b] = bh
        dirty = set(changed) | set(hashes or ())
        sha, tag = _sha256, _NODE
        for d in range(1, len(levels)):
            dirty = {i >> 1 for i in dirty}
            lower, level = levels[d - 1], levels[d]
            for i in dirty:
                level[i] = sha(tag + lower[2 * i] + lower[2 * i + 1]).digest()  # node_hash
        return levels

    def prepare(self, writes: Mapping[str, bytes | None]) -> PreparedUpdate:
        """Compute the tree after ``writes`` (None deletes) without changing this one."""
        changed = self._bucket_updates(writes)
        return PreparedUpdate(self.levels, changed, self._levels_with(changed))

    def root_with(self, writes: Mapping[str, bytes | None]) -> bytes:
        """Root after ``writes`` (None deletes) without changing the tree."""
        if not writes:
            return self.root
        return self.prepare(writes).levels[-1][0]

    def apply(
        self, writes: Mapping[str, bytes | None], prepared: PreparedUpdate | None = None
    ) -> None:
        """Apply ``writes`` (None deletes); ``prepared`` from :meth:`prepare` on the same
        writes and the current tree saves recomputing the hashes. With a source, the
        writes are already in it (recomputing from it then gives the same buckets: a
        write is idempotent)."""
        if prepared is None or prepared.base is not self.levels:
            prepared = self.prepare(writes)
        self.levels = prepared.levels
        if self.source is None:
            for b, pairs in prepared.changed.items():
                self.buckets[b] = pairs

    def proof(self, key: str) -> tuple[list[tuple[str, bytes]], list[bytes]]:
        """(bucket pairs, sibling hashes bottom-up) proving ``key``'s value or absence."""
        b = bucket_of(key)
        pairs = sorted(self.pairs(b).items())
        sibs = []
        i = b
        for d in range(len(self.levels) - 1):
            sibs.append(self.levels[d][i ^ 1])
            i //= 2
        return pairs, sibs


def verify_state_proof(
    key: str,
    value: bytes | None,
    pairs: Sequence[tuple[str, bytes]],
    siblings: Sequence[bytes],
    root: bytes,
) -> None:
    """Check that ``key`` maps to ``value`` (None: is absent) under state ``root``.

    Raises
    ------
    AuditError
        if the bucket does not hold that value or the path does not reach ``root``.
    """
    b = bucket_of(key)
    if len(siblings) != BUCKET_BITS:
        raise AuditError(f"state proof must have {BUCKET_BITS} sibling hashes")
    found = dict(pairs)
    if len(found) != len(pairs) or any(bucket_of(k) != b for k in found):
        raise AuditError("state proof bucket holds duplicate or foreign keys")
    if value is None:
        if key in found:
            raise AuditError(f"state entry {key!r} is present, not absent")
    elif found.get(key) != value_hash(value):
        raise AuditError(f"state entry {key!r} does not hold the claimed value")
    h = bucket_hash(pairs)
    i = b
    for sib in siblings:
        h = node_hash(sib, h) if i & 1 else node_hash(h, sib)
        i //= 2
    if h != root:
        raise AuditError("state proof does not lead to the block's state root")
