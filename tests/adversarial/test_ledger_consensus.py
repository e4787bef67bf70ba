"""Adversarial tests of the ledger's consensus layer (issue 9: findings 14 and 15).

Each test plays one attacker with only its role's keys and messages: a Byzantine ledger
node (its own roster key, the protocol messages it may send) or an unauthenticated peer
that sends arbitrary bytes and objects to a node.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from kaires_fl.crypto.sign import H, Identity
from kaires_fl.errors import ProtocolError
from kaires_fl.ledger import LedgerConfig, LocalLedger, data_terms, job_payload
from kaires_fl.ledger.consensus import leader_of

SKEW_MS = 1000
CONFIG = LedgerConfig(
    view_timeout=0.05, max_timeout=1.0, status_interval=0.05, max_clock_skew_ms=SKEW_MS
)


def _ident(name: str) -> Identity:
    return Identity.from_seed(H(b"adversarial-ledger", name.encode()))


def _rule(i: Identity) -> str:
    return f"ed25519:{i.public.hex()}"


def test_backdating_leader_cannot_authorise_a_job_on_an_expired_policy() -> None:
    """Fairness (provider consent): a policy's ``expires_time_ms`` holds against one
    Byzantine leader. The leader dates its block just after the previous block (long
    before the policy expired) so that ``job.create`` sees an unexpired policy; honest
    nodes refuse to prepare a block whose time lags their clock by more than the skew,
    the view changes, and the job is refused by an honest leader's block."""
    n = 4
    byz = 1
    L = LocalLedger(n, config=CONFIG, byzantine={byz: "backdate"})
    alice, bob = _ident("alice"), _ident("bob")
    c = L.client()
    now_ms = int(L.network.now * 1000)
    expires = now_ms + 2000
    policy = {
        "id": "alice",
        "rules": {"_evolve": _rule(alice), "use": _rule(bob)},
        "terms": data_terms(alice.public.hex(), expires_time_ms=expires, max_jobs=10),
    }
    assert c.execute(alice, "darc.create", policy).result.ok
    # Fill heights until the Byzantine node leads the next height's view 0.
    k = 0
    while leader_of(L.best_node().height + 1, 0, n) != byz:
        filler = _ident(f"filler-{k}")
        c.execute(filler, "darc.create", {"id": f"f{k}", "rules": {"_evolve": _rule(filler)}})
        k += 1
    L.run_for(0.2)
    last_time = L.best_node().last_time
    assert last_time < expires
    # The policy expires; then Bob asks for a job on it.
    L.run_for((expires - int(L.network.now * 1000)) / 1000 + 3 * SKEW_MS / 1000)
    assert L.network.now * 1000 > expires + 2 * SKEW_MS
    aggs = [_ident(f"agg{i}").public.hex() for i in range(4)]
    tx = c.sign(bob, "job.create", job_payload("mean", ["alice"], aggs, 1, "ab" * 32))
    got = c.wait(c.submit_many([tx]), timeout=30.0, proof=False)[0]
    block, cert = L.block(got.height)
    # The attack was tried (the Byzantine node led view 0) and failed: the block is an
    # honest leader's, dated by its clock, and the policy is expired at that time.
    assert cert.view >= 1 and block.header.proposer != byz
    assert block.header.time_ms > expires
    assert not got.result.ok and "expired" in got.result.reason
    assert c.get(f"job/{tx.id}") is None
    L.close()


def test_honest_nodes_refuse_blocks_dated_outside_the_skew() -> None:
    """Fairness: no single leader chooses the ledger's time. A proposal dated more than
    ``max_clock_skew_ms`` before or after an honest node's clock is not prepared; a
    block within the skew is."""
    L = LocalLedger(4, config=CONFIG)
    alice = _ident("alice")
    c = L.client()
    L.run_for(5.0)
    tx = c.sign(alice, "darc.create", {"id": "a", "rules": {"_evolve": _rule(alice)}})
    leader = L.nodes[leader_of(1, 0, 4)]
    follower = L.nodes[leader_of(1, 1, 4)]
    assert leader is not None and follower is not None
    leader.add_tx(tx)
    now_ms = int(L.network.now * 1000)
    block, _ = leader.build_block(now_ms)
    for t in (now_ms - SKEW_MS - 1, now_ms + SKEW_MS + 1):
        hd = replace(block.header, time_ms=t)
        stale = type(block)(hd, block.txs, block.results)
        with pytest.raises(ProtocolError, match="skew allowed"):
            follower.check_timely(stale)
    follower.check_timely(block)
    L.close()
