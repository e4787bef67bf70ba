"""Ledger state: key → JSON value entries with a Merkle root.

:class:`State` is a node's committed state (values kept as canonical bytes, so reads
hand out fresh copies a contract cannot alias). :class:`StateView` is a copy-on-write
overlay used to execute a block before it is final; its ``writes`` are applied with
:meth:`State.apply` when the block commits.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from kaires_fl.ledger.encoding import canonical
from kaires_fl.ledger.merkle import StateTree


class State:
    """Committed state of one node at ``height``."""

    def __init__(self, entries: Mapping[str, bytes] | None = None, height: int = 0) -> None:
        self.entries: dict[str, bytes] = dict(entries or {})
        self.tree = StateTree()
        self.tree.apply(self.entries)
        self.height = height

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> State:
        return cls({k: canonical(v) for k, v in values.items()})

    @property
    def root(self) -> bytes:
        return self.tree.root

    def get(self, key: str) -> Any | None:
        raw = self.entries.get(key)
        return None if raw is None else json.loads(raw)

    def raw(self, key: str) -> bytes | None:
        return self.entries.get(key)

    def keys(self, prefix: str = "") -> Iterator[str]:
        return (k for k in list(self.entries) if k.startswith(prefix))

    def apply(self, writes: Mapping[str, bytes | None], height: int) -> None:
        self.tree.apply(writes)
        for k, v in writes.items():
            if v is None:
                self.entries.pop(k, None)
            else:
                self.entries[k] = v
        self.height = height


class StateView:
    """A read/write overlay on a :class:`State` (reads see earlier writes)."""

    def __init__(self, base: State) -> None:
        self.base = base
        self.writes: dict[str, bytes | None] = {}

    def get(self, key: str) -> Any | None:
        """The value at ``key`` (None if absent); a fresh copy each call."""
        if key in self.writes:
            raw = self.writes[key]
            return None if raw is None else json.loads(raw)
        return self.base.get(key)

    def keys(self, prefix: str = "") -> list[str]:
        ks = {k for k in self.base.keys(prefix)}
        for k, v in self.writes.items():
            if k.startswith(prefix):
                if v is None:
                    ks.discard(k)
                else:
                    ks.add(k)
        return sorted(ks)

    def put_all(self, writes: Mapping[str, Any | None]) -> None:
        for k, v in writes.items():
            self.writes[k] = None if v is None else canonical(v)

    def root(self) -> bytes:
        return self.base.tree.root_with(self.writes)
