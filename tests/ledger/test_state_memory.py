"""Bounded memory of a ledger node: the state is read from SQLite with a bounded cache of
decoded values, the transaction index keeps only recent commits in memory, and a node
reopened from its database serves exactly the state a replay from genesis gives."""

from __future__ import annotations

import itertools
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ledger_world import assert_agreement, ident, make_ledger, rule

from kaires_fl.ledger import LocalLedger, Tx
from kaires_fl.ledger import block as ledger_block
from kaires_fl.ledger import client as ledger_client
from kaires_fl.ledger import state as ledger_state
from kaires_fl.ledger.contracts import DEFAULT_REGISTRY, check_counter, execute_tx
from kaires_fl.ledger.encoding import canonical
from kaires_fl.ledger.merkle import StateTree, verify_state_proof
from kaires_fl.ledger.state import ObjCache, State, StateView, StoredEntries
from kaires_fl.ledger.store import Store

_ids = itertools.count()


def commit_policies(L: LocalLedger, k: int) -> list[str]:
    """Commit ``k`` new policies (``k`` new state entries); returns the tx ids."""
    c = L.client()
    owner = ident(f"mem-owner-{next(_ids)}")
    txs: list[Tx] = [
        c.sign(owner, "darc.create", {"id": f"m{next(_ids)}", "rules": {"_evolve": rule(owner)}})
        for _ in range(k)
    ]
    res = c.wait(c.submit_many(txs), proof=False)
    assert all(r.result.ok for r in res)
    return [t.id for t in txs]


def replayed_state(L: LocalLedger) -> State:
    """The state after replaying the best node's chain from genesis, in memory."""
    nd = L.best_node()
    state = State({k: canonical(v) for k, v in L.genesis.state.items()})
    for h in range(1, nd.height + 1):
        got = nd.store.block(h)
        assert got is not None
        block = got[0]
        view = StateView(state)
        for tx, res in zip(block.txs, block.results, strict=True):
            check_counter(view, tx)
            assert execute_tx(view, tx, DEFAULT_REGISTRY, h, block.header.time_ms) == res
        view.commit(h)
    return state


def test_decoded_values_and_tx_index_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """After many more entries, transactions and blocks than the bounds, every node holds
    at most OBJ_CACHE_ENTRIES decoded values, the tx index RECENT_TXS ids and the block
    memo _DECODED_MAX_BLOCKS blocks in memory (before: every value ever read, every tx id
    and 64 MiB of blocks stayed), and reads still see every entry."""
    monkeypatch.setattr(ledger_state, "OBJ_CACHE_ENTRIES", 8)
    monkeypatch.setattr(ledger_client, "RECENT_TXS", 16)
    monkeypatch.setattr(ledger_block, "_DECODED_MAX_BLOCKS", 3)
    L = make_ledger(4)
    try:
        first = commit_policies(L, 5)
        for _ in range(6):
            commit_policies(L, 10)
        L.run_for(0.2)
        assert_agreement(L)
        for nd in L.live_nodes():
            assert isinstance(nd.state.entries, StoredEntries)
            assert len(nd.state._objs) <= 8
            assert len(list(nd.state.keys("darc/"))) >= 65
            assert all(nd.state.get(k) is not None for k in nd.state.keys("darc/"))
            assert len(nd.state._objs) <= 8
        assert len(L.committed.recent) <= 16
        assert 1 <= len(ledger_block._DECODED) <= 3 and L.best_node().height > 3
        # an id evicted from memory is still found (the node's SQLite tx index) and waited for
        assert first[0] not in L.committed.recent
        assert first[0] in L.committed
        c = L.client()
        assert [r.tx_id for r in c.wait(first, timeout=1.0)] == first
    finally:
        L.close()


