"""Ledger state: key → JSON value entries with a Merkle root.

:class:`State` is a node's committed state: canonical bytes (hashed, persisted) plus
a cache of decoded values. :class:`StateView` is a copy-on-write overlay used to
execute a block before it is final; its ``writes`` are applied with
:meth:`State.apply` when the block commits.

Values returned by ``get`` are shared with the cache: treat them as read-only (build a
new dict to change an entry, e.g. ``{**job, "status": "done"}``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from kaires_fl.ledger.encoding import canonical
from kaires_fl.ledger.merkle import PreparedUpdate, StateTree

_MISSING = object()


class State:
    """Committed state of one node at ``height``."""

    def __init__(self, entries: Mapping[str, bytes] | None = None, height: int = 0) -> None:
        self.entries: dict[str, bytes] = dict(entries or {})
        self._objs: dict[str, Any] = {}
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
        """The value at ``key`` (None if absent); read-only."""
        obj = self._objs.get(key, _MISSING)
        if obj is _MISSING:
            raw = self.entries.get(key)
            obj = None if raw is None else json.loads(raw)
            if raw is not None:
                self._objs[key] = obj
        return obj

    def raw(self, key: str) -> bytes | None:
        return self.entries.get(key)

    def keys(self, prefix: str = "") -> Iterator[str]:
        return (k for k in list(self.entries) if k.startswith(prefix))

    def apply(
        self,
        writes: Mapping[str, bytes | None],
        height: int,
        objs: Mapping[str, Any] | None = None,
        prepared: PreparedUpdate | None = None,
    ) -> None:
        """Apply ``writes`` (None deletes); ``objs``/``prepared`` are caches from a view."""
        self.tree.apply(writes, prepared)
        for k, v in writes.items():
            if v is None:
                self.entries.pop(k, None)
                self._objs.pop(k, None)
            else:
                self.entries[k] = v
                if objs is not None and k in objs:
                    self._objs[k] = objs[k]
                else:
                    self._objs.pop(k, None)
        self.height = height


class StateView:
    """A read/write overlay on a :class:`State` (reads see earlier writes)."""

    def __init__(self, base: State) -> None:
        self.base = base
        self.writes: dict[str, bytes | None] = {}
        self.objs: dict[str, Any] = {}
        self._prepared: tuple[int, PreparedUpdate] | None = None

    def get(self, key: str) -> Any | None:
        """The value at ``key`` (None if absent); read-only."""
        if key in self.writes:
            return self.objs.get(key)
        return self.base.get(key)

    def keys(self, prefix: str = "") -> list[str]:
        ks = set(self.base.keys(prefix))
        for k, v in self.writes.items():
            if k.startswith(prefix):
                if v is None:
                    ks.discard(k)
                else:
                    ks.add(k)
        return sorted(ks)

    def put_all(self, writes: Mapping[str, Any | None]) -> None:
        """Apply ``writes`` (None deletes) atomically: every value is encoded first, so a
        value that is not canonical JSON (EncodingError) leaves the view unchanged."""
        encoded = {k: None if v is None else canonical(v) for k, v in writes.items()}
        for k, raw in encoded.items():
            self.writes[k] = raw
            if raw is None:
                self.objs.pop(k, None)
            else:
                self.objs[k] = writes[k]
        self._prepared = None

    def copy(self) -> StateView:
        out = StateView(self.base)
        out.writes = dict(self.writes)
        out.objs = dict(self.objs)
        return out

    def root(self) -> bytes:
        """State root after this view's writes (the tree update is kept for :meth:`commit`)."""
        if not self.writes:
            return self.base.root
        prep = self.base.tree.prepare(self.writes)
        self._prepared = (len(self.writes), prep)
        return prep.levels[-1][0]

    def commit(self, height: int) -> None:
        """Apply this view's writes to its base state."""
        prep = self._prepared[1] if self._prepared is not None else None
        self.base.apply(self.writes, height, self.objs, prep)
