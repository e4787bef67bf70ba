"""BFT consensus under faults: crash, equivocation, garbage, partitions, restarts, lossy links."""

from __future__ import annotations

import itertools

import pytest
from ledger_world import assert_agreement, ident, make_ledger, rule

from kaires_fl.errors import LedgerError, ProtocolError
from kaires_fl.ledger import LocalLedger, Tx
from kaires_fl.ledger.block import decode_block
from kaires_fl.ledger.consensus import Proposal, Vote, leader_of
from kaires_fl.ledger.store import Store
from kaires_fl.transport import Envelope, LinkFaults

_ids = itertools.count()


def policy_txs(L: LocalLedger, k: int) -> list[Tx]:
    c = L.client()
    owner = ident(f"owner-{next(_ids)}")
    return [
        c.sign(owner, "darc.create", {"id": f"p{next(_ids)}", "rules": {"_evolve": rule(owner)}})
        for _ in range(k)
    ]


def commit(L: LocalLedger, k: int = 3, timeout: float = 30.0) -> int:
    c = L.client()
    txs = policy_txs(L, k)
    res = c.wait(c.submit_many(txs), timeout=timeout, proof=False)
    assert all(r.result.ok for r in res)
    return max(r.height for r in res)


def all_certified(L: LocalLedger) -> dict[int, set[bytes]]:
    out: dict[int, set[bytes]] = {}
    for nd in L.live_nodes():
        for h in range(1, nd.height + 1):
            block, cert = nd.store.block(h)  # type: ignore[misc]
            cert.verify(L.genesis, block.hash)
            out.setdefault(h, set()).add(block.hash)
    return out


@pytest.mark.parametrize("n", [4, 7])
def test_happy_path_all_nodes_agree(n: int) -> None:
    L = make_ledger(n)
    h = commit(L, 5)
    L.run_for(0.1)
    assert all(nd.height == h for nd in L.live_nodes())
    assert_agreement(L)
    assert L.verify() == h
    L.close()


@pytest.mark.parametrize("n", [4, 7])
def test_leader_crash_view_change_progress(n: int) -> None:
    L = make_ledger(n)
    leader = leader_of(1, 0, n)
    L.crash(leader)
    h = commit(L, 3)
    assert h >= 1
    L.run_for(0.2)
    assert_agreement(L)
    # it got there through a view change, and the chain keeps growing afterwards
    blk, cert = L.block(1)
    assert cert.view >= 1 and blk.header.proposer != leader
    assert commit(L, 2) > h
    L.close()


@pytest.mark.parametrize("n", [4, 7])
def test_equivocating_leader_never_two_final_blocks(n: int) -> None:
    byz = leader_of(1, 0, n)
    L = make_ledger(n, byzantine={byz: "equivocate"})
    seen: dict[tuple[int, int], set[bytes]] = {}

    def spy(env: Envelope) -> bool:
        if isinstance(env.payload, Proposal) and env.src == L.addresses[byz]:
            seen.setdefault((env.payload.height, env.payload.view), set()).add(
                decode_block(env.payload.block).hash
            )
        return True

    L.network.add_filter(spy)
    for _ in range(3):
        commit(L, 2)
    L.run_for(0.3)
    assert any(len(v) == 2 for v in seen.values())  # it did equivocate
    certified = all_certified(L)
    assert certified and all(len(v) == 1 for v in certified.values())
    assert_agreement(L)
    assert L.verify() >= 3
    L.close()


@pytest.mark.parametrize("n", [4, 7])
def test_garbage_follower_changes_nothing(n: int) -> None:
    byz = leader_of(1, 1, n)  # not the first leader
    L = make_ledger(n, byzantine={byz: "garbage"})
    h = commit(L, 4)
    h = commit(L, 4)
    L.run_for(0.2)
    assert_agreement(L)
    assert all(len(v) == 1 for v in all_certified(L).values())
    assert L.verify(replay=True) >= h
    assert all(nd.ignored > 0 for nd in L.live_nodes())  # the garbage was seen and refused
    L.close()