def test_restarted_node_serves_the_state_of_a_replay_from_genesis() -> None:
    """A node reopened from its database (state read from SQLite, Merkle tree rebuilt from
    it) has the root, keys, raw bytes and values of an in-memory replay from genesis, and
    goes on committing with its peers."""
    L = make_ledger(4)
    try:
        for _ in range(4):
            commit_policies(L, 6)
        L.run_for(0.2)
        ref = replayed_state(L)
        nd = L.restart(2)
        L.run_for(0.5)
        assert nd.state.root == ref.root == L.nodes[0].state.root  # type: ignore[union-attr]
        keys = sorted(ref.entries)
        assert sorted(nd.state.keys()) == keys
        assert sorted(nd.state.keys("darc/")) == sorted(k for k in keys if k.startswith("darc/"))
        for k in keys:
            assert nd.state.raw(k) == ref.raw(k)
            assert nd.state.get(k) == ref.get(k)
        assert nd.state.get("no/such/key") is None and nd.state.raw("no/such/key") is None
        h = commit_policies(L, 3)
        L.run_for(0.3)
        assert_agreement(L)
        assert L.committed[h[0]][0] == nd.height
        assert L.verify(replay=True) == nd.height
    finally:
        L.close()


_keys = st.text(alphabet=string.ascii_letters + "/-_é\u00ff\U0001f600", min_size=1, max_size=12)


@settings(max_examples=40, deadline=None)
@given(
    entries=st.dictionaries(_keys, st.binary(min_size=0, max_size=20), max_size=40),
    writes=st.dictionaries(_keys, st.none() | st.binary(max_size=20), max_size=12),
    prefix=st.text(alphabet="ab/é\U0001f600", max_size=3),
)
def test_store_backed_state_matches_in_memory_state(
    entries: dict, writes: dict, prefix: str
) -> None:
    """Against the in-memory reference: same root (bucket hashes indexed from a database
    that had only its state table, as one written before the index), same prefix listing
    (an index range in SQLite), same raw reads, proofs that verify; then the same root
    after a block's writes (prepared before the store commits them, as a node does)."""
    store = Store()
    try:
        store.conn.executemany("INSERT INTO state VALUES (?, ?)", list(entries.items()))
        store._index_state_hashes()
        mem, db = State(entries), State.from_store(store, 0)
        assert not db.tree.buckets  # no bucket held in memory
        assert db.root == mem.root
        assert list(db.keys(prefix)) == sorted(mem.keys(prefix))
        for k in list(entries) + list(writes):
            assert db.raw(k) == mem.raw(k) == entries.get(k)
            verify_state_proof(k, entries.get(k), *db.tree.proof(k), db.root)
        assert dict(db.entries) == entries and len(db.entries) == len(entries)
        prepared = db.tree.prepare(writes)
        store.write_state(writes)
        db.apply(writes, 1, prepared=prepared)
        mem.apply(writes, 1)
        assert db.root == mem.root == State.from_store(store, 1).root
        for k in list(entries) + list(writes):
            assert db.raw(k) == mem.raw(k)
            verify_state_proof(k, mem.raw(k), *db.tree.proof(k), db.root)
    finally:
        store.close()


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(_keys, st.binary(max_size=8), max_size=60))
def test_tree_fill_equals_apply(entries: dict) -> None:
    a, b = StateTree(), StateTree()
    a.apply(entries)
    b.fill(iter(entries.items()))
    assert a.root == b.root and a.levels == b.levels


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from("abcdefgh"), st.integers(0, 40), st.booleans()), max_size=60)
)
def test_obj_cache_bounded_and_never_stale(ops: list) -> None:
    """Random puts/pops against a dict: the cache never holds more than its bounds and a
    cached value is always the last one put for its key (never a stale one)."""
    cache, ref = ObjCache(max_entries=4, max_bytes=64), {}
    for key, size, put in ops:
        if put:
            cache.put(key, (key, size), size)
            ref[key] = (key, size)
        else:
            cache.pop(key)
            ref.pop(key, None)
        assert len(cache) <= 4 and cache.nbytes <= 64
        assert cache.nbytes == sum(s for _, s in cache._items.values())
        for k in "abcdefgh":
            got = cache.get(k)
            assert got is ledger_state._MISSING or got == ref[k]
