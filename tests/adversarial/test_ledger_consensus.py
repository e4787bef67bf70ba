"""Adversarial tests of the ledger's consensus layer (issue 9: findings 14 and 15).

Each test plays one attacker with only its role's keys and messages: a Byzantine ledger
node (its own roster key, the protocol messages it may send) or an unauthenticated peer
that sends arbitrary bytes and objects to a node.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

from kaires_fl import schema
from kaires_fl.errors import AuditError, EncodingError, ProtocolError
from kaires_fl.ledger import LedgerConfig, StateProof, TxProof, job_payload, verify_chain
from kaires_fl.ledger.consensus import (
    Proposal,
    Status,
    SyncRequest,
    SyncResponse,
    TxGossip,
    ViewChange,
    Vote,
    leader_of,
)
from kaires_fl.ledger.encoding import canonical, decode_canonical

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ledger"))
from ledger_world import (
    COMMITTEE,
    ident,
    make_ledger,
    policy_payload,
    rule,
)

SKEW_MS = 1000
CONFIG = LedgerConfig(
    view_timeout=0.05, max_timeout=1.0, status_interval=0.05, max_clock_skew_ms=SKEW_MS
)


def test_backdating_leader_cannot_authorise_a_job_on_an_expired_policy() -> None:
    """Fairness (provider consent): a policy's ``expires_time_ms`` holds against one
    Byzantine leader. The leader dates its block just after the previous block (long
    before the policy expired) so that ``job.create`` sees an unexpired policy; honest
    nodes refuse to prepare a block whose time lags their clock by more than the skew,
    the view changes, and the job is refused by an honest leader's block."""
    n = 4
    byz = 1
    L = make_ledger(n, config=CONFIG, byzantine={byz: "backdate"})
    alice, bob = ident("adv-alice"), ident("adv-bob")
    c = L.client()
    now_ms = int(L.network.now * 1000)
    expires = now_ms + 2000
    policy = policy_payload(alice, "alice", [bob], expires_time_ms=expires, max_jobs=10)
    assert c.execute(alice, "darc.create", policy).result.ok
    # Fill heights until the Byzantine node leads the next height's view 0.
    k = 0
    while leader_of(L.best_node().height + 1, 0, n) != byz:
        filler = ident(f"adv-filler-{k}")
        c.execute(filler, "darc.create", {"id": f"f{k}", "rules": {"_evolve": rule(filler)}})
        k += 1
    L.run_for(0.2)
    last_time = L.best_node().last_time
    assert last_time < expires
    # The policy expires; then Bob asks for a job on it.
    L.run_for((expires - int(L.network.now * 1000)) / 1000 + 3 * SKEW_MS / 1000)
    assert L.network.now * 1000 > expires + 2 * SKEW_MS
    tx = c.sign(bob, "job.create", job_payload("mean", [policy["id"]], COMMITTEE, "ab" * 32))
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
    L = make_ledger(4, config=CONFIG)
    alice = ident("adv-alice")
    c = L.client()
    L.run_for(5.0)
    tx = c.sign(alice, "darc.create", {"id": "a", "rules": {"_evolve": rule(alice)}})
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


def test_garbage_from_a_peer_never_kills_a_node_handler() -> None:
    """Robustness: a peer (no roster key needed) sends undecodable bytes, messages with
    wrongly typed or out-of-range fields (in process, skipping the decoder) and
    oversized claims; every node's handler returns normally, counts them as ignored, and
    the ledger keeps committing."""
    L = make_ledger(4, config=CONFIG)
    node = L.nodes[0]
    assert node is not None
    attacker = "mallory"
    junk: list[object] = [
        b"\x00\xff garbage",
        schema.encode(Status(2**63 - 1, 0))[:-1],
        Vote("commit", "1", 0, b"x", 0, b""),  # type: ignore[arg-type]
        Vote("commit", 1, 0, b"x" * 32, 2**40, b"\x01" * 64),
        ViewChange(1, -5, 1, "prepared?", b"\x01" * 64),  # type: ignore[arg-type]
        Proposal(1, 0, 1, 12345),  # type: ignore[arg-type]
        SyncResponse(((b"not a block", 1),), True),  # type: ignore[arg-type]
        SyncRequest(-1, 0),
        TxGossip(("not a tx", None)),  # type: ignore[arg-type]
        TxGossip(None),  # type: ignore[arg-type]
        object(),
        None,
    ]
    for msg in junk:
        node.on_message(attacker, msg)  # must not raise
    assert node.ignored >= len(junk) - 2 and not node.faulty
    c = L.client()
    alice = ident("adv-alice")
    done = c.execute(alice, "darc.create", {"id": "after", "rules": {"_evolve": rule(alice)}})
    assert done.result.ok
    L.close()


def test_leader_signing_an_invalid_block_is_recorded_faulty_and_skipped() -> None:
    """Robustness: a Byzantine leader signs a proposal whose block does not re-execute
    (wrong state root). Honest nodes refuse it without dying, record the leader as faulty
    (its signature was checked, so the fault is attributable) and commit through a view
    change."""
    byz = leader_of(1, 0, 4)
    L = make_ledger(4, config=CONFIG, byzantine={byz: "badblock"})
    c = L.client()
    alice = ident("adv-alice")
    done = c.execute(alice, "darc.create", {"id": "x", "rules": {"_evolve": rule(alice)}})
    assert done.result.ok
    block, cert = L.block(done.height)
    assert block.header.proposer != byz and cert.view >= 1
    for nd in L.live_nodes():
        count, reason = nd.faulty[byz]
        assert count >= 1 and "state root" in reason
        assert all(i == byz for i in nd.faulty)
    L.close()


def test_forged_proofs_and_records_raise_only_typed_errors() -> None:
    """Robustness: whoever ships a chain record or an inclusion proof (a coordinator, a
    provider, a reader presenting evidence to trustees) cannot crash the verifier with a
    RecursionError, OverflowError or AttributeError: a huge height, a non-string state
    key or a deeply nested record gives EncodingError/AuditError, so a service can
    refuse it and go on."""
    L = make_ledger(4, config=CONFIG)
    c = L.client()
    alice = ident("adv-alice")
    done = c.execute(alice, "darc.create", {"id": "p", "rules": {"_evolve": rule(alice)}})
    g = L.genesis
    tx_proof = decode_canonical(c.prove_tx(done.tx_id).to_bytes())
    state_proof = decode_canonical(c.prove("darc/p").to_bytes())
    raw = c.raw_blocks()[-1]
    record = decode_canonical(raw)
    blk = tx_proof["block"]
    huge = {
        "header": {**blk["header"], "height": 2**70},
        "cert": {**blk["cert"], "height": 2**70},
    }
    forged = [
        lambda: TxProof.from_bytes(canonical({**tx_proof, "block": huge})).verify(g),
        lambda: StateProof.from_bytes(canonical({**state_proof, "key": 5})).verify(g),
        lambda: StateProof.from_bytes(b"[" * 100_000 + b"]" * 100_000).verify(g),
        lambda: verify_chain([b'{"block":' + b"[" * 100_000 + b"]" * 100_000 + b"}"], g),
        lambda: verify_chain([canonical({**record, "cert": {**record["cert"], "view": 2**64}})], g),
    ]
    for attempt in forged:
        with pytest.raises((EncodingError, AuditError)):
            attempt()
    assert verify_chain(c.raw_blocks(), g) >= 1  # the genuine records still verify
    L.close()
