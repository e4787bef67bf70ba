"""A node skips the signature check only for the exact echo of what it signed itself."""

from __future__ import annotations

from typing import Any

import pytest
from ledger_world import FAST, ident, key, make_ledger

from kaires_fl import schema
from kaires_fl.ledger import consensus
from kaires_fl.ledger.consensus import Vote
from kaires_fl.ledger.tx import make_tx


def _block_in_flight(L: Any) -> tuple[Any, bytes]:
    """Submit one transfer and stop as soon as node 0 has voted prepare on its block."""
    c = L.client()
    bob = ident("bob")
    c.submit_many(
        [make_tx(L.genesis.chain_id, "coin.transfer", {"to": key(ident("x")), "amount": 1}, 1, bob)]
    )
    node = L.nodes[0]
    L.network.run_until(lambda: any(p == "prepare" for p, _ in node.my_votes), 5.0)
    (_, _view), block_hash = next(iter(node.my_votes.items()))
    return node, block_hash


def test_replayed_own_signature_under_another_voter_is_refused() -> None:
    L = make_ledger(4, balances={key(ident("bob")): 10}, config=FAST)
    node, block_hash = _block_in_flight(L)
    h = node.height + 1
    mine = schema.sign(
        Vote("commit", h, node.view, block_hash, 0), node.identity, node.contexts["vote"]
    )
    # Node 0's genuine signature, claimed by node 3: must be checked and refused.
    forged = Vote("commit", h, node.view, block_hash, 3, mine.signature)
    before = node.ignored
    node.on_message(node.peers[3], forged)
    assert node.ignored == before + 1
    assert 3 not in node.votes.get(("commit", node.view, block_hash), {})
    L.close()


def test_own_echo_is_not_reverified_but_everything_commits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []
    real = schema.verify

    def counting(*a: Any) -> bool:
        calls.append(1)
        return real(*a)

    monkeypatch.setattr(consensus.schema, "verify", counting)
    L = make_ledger(4, balances={key(ident("bob")): 10}, config=FAST)
    c = L.client()
    done = c.execute(ident("bob"), "coin.transfer", {"to": key(ident("x")), "amount": 1})
    assert done.result.ok and c.balance(key(ident("x"))) == 1
    L.run_for(0.2)
    # One block, view 0: each node checks the leader's proposal (3 followers) and the
    # prepare and commit votes of the 3 other nodes, never its own.
    assert len(calls) <= 3 + 4 * 3 * 2
    L.close()


def test_a_vote_under_a_negative_voter_index_is_refused() -> None:
    """roster[-1] is the last node: its signature under voter -1 must not count twice."""
    L = make_ledger(4, balances={key(ident("bob")): 10}, config=FAST)
    node, block_hash = _block_in_flight(L)
    last = L.nodes[3]
    assert last is not None
    h = node.height + 1
    alias = schema.sign(
        Vote("commit", h, node.view, block_hash, -1), last.identity, last.contexts["vote"]
    )
    before = node.ignored
    node.on_message(node.peers[3], alias)
    assert node.ignored == before + 1
    assert -1 not in node.votes.get(("commit", node.view, block_hash), {})
    L.close()
