"""Ledger state: key → JSON value entries with a Merkle root.

:class:`State` is a node's committed state: canonical bytes (hashed, persisted) plus
a bounded cache of decoded values. :class:`StateView` is a copy-on-write overlay used to
execute a block before it is final; its ``writes`` are applied with
:meth:`State.apply` when the block commits.

A State lives in memory (``State(entries)``: an audit's replay, a contract test) or is
backed by a node's :class:`~kaires_fl.ledger.store.Store` (:meth:`State.from_store`): then
the entries are read from the store's SQLite state table and only the Merkle tree and
at most :data:`OBJ_CACHE_ENTRIES` decoded values (:data:`OBJ_CACHE_BYTES` of their
bytes) stay in memory, so a node's memory does not grow with the chain.

Values returned by ``get`` are shared with the cache: treat them as read-only (build a
new dict to change an entry, e.g. ``{**job, "status": "done"}``).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from kaires_fl.ledger.encoding import canonical
from kaires_fl.ledger.merkle import PreparedUpdate, StateTree

if TYPE_CHECKING:
    from kaires_fl.ledger.store import Store

_MISSING = object()

#: Most decoded values a :class:`State` keeps (least recently used ones are dropped).
OBJ_CACHE_ENTRIES = 1024
#: Most canonical bytes the decoded values a :class:`State` keeps may come from (a decoded
#: JSON value takes several times its text's size).
OBJ_CACHE_BYTES = 2**20


class ObjCache:
    """A least-recently-used map key → decoded value, bounded in entries and source bytes.

    Post: ``len(self) <= max_entries`` and ``self.nbytes <= max_bytes`` after every call.
    """

    def __init__(self, max_entries: int | None = None, max_bytes: int | None = None) -> None:
        self.max_entries = OBJ_CACHE_ENTRIES if max_entries is None else max_entries
        self.max_bytes = OBJ_CACHE_BYTES if max_bytes is None else max_bytes
        self._items: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> Any:
        """The cached value (``_MISSING`` if absent), now the most recently used."""
        item = self._items.get(key)
        if item is None:
            return _MISSING
        self._items.move_to_end(key)
        return item[0]

    def put(self, key: str, value: Any, size: int) -> None:
        """Cache ``value`` decoded from ``size`` bytes (not cached if larger than the budget)."""
        self.pop(key)
        if size > self.max_bytes:
            return
        self._items[key] = (value, size)
        self.nbytes += size
        while len(self._items) > self.max_entries or self.nbytes > self.max_bytes:
            _, (_, old) = self._items.popitem(last=False)
            self.nbytes -= old

    def pop(self, key: str) -> None:
        item = self._items.pop(key, None)
        if item is not None:
            self.nbytes -= item[1]


class StoredEntries(Mapping[str, bytes]):
    """The state table of a :class:`~kaires_fl.ledger.store.Store` as a read-only mapping."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def __getitem__(self, key: str) -> bytes:
        raw = self.store.state_value(key)
        if raw is None:
            raise KeyError(key)
        return raw

    def get(self, key: str, default: Any = None) -> Any:
        raw = self.store.state_value(key)
        return default if raw is None else raw

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.store.state_value(key) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self.store.state_keys())

    def __len__(self) -> int:
        return self.store.state_size()


class State:
    """Committed state of one node at ``height`` (in memory, or read from a store)."""

    def __init__(self, entries: Mapping[str, bytes] | None = None, height: int = 0) -> None:
        self._store: Store | None = None
        self.entries: Mapping[str, bytes] = dict(entries or {})
        self._objs = ObjCache()
        self.tree = StateTree()
        self.tree.apply(self.entries)
        self.height = height

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> State:
        return cls({k: canonical(v) for k, v in values.items()})

    @classmethod
    def from_store(cls, store: Store, height: int) -> State:
        """The state committed in ``store`` at ``height``, read from it on demand.

        Post: :meth:`apply` does not write entries: the caller has already committed
        them to ``store`` (:meth:`~kaires_fl.ledger.store.Store.commit_block`).
        """
        st = cls.__new__(cls)
        st._store = store
        st.entries = StoredEntries(store)
        st._objs = ObjCache()
        st.tree = StateTree(store)
        st.height = height
        return st

    @property
    def root(self) -> bytes:
        return self.tree.root

    def get(self, key: str) -> Any | None:
        """The value at ``key`` (None if absent); read-only."""
        obj = self._objs.get(key)
        if obj is _MISSING:
            raw = self.entries.get(key)
            if raw is None:
                return None
            obj = json.loads(raw)
            self._objs.put(key, obj, len(raw))
        return obj

    def raw(self, key: str) -> bytes | None:
        return self.entries.get(key)

    def keys(self, prefix: str = "") -> Iterator[str]:
        if self._store is not None:
            return iter(self._store.state_keys(prefix))
        return (k for k in list(self.entries) if k.startswith(prefix))

    def apply(
        self,
        writes: Mapping[str, bytes | None],
        height: int,
        objs: Mapping[str, Any] | None = None,
        prepared: PreparedUpdate | None = None,
    ) -> None:
        """Apply ``writes`` (None deletes); ``objs``/``prepared`` are caches from a view.

        A store-backed state takes ``writes`` as already in its store (module docstring).
        """
        self.tree.apply(writes, prepared)
        mem = self.entries if self._store is None else None
        assert mem is None or isinstance(mem, dict)
        for k, v in writes.items():
            if v is None:
                if mem is not None:
                    mem.pop(k, None)
                self._objs.pop(k)
            else:
                if mem is not None:
                    mem[k] = v
                if objs is not None and k in objs:
                    self._objs.put(k, objs[k], len(v))
                else:
                    self._objs.pop(k)
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