@pytest.mark.parametrize("n", [4, 7])
def test_partitioned_minority_catches_up(n: int) -> None:
    L = make_ledger(n)
    f = L.genesis.f
    cut = {L.addresses[i] for i in range(n - f, n)}
    client_addr = "client-x"
    c = L.client(client_addr)
    L.network.partition(cut)
    owner = ident(f"owner-{next(_ids)}")
    txs = [
        c.sign(owner, "darc.create", {"id": f"q{next(_ids)}", "rules": {"_evolve": rule(owner)}})
        for _ in range(4)
    ]
    res = c.wait(c.submit_many(txs), timeout=10.0, proof=False)
    h = max(r.height for r in res)
    assert all(L.nodes[i].height == 0 for i in range(n - f, n))  # type: ignore[union-attr]
    L.network.heal()
    assert L.network.run_until(lambda: all(nd.height >= h for nd in L.live_nodes()), timeout=5.0)
    assert_agreement(L)
    L.close()


def test_kill_restart_catches_up_nothing_final_lost() -> None:
    L = make_ledger(4)
    h1 = commit(L, 3)
    L.run_for(0.1)
    before = {h: L.nodes[2].store.raw_block(h) for h in range(1, h1 + 1)}  # type: ignore[union-attr]
    L.crash(2)
    h2 = commit(L, 3)
    h2 = commit(L, 3)
    node = L.restart(2)
    assert node.height == h1  # reloaded from its own database
    assert L.network.run_until(lambda: node.height >= h2, timeout=5.0)
    for h, raw in before.items():
        assert node.store.raw_block(h) == raw
    assert_agreement(L)
    assert commit(L, 2) > h2
    L.close()


def test_restart_from_files(tmp_path) -> None:
    paths = [str(tmp_path / f"node{i}.sqlite") for i in range(4)]
    L = make_ledger(4, db_paths=paths)
    h = commit(L, 3)
    L.run_for(0.1)
    L.crash(0)
    L.crash(3)
    # with 2 of 4 down nothing can commit
    c = L.client()
    txs = policy_txs(L, 1)
    with pytest.raises(ProtocolError, match="not committed"):
        c.wait(c.submit_many(txs), timeout=1.0)
    L.restart(0)
    L.restart(3)
    got = c.wait([t.id for t in txs], timeout=10.0, proof=False)
    assert got[0].height > h
    assert Store(paths[3]).height() >= h
    assert_agreement(L)
    L.close()


def test_votes_persisted_before_sending_survive_restart() -> None:
    L = make_ledger(4)
    remove = L.network.add_filter(
        lambda env: not (isinstance(env.payload, Vote) and env.payload.phase == "commit")
    )
    c = L.client()
    txs = policy_txs(L, 1)
    c.submit_many(txs)
    L.run_for(0.03)  # prepares flow, commits are dropped: nobody finalises
    nd = L.nodes[2]
    assert nd is not None and nd.height == 0
    voted = dict(nd.my_votes)
    assert ("prepare", 0) in voted and ("commit", 0) in voted
    L.restart(2)
    nd2 = L.nodes[2]
    assert nd2 is not None
    for k, v in voted.items():
        assert nd2.my_votes[k] == v
    assert nd2.prepared is not None and nd2.prepared_block is not None
    assert nd2.prepared_block.hash == voted[("commit", 0)]
    assert decode_block(nd2.prepared.block) is nd2.prepared_block
    remove()
    res = c.wait([t.id for t in txs], timeout=10.0, proof=False)
    assert res[0].height == 1
    assert_agreement(L)
    L.close()


def test_lossy_network_still_agrees() -> None:
    L = make_ledger(4, seed=5)
    L.network.set_faults(LinkFaults(drop=0.1, duplicate=0.1, delay=(0.0, 0.01), reorder=0.2))
    for _ in range(4):
        commit(L, 3, timeout=30.0)
    L.network.set_faults(None)
    L.run_for(1.0)
    assert_agreement(L)
    assert L.verify() >= 4
    L.close()


def test_no_quorum_no_commit() -> None:
    L = make_ledger(4)
    L.crash(1)
    L.crash(2)
    c = L.client()
    txs = policy_txs(L, 1)
    with pytest.raises(ProtocolError, match="not committed"):
        c.wait(c.submit_many(txs), timeout=2.0)
    assert all(nd.height == 0 for nd in L.live_nodes())
    L.close()


