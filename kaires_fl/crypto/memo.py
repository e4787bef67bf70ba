"""Bounded process-wide memories of checks that passed, keyed by the exact bytes checked.

A simulation runs the ledger nodes, trustees and aggregators of a committee in one
process, and each of them checks the same peer bytes: a vote's signature at every other
node, a write's proof at every node when it validates the block and again when it executes
it, the same public keys decoded in every message. Each check here is a deterministic
function of its input bytes, so a check that passed on exactly these bytes passes again:
:class:`PassedChecks` remembers the keys of passed checks and the check is skipped on a hit.

Safety. A key holds every byte the check depends on (or, for a long message, its SHA-256
digest next to the other inputs: a hit on other bytes needs a SHA-256 collision). Only
passes are remembered — a failed check is repeated every time, so a forged or tampered
message is refused by every service that sees it. A peer can only evict entries (the
memory is bounded, oldest first), which costs time, never correctness.

Keys are built from immutable ``bytes`` (callers convert), so nothing can change under a
remembered key. Thread-safe under the GIL (used from the committee's worker threads).
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable

__all__ = ["PassedChecks", "clear_all", "stats"]

_ALL: list[PassedChecks] = []


class PassedChecks:
    """A bounded set of keys of checks that passed (oldest evicted first).

    Parameters
    ----------
    name:
        what is checked (for debugging and :func:`stats`).
    capacity:
        at most this many keys are kept; precondition: ``capacity >= 1``.
    """

    __slots__ = ("_keys", "capacity", "hits", "misses", "name")

    def __init__(self, name: str, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"PassedChecks capacity must be >= 1, got {capacity}")
        self.name = name
        self.capacity = capacity
        self._keys: dict[Hashable, None] = {}
        self.hits = 0
        self.misses = 0
        _ALL.append(self)

    def passed(self, key: Hashable) -> bool:
        """Whether the check with this key passed before (counts a hit or a miss)."""
        if key in self._keys:
            self.hits += 1
            return True
        self.misses += 1
        return False

    def remember(self, key: Hashable) -> None:
        """Record that the check with this key passed (call only after it passed)."""
        keys = self._keys
        keys[key] = None
        if len(keys) > self.capacity:
            # another thread may evict at the same time: then one key fewer is dropped
            with contextlib.suppress(KeyError, RuntimeError, StopIteration):
                del keys[next(iter(keys))]

    def clear(self) -> None:
        self._keys.clear()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._keys)


def clear_all() -> None:
    """Forget every passed check (tests that count the underlying checks call this)."""
    for memo in _ALL:
        memo.clear()


def stats() -> dict[str, tuple[int, int]]:
    """``{name: (hits, misses)}`` of every memory since the last clear."""
    return {m.name: (m.hits, m.misses) for m in _ALL}