def test_byzantine_leader_and_commit_subscription() -> None:
    byz = leader_of(1, 0, 4)
    L = make_ledger(4, byzantine={byz: "byzantine"})
    seen: list[int] = []
    L.on_commit.append(lambda block, cert: seen.append(block.height))
    h = commit(L, 3)
    h = commit(L, 3)
    L.run_for(0.3)
    assert_agreement(L)
    assert all(len(v) == 1 for v in all_certified(L).values())
    assert seen == list(range(1, L.best_node().height + 1)) and h in seen
    assert L.verify(replay=True) >= h
    L.close()


def test_followers_refuse_blocks_that_do_not_re_execute() -> None:
    from dataclasses import replace as dc_replace

    from kaires_fl.ledger.block import Block, TxResult, tx_leaf
    from kaires_fl.ledger.merkle import merkle_root

    L = make_ledger(4)
    c = L.client()
    txs = policy_txs(L, 2)
    nd = L.nodes[0]
    assert nd is not None
    for tx in txs:
        nd.add_tx(tx)
    block, _ = nd.build_block(int(L.network.now * 1000) + 1)
    follower = L.nodes[1]
    assert follower is not None

    def reroot(b: Block, results: tuple[TxResult, ...]) -> Block:
        root = merkle_root([tx_leaf(t, r) for t, r in zip(b.txs, results, strict=True)]).hex()
        return Block(dc_replace(b.header, tx_root=root), b.txs, results)

    lying = reroot(block, (TxResult(False, "made up"), *block.results[1:]))
    with pytest.raises(ProtocolError, match="result differs"):
        follower.validate(lying)
    wrong_root = Block(dc_replace(block.header, state_root="00" * 32), block.txs, block.results)
    with pytest.raises(ProtocolError, match="state root differs"):
        follower.validate(wrong_root)
    forged_tx = dc_replace(block.txs[0], signatures=(block.txs[1].signatures[0],))
    forged = reroot(Block(block.header, (forged_tx, *block.txs[1:]), block.results), block.results)
    with pytest.raises(LedgerError, match="is invalid"):
        follower.validate(forged)
    follower.validate(block)  # the honest block passes
    c.wait(c.submit_many(txs), proof=False)
    L.close()


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_random_faults_then_heal_agree_and_commit_everything(seed: int) -> None:
    import random

    rng = random.Random(seed)
    L = make_ledger(7, seed=seed)
    L.network.set_faults(LinkFaults(drop=0.05, duplicate=0.05, delay=(0.0, 0.02), reorder=0.2))
    c = L.client()
    owner = ident(f"rand-{seed}")
    sent: list[str] = []
    down: set[int] = set()
    for step in range(12):
        txs = [
            c.sign(
                owner,
                "darc.create",
                {"id": f"r{seed}-{step}-{k}", "rules": {"_evolve": rule(owner)}},
            )
            for k in range(3)
        ]
        sent += c.submit_many(txs)
        # crash or restart a random node, never more than f = 2 down at once
        i = rng.randrange(7)
        if i in down:
            L.restart(i)
            down.discard(i)
        elif len(down) < 2:
            L.crash(i)
            down.add(i)
        if rng.random() < 0.3:
            L.network.partition({L.addresses[rng.randrange(7)]})
        else:
            L.network.heal()
        L.run_for(rng.uniform(0.05, 0.3))
    L.network.heal()
    L.network.set_faults(None)
    for i in sorted(down):
        L.restart(i)
    got = c.wait(sent, timeout=60.0, proof=False)
    assert all(g.result.ok for g in got)
    top = max(g.height for g in got)
    assert L.network.run_until(lambda: all(nd.height >= top for nd in L.live_nodes()), 10.0)
    assert_agreement(L)
    assert all(len(v) == 1 for v in all_certified(L).values())
    assert L.verify(replay=True) >= top
    L.close()


def test_seven_nodes_two_crashed_including_leader() -> None:
    L = make_ledger(7)
    L.crash(leader_of(1, 0, 7))
    L.crash(leader_of(1, 1, 7))  # the next leader too: two view changes
    h = commit(L, 3)
    _, cert = L.block(1)
    assert cert.view >= 2
    assert commit(L, 2) > h
    assert_agreement(L)
    L.close()
